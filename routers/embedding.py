"""What every router that decides from the query embedding shares (Hybrid LLM, kNN, MF, SW ranking).

Such a router embeds the query with the bound embedder and maps the vector to the small-suitability
score; nothing else about a query matters to it. This module holds that plumbing once:

* the engines: an embedder, bound with ``bind_engines(embedder=...)``, and its default config;
* the training set: the queries both models answered, their embeddings (one embedder call per chunk,
  with a progress bar) and the quality gap ``q_small - q_large`` of each;
* scoring: ``score_embeddings`` checks the embedding size against the fitted router and calls the
  router's ``score_matrix``; ``dataset_scores`` and ``route_queries`` (one embedder call for the whole
  batch) build on it, and ``route_embedding`` decides for a vector computed elsewhere (the Serve
  embedder deployment); with ``defence`` set (``routers.defences``, off by default) both paths score
  windows of the query's words too, against confounder gadgets: ``dataset_scores`` every window, routing
  only the windows of queries whose whole text goes large (the only ones whose decision they can change);
* the default threshold: ``threshold_rule: fixed`` (the router's own break-even point) or
  ``oracle_share`` (the threshold calibrated at fit time to escalate the share of training queries the
  oracle escalates), and the training-score quantiles (``reference_scores``), both on the scores the
  router will route with (``training_scores``: defended when ``defence`` is set; ``calibrate_on_training_set``);
* the artifact fields every embedding router writes (the embedder it was trained with, the calibrated
  threshold), and ``EmbeddingBank``: training embeddings + per-query targets in safetensors, with the
  chunked cosine similarities the memory-based routers (kNN, SW ranking) score from.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import numpy as np

from routers.base import RouteDecision, Thresholds, per_query
from routers.calibrated import CalibratedRouter, CalibratedRouterConfig
from routers.data import RoutingDataset
from routers.defences import GadgetDefenceConfig, WindowMaxDefence, build_defence
from routers.engines import AsyncEmbedder, Embedder, EmbedderConfig, Engines
from routers.errors import ArtifactError, ConfigError
from routers.progress import progress_bar
from routers.safe_io import load_arrays, save_arrays

DEFAULT_EMBEDDER = "models/all-minilm-l6-v2"
EMBED_CHUNK = 256
#: rows of the query-by-bank similarity matrix computed at once (keeps memory at ~chunk x bank floats)
SIMILARITY_CHUNK = 512
MIN_TRAIN_QUERIES = 10

EmbeddingDtype = Literal["float16", "float32"]


class EmbeddingRouterConfig(CalibratedRouterConfig):
    """Settings every embedding router has: the ``threshold_rule`` (``routers.calibrated``; default
    ``oracle_share``, Hybrid keeps the seed's ``fixed``) and the embedder."""

    embedder: EmbedderConfig | None = None
    #: None (default): score the query as sent; ``{kind: window_max}``: ``routers.defences``
    defence: GadgetDefenceConfig | None = None


@dataclass
class EmbeddedTrainingSet:
    """The queries a router can learn from (both models' outcomes known), embedded."""

    data: RoutingDataset
    embeddings: np.ndarray
    #: q_small - q_large per query: > 0 the small model won, 0 a tie, < 0 the large model won
    gap: np.ndarray


def win_outcomes(gap: np.ndarray, tie_credit: float) -> np.ndarray:
    """The small model's result in a small-vs-large battle: 1 won, 0 lost, ``tie_credit`` tied.

    RouteLLM's Bradley-Terry fit counts a tie as half a win for each side (``tie_credit`` 0.5); 1.0
    counts it as the small model being good enough (Hybrid's deterministic label).
    """
    gap = np.asarray(gap, dtype=np.float64)
    return np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, tie_credit))


def unit_rows(x: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), so a dot product is a cosine similarity; in
    float32 by default (the memory routers' similarity matrices)."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``x`` (float64), a constant column's scale set to 1 so
    ``(x - mean) / scale`` stays finite."""
    x = np.asarray(x, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    return mean, scale


class EmbeddingRouter(CalibratedRouter):
    """Base of the routers whose score is a function of the query embedding alone."""

    Config = EmbeddingRouterConfig
    engine_roles = frozenset({"embedder"})
    #: how error messages name the router ("the Hybrid router needs an embedder")
    display_name: ClassVar[str] = "embedding"
    #: whether ``fit`` can calibrate on defended training scores (``training_scores``); the memory routers'
    #: leave-self-out training scores have no defended counterpart yet
    defended_fit: ClassVar[bool] = True
    config: EmbeddingRouterConfig

    # --- engines ---------------------------------------------------------------------------------
    def training_engine_roles(self) -> frozenset[str]:
        return frozenset({"embedder"})

    def default_embedder_config(self) -> EmbedderConfig:
        return self.config.embedder or EmbedderConfig(model=DEFAULT_EMBEDDER)

    def require_embedder(self) -> Embedder:
        if self.embedder is None:
            raise self.missing_embedder()
        return self.embedder

    def missing_embedder(self) -> ConfigError:
        return ConfigError(f"the {self.display_name} router needs an embedder; bind one with "
                           "bind_engines(embedder=...)")

    def embed_queries(self, queries: list[str], desc: str) -> np.ndarray:
        """Embed in chunks so a long training set shows progress (and stays within memory)."""
        embedder = self.require_embedder()
        bar = progress_bar(desc, total=len(queries), unit="query")
        chunks = []
        for start in range(0, len(queries), EMBED_CHUNK):
            chunk = queries[start : start + EMBED_CHUNK]
            chunks.append(np.asarray(embedder.embed(chunk), dtype=np.float64))
            bar.update(len(chunk))
        bar.close()
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    # --- learning --------------------------------------------------------------------------------
    def embedded_training_set(self, train: RoutingDataset) -> EmbeddedTrainingSet:
        """Resolve the model pair, keep the queries both models answered, embed them, take the gaps."""
        if self.config.defence is not None and not self.defended_fit:
            raise ConfigError(f"the {self.display_name} router does not support a defence yet: its training "
                              "scores leave each query out of its own neighbours, and the windows of a query "
                              "would find it; fit it without defence")
        pair = self.resolve_pair(train)
        data = train.complete_for([pair.small, pair.large])
        if len(data) < MIN_TRAIN_QUERIES:
            raise ConfigError(f"the {self.display_name} router needs at least {MIN_TRAIN_QUERIES} queries with "
                              f"both models' results, got {len(data)}")
        embeddings = self.embed_queries(data.queries, f"{self.name}: embedding train queries")
        quality = data.performance_matrix([pair.small, pair.large])
        return EmbeddedTrainingSet(data, embeddings, quality[:, 0] - quality[:, 1])

    def training_scores(self, training: EmbeddedTrainingSet, whole: np.ndarray | None = None) -> np.ndarray:
        """The fitted router's scores on its training queries as it routes them: ``whole`` (the scores of
        the whole-query embeddings; computed when None) or, with ``defence`` set, the defended scores
        (``dataset_scores``' plan and combination; only the windows are embedded, one more pass)."""
        if whole is None:
            whole = self.score_embeddings(training.embeddings)
        defence = build_defence(self.config.defence)
        if defence is None:
            return whole
        plan = defence.plan(training.data.queries)
        window_texts = plan.window_texts
        windows = (self.score_embeddings(self.embed_queries(window_texts, f"{self.name}: embedding train query "
                                                            "windows")) if window_texts else np.zeros(0))
        return plan.combine_parts(whole, windows)

    def calibrate_on_training_set(self, training: EmbeddedTrainingSet,
                                  whole: np.ndarray | None = None) -> dict[str, Any]:
        """``calibrate_on_training_scores`` on ``training_scores``: the threshold and the reference quantiles
        describe the scores the router routes with, defended or not."""
        calibration = self.calibrate_on_training_scores(self.training_scores(training, whole), training.gap)
        if self.config.defence is not None:
            calibration["calibrated_on"] = f"defended training scores ({self.config.defence.kind})"
        return calibration

    # --- scoring ---------------------------------------------------------------------------------
    @abstractmethod
    def embedding_dim(self) -> int:
        """Size of the embeddings the fitted router scores (raises when it has no learned state)."""

    @abstractmethod
    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        """Small-suitability of each row of a (n, embedding_dim) float64 matrix."""

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Small-suitability of each embedding (one vector or a matrix of them)."""
        expected = self.embedding_dim()
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim == 1:
            embeddings = embeddings[None, :]
        if embeddings.shape[1] != expected:
            raise ConfigError(
                f"embedding size {embeddings.shape[1]} does not match the router's {expected}: "
                "serve it with the embedder it was trained with")
        return self.score_matrix(embeddings)

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        defence = build_defence(self.config.defence)
        if defence is None:
            return self.score_embeddings(self.embed_queries(data.queries, f"{self.name}: embedding queries"))
        plan = defence.plan(data.queries)
        scores = self.score_embeddings(self.embed_queries(plan.texts, f"{self.name}: embedding queries + windows"))
        return plan.combine(scores, len(data.queries))

    def route_embedding(self, query: str, embedding: np.ndarray, threshold: float | None = None) -> RouteDecision:
        """Decide for one query whose embedding was computed elsewhere (the Serve embedder deployment).

        The vector is scored as given: a ``defence`` (which embeds windows of the text) applies in
        ``aroute_many`` and ``dataset_scores``, the paths the app and the library take."""
        embedding = np.asarray(embedding)
        if embedding.ndim != 1 and not (embedding.ndim == 2 and embedding.shape[0] == 1):
            raise ConfigError(f"route_embedding takes one embedding, got shape {embedding.shape}")
        score = float(self.score_embeddings(embedding.reshape(1, -1))[0])
        return self.decide(query, score, threshold, **self.decision_extra(embedding.reshape(-1)))

    def decision_extra(self, embedding: np.ndarray) -> dict[str, Any]:
        """What a decision reports besides its score, from the query's (whole-text) embedding: nothing by
        default; the domain prior names the training domain it takes the query to be from."""
        return {}

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        """One embedder call for all queries, then each query's decision."""
        embedder: AsyncEmbedder | None = engines.embedder
        if embedder is None:
            raise self.missing_embedder()
        defence = build_defence(self.config.defence)
        if defence is not None:
            return await self.aroute_defended(queries, embedder, defence, thresholds)
        embeddings = await self.aembed_checked(embedder, list(queries))
        return [self.route_embedding(query, embedding, threshold) for query, embedding, threshold
                in zip(queries, embeddings, per_query(thresholds, len(queries)), strict=True)]

    @staticmethod
    async def aembed_checked(embedder: AsyncEmbedder, texts: list[str]) -> np.ndarray:
        embeddings = np.asarray(await embedder.aembed(texts), dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(texts):
            raise ConfigError(f"the embedder returned shape {embeddings.shape} for {len(texts)} texts")
        return embeddings

    async def aroute_defended(self, queries: Sequence[str], embedder: AsyncEmbedder, defence: WindowMaxDefence,
                              thresholds: Thresholds) -> list[RouteDecision]:
        """With a gadget defence: the whole texts first, then, in one more embedder call, the windows of the
        queries that need them (``GadgetDefenceConfig.windows``), the defended score of those
        (``routers.defences``), then each decision."""
        limits = [self.threshold if t is None else t for t in per_query(thresholds, len(queries))]
        whole = await self.aembed_checked(embedder, list(queries))
        scores = self.score_embeddings(whole)
        pending = [i for i, (score, limit) in enumerate(zip(scores, limits, strict=True))
                   if defence.config.needs_windows(float(score), limit)]
        plan = defence.plan([queries[i] for i in pending])
        if plan.window_texts:
            windows = self.score_embeddings(await self.aembed_checked(embedder, plan.window_texts))
            scores[pending] = plan.combine_parts(scores[pending], windows)
        return [self.decide(query, float(score), limit, **self.decision_extra(vector))
                for query, score, limit, vector in zip(queries, scores, limits, whole, strict=True)]

    def with_exact_scores(self) -> EmbeddingRouter:
        """Score every routed query's windows (``windows: always``), so each reported score is the full
        defended score (traffic-quantile thresholds need them); in place, returns self."""
        defence = self.config.defence
        if defence is not None and defence.windows != "always":
            self.config = self.config.model_copy(update={"defence": defence.model_copy(update={"windows": "always"})})
        return self

    # --- artifacts -------------------------------------------------------------------------------
    def embedding_state(self) -> dict[str, Any]:
        """Manifest fields every embedding router saves: the embedder it was trained with, the
        calibrated threshold and the training metrics."""
        return {"calibrated_threshold": self.calibrated_threshold,
                "embedder": self.default_embedder_config().model_dump(mode="json"),
                "train_metrics": self.train_metrics}

    def load_embedding_state(self, state: dict[str, Any]) -> None:
        self.calibrated_threshold = state.get("calibrated_threshold")
        self.train_metrics = dict(state.get("train_metrics", {}))
        if self.config.embedder is None and state.get("embedder"):
            self.config = self.config.model_copy(update={"embedder": EmbedderConfig.model_validate(state["embedder"])})


@dataclass
class EmbeddingBank:
    """The training queries' unit-norm embeddings and one target per query, for memory-based routers.

    Stored as safetensors (``embeddings`` in float16 or float32, ``targets`` in float32); similarities
    are computed in float32 whatever the stored precision.
    """

    embeddings: np.ndarray
    targets: np.ndarray

    @classmethod
    def build(cls, embeddings: np.ndarray, targets: np.ndarray, dtype: EmbeddingDtype) -> EmbeddingBank:
        if len(embeddings) != len(targets):
            raise ValueError(f"{len(embeddings)} embeddings but {len(targets)} targets")
        return cls(unit_rows(embeddings).astype(dtype), np.asarray(targets, dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.embeddings)

    def similarity_chunks(self, queries: np.ndarray,
                          leave_self_out: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
        """Cosine similarities of query rows to every bank row, ``SIMILARITY_CHUNK`` query rows at a time.

        ``leave_self_out`` scores the bank's own queries (``queries`` is the bank): each query's own row
        is set to -inf, so training scores are what a new query like it would get, not a lookup of its label.
        """
        bank = self.embeddings.astype(np.float32)
        queries = unit_rows(queries)
        for start in range(0, len(queries), SIMILARITY_CHUNK):
            rows = slice(start, min(start + SIMILARITY_CHUNK, len(queries)))
            sims = queries[rows] @ bank.T
            if leave_self_out:
                own = np.arange(rows.start, rows.stop)
                sims[own - rows.start, own] = -np.inf
            yield rows, sims

    def save(self, path: Path) -> None:
        save_arrays(path, {"embeddings": self.embeddings, "targets": self.targets})

    @classmethod
    def load(cls, path: Path, dim: int, size: int) -> EmbeddingBank:
        arrays = load_arrays(path)
        try:
            embeddings, targets = arrays["embeddings"], arrays["targets"]
        except KeyError as exc:
            raise ArtifactError(f"{path}: missing tensor {exc}") from exc
        if embeddings.shape != (size, dim) or targets.shape != (size,):
            raise ArtifactError(f"{path}: expected {size} embeddings of size {dim} and {size} targets, "
                                f"got {embeddings.shape} and {targets.shape}")
        return cls(embeddings, targets.astype(np.float32))


class EmbeddingBankRouter(EmbeddingRouter):
    """An embedding router whose learned state is an ``EmbeddingBank`` (kNN, SW ranking): it keeps the
    bank, checks it is there before scoring, and saves it as ``bank_file`` next to ``router.json``.
    Its training scores leave each query out, so ``fit`` refuses a ``defence`` (``defended_fit``)."""

    bank_file: ClassVar[str] = "bank.safetensors"
    defended_fit = False

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.bank: EmbeddingBank | None = None

    def require_bank(self) -> EmbeddingBank:
        if self.bank is None:
            self.require_fitted()
            raise ArtifactError(f"the {self.display_name} router has no training embeddings")
        return self.bank

    def embedding_dim(self) -> int:
        return self.require_bank().dim

    def state(self) -> dict[str, Any]:
        bank = self.require_bank()
        return {"bank_file": self.bank_file, "embedding_dim": bank.dim, "n_train": len(bank), **self.embedding_state()}

    def save_tensors(self, directory: Path) -> None:
        self.require_bank().save(directory / self.bank_file)

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        self.bank = EmbeddingBank.load(directory / state.get("bank_file", self.bank_file),
                                       int(state["embedding_dim"]), int(state["n_train"]))
        self.load_embedding_state(state)


class EmbeddingWeights(Protocol):
    """A learned scorer of embeddings kept in one safetensors file (MF's factors, blend's heads, the
    domain prior's parts)."""

    @property
    def embedding_dim(self) -> int: ...

    def scores(self, embeddings: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...


WeightsT = TypeVar("WeightsT", bound=EmbeddingWeights)


class EmbeddingWeightsRouter(EmbeddingRouter, Generic[WeightsT]):
    """An embedding router whose learned state is one ``EmbeddingWeights`` object: it keeps it, checks it
    is there before scoring, saves it as ``weights_file`` next to ``router.json`` and checks its size
    against the manifest on load. Subclasses fit ``self.weights`` and say how to read the file back."""

    weights_file: ClassVar[str] = "weights.safetensors"

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.weights: WeightsT | None = None

    def require_weights(self) -> WeightsT:
        if self.weights is None:
            self.require_fitted()
            raise ArtifactError(f"the {self.display_name} router has no weights")
        return self.weights

    def embedding_dim(self) -> int:
        return self.require_weights().embedding_dim

    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        return self.require_weights().scores(embeddings)

    def weights_state(self) -> dict[str, Any]:
        """Manifest fields the weights file needs to be read back (``load_weights`` gets them)."""
        return {}

    @abstractmethod
    def load_weights(self, path: Path, state: dict[str, Any]) -> WeightsT:
        """The weights saved at ``path``, with the manifest's ``state``."""

    def state(self) -> dict[str, Any]:
        return {"weights_file": self.weights_file, "embedding_dim": self.require_weights().embedding_dim,
                **self.weights_state(), **self.embedding_state()}

    def save_tensors(self, directory: Path) -> None:
        self.require_weights().save(directory / self.weights_file)

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        path = directory / state.get("weights_file", self.weights_file)
        weights = self.load_weights(path, state)
        if weights.embedding_dim != int(state["embedding_dim"]):
            raise ArtifactError(f"{path}: weights expect {weights.embedding_dim}-d embeddings, "
                                f"manifest says {state['embedding_dim']}")
        self.weights = weights
        self.load_embedding_state(state)
