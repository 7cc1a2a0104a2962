"""Cost-quality metrics of two-model routers.

Notation, for a test set of n queries: ``s_i`` / ``l_i`` are the small / large model's performance on
query i, ``z_i`` the router's small-suitability score. At threshold t the router sends query i to the
large model iff ``z_i < t``.

* **Curve**: sorting queries by score ascending and sending the k lowest-scored ones to the large model,
  k = 0..n, traces every operating point a threshold can reach: x_k = k/n is the *large-model call share*
  and y_k the mean performance. Equal scores are moved together (a threshold cannot split them).
* **AUC**: area under that curve over x in [0, 1] (trapezoid rule); quality units, so between
  min(mean s, mean l) and 1.
* **PGR(x)** (performance gap recovered, RouteLLM): ``(y(x) - mean s) / (mean l - mean s)``.
* **APGR**: the area under PGR(x) over x in [0, 1]; the normalised AUC. A router that picks queries at
  random scores 0.5 in expectation, an oracle close to 1.
* **CPT(p)** (call-performance threshold, RouteLLM): the smallest large-model call share at which the
  router recovers a fraction p of the gap; linear between curve points.
* **Quality at a cost budget**: the best y over curve points whose mean cost per query is within the
  budget B. Reports use B = ``budget_fraction`` x the mean cost per query of sending everything to the
  large model (``DEFAULT_BUDGET_FRACTION`` = 0.5: "the best quality for half the always-large bill");
  None when even the cheapest point costs more than B.
* **IBC** (incremental benefit per cost, AutoMix): ``(y - mean s) / (C - C_s)`` for a router that spends
  mean cost C per query where the small model alone spends C_s. **ΔIBC** is the percentage lift of a
  router's IBC over the straight line from small to large: ``100 * (IBC - IBC_base) / IBC_base`` with
  ``IBC_base = (mean l - mean s) / (C_l - C_s)``. Positive means the router buys quality more cheaply
  than mixing the two models at random.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: reports' cost budget for ``quality_at_budget``, as a fraction of the always-large cost per query
DEFAULT_BUDGET_FRACTION = 0.5


@dataclass(frozen=True)
class CostModel:
    """Per-query costs of the small path and of escalating to the large model.

    ``overhead`` is paid on every query on top of the small model (AutoMix's verifier). ``cascade``
    means an escalated query pays for the small model too (AutoMix answers with the small model first);
    a router that decides before answering (Hybrid) pays only the model it picks.
    """

    small: np.ndarray
    large: np.ndarray
    overhead: float | np.ndarray = 0.0
    cascade: bool = False

    def per_query(self, use_large: np.ndarray) -> np.ndarray:
        small_path = self.small + self.overhead
        large_path = self.large + (small_path if self.cascade else 0.0)
        return np.where(use_large, large_path, small_path)


@dataclass
class Curve:
    large_share: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    thresholds: np.ndarray  # threshold that reaches each point (score of the first query kept small)


@dataclass
class Report:
    router: str
    n_test: int
    auc: float
    apgr: float
    cpt_50: float | None
    cpt_80: float | None
    cpt_95: float | None
    large_share: float
    quality: float
    cost: float
    pgr: float
    threshold: float | None
    quality_small: float
    quality_large: float
    quality_oracle: float
    cost_small: float
    cost_large: float
    ibc: float | None
    delta_ibc: float | None
    budget_fraction: float | None = None
    budget: float | None = None
    quality_at_budget: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out


def cut_points(sorted_scores: np.ndarray) -> np.ndarray:
    """How many of the lowest-scored queries a threshold can send large: 0, n, and every place the sorted
    scores change (a threshold cannot separate equal scores)."""
    n = len(sorted_scores)
    return np.concatenate([[0], np.nonzero(np.diff(sorted_scores))[0] + 1, [n]])


def threshold_at_cut(sorted_scores: np.ndarray, k: int) -> float:
    """The threshold that sends exactly the ``k`` lowest of ``sorted_scores`` large (``score < threshold``)."""
    return float(sorted_scores[k]) if k < len(sorted_scores) else float(np.nextafter(sorted_scores[-1], np.inf))


def cost_quality_curve(scores: np.ndarray, small: np.ndarray, large: np.ndarray, costs: CostModel) -> Curve:
    """Every operating point a threshold can reach (see module docstring)."""
    scores, small, large = (np.asarray(a, dtype=np.float64) for a in (scores, small, large))
    n = len(scores)
    if n == 0:
        raise ValueError("cannot evaluate on an empty test set")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    gain = (large - small)[order]
    small_cost = (costs.small + costs.overhead) * np.ones(n)
    large_cost = costs.per_query(np.ones(n, dtype=bool))
    extra_cost = (large_cost - small_cost)[order]
    cuts = cut_points(sorted_scores)
    cumulative_gain = np.concatenate([[0.0], np.cumsum(gain)])
    cumulative_cost = np.concatenate([[0.0], np.cumsum(extra_cost)])
    base_quality, base_cost = small.mean(), small_cost.mean()
    thresholds = np.array([threshold_at_cut(sorted_scores, int(k)) for k in cuts])
    return Curve(
        large_share=cuts / n,
        quality=base_quality + cumulative_gain[cuts] / n,
        cost=base_cost + cumulative_cost[cuts] / n,
        thresholds=thresholds,
    )


def area_under(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def pgr(quality: np.ndarray | float, q_small: float, q_large: float) -> np.ndarray | float:
    gap = q_large - q_small
    if abs(gap) < 1e-12:
        return np.zeros_like(quality) if isinstance(quality, np.ndarray) else 0.0
    return (quality - q_small) / gap


def apgr(curve: Curve, q_small: float, q_large: float) -> float:
    return area_under(curve.large_share, np.asarray(pgr(curve.quality, q_small, q_large)))


def cpt(curve: Curve, target: float, q_small: float, q_large: float) -> float | None:
    """Smallest large-call share recovering ``target`` of the gap; None if never reached."""
    recovered = np.asarray(pgr(curve.quality, q_small, q_large))
    hits = np.nonzero(recovered >= target - 1e-12)[0]
    if len(hits) == 0:
        return None
    k = int(hits[0])
    if k == 0:
        return float(curve.large_share[0])
    x0, x1, y0, y1 = curve.large_share[k - 1], curve.large_share[k], recovered[k - 1], recovered[k]
    if y1 <= y0:
        return float(x1)
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def quality_at_budget(curve: Curve, budget: float) -> float | None:
    """Best mean quality among the curve's operating points costing at most ``budget`` per query (mean
    cost, in the curve's cost units); None when no point is that cheap."""
    ok = curve.cost <= budget + 1e-15
    return float(curve.quality[ok].max()) if ok.any() else None


def ibc(quality: float, cost: float, q_small: float, c_small: float) -> float | None:
    if abs(cost - c_small) < 1e-15:
        return None
    return (quality - q_small) / (cost - c_small)


def delta_ibc(router_ibc: float | None, q_small: float, q_large: float, c_small: float, c_large: float) -> float | None:
    base = ibc(q_large, c_large, q_small, c_small)
    if router_ibc is None or base is None or abs(base) < 1e-15:
        return None
    return 100.0 * (router_ibc - base) / base


def evaluate_scores(
    router: str,
    scores: np.ndarray,
    threshold: float | None,
    small: np.ndarray,
    large: np.ndarray,
    costs: CostModel,
    use_large: np.ndarray | None = None,
    budget_fraction: float = DEFAULT_BUDGET_FRACTION,
) -> tuple[Report, Curve]:
    """Full report for one router: the curve's summary plus the operating point at ``threshold``.

    ``use_large`` overrides the threshold rule for routers whose decision is not a threshold on the
    score (a generated model name); the curve still comes from the scores. ``budget_fraction`` sets the
    budget of ``quality_at_budget``: that fraction of the always-large mean cost per query.
    """
    if budget_fraction < 0:
        raise ValueError("budget_fraction must be >= 0")
    small, large = np.asarray(small, dtype=np.float64), np.asarray(large, dtype=np.float64)
    curve = cost_quality_curve(scores, small, large, costs)
    q_small, q_large = float(small.mean()), float(large.mean())
    if use_large is None:
        if threshold is None:
            raise ValueError("need a threshold or explicit decisions for the operating point")
        use_large = np.asarray(scores) < threshold
    use_large = np.asarray(use_large, dtype=bool)
    quality = float(np.where(use_large, large, small).mean())
    cost = float(costs.per_query(use_large).mean())
    c_small = float(costs.per_query(np.zeros(len(small), dtype=bool)).mean())
    c_large = float(costs.per_query(np.ones(len(small), dtype=bool)).mean())
    router_ibc = ibc(quality, cost, q_small, c_small)
    report = Report(
        router=router,
        n_test=len(small),
        auc=area_under(curve.large_share, curve.quality),
        apgr=apgr(curve, q_small, q_large),
        cpt_50=cpt(curve, 0.5, q_small, q_large),
        cpt_80=cpt(curve, 0.8, q_small, q_large),
        cpt_95=cpt(curve, 0.95, q_small, q_large),
        large_share=float(use_large.mean()),
        quality=quality,
        cost=cost,
        pgr=float(pgr(quality, q_small, q_large)),
        threshold=None if threshold is None else float(threshold),
        quality_small=q_small,
        quality_large=q_large,
        quality_oracle=float(np.maximum(small, large).mean()),
        cost_small=c_small,
        cost_large=c_large,
        ibc=router_ibc,
        delta_ibc=delta_ibc(router_ibc, q_small, q_large, c_small, c_large),
        budget_fraction=budget_fraction,
        budget=budget_fraction * c_large,
        quality_at_budget=quality_at_budget(curve, budget_fraction * c_large),
    )
    return report, curve
