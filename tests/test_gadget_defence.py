"""The gadget defence (``routers.defences``) and the pure parts of the attack harness (``bench/gadget_attack.py``):
windows, the defended score, library vs served scoring with the defence on, the search step, shares."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from bench.gadget_attack import attach, bootstrap_shares, large_share, objective, propose, search, vocabulary
from routers.data import LLMCandidate, ModelOutcome, QueryExample, RoutingDataset
from routers.defences import GadgetDefenceConfig, WindowMaxDefence, combine_scores, windows
from routers.embedding import EmbeddingRouter
from routers.engines import Embedder, Engines
from routers.errors import ConfigError

SMALL, LARGE = "small-7b", "large-70b"


# --- windows and the defended score -------------------------------------------------------------------------
def test_windows_cover_at_least_the_fraction_keep_spacing_and_leave_out_the_whole() -> None:
    text = "one two three four\nfive six seven eight"
    got = windows(text, grid=2, min_fraction=0.5, min_words=4)
    assert got == ["one two three four", "five six seven eight"]
    four = windows(text, grid=4, min_fraction=0.5, min_words=4)
    assert text not in four and "one two three four\nfive six" in four and "three four\nfive six" in four
    assert all(len(w.split()) >= 4 for w in four)
    assert len(four) == len(set(four)) == 5


def test_short_queries_are_scored_whole() -> None:
    assert windows("what is two plus two", grid=2, min_fraction=0.5, min_words=8) == []
    assert WindowMaxDefence(GadgetDefenceConfig()).variants("short one") == ["short one"]


def test_combine_takes_the_whole_or_the_best_window_less_the_margin() -> None:
    owner = np.array([0, 0, 0, 1, 2, 2])
    scores = np.array([0.2, 0.9, 0.1, 0.5, 0.6, 0.3])
    assert combine_scores(scores, owner, 3, 0.0) == pytest.approx([0.9, 0.5, 0.6])
    assert combine_scores(scores, owner, 3, 0.5) == pytest.approx([0.4, 0.5, 0.6])
    with pytest.raises(ValueError):
        combine_scores(scores[:5], owner, 3, 0.0)


def test_the_plan_lists_each_query_whole_first() -> None:
    defence = WindowMaxDefence(GadgetDefenceConfig(grid=2, min_words=4))
    plan = defence.plan(["a b c d e f", "tiny"])
    assert plan.texts == ["a b c d e f", "a b c", "d e f", "tiny"]
    assert plan.owner.tolist() == [0, 0, 0, 1]


def test_the_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError):
        GadgetDefenceConfig.model_validate({"kind": "window_max", "grd": 4})
    with pytest.raises(ValueError):
        GadgetDefenceConfig(min_fraction=0.0)


# --- a router with the defence on: library and served scores agree, and a gadget is neutralised -------------
class BagOfWords(Embedder):
    """Mean of word vectors: axis 0 is +1 for ordinary words, -9 for the gadget word 'zzz'."""

    dim = 2
    model_name = "bag-of-words"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [[np.mean([-9.0 if w == "zzz" else 1.0 for w in t.split()]), 1.0] for t in texts]
        return np.asarray(rows, dtype=np.float32)


class AxisRouter(EmbeddingRouter):
    """Small-suitability = sigmoid(axis 0); threshold 0.5."""

    name = "axis_test"
    display_name = "axis"

    def __init__(self, config: Any = None) -> None:
        llm = {SMALL: LLMCandidate(name=SMALL, input_price=0.1, output_price=0.1),
               LARGE: LLMCandidate(name=LARGE, input_price=1.0, output_price=1.0)}
        super().__init__({"router_threshold": 0.5, "small_model": SMALL, "large_model": LARGE, **(config or {})},
                         llm)
        self.fitted = True

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        return {}

    def embedding_dim(self) -> int:
        return 2

    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-embeddings[:, 0]))

    def state(self) -> dict[str, Any]:
        return {}


QUESTION = "what is the boiling point of water at sea level in kelvin"
ATTACKED = QUESTION + " zzz zzz"


def dataset(queries: list[str]) -> RoutingDataset:
    outcomes = {SMALL: ModelOutcome(performance=1.0), LARGE: ModelOutcome(performance=1.0)}
    return RoutingDataset([QueryExample(query=q, task_name="t", outcomes=outcomes) for q in queries])


def served_scores(router: EmbeddingRouter, queries: list[str]) -> list[float]:
    decisions = asyncio.run(router.aroute_many(queries, Engines(embedder=BagOfWords())))
    return [d.score for d in decisions]


def test_the_gadget_sends_the_undefended_router_large_and_the_defended_one_small() -> None:
    plain = AxisRouter().bind_engines(embedder=BagOfWords())
    defended = AxisRouter({"defence": {"kind": "window_max", "grid": 2}}).bind_engines(embedder=BagOfWords())
    assert [d["use_large"] for d in plain.route_queries([QUESTION, ATTACKED])] == [False, True]
    assert [d["use_large"] for d in defended.route_queries([QUESTION, ATTACKED])] == [False, False]


def test_library_and_served_scores_agree_with_the_defence_on() -> None:
    router = AxisRouter({"defence": {"kind": "window_max", "grid": 4, "min_words": 4, "windows": "always"}})
    router.bind_engines(embedder=BagOfWords())
    queries = [QUESTION, ATTACKED, "zzz " + QUESTION, "short zzz"]
    library = router.dataset_scores(dataset(queries))
    assert served_scores(router, queries) == pytest.approx(library.tolist())
    plain = AxisRouter().bind_engines(embedder=BagOfWords()).dataset_scores(dataset(queries))
    assert (library >= plain - 1e-12).all()  # the defence only ever raises a score
    assert library[3] == pytest.approx(plain[3])  # too short for windows: scored whole


class CountingBagOfWords(BagOfWords):
    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return super().embed(texts)


def test_windows_are_scored_only_where_they_can_change_the_decision() -> None:
    queries = [QUESTION, ATTACKED, "zzz " + QUESTION, "zzz zzz zzz " + QUESTION + " zzz zzz zzz", "short zzz"]
    defence = {"kind": "window_max", "grid": 4, "min_words": 4}
    needed = AxisRouter({"defence": defence})
    full = AxisRouter({"defence": {**defence, "windows": "always"}})
    counting = CountingBagOfWords()
    lazy = asyncio.run(needed.aroute_many(queries, Engines(embedder=counting)))
    exact = asyncio.run(full.aroute_many(queries, Engines(embedder=BagOfWords())))
    assert [d.use_large for d in lazy] == [d.use_large for d in exact] == [False, False, False, False, True]
    for got, want in zip(lazy, exact, strict=True):
        if not got.use_large and got.score != pytest.approx(want.score):
            assert want.score >= got.score >= got.threshold  # kept small by its whole text: whole score shown
        else:
            assert got.score == pytest.approx(want.score)
    # windows only of the queries whose whole text went large (ATTACKED, the padded one; "short zzz" has none)
    windows_of = WindowMaxDefence(GadgetDefenceConfig(**defence)).variants
    assert counting.texts == queries + windows_of(ATTACKED)[1:] + windows_of(queries[3])[1:]
    # per-query thresholds decide which queries need windows: at 0 every whole text stays small
    none = CountingBagOfWords()
    asyncio.run(needed.aroute_many(queries, Engines(embedder=none), thresholds=0.0))
    assert none.texts == queries
    assert full.with_exact_scores() is full and needed.with_exact_scores().config.defence.windows == "always"


def test_the_defence_is_off_by_default_and_a_bad_defence_is_a_config_error() -> None:
    assert AxisRouter().config.defence is None
    with pytest.raises(ConfigError):
        AxisRouter({"defence": {"kind": "perplexity"}})


# --- the harness's pure parts ---------------------------------------------------------------------------------
def test_vocabulary_is_frequent_alphabetic_words_in_a_fixed_order() -> None:
    queries = ["The cell wall of plant cells", "cell membrane and cell wall", "wall 42 x-ray Answer:"]
    assert vocabulary(queries, size=3, min_count=2) == ["cell", "wall"]
    assert vocabulary(queries, size=10, min_count=1)[:2] == ["cell", "wall"]


def test_attach_puts_the_gadget_after_before_or_between_question_and_choices() -> None:
    query = "Which is a mammal?\nA. cat\nB. fish\nAnswer:"
    assert attach(query, ["x", "y"], "suffix") == query + " x y"
    assert attach(query, ["x", "y"], "prefix") == "x y " + query
    assert attach(query, ["x", "y"], "middle") == "Which is a mammal? x y\nA. cat\nB. fish\nAnswer:"
    assert attach("One thing. Another thing?", ["x"], "middle") == "One thing. x Another thing?"
    assert attach("a b c d", ["x"], "middle") == "a b x c d"
    with pytest.raises(ValueError):
        attach(query, ["x"], "inside")


def test_shares_objective_and_paired_bootstrap() -> None:
    assert large_share([True, False, False, True]) == 0.5 and large_share([]) == 0.0
    assert objective([True, False], [0.2, 0.4]) == (0.5, pytest.approx(-0.3))
    assert objective([True, True], [0.9, 0.9]) > objective([True, False], [0.0, 0.0])
    clean = [False] * 90 + [True] * 10
    attacked = [True] * 40 + [False] * 50 + [True] * 10
    result = bootstrap_shares(clean, attacked, n_resamples=500, seed=1)
    assert result["clean"]["value"] == pytest.approx(0.1) and result["attacked"]["value"] == pytest.approx(0.5)
    assert result["lift"]["low"] > 0.25 and result["lift"]["high"] < 0.55
    assert result == bootstrap_shares(clean, attacked, n_resamples=500, seed=1)


def test_propose_changes_one_position_to_distinct_new_words() -> None:
    rng = np.random.default_rng(0)
    gadget = ["a", "b", "c"]
    candidates = propose(rng, gadget, ["a", "b", "c", "d", "e", "f"], 4)
    assert len(candidates) == 4
    changed = {next(i for i in range(3) if c[i] != gadget[i]) for c in candidates}
    assert len(changed) == 1
    position = changed.pop()
    assert len({c[position] for c in candidates}) == 4
    assert all(sum(x != y for x, y in zip(c, gadget, strict=True)) == 1 for c in candidates)


def test_search_climbs_within_its_budget_and_is_seeded() -> None:
    """Objective: how many 'hard' words the gadget holds; the search must find more of them."""
    vocab = [f"w{i}" for i in range(30)] + ["hard1", "hard2", "hard3"]
    calls: list[int] = []

    async def evaluate(gadgets: list[list[str]]) -> list[tuple[float, float]]:
        calls.append(len(gadgets))
        return [(sum(w.startswith("hard") for w in g) / 3, 0.0) for g in gadgets]

    result = asyncio.run(search(evaluate, vocab, n_words=3, budget=200, n_candidates=8, seed=3))
    assert sum(calls) == result.evaluations == 200
    assert result.best[0] >= 2 / 3
    assert [h["share"] for h in result.history] == sorted(h["share"] for h in result.history)
    again = asyncio.run(search(evaluate, vocab, n_words=3, budget=200, n_candidates=8, seed=3))
    assert again.gadget == result.gadget
