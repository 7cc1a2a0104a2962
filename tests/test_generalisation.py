"""Leave-domains-out evaluation and bootstrap intervals on synthetic multi-domain routing data (no models)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routers import cli
from routers.base import RouteDecision, Router, RouterConfig
from routers.baselines import OracleRouter, RandomRouter
from routers.data import ModelOutcome, QueryExample, RoutingDataset
from routers.evaluation import Protocol, group_folds, in_domain, in_domain_folds, leave_domains_out, query_folds
from routers.evaluation.bootstrap import MetricInterval, cluster_resample_indices
from routers.evaluation.generalisation import QUERY_FOLDS, RouterFactory, select_params, task_groups
from routers.hybrid.router import HybridLLMRouter
from tests.conftest import LARGE_NAME, SMALL_NAME, two_candidates
from tests.synthetic_data import AxisEmbedder

INTERVAL = re.compile(r"\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]")
FAST = Protocol(n_resamples=200, seed=0)


def feature_query(task: str, i: int, feature: float) -> str:
    return f"{task} question {i} f={feature:+.4f}"


def feature_of(query: str) -> float:
    return float(query.rsplit("f=", 1)[1])


def domain_dataset(sizes: Mapping[str, int], regime: Mapping[str, float] | None = None, noise: float = 0.1,
                   large_accuracy: float = 1.0, seed: int = 0) -> RoutingDataset:
    """Queries of several domains. The small model is right iff ``regime[task] * feature > 0`` (flipped
    with probability ``noise``; ``regime`` defaults to +1 everywhere), the large one with probability
    ``large_accuracy``, independently."""
    rng = np.random.default_rng(seed)
    examples = []
    for task, size in sizes.items():
        sign = 1.0 if regime is None else regime[task]
        for i in range(size):
            feature = float(rng.uniform(-1, 1))
            small_right = (sign * feature > 0) != (rng.random() < noise)
            large_right = rng.random() < large_accuracy
            examples.append(QueryExample(
                query=feature_query(task, i, feature), task_name=task,
                outcomes={SMALL_NAME: ModelOutcome(performance=float(small_right), token_num=10),
                          LARGE_NAME: ModelOutcome(performance=float(large_right), token_num=10)}))
    return RoutingDataset(examples, two_candidates())


def tasks_of(data: RoutingDataset) -> set[str]:
    return {ex.task_name or "" for ex in data.examples}


class SignConfig(RouterConfig):
    sign: float = 1.0


class SignRouter(Router):
    """Scores ``sign * feature``: a router whose only hyperparameter decides on which domains it is good.
    It records which domains it was fitted on and which it scored."""

    name = "sign_test"
    Config = SignConfig
    config: SignConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.fit_tasks: set[str] = set()
        self.scored_tasks: set[str] = set()

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        self.resolve_pair(train)
        self.fit_tasks |= tasks_of(train)
        self.fitted = True
        return {}

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        self.scored_tasks |= tasks_of(data)
        return np.array([self.config.sign * feature_of(q) for q in data.queries])

    async def aroute_many(self, queries: Any, engines: Any, thresholds: Any = None) -> list[RouteDecision]:
        raise NotImplementedError("scored through dataset_scores only")


def recording_factory(cls: type[Router]) -> tuple[RouterFactory, list[Router]]:
    built: list[Router] = []

    def make(params: Mapping[str, Any]) -> Router:
        built.append(cls(dict(params), two_candidates()))
        return built[-1]

    return make, built


SIZES = {"algebra": 120, "law": 90, "biology": 80, "history": 60, "chemistry": 50, "gsm8k": 40}


# --- folds ------------------------------------------------------------------------------------------
def test_folds_partition_the_queries_and_never_split_a_domain() -> None:
    data = domain_dataset(SIZES)
    folds = group_folds(data, 3, seed=4)
    eval_indices = sorted(i for f in folds for i in f.eval_indices)
    assert eval_indices == list(range(len(data)))  # every query held out exactly once
    for fold in folds:
        fit_tasks = tasks_of(data.subset(fold.fit_indices))
        eval_tasks = tasks_of(data.subset(fold.eval_indices))
        assert fit_tasks.isdisjoint(eval_tasks) and eval_tasks == set(fold.held_out_tasks)
        assert len(fold.fit_indices) + len(fold.eval_indices) == len(data)
    sizes = [len(f.eval_indices) for f in folds]
    assert max(sizes) - min(sizes) <= max(SIZES.values())  # greedy: within one domain of balanced
    assert group_folds(data, 3, seed=4) == folds  # deterministic for a seed


def test_fold_count_must_fit_the_domains() -> None:
    data = domain_dataset({"a": 10, "b": 10})
    with pytest.raises(ValueError, match="only 2 task_name groups"):
        group_folds(data, 3)
    with pytest.raises(ValueError, match="at least 2 folds"):
        group_folds(data, 1)


def test_query_folds_partition_the_queries_stratified_by_domain() -> None:
    sizes = {**SIZES, "tiny": 2}  # fewer queries than folds: in some folds only
    data = domain_dataset(sizes)
    folds = query_folds(data, 4, seed=2)
    assert sorted(i for f in folds for i in f.eval_indices) == list(range(len(data)))  # each once
    for fold in folds:
        assert fold.held_out_tasks == ()
        assert set(fold.fit_indices).isdisjoint(fold.eval_indices)
        assert len(fold.fit_indices) + len(fold.eval_indices) == len(data)
        # every domain with >= 4 queries is in every fold, so also in its training part
        assert tasks_of(data.subset(fold.eval_indices)) >= set(SIZES)
        assert tasks_of(data.subset(fold.fit_indices)) >= set(SIZES)
    sizes_per_fold = [len(f.eval_indices) for f in folds]
    assert max(sizes_per_fold) - min(sizes_per_fold) <= 1
    assert query_folds(data, 4, seed=2) == folds  # deterministic for a seed
    assert query_folds(data, 4, seed=3) != folds


def test_query_fold_count_must_fit_the_queries() -> None:
    data = domain_dataset({"a": 3})
    assert len(query_folds(data, 3)) == 3  # one domain is enough
    with pytest.raises(ValueError, match="only 3 queries"):
        query_folds(data, 4)
    with pytest.raises(ValueError, match="at least 2 folds"):
        query_folds(data, 1)


# --- the outer loop never sees its held-out domains ----------------------------------------------------
def test_no_router_touches_its_outer_folds_domains_except_to_score_them_once() -> None:
    data = domain_dataset(SIZES)
    make, built = recording_factory(SignRouter)
    grid = [{"sign": 1.0}, {"sign": -1.0}]
    result = leave_domains_out(make, data, 3, grid, Protocol(n_resamples=50, inner_folds=2))
    per_fold = len(grid) * 2 + 1  # two grid points x two inner fits, then the refit
    assert len(built) == 3 * per_fold and result.n_folds == 3 and result.n_queries == len(data)
    for fold, routers in zip(result.folds, [built[i:i + per_fold] for i in range(0, len(built), per_fold)]):
        held_out = set(fold.held_out_tasks)
        *tuning, final = routers
        assert all(isinstance(r, SignRouter) for r in routers)
        for router in tuning:
            assert router.fit_tasks.isdisjoint(held_out) and router.scored_tasks.isdisjoint(held_out)
        assert final.fit_tasks.isdisjoint(held_out) and final.scored_tasks == held_out
        assert final.fit_tasks | held_out == set(SIZES)


def test_a_grid_point_good_only_on_the_held_out_domains_is_not_chosen() -> None:
    sizes = dict(SIZES)
    folds = group_folds(domain_dataset(sizes), 3, seed=0)
    # The held-out domains of fold 0 reward sign -1; every other domain rewards sign +1.
    regime = {task: (-1.0 if task in folds[0].held_out_tasks else 1.0) for task in sizes}
    data = domain_dataset(sizes, regime)
    make, _ = recording_factory(SignRouter)
    grid = [{"sign": -1.0}, {"sign": 1.0}]
    result = leave_domains_out(make, data, 3, grid, Protocol(n_resamples=0, seed=0, inner_folds=2))
    assert result.folds[0].held_out_tasks == list(folds[0].held_out_tasks)
    assert result.folds[0].params == {"sign": 1.0}  # what the training domains support
    assert result.folds[0].inner_apgr[1] > result.folds[0].inner_apgr[0]
    # ... although peeking at the held-out domains would have picked -1:
    held_out = data.subset(folds[0].eval_indices)
    peeked, scores = select_params(make, held_out, grid, Protocol(inner_folds=2), seed=0)
    assert peeked == {"sign": -1.0} and scores[0] > scores[1]


# --- in-domain k-fold -------------------------------------------------------------------------------
def test_in_domain_folds_pools_every_query_with_every_domain_seen() -> None:
    data = domain_dataset(SIZES)
    make, built = recording_factory(SignRouter)
    result = in_domain_folds(make, data, 3, protocol=FAST)
    assert result.mode == "in_domain_folds" and result.n_queries == len(data) and result.n_folds == 3
    assert all(f.held_out_tasks == [] for f in result.folds)
    assert sum(f.n_eval for f in result.folds) == len(data)
    assert len(built) == 3 and all(r.fit_tasks == r.scored_tasks == set(SIZES) for r in built)


def test_select_params_with_query_folds_works_on_a_single_domain() -> None:
    data = domain_dataset({"algebra": 120}, regime={"algebra": -1.0})
    make, _ = recording_factory(SignRouter)
    grid = [{"sign": 1.0}, {"sign": -1.0}]
    with pytest.raises(ValueError, match="at least 2 task_name groups"):
        select_params(make, data, grid, Protocol(inner_folds=2), seed=0)  # group folds: one group
    params, scores = select_params(make, data, grid, Protocol(inner_folds=2), seed=0, folds=QUERY_FOLDS)
    assert params == {"sign": -1.0} and scores[1] > scores[0]
    # in_domain_folds chooses by inner query folds too, so a grid runs on one domain
    result = in_domain_folds(make, data, 3, grid, Protocol(n_resamples=0, inner_folds=2))
    assert result.chosen_params == [{"sign": -1.0}] * 3


# --- intervals --------------------------------------------------------------------------------------
def test_random_router_reports_its_expectation_exactly() -> None:
    data = domain_dataset(SIZES)
    make, _ = recording_factory(RandomRouter)
    for result in (leave_domains_out(make, data, 3, protocol=FAST),
                   in_domain(make, *data.split(0.3, seed=1), protocol=FAST)):
        assert result.expectation
        assert result.metrics["apgr"] == MetricInterval(value=0.5, low=0.5, high=0.5)
        for key, p in (("cpt_50", 0.5), ("cpt_80", 0.8), ("cpt_95", 0.95)):
            assert result.metrics[key] == MetricInterval(value=p, low=p, high=p)
        budget = result.metrics["quality_at_budget"]
        assert budget.contains(budget.value) and result.quality_small < budget.value < result.quality_large


def test_oracle_interval_contains_its_estimate_and_is_narrow_on_enough_data() -> None:
    # The large model is sometimes wrong where the small one is right: the oracle then beats it (APGR > 1).
    data = domain_dataset({f"subject_{k}": 400 for k in range(6)}, noise=0.2, large_accuracy=0.8)
    make, _ = recording_factory(OracleRouter)
    result = leave_domains_out(make, data, 3, protocol=FAST)
    assert not result.expectation and result.n_queries == 2400
    for key in ("apgr", "cpt_50", "cpt_80", "cpt_95", "quality_at_budget"):
        interval = result.metrics[key]
        assert interval.contains(interval.value), key
    assert result.metrics["apgr"].value > 1.0
    assert result.metrics["apgr"].width < 0.1
    assert result.metrics["quality_at_budget"].value == pytest.approx(result.quality_oracle)


def test_intervals_narrow_with_more_queries() -> None:
    make, _ = recording_factory(SignRouter)
    widths = []
    for per_domain in (30, 600):
        data = domain_dataset({f"subject_{k}": per_domain for k in range(4)}, noise=0.3)
        result = leave_domains_out(make, data, 2, protocol=FAST)
        widths.append(result.metrics["apgr"].width)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 20x the queries, about 4.5x narrower


def test_domain_resampling_draws_whole_domains_and_covers_their_spread() -> None:
    labels = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    sizes = Counter(labels)
    draws = list(cluster_resample_indices(labels, 50, seed=3))
    for indices in draws:
        per_domain = Counter(labels[i] for i in indices)
        assert all(n % sizes[domain] == 0 for domain, n in per_domain.items())  # a domain comes whole
        assert sum(n // sizes[domain] for domain, n in per_domain.items()) == len(sizes)  # 3 domains drawn
    assert len({tuple(sorted(Counter(labels[i] for i in d).items())) for d in draws}) > 1  # not always the same
    # where the router works on some domains and not on others, the domain interval is the wider one
    make, _ = recording_factory(SignRouter)
    data = domain_dataset({f"subject_{k}": 200 for k in range(6)}, noise=0.2,
                          regime={f"subject_{k}": 1.0 if k < 4 else -1.0 for k in range(6)})
    by_queries = leave_domains_out(make, data, 3, protocol=FAST)
    by_domains = leave_domains_out(make, data, 3, protocol=Protocol(n_resamples=200, seed=0, resample="domains"))
    assert by_domains.metrics["apgr"].value == pytest.approx(by_queries.metrics["apgr"].value)
    assert by_domains.metrics["apgr"].width > 2 * by_queries.metrics["apgr"].width
    assert by_domains.resample == "domains" and by_queries.resample == "queries"


def test_a_learned_router_runs_end_to_end_with_a_grid() -> None:
    data = domain_dataset(SIZES, noise=0.1)
    # Axis 0 of the test embedder carries the feature the small model's correctness depends on.
    embedder = AxisEmbedder({q: feature_of(q) for q in data.queries})

    def make(params: Mapping[str, Any]) -> Router:
        config = {"hidden_layer_sizes": [16], "max_iter": 100, **params}
        return HybridLLMRouter(config, data.llm_data).bind_engines(embedder=embedder)

    # An L2 penalty of 1e4 flattens the MLP to a constant: the inner folds must see that and reject it.
    grid = [{"alpha": 1e4}, {"alpha": 1.0}]
    result = leave_domains_out(make, data, 3, grid, Protocol(n_resamples=100, inner_folds=2))
    assert result.chosen_params == [{"alpha": 1.0}] * 3
    assert all(f.inner_apgr[1] > f.inner_apgr[0] for f in result.folds)
    apgr = result.metrics["apgr"]
    assert apgr.value > 0.6 and apgr.contains(apgr.value)
    assert result.fit_seconds > 0 and all(f.n_fit + f.n_eval == len(data) for f in result.folds)
    assert {t for f in result.folds for t in f.held_out_tasks} == set(task_groups(data))


# --- the CLI ------------------------------------------------------------------------------------------
def write_routing_file(path: Path, data: RoutingDataset) -> Path:
    lines = [json.dumps({"task_name": ex.task_name, "query": ex.query, "model_name": model,
                         "performance": outcome.performance, "token_num": outcome.token_num})
             for ex in data.examples for model, outcome in ex.outcomes.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def routing_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    train, test = domain_dataset(SIZES, noise=0.2).split(0.25, seed=3)
    llm_data = tmp_path / "llm.json"
    llm_data.write_text(json.dumps({name: c.model_dump(exclude={"name"})
                                    for name, c in two_candidates().items()}))
    train_file, test_file = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    return write_routing_file(train_file, train), write_routing_file(test_file, test), llm_data


def evaluate_argv(files: tuple[Path, Path, Path], *extra: str) -> list[str]:
    train, test, llm_data = files
    return ["evaluate", "--router", "random,oracle", "--train", str(train), "--test", str(test),
            "--llm-data", str(llm_data), "--quiet", *extra]


def test_cli_leave_domains_out_prints_intervals(capsys, routing_files) -> None:
    assert cli.main(evaluate_argv(routing_files, "--leave-domains-out", "3", "--bootstrap", "100")) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines()
            if line.split()[:2] in (["random", "unseen"], ["oracle", "unseen"])]
    assert len(rows) == 2 and all(len(INTERVAL.findall(row)) == 5 for row in rows)
    assert "0.500 [0.500, 0.500]" in rows[0] and "expectation" in out
    assert f"({sum(SIZES.values())} queries)" in out  # train and test merged before the domains are dealt


def test_cli_in_domain_folds_prints_intervals_next_to_leave_domains_out(capsys, routing_files) -> None:
    argv = evaluate_argv(routing_files, "--in-domain-folds", "3", "--leave-domains-out", "3", "--bootstrap", "100")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]) for line in out.splitlines() if INTERVAL.search(line)}
    assert rows == {(router, mode) for router in ("random", "oracle") for mode in ("seen-cv", "unseen")}
    assert f"seen-cv ({sum(SIZES.values())} queries)" in out  # the same train+test pool as unseen
    assert "seen-cv: random query folds" in out


def test_cli_in_domain_folds_json(capsys, routing_files) -> None:
    assert cli.main(evaluate_argv(routing_files, "--in-domain-folds", "2", "--bootstrap", "20", "--json")) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["mode"] for r in results] == ["in_domain_folds"] * 2
    assert all(r["n_queries"] == sum(SIZES.values()) and r["n_folds"] == 2 for r in results)
    assert all(f["held_out_tasks"] == [] for r in results for f in r["folds"])


def test_cli_json_and_in_domain_bootstrap(capsys, routing_files) -> None:
    assert cli.main(evaluate_argv(routing_files, "--bootstrap", "50", "--json")) == 0
    results = {r["router"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(results) == {"random", "oracle"}
    oracle = results["oracle"]
    assert oracle["mode"] == "in_domain" and oracle["n_folds"] == 1 and oracle["n_resamples"] == 50
    apgr = oracle["metrics"]["apgr"]
    assert apgr["low"] <= apgr["value"] <= apgr["high"]


def test_cli_rejects_what_does_not_combine_with_intervals(capsys, routing_files) -> None:
    assert cli.main(evaluate_argv(routing_files, "--leave-domains-out", "3", "--load", "oracle=x")) == 2
    assert "--load" in capsys.readouterr().err
    assert cli.main(evaluate_argv(routing_files, "--in-domain-folds", "3", "--load", "oracle=x")) == 2
    err = capsys.readouterr().err
    assert "--load" in err and "--in-domain-folds must fit per fold" in err
    with pytest.raises(SystemExit):
        cli.main(evaluate_argv(routing_files, "--in-domain-folds", "1"))
    with pytest.raises(SystemExit):
        cli.main(evaluate_argv(routing_files, "--leave-domains-out", "3", "--grid", "{\"alpha\": 1}"))
    with pytest.raises(SystemExit):
        cli.main(evaluate_argv(routing_files, "--leave-domains-out", "1"))
    # more folds than the pool has units of the fold kind: the option, the count and the unit named
    n_groups, n_queries = len(SIZES), sum(SIZES.values())
    assert cli.main(evaluate_argv(routing_files, "--leave-domains-out", str(n_groups + 1))) == 2
    err = capsys.readouterr().err
    assert f"--leave-domains-out {n_groups + 1}: the data has only {n_groups} task_name groups" in err
    assert cli.main(evaluate_argv(routing_files, "--in-domain-folds", str(n_queries + 1))) == 2
    assert f"--in-domain-folds {n_queries + 1}: the data has only {n_queries} queries" in capsys.readouterr().err


def test_cli_without_the_new_flags_keeps_the_plain_table(capsys, routing_files) -> None:
    assert cli.main(evaluate_argv(routing_files)) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and not INTERVAL.search(out)


# --- the plot -----------------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000


def test_results_keep_the_pooled_curve_out_of_their_dumps() -> None:
    data = domain_dataset(SIZES)
    sign, _ = recording_factory(SignRouter)
    coin, _ = recording_factory(RandomRouter)
    learned, random_ = (leave_domains_out(make, data, 3, protocol=FAST) for make in (sign, coin))
    assert learned.curve is not None and learned.curve.large_share[[0, -1]].tolist() == [0.0, 1.0]
    assert "curve" not in learned.model_dump() and "curve" not in learned.model_dump_json()
    # The random router's curve is its expectation, the straight line from small alone to large alone.
    assert random_.curve is not None
    assert np.allclose(np.diff(random_.curve.quality, 2), 0.0)
    assert random_.curve.quality[[0, -1]].tolist() == pytest.approx([random_.quality_small,
                                                                      random_.quality_large])
    assert learned == learned.model_copy() and learned != random_  # == compares curves by value


def test_plot_generalisation_draws_a_panel_per_mode(tmp_path: Path) -> None:
    from routers.evaluation.plot import generalisation_panels, plot_generalisation

    data = domain_dataset(SIZES, noise=0.2)
    train, test = data.split(0.3, seed=1)
    results = []
    for cls in (SignRouter, RandomRouter, OracleRouter):
        make, _ = recording_factory(cls)
        results += [in_domain(make, train, test, protocol=FAST), leave_domains_out(make, data, 3, protocol=FAST)]
    panels = generalisation_panels(results)
    assert [[r.mode for r in panel] for panel in panels] == [["in_domain"] * 3, ["leave_domains_out"] * 3]
    assert_png(plot_generalisation(results, tmp_path / "out" / "both.png"))
    # A third mode gets its own panel, between the two; given last, it is still drawn in the middle.
    make, _ = recording_factory(SignRouter)
    results.append(in_domain_folds(make, data, 3, protocol=FAST))
    panels = generalisation_panels(results)
    assert [panel[0].mode for panel in panels] == ["in_domain", "in_domain_folds", "leave_domains_out"]
    assert_png(plot_generalisation(results, tmp_path / "out" / "three.png"))


def test_cli_leave_domains_out_writes_a_plot(capsys, routing_files, tmp_path: Path) -> None:
    plot = tmp_path / "x.png"
    argv = evaluate_argv(routing_files, "--leave-domains-out", "2", "--bootstrap", "50", "--plot", str(plot))
    assert cli.main(argv) == 0
    assert_png(plot)
    assert "oracle" in capsys.readouterr().out  # the table is still printed
