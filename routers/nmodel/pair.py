"""Two models as the special case of the N-model contract: today's two-model routers, read as predicting each
candidate's quality, decide exactly as they always have.

A two-model router scores each query with s, how likely the small model's answer is as good as the large
one's. Taking the large model as the reference, that is each candidate's expected quality: (s, 1). Every
rule then becomes one threshold per query, and the choice is the two-model rule (small iff s >= threshold),
so a rule that names a threshold decides as ``Router.aroute_many`` always has:

* ``T`` (a bare number: ``router-X:T``), ``default`` (the artifact's threshold), ``share=S`` (from the
  artifact's reference scores), ``quality=R`` (from its quality calibration), and RouteLLM's
  ``router-<name>-<theta>`` (:func:`routellm_threshold`);
* ``cost=L``, the N-model rule, on (s, 1) and each call's USD cost: small iff
  ``s - L c_small >= 1 - L c_large``, that is iff s >= 1 - L (c_large - c_small);
* ``budget=USD``: the large model (quality 1 >= s) whenever its call fits the budget, else the small one
  (its threshold is -inf: no score keeps it from the small model).

Because each rule is a threshold per query, a defended embedding router still embeds a query's halves only
where they can change the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from routers.base import CandidateEstimate, RouteDecision, Router
from routers.engines import Engines
from routers.errors import ConfigError
from routers.evaluation.calibrate import threshold_for_large_share
from routers.registry import router_entry
from routers.selection import BudgetRule, CostRule, DefaultRule, QualityRule, ShareRule, parse_rule
from routers.strict import StrictModel

#: the predicted quality of the reference (large) model: s is the small model's against it
REFERENCE_QUALITY = 1.0


class ThresholdRule(StrictModel):
    """``router-X:T``: small iff the score reaches T (the two-model rule itself)."""

    kind: Literal["threshold"] = "threshold"
    value: float

    def text(self) -> str:
        return f"{self.value:g}"


PairRule = DefaultRule | CostRule | QualityRule | BudgetRule | ShareRule | ThresholdRule


def parse_pair_rule(text: str | None) -> PairRule:
    """A bare number is a threshold; anything else is an N-model rule (``routers.selection.parse_rule``)."""
    if text is not None:
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            if not np.isfinite(value):
                raise ConfigError(f"threshold {text!r} must be finite")
            return ThresholdRule(value=value)
    return parse_rule(text)


def routellm_threshold(kind: str, theta: float) -> float:
    """Our threshold for RouteLLM's ``router-<name>-<theta>``: RouteLLM sends the strong model iff its
    strong-win rate 1 - s is >= theta, that is large iff s <= 1 - theta; ours sends large iff s < threshold,
    so the threshold is the next float above 1 - theta. RouteLLM's random router draws its win rate
    uniformly, so theta sends 1 - theta of the queries large: our random router's threshold."""
    return 1.0 - theta if kind == "random" else float(np.nextafter(1.0 - theta, np.inf))


def priced_thresholds(rule: CostRule | BudgetRule, costs: np.ndarray) -> np.ndarray:
    """The per-query thresholds of the rules that weigh each call's USD cost, from (c_small, c_large) rows.

    ``cost=L``: small iff s - L c_small >= 1 - L c_large. ``budget=B``: the large model, whose predicted
    quality (1) is the higher, whenever its call fits; the small one (threshold -inf) otherwise."""
    costs = np.asarray(costs, dtype=np.float64).reshape(-1, 2)
    if isinstance(rule, CostRule):
        return REFERENCE_QUALITY - rule.weight * (costs[:, 1] - costs[:, 0])
    return np.where(costs[:, 1] <= rule.usd, REFERENCE_QUALITY, -np.inf)


def pair_candidates(decision: RouteDecision, models: Sequence[str], costs: Sequence[float]) -> list[CandidateEstimate]:
    """Both candidates of a two-model decision as the N-model contract reports them: (s, 1) and their costs."""
    score = np.nan if decision.score is None else float(decision.score)
    return [CandidateEstimate(model=m, quality=q, cost=float(c))
            for m, q, c in zip(models, (score, REFERENCE_QUALITY), costs, strict=True)]


class PairRouter:
    """A two-model ``Router`` through the N-model contract: ``models`` (small, large), ``estimate_costs``,
    per-candidate ``predicted quality`` in every decision, and the N-model rules plus the threshold ones."""

    def __init__(self, router: Router) -> None:
        entry = router_entry(router.name)
        if not entry.takes_threshold:
            raise ConfigError(f"router {router.name!r} {entry.no_threshold}: it has no score to read as quality")
        self.router = router
        pair = router.require_pair()
        self.models: tuple[str, str] = (pair.small, pair.large)

    def estimate_costs(self, queries: Sequence[str]) -> np.ndarray:
        """USD per call of (small, large) for each query, from the artifact's prices."""
        costs = [[self.router.estimate_cost(model, q) for model in self.models] for q in queries]
        if any(c is None for row in costs for c in row):
            raise ConfigError(f"router {self.router.name!r} has no prices for {list(self.models)} (llm_data); "
                              "cost= and budget= need them")
        return np.array(costs, dtype=np.float64).reshape(len(queries), 2)

    def thresholds(self, rule: PairRule, costs: np.ndarray) -> np.ndarray:
        """One threshold per query (the rows of ``costs``) that ``rule`` stands for."""
        n = len(costs)
        if isinstance(rule, ThresholdRule):
            return np.full(n, rule.value)
        if isinstance(rule, DefaultRule):
            return np.full(n, self.router.threshold)
        if isinstance(rule, ShareRule):
            scores = self.router.reference_scores()
            if scores is None:
                raise ConfigError(f"router {self.router.name!r} has no reference scores in its artifact; "
                                  "share= needs them (llmrouter reference-scores)")
            return np.full(n, threshold_for_large_share(scores, rule.share))
        if isinstance(rule, QualityRule):
            return np.full(n, self.router.threshold_for_quality(rule.ratio, rule.confidence).threshold)
        return priced_thresholds(rule, costs)

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          rule: str | PairRule | None = None) -> list[RouteDecision]:
        """The router's own decisions at the rule's per-query thresholds, each naming the rule and both
        candidates' predicted quality (s, 1) and cost."""
        parsed = parse_pair_rule(rule) if rule is None or isinstance(rule, str) else rule
        queries = list(queries)
        costs = self.estimate_costs(queries)
        thresholds = self.thresholds(parsed, costs)
        decisions = await self.router.aroute_many(queries, engines, [float(t) for t in thresholds])
        return [decision.model_copy(update={"candidates": pair_candidates(decision, self.models, row),
                                            "rule": parsed.text()})
                for decision, row in zip(decisions, costs, strict=True)]
