"""Does a router generalise to domains it never saw? Leave-domains-out evaluation with bootstrap intervals.

The shipped test split draws its MMLU subjects from the same pool as train, so its figures say how a
router does on *seen* domains. Here the domains (``task_name``: each MMLU subject, GSM8K) are the unit:

* **Folds** (``group_folds``): the task names are dealt into k folds, largest first, each to the fold
  with the fewest queries so far (ties: the lower fold), after a seeded shuffle so equal-sized domains
  land by seed, not by name. Deterministic for a seed; no domain is in two folds.
* **Outer loop** (``leave_domains_out``): for each fold, the router is fitted on the other folds and
  scores the held-out fold's queries once.
* **Hyperparameters** (``select_params``): an optional grid of param dicts is scored by an inner group
  k-fold over the *training folds' domains only* (pooled out-of-fold APGR); the best point (ties: the
  earlier) is refitted on all training folds. The outer fold is never looked at to choose anything.
* **Figures**: every fold's out-of-fold scores and decisions are pooled into one prediction set and the
  metrics of ``routers.evaluation.metrics`` (APGR, CPT(50/80/95%), quality at the cost budget) are
  computed on it, with percentile bootstrap intervals over the queries (``routers.evaluation.bootstrap``).
  Pooling puts the scores of k fitted routers on one curve; for routers whose scores mean the same thing
  across fits (probabilities, performance gaps) that is the curve a deployed router would trace.
* **The random router** has a known expectation: APGR 0.5 and CPT(p) = p exactly (any seeded draw is
  noise around them), and quality at budget from the straight random-mix line; those are reported.

Two in-domain modes give the figure to compare against:

* ``in_domain`` runs the same summary on a given train -> test split (as precise as the test split is big).
* ``in_domain_folds`` runs the pooled machinery above on random folds over *queries*, stratified by domain
  (``query_folds``: each domain's queries shuffled and dealt round-robin), so every fold's domains are also
  in its training part. Its figure covers the whole pool, as the unseen one does, so the two differ in
  whether the domains were seen, not in how many queries back them. Its grid is chosen by inner query
  folds (an in-domain choice for an in-domain figure).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routers.base import Router
from routers.baselines import RandomRouter
from routers.data import QueryExample, RoutingDataset
from routers.evaluation.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    MetricInterval,
    bootstrap_metrics,
)
from routers.evaluation.metrics import (
    DEFAULT_BUDGET_FRACTION,
    CostModel,
    Curve,
    evaluate_scores,
    quality_at_budget,
)

#: domain of a query whose record has no task_name
UNLABELLED_TASK = "(no task_name)"
CPT_TARGETS: dict[str, float] = {"cpt_50": 0.5, "cpt_80": 0.8, "cpt_95": 0.95}
METRICS: tuple[str, ...] = ("apgr", *CPT_TARGETS, "quality_at_budget")
DEFAULT_INNER_FOLDS = 3

#: params (one grid point, {} without a grid) -> a new, unfitted router with its engines bound
RouterFactory = Callable[[Mapping[str, Any]], Router]
Mode = Literal["in_domain", "in_domain_folds", "leave_domains_out"]


# --- folds -----------------------------------------------------------------------------------------
def task_of(example: QueryExample) -> str:
    return example.task_name or UNLABELLED_TASK


def task_groups(data: RoutingDataset) -> dict[str, list[int]]:
    """Query indices of each domain, domains in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(data.examples):
        groups.setdefault(task_of(example), []).append(i)
    return groups


@dataclass(frozen=True)
class Fold:
    """One outer (or inner) split: fit on ``fit_indices``, evaluate on ``eval_indices``: the held-out
    domains' queries (``group_folds``), or a stratified share of every domain's (``query_folds``, which
    holds out no domain: ``held_out_tasks`` is empty)."""

    index: int
    held_out_tasks: tuple[str, ...]
    fit_indices: tuple[int, ...]
    eval_indices: tuple[int, ...]


def group_folds(data: RoutingDataset, n_folds: int, seed: int = 0) -> list[Fold]:
    """Deal the domains into ``n_folds`` folds of about equal query counts (module docstring)."""
    groups = task_groups(data)
    if n_folds < 2:
        raise ValueError("leave-domains-out needs at least 2 folds")
    if n_folds > len(groups):
        raise ValueError(f"{n_folds} folds but the data has only {len(groups)} task_name groups")
    names = list(groups)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda name: len(groups[name]), reverse=True)  # stable: equal sizes keep the shuffle
    members: list[list[str]] = [[] for _ in range(n_folds)]
    sizes = [0] * n_folds
    for name in names:
        smallest = min(range(n_folds), key=lambda k: (sizes[k], k))
        members[smallest].append(name)
        sizes[smallest] += len(groups[name])
    folds = []
    for k, tasks in enumerate(members):
        held_out = set(tasks)
        eval_indices = sorted(i for name in tasks for i in groups[name])
        fit_indices = sorted(i for name, idx in groups.items() if name not in held_out for i in idx)
        folds.append(Fold(k, tuple(sorted(tasks)), tuple(fit_indices), tuple(eval_indices)))
    return folds


def query_folds(data: RoutingDataset, n_folds: int, seed: int = 0) -> list[Fold]:
    """Random query folds stratified by domain: each domain's queries are shuffled (one seeded RNG, domains
    in ``task_groups`` order) and dealt round-robin, the deal continuing across domains. A domain of at
    least ``n_folds`` queries is thus in every fold, fit and eval alike, and fold sizes differ by <= 1."""
    if n_folds < 2:
        raise ValueError("k-fold needs at least 2 folds")
    if n_folds > len(data):
        raise ValueError(f"{n_folds} folds but the data has only {len(data)} queries")
    rng = random.Random(seed)
    members: list[list[int]] = [[] for _ in range(n_folds)]
    dealt = 0
    for indices in task_groups(data).values():
        shuffled = list(indices)
        rng.shuffle(shuffled)
        for i in shuffled:
            members[dealt % n_folds].append(i)
            dealt += 1
    folds = []
    for k, picked in enumerate(members):
        held_out = set(picked)
        fit_indices = tuple(i for i in range(len(data)) if i not in held_out)
        folds.append(Fold(k, (), fit_indices, tuple(sorted(picked))))
    return folds


@dataclass(frozen=True)
class FoldKind:
    """One way of dealing a dataset into k folds: what it deals (``unit``, for messages), how many of those
    a dataset has (so an inner k-fold can shrink k to fit the training data), and the deal itself."""

    unit: str
    count: Callable[[RoutingDataset], int]
    deal: Callable[[RoutingDataset, int, int], list[Fold]]


#: domains held out together: for an unseen-domain figure
DOMAIN_FOLDS = FoldKind("task_name groups", lambda data: len(task_groups(data)), group_folds)
#: random queries, every domain in every fold: for an in-domain figure
QUERY_FOLDS = FoldKind("queries", len, query_folds)


# --- predictions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """What a router did on evaluation queries: everything the metrics need, resamplable by query."""

    scores: np.ndarray
    use_large: np.ndarray
    small: np.ndarray
    large: np.ndarray
    cost_small: np.ndarray
    cost_large: np.ndarray
    overhead: np.ndarray
    cascade: bool
    #: each query's domain (``task_name``), for intervals that resample domains
    tasks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def cost_model(self) -> CostModel:
        return CostModel(small=self.cost_small, large=self.cost_large, overhead=self.overhead,
                         cascade=self.cascade)

    def take(self, indices: np.ndarray) -> Predictions:
        return Predictions(self.scores[indices], self.use_large[indices], self.small[indices],
                           self.large[indices], self.cost_small[indices], self.cost_large[indices],
                           self.overhead[indices], self.cascade, self.tasks[indices])

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        if not parts:
            raise ValueError("no predictions to pool")
        if len({part.cascade for part in parts}) > 1:
            raise ValueError("cannot pool predictions of cascading and non-cascading cost models")
        arrays = {name: np.concatenate([getattr(part, name) for part in parts]) for name in
                  ("scores", "use_large", "small", "large", "cost_small", "cost_large", "overhead", "tasks")}
        return cls(**arrays, cascade=parts[0].cascade)


def predict(router: Router, data: RoutingDataset) -> Predictions:
    """A fitted router's scores and decisions on ``data``, as ``evaluate_router`` scores them: only queries
    with both models' outcomes, the router's own decisions where they are not a threshold on the score."""
    pair = router.require_pair()
    complete = data.complete_for([pair.small, pair.large])
    matrix = complete.performance_matrix([pair.small, pair.large])
    scores = np.asarray(router.dataset_scores(complete), dtype=np.float64)
    decisions = router.dataset_decisions(complete)
    use_large = scores < router.threshold if decisions is None else np.asarray(decisions, dtype=bool)
    costs = router.cost_model(complete)
    overhead = np.broadcast_to(np.asarray(costs.overhead, dtype=np.float64), scores.shape).copy()
    return Predictions(scores, use_large, matrix[:, 0], matrix[:, 1],
                       np.asarray(costs.small, dtype=np.float64), np.asarray(costs.large, dtype=np.float64),
                       overhead, costs.cascade, np.asarray([task_of(e) for e in complete.examples], dtype=object))


# --- metrics of one prediction set -----------------------------------------------------------------
MetricValues = dict[str, float | None]


def curve_metrics(predictions: Predictions, budget_fraction: float = DEFAULT_BUDGET_FRACTION) -> MetricValues:
    report, _ = evaluate_scores("pooled", predictions.scores, None, predictions.small, predictions.large,
                                predictions.cost_model(), use_large=predictions.use_large,
                                budget_fraction=budget_fraction)
    return {"apgr": report.apgr, "cpt_50": report.cpt_50, "cpt_80": report.cpt_80, "cpt_95": report.cpt_95,
            "quality_at_budget": report.quality_at_budget}


def random_mix_curve(predictions: Predictions) -> Curve:
    """The random router's expected curve: sending k of n queries to the large model at random buys, in
    expectation, k/n of the quality and of the cost gap (the straight line from all-small to all-large)."""
    n = len(predictions)
    costs = predictions.cost_model()
    c_small = float(costs.per_query(np.zeros(n, dtype=bool)).mean())
    c_large = float(costs.per_query(np.ones(n, dtype=bool)).mean())
    share = np.linspace(0.0, 1.0, n + 1)
    quality = np.linspace(predictions.small.mean(), predictions.large.mean(), n + 1)
    cost = np.linspace(c_small, c_large, n + 1)
    return Curve(large_share=share, quality=quality, cost=cost, thresholds=share)


def random_router_metrics(predictions: Predictions,
                          budget_fraction: float = DEFAULT_BUDGET_FRACTION) -> MetricValues:
    """Expectations, not a seeded draw: APGR 0.5 and CPT(p) = p by definition of PGR; quality at budget
    from the random-mix line (it still depends on which queries were drawn, hence its interval)."""
    curve = random_mix_curve(predictions)
    budget = budget_fraction * float(curve.cost[-1])
    return {"apgr": 0.5, **CPT_TARGETS, "quality_at_budget": quality_at_budget(curve, budget)}


def metrics_for(router: Router) -> Callable[[Predictions, float], MetricValues]:
    return random_router_metrics if isinstance(router, RandomRouter) else curve_metrics


def pooled_curve(router: Router, predictions: Predictions) -> Curve:
    """The curve the point figures were read from (for plots): the random router's is its expectation."""
    if isinstance(router, RandomRouter):
        return random_mix_curve(predictions)
    _, curve = evaluate_scores("pooled", predictions.scores, None, predictions.small, predictions.large,
                               predictions.cost_model(), use_large=predictions.use_large)
    return curve


def same_curve(a: Curve | None, b: Curve | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(getattr(a, name), getattr(b, name))
               for name in ("large_share", "quality", "cost", "thresholds"))


# --- results ---------------------------------------------------------------------------------------
class FoldRecord(BaseModel):
    """One outer fit: which domains it held out, the params chosen without them, and the time it took."""

    model_config = ConfigDict(frozen=True)

    index: int
    held_out_tasks: list[str]
    n_fit: int
    n_eval: int
    params: dict[str, Any]
    inner_apgr: list[float] = []  # pooled inner-fold APGR of each grid point, in grid order
    tune_seconds: float = 0.0
    fit_seconds: float
    eval_seconds: float


class GeneralisationResult(BaseModel):
    """One router's figures with bootstrap intervals, in-domain or on held-out domains."""

    # arbitrary types: ``curve`` holds numpy arrays
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    router: str
    mode: Mode
    metrics: dict[str, MetricInterval]
    n_queries: int
    n_folds: int
    n_resamples: int
    confidence: float
    #: what the intervals resampled (``Protocol.resample``)
    resample: Literal["queries", "domains"] = "queries"
    #: True for the random router: APGR and CPT are its expectation (exact), not one draw
    expectation: bool
    quality_small: float
    quality_large: float
    quality_oracle: float
    budget_fraction: float
    folds: list[FoldRecord]
    fit_seconds: float
    eval_seconds: float
    #: the pooled predictions' cost-quality curve, for plots; left out of dumps (n + 1 points per router)
    curve: Curve | None = Field(default=None, exclude=True, repr=False)

    @property
    def chosen_params(self) -> list[dict[str, Any]]:
        return [fold.params for fold in self.folds]

    def __eq__(self, other: object) -> bool:
        # pydantic's == would compare the curves' arrays with numpy's elementwise ==, which raises
        if not isinstance(other, GeneralisationResult):
            return NotImplemented
        return self.model_dump() == other.model_dump() and same_curve(self.curve, other.curve)

    __hash__ = None  # type: ignore[assignment]  # dict fields: never hashable


@dataclass(frozen=True)
class Protocol:
    """How figures are computed: shared by every router of one comparison."""

    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    budget_fraction: float = DEFAULT_BUDGET_FRACTION
    confidence: float = DEFAULT_CONFIDENCE
    inner_folds: int = DEFAULT_INNER_FOLDS
    #: what the intervals resample: queries, or domains (``task_name``) and then queries within them
    resample: Literal["queries", "domains"] = "queries"


def summarise(router: Router, mode: Mode, predictions: Predictions, folds: list[FoldRecord],
              protocol: Protocol) -> GeneralisationResult:
    metric_fn = metrics_for(router)
    intervals = bootstrap_metrics(predictions, Predictions.take,
                                  lambda sample: metric_fn(sample, protocol.budget_fraction),
                                  len(predictions), protocol.n_resamples, protocol.seed, protocol.confidence,
                                  clusters=list(predictions.tasks) if protocol.resample == "domains" else None)
    return GeneralisationResult(
        router=router.name, mode=mode, metrics=intervals, n_queries=len(predictions), n_folds=len(folds),
        n_resamples=protocol.n_resamples, confidence=protocol.confidence, resample=protocol.resample,
        expectation=isinstance(router, RandomRouter),
        quality_small=float(predictions.small.mean()), quality_large=float(predictions.large.mean()),
        quality_oracle=float(np.maximum(predictions.small, predictions.large).mean()),
        budget_fraction=protocol.budget_fraction, folds=folds,
        fit_seconds=round(sum(f.tune_seconds + f.fit_seconds for f in folds), 3),
        eval_seconds=round(sum(f.eval_seconds for f in folds), 3),
        curve=pooled_curve(router, predictions),
    )


# --- fitting and choosing params -------------------------------------------------------------------
@dataclass(frozen=True)
class FitOutcome:
    router: Router
    predictions: Predictions
    fit_seconds: float
    eval_seconds: float


def fit_and_predict(make_router: RouterFactory, params: Mapping[str, Any], fit_data: RoutingDataset,
                    eval_data: RoutingDataset) -> FitOutcome:
    router = make_router(params)
    started = time.perf_counter()
    router.fit(fit_data)
    fitted = time.perf_counter()
    predictions = predict(router, eval_data)
    return FitOutcome(router, predictions, fitted - started, time.perf_counter() - fitted)


def out_of_fold(make_router: RouterFactory, params: Mapping[str, Any], data: RoutingDataset,
                folds: Sequence[Fold]) -> Predictions:
    return Predictions.concatenate([
        fit_and_predict(make_router, params, data.subset(fold.fit_indices),
                        data.subset(fold.eval_indices)).predictions
        for fold in folds
    ])


def inner_apgr(predictions: Predictions, protocol: Protocol) -> float:
    apgr = curve_metrics(predictions, protocol.budget_fraction)["apgr"]
    assert apgr is not None  # evaluate_scores always gives an APGR
    return float(apgr)


def select_params(make_router: RouterFactory, train: RoutingDataset, grid: Sequence[Mapping[str, Any]] | None,
                  protocol: Protocol, seed: int,
                  folds: FoldKind = DOMAIN_FOLDS) -> tuple[dict[str, Any], list[float]]:
    """The grid point with the best pooled APGR over an inner k-fold of ``train`` (ties: the earlier
    point), and every point's APGR. The inner folds should match the figure being tuned for:
    ``DOMAIN_FOLDS`` over ``train``'s domains (the default) for an unseen-domain figure, ``QUERY_FOLDS``
    for an in-domain one. Only ``train`` is read: the caller's held-out fold is not in it. No grid, or one point: that
    point, unscored."""
    if not grid:
        return {}, []
    if len(grid) == 1:
        return dict(grid[0]), []
    available = folds.count(train)
    if available < 2:
        raise ValueError(f"choosing among grid points needs at least 2 {folds.unit} in the training data")
    inner = folds.deal(train, min(protocol.inner_folds, available), seed)
    scores = [inner_apgr(out_of_fold(make_router, params, train, inner), protocol) for params in grid]
    return dict(grid[int(np.argmax(scores))]), scores


# --- the modes -------------------------------------------------------------------------------------
def _pooled_folds(make_router: RouterFactory, data: RoutingDataset, folds: Sequence[Fold], mode: Mode,
                  grid: Sequence[Mapping[str, Any]] | None, protocol: Protocol,
                  inner_folds: FoldKind) -> GeneralisationResult:
    """Fit per fold (choosing the grid by ``inner_folds`` over that fold's training part only), score
    its eval queries once, and summarise the pooled out-of-fold predictions: the one loop behind both
    k-fold modes, which differ only in the folds."""
    records: list[FoldRecord] = []
    parts: list[Predictions] = []
    router: Router | None = None
    for fold in folds:
        fit_data = data.subset(fold.fit_indices)
        tuning_started = time.perf_counter()
        # A different inner seed per fold, so inner splits are not one fixed pattern across folds.
        inner_seed = protocol.seed + 1 + fold.index
        params, grid_apgr = select_params(make_router, fit_data, grid, protocol, inner_seed, inner_folds)
        tune_seconds = time.perf_counter() - tuning_started
        outcome = fit_and_predict(make_router, params, fit_data, data.subset(fold.eval_indices))
        router = outcome.router
        parts.append(outcome.predictions)
        records.append(FoldRecord(
            index=fold.index, held_out_tasks=list(fold.held_out_tasks), n_fit=len(fold.fit_indices),
            n_eval=len(outcome.predictions), params=params, inner_apgr=grid_apgr,
            tune_seconds=round(tune_seconds, 3), fit_seconds=round(outcome.fit_seconds, 3),
            eval_seconds=round(outcome.eval_seconds, 3)))
    if router is None:
        raise ValueError("no folds to evaluate")
    return summarise(router, mode, Predictions.concatenate(parts), records, protocol)


def leave_domains_out(make_router: RouterFactory, data: RoutingDataset, n_folds: int,
                      grid: Sequence[Mapping[str, Any]] | None = None,
                      protocol: Protocol = Protocol()) -> GeneralisationResult:
    """Pooled held-out-domain figures of the router ``make_router`` builds (module docstring)."""
    return _pooled_folds(make_router, data, group_folds(data, n_folds, protocol.seed), "leave_domains_out",
                         grid, protocol, DOMAIN_FOLDS)


def in_domain_folds(make_router: RouterFactory, data: RoutingDataset, n_folds: int,
                    grid: Sequence[Mapping[str, Any]] | None = None,
                    protocol: Protocol = Protocol()) -> GeneralisationResult:
    """Pooled in-domain figures over all of ``data``: ``leave_domains_out``'s loop on ``query_folds``, so
    the two figures rest on the same queries and differ only in whether each fold's domains were seen."""
    return _pooled_folds(make_router, data, query_folds(data, n_folds, protocol.seed), "in_domain_folds",
                         grid, protocol, QUERY_FOLDS)


def evaluate_fitted(router: Router, test: RoutingDataset, protocol: Protocol = Protocol(),
                    params: Mapping[str, Any] | None = None, n_fit: int = 0, fit_seconds: float = 0.0,
                    tune_seconds: float = 0.0, grid_apgr: Sequence[float] = ()) -> GeneralisationResult:
    """In-domain figures of an already fitted router on ``test`` (``llmrouter evaluate --bootstrap``)."""
    started = time.perf_counter()
    predictions = predict(router, test)
    record = FoldRecord(index=0, held_out_tasks=[], n_fit=n_fit, n_eval=len(predictions),
                        params=dict(params or {}), inner_apgr=list(grid_apgr),
                        tune_seconds=round(tune_seconds, 3), fit_seconds=round(fit_seconds, 3),
                        eval_seconds=round(time.perf_counter() - started, 3))
    return summarise(router, "in_domain", predictions, [record], protocol)


def in_domain(make_router: RouterFactory, train: RoutingDataset, test: RoutingDataset,
              grid: Sequence[Mapping[str, Any]] | None = None,
              protocol: Protocol = Protocol()) -> GeneralisationResult:
    """Fit on ``train``, evaluate on ``test``. A grid is chosen as in ``leave_domains_out`` (inner group
    k-fold over ``train``), so the two modes differ only in whether the test domains were seen."""
    started = time.perf_counter()
    params, grid_apgr = select_params(make_router, train, grid, protocol, protocol.seed + 1)
    tune_seconds = time.perf_counter() - started
    router = make_router(params)
    started = time.perf_counter()
    router.fit(train)
    fit_seconds = time.perf_counter() - started
    return evaluate_fitted(router, test, protocol, params, len(train), fit_seconds, tune_seconds, grid_apgr)
