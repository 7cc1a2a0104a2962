"""Small synthetic routing data shared by several test modules (made up, not drawn from the shipped data).

* two embedding clusters (``two_clusters``) and ``fitted`` embedding routers on them, with ``FAST_PARAMS``;
* AutoMix-style self-verification votes (``votes_dataset``);
* the policy router's medium/large pair (``policy_dataset``);
* ``AxisEmbedder``: a test embedder whose axis 0 carries each query's difficulty;
* ``hashed_vector``: a hashed bag of words, a model-free embedding that still tells subjects apart.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from routers.data import LLMCandidate, ModelOutcome, QueryExample, RoutingDataset
from routers.embedding import EmbeddingRouter
from routers.engines import Embedder
from routers.engines.cache import LookupEmbedder
from routers.registry import router_class
from tests.conftest import LARGE_NAME, SMALL_NAME

# --- two embedding clusters ---------------------------------------------------------------------------------
CLUSTER_DIM = 16
# Small, fast settings; the defaults are for ~10k real queries.
FAST_PARAMS: dict[str, dict] = {"knn": {"k": 10}, "mf": {"latent_dim": 8, "epochs": 60, "learning_rate": 1e-2},
                                "sw_ranking": {"gamma": 10.0}}


def cluster_llm_data() -> dict[str, LLMCandidate]:
    return {SMALL_NAME: LLMCandidate(name=SMALL_NAME, size="7B", input_price=0.1, output_price=0.1),
            LARGE_NAME: LLMCandidate(name=LARGE_NAME, size="70B", input_price=1.0, output_price=1.0)}


def cluster_centres() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, CLUSTER_DIM))


def near(centre: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return centre + rng.normal(scale=0.3, size=(n, CLUSTER_DIM))


def two_clusters(n_per_cluster: int = 60, seed: int = 1, wins: bool = True) -> tuple[RoutingDataset, LookupEmbedder]:
    """Cluster A (queries 'a ...'): small right, large right on 4 of 5 (ties) else wrong (small wins;
    without ``wins``, ties only, so ranking A above B is all the oracle does too).
    Cluster B ('b ...'): small wrong, large right."""
    rng = np.random.default_rng(seed)
    a_centre, b_centre = cluster_centres()
    texts, vectors, examples = [], [], []
    for label, centre in (("a", a_centre), ("b", b_centre)):
        for i, vector in enumerate(near(centre, rng, n_per_cluster)):
            text = f"{label} query {seed}-{i}"
            small, large = (1.0, 0.0 if wins and i % 5 == 0 else 1.0) if label == "a" else (0.0, 1.0)
            outcomes = {SMALL_NAME: ModelOutcome(performance=small), LARGE_NAME: ModelOutcome(performance=large)}
            examples.append(QueryExample(query=text, task_name=f"cluster-{label}", outcomes=outcomes))
            texts.append(text)
            vectors.append(vector)
    return RoutingDataset(examples, cluster_llm_data()), LookupEmbedder(texts, np.asarray(vectors), "two-clusters")


def fitted(name: str, train: RoutingDataset, embedder: LookupEmbedder, **params: object) -> EmbeddingRouter:
    """Embedding router ``name`` with ``FAST_PARAMS`` (overridden by ``params``), fitted on ``train``."""
    router = router_class(name)({**FAST_PARAMS[name], **params}, train.llm_data)
    assert isinstance(router, EmbeddingRouter)
    router.bind_engines(embedder=embedder).fit(train)
    return router


# --- AutoMix self-verification votes -------------------------------------------------------------------------
VOTES_LLM_DATA = {SMALL_NAME: LLMCandidate(name=SMALL_NAME, size="1B"),
                  LARGE_NAME: LLMCandidate(name=LARGE_NAME, size="70B")}


def vote_scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p_ver from N=8 votes that are informative: right answers get more yes votes than wrong ones."""
    rng = np.random.default_rng(seed)
    small = (rng.random(n) < 0.55).astype(float)
    large = np.where(small == 1, rng.random(n) < 0.95, rng.random(n) < 0.75).astype(float)
    p_yes = np.where(small == 1, 0.75, 0.3)
    scores = rng.binomial(8, p_yes) / 8.0
    return scores, small, large


def votes_dataset(n: int = 200, seed: int = 0, with_votes: bool = True) -> RoutingDataset:
    """``n`` arithmetic queries, each with the small model's eight verifier votes (unless not ``with_votes``)."""
    scores, small, large = vote_scores(n, seed)
    examples = []
    for i in range(n):
        yes = round(scores[i] * 8)
        votes = tuple([1.0] * yes + [0.0] * (8 - yes))
        examples.append(
            QueryExample(
                query=f"What is {i} + {i}?",
                outcomes={
                    SMALL_NAME: ModelOutcome(
                        performance=small[i],
                        response=f"#### {2 * i}",
                        verifier_votes=votes if with_votes else None,
                    ),
                    LARGE_NAME: ModelOutcome(performance=large[i], response=f"{2 * i}"),
                },
            )
        )
    return RoutingDataset(examples, VOTES_LLM_DATA)


# --- the policy router's medium/large pair ------------------------------------------------------------------
POLICY_SMALL, POLICY_LARGE = "medium-llm", "large-llm"


def policy_example(query: str, small: float, large: float, small_text: str = "x", task: str = "gsm8k") -> QueryExample:
    return QueryExample(query=query, task_name=task, outcomes={
        POLICY_SMALL: ModelOutcome(performance=small, response=small_text),
        POLICY_LARGE: ModelOutcome(performance=large, response="y")})


def policy_dataset() -> RoutingDataset:
    """24 queries, six per (medium right, large right) case, plus one the medium model answers "I don't know"."""
    examples = [policy_example(f"q{i}", s, l_) for i, (s, l_) in enumerate([(1, 1), (0, 1), (0, 0), (1, 0)] * 6)]
    examples.append(policy_example("q-idk", 0, 1, small_text="I don't know."))
    llm = {POLICY_SMALL: LLMCandidate(name=POLICY_SMALL, size="7B", input_price=0.1, output_price=0.1),
           POLICY_LARGE: LLMCandidate(name=POLICY_LARGE, size="70B", input_price=1.0, output_price=1.0)}
    return RoutingDataset(examples, llm)


# --- an embedder with a known difficulty axis ----------------------------------------------------------------
class AxisEmbedder(Embedder):
    """Embeds a text as a fixed random vector plus a 'difficulty' signal on axis 0 (test data, not a model)."""

    dim = 8
    model_name = "axis-test"

    def __init__(self, difficulty: dict[str, float]) -> None:
        self.difficulty = difficulty

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            # crc32, not hash(): str hashes change per process (PYTHONHASHSEED), which made this flaky.
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            v = rng.normal(scale=0.3, size=self.dim)
            v[0] = self.difficulty[text]
            out.append(v)
        return np.asarray(out, dtype=np.float32)


HASHED_DIM = 64


def hashed_vector(text: str, dim: int = HASHED_DIM) -> np.ndarray:
    """Unit-norm signed hashed bag of the text's words (enough signal for GSM8K vs MMLU subjects)."""
    vector = np.zeros(dim)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        h = zlib.crc32(word.encode())
        vector[h % dim] += 1.0 if (h >> 16) & 1 else -1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector
