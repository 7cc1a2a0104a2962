"""AutoMix routing policies: from a verification score to keep-or-escalate.

Every policy maps a verification score (p_ver, or agreement for self-consistency) to a continuous
*small-suitability* score; the router keeps the small answer iff ``suitability >= decision_threshold``.
Policies are fitted on training data (scores, whether the small / large model was right, cascade costs)
and serialise to plain JSON (``to_dict`` / :func:`policy_from_dict`).

Operating-point selection (shared by all policies): among the candidate policies a fit considers, with
``cost_constraint`` unset, pick the one with the largest ΔIBC (AutoMix's incremental benefit per cost,
lift over mixing the two models at random; see ``routers.evaluation.metrics``) on the training data, ties
to higher quality; with ``cost_constraint`` = max (or (min, max)) average cost per query, pick the highest
training quality among candidates whose average cascade cost lies within it, ties to lower cost.
In IBC mode candidates escalating under ``MIN_LARGE_SHARE_FOR_IBC`` of the queries are set aside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from routers.errors import ArtifactError, ConfigError

CostConstraint = float | tuple[float, float] | None

# ΔIBC is a ratio, so a policy escalating a handful of training queries can win it by luck; in IBC mode
# candidates must escalate at least this share of the training queries (when any candidate does).
MIN_LARGE_SHARE_FOR_IBC = 0.05


@dataclass(frozen=True)
class CascadeCosts:
    """Per-query cost units: the small model and the verifier run on every query; the large model is
    added when a query is escalated."""

    small: float = 1.0
    large: float = 50.0
    verifier: float = 1.0

    @property
    def keep(self) -> float:
        return self.small + self.verifier

    @property
    def escalate(self) -> float:
        return self.small + self.verifier + self.large

    def per_query(self, use_large: np.ndarray) -> np.ndarray:
        return np.where(use_large, self.escalate, self.keep)


def constraint_bounds(constraint: CostConstraint) -> tuple[float, float] | None:
    if constraint is None:
        return None
    if isinstance(constraint, (int, float)):
        return (-np.inf, float(constraint))
    low, high = constraint
    if low > high:
        raise ConfigError(f"cost_constraint {constraint!r}: min exceeds max")
    return (float(low), float(high))


def operating_point(
    use_large: np.ndarray, small_q: np.ndarray, large_q: np.ndarray, costs: CascadeCosts
) -> tuple[float, float]:
    """(mean quality, mean cascade cost) of a set of decisions."""
    quality = float(np.where(use_large, large_q, small_q).mean())
    return quality, float(costs.per_query(use_large).mean())


def ibc_lift(
    quality: float, cost: float, small_q: np.ndarray, large_q: np.ndarray, costs: CascadeCosts
) -> float:
    """ΔIBC in percent: ``100 (IBC - IBC_base) / IBC_base``; -inf where undefined (nothing escalated or
    no gap between the models), so such points are never chosen for their lift."""
    q_s, q_l = float(small_q.mean()), float(large_q.mean())
    if cost - costs.keep < 1e-12 or abs(q_l - q_s) < 1e-12:
        return -np.inf
    router_ibc = (quality - q_s) / (cost - costs.keep)
    base_ibc = (q_l - q_s) / costs.large
    return 100.0 * (router_ibc - base_ibc) / base_ibc


def select_candidate(
    decisions: Sequence[np.ndarray],
    small_q: np.ndarray,
    large_q: np.ndarray,
    costs: CascadeCosts,
    cost_constraint: CostConstraint,
) -> tuple[int, dict[str, float]]:
    """Index of the best candidate decision vector (rule in the module docstring) and its training stats."""
    if not decisions:
        raise ValueError("no candidate decisions to choose from")
    bounds = constraint_bounds(cost_constraint)
    points = [operating_point(d, small_q, large_q, costs) for d in decisions]
    if bounds is None:
        keys = [(ibc_lift(q, c, small_q, large_q, costs), q) for q, c in points]
        enough = [float(np.mean(d)) >= MIN_LARGE_SHARE_FOR_IBC for d in decisions]
        if any(enough):
            keys = [k if ok else (-np.inf, -np.inf) for k, ok in zip(keys, enough)]
    else:
        low, high = bounds
        feasible = [low - 1e-9 <= c <= high + 1e-9 for _, c in points]
        if not any(feasible):
            cheapest = min(c for _, c in points)
            raise ConfigError(
                f"cost_constraint {cost_constraint!r} cannot be met on the training data: the cheapest "
                f"policy costs {cheapest:.4f} per query (small + verifier alone cost {costs.keep:.4f})"
            )
        keys = [(q, -c) if ok else (-np.inf, -np.inf) for (q, c), ok in zip(points, feasible)]
    best = max(range(len(decisions)), key=lambda i: keys[i])
    quality, cost = points[best]
    stats = {
        "train_quality": quality,
        "train_cost": cost,
        "train_large_share": float(np.mean(decisions[best])),
        "train_delta_ibc": float(ibc_lift(quality, cost, small_q, large_q, costs)),
    }
    return best, stats


def _as_arrays(
    scores: Sequence[float], small: Sequence[float], large: Sequence[float]
) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(a, dtype=np.float64) for a in (scores, small, large))
    if not (len(arrays[0]) == len(arrays[1]) == len(arrays[2])) or len(arrays[0]) == 0:
        raise ValueError("scores, small_correct and large_correct must be non-empty and of equal length")
    if np.any((arrays[0] < 0) | (arrays[0] > 1)):
        raise ValueError("verification scores must lie in [0, 1]")
    return arrays


class Policy(ABC):
    kind: ClassVar[str]

    def __init__(self) -> None:
        self.fitted = False
        self.training: dict[str, float] = {}

    @abstractmethod
    def fit(
        self,
        scores: Sequence[float],
        small_correct: Sequence[float],
        large_correct: Sequence[float],
        costs: CascadeCosts,
    ) -> dict[str, float]:
        """Learn from training verification scores and per-query correctness; returns training stats."""

    @abstractmethod
    def suitability(self, scores: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Continuous small-suitability of each verification score (higher = keep the small answer)."""

    @property
    @abstractmethod
    def decision_threshold(self) -> float:
        """Keep the small answer iff suitability >= this."""

    def decide(self, scores: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """use_large for each score."""
        return np.atleast_1d(self.suitability(scores)) < self.decision_threshold

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, payload: dict[str, Any]) -> Policy: ...


class ThresholdPolicy(Policy):
    """Escalate iff ``p_ver < threshold``. Suitability is the score itself. With ``threshold`` given the
    fit keeps it; otherwise every distinct training score (and one above the maximum, i.e. escalate
    everything) is a candidate and the selection rule picks one."""

    kind = "Threshold"

    def __init__(self, threshold: float | None = None, cost_constraint: CostConstraint = None) -> None:
        super().__init__()
        self.fixed = threshold is not None
        self.threshold = 0.5 if threshold is None else float(threshold)
        self.cost_constraint = cost_constraint

    def fit(
        self,
        scores: Sequence[float],
        small_correct: Sequence[float],
        large_correct: Sequence[float],
        costs: CascadeCosts,
    ) -> dict[str, float]:
        s, small_q, large_q = _as_arrays(scores, small_correct, large_correct)
        if self.fixed:
            candidates = [self.threshold]
        else:
            distinct = np.unique(s)
            candidates = [*distinct.tolist(), float(np.nextafter(distinct[-1], np.inf))]
        best, stats = select_candidate(
            [s < t for t in candidates], small_q, large_q, costs, self.cost_constraint
        )
        self.threshold = float(candidates[best])
        self.training = {**stats, "threshold": self.threshold}
        self.fitted = True
        return self.training

    def suitability(self, scores: np.ndarray | Sequence[float] | float) -> np.ndarray:
        return np.atleast_1d(np.asarray(scores, dtype=np.float64))

    @property
    def decision_threshold(self) -> float:
        return self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "threshold": self.threshold,
            "fixed": self.fixed,
            "cost_constraint": self.cost_constraint,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ThresholdPolicy:
        policy = cls(float(payload["threshold"]), _constraint_from_json(payload.get("cost_constraint")))
        policy.fixed = bool(payload.get("fixed", False))
        policy.training = dict(payload.get("training", {}))
        policy.fitted = True
        return policy


class SelfConsistencyPolicy(ThresholdPolicy):
    """Threshold on self-consistency agreement (share of sampled answers equal to the main answer)."""

    kind = "SelfConsistency"


class POMDPPolicy(Policy):
    """AutoMix's meta-verifier as a POMDP, solved exactly.

    * Hidden state ``x = (small right?, large right?)``: four states. Prior ``P(x)`` from training counts.
    * Observation ``o``: the verification score put into one of ``num_bins`` equal-width bins of [0, 1].
      Observation model ``P(o | x)`` from training counts with Laplace smoothing ``alpha``.
    * Belief after observing ``o``: Bayes, ``b(x) ∝ P(o | x) P(x)``.
    * Actions after the observation: *keep* the small answer or *escalate* to the large model; both end
      the episode. Reward ``R(x, a) = reward * [final answer right] - lambda * cost(a)`` with the cascade
      costs (keep: small + verifier; escalate: small + verifier + large).

    The decision problem is one step after the (forced) observe step, so its finite-horizon value
    iteration is exact in one backup over the reachable beliefs, one per bin:
    ``Q(b_o, a) = sum_x b_o(x) R(x, a)``, ``V(b_o) = max_a Q(b_o, a)``, and the policy's expected value is
    ``sum_o P(o) V(b_o)``. ``lambda`` trades quality for cost: given as ``cost_weight``, or chosen on the
    training data by the selection rule over the lambdas at which some bin's best action flips (plus 0
    and one beyond the last flip), so every distinct policy the POMDP can express is considered.

    Suitability of a score is ``(Q(b_o, keep) - Q(b_o, escalate)) / reward``: the posterior-weighted value
    of keeping, in units of the reward for a right answer; the decision threshold is 0.
    """

    kind = "POMDP"
    STATES: ClassVar[tuple[tuple[int, int], ...]] = ((0, 0), (0, 1), (1, 0), (1, 1))

    def __init__(
        self,
        num_bins: int = 8,
        reward: float = 1.0,
        alpha: float = 1.0,
        cost_weight: float | None = None,
        cost_constraint: CostConstraint = None,
    ) -> None:
        super().__init__()
        if num_bins < 1:
            raise ConfigError("num_bins must be at least 1")
        if reward <= 0 or alpha < 0:
            raise ConfigError("reward must be positive and alpha non-negative")
        self.num_bins = int(num_bins)
        self.reward = float(reward)
        self.alpha = float(alpha)
        self.cost_weight = cost_weight
        self.cost_constraint = cost_constraint
        self.lam = 0.0 if cost_weight is None else float(cost_weight)
        self.costs = CascadeCosts()
        self.prior = np.full(4, 0.25)
        self.observation = np.full((4, self.num_bins), 1.0 / self.num_bins)

    # --- model ---------------------------------------------------------------------------------
    def bins(self, scores: np.ndarray | Sequence[float] | float) -> np.ndarray:
        s = np.clip(np.atleast_1d(np.asarray(scores, dtype=np.float64)), 0.0, 1.0)
        return np.minimum((s * self.num_bins).astype(int), self.num_bins - 1)

    @staticmethod
    def state_index(small_right: np.ndarray, large_right: np.ndarray) -> np.ndarray:
        return 2 * (np.asarray(small_right) >= 0.5).astype(int) + (np.asarray(large_right) >= 0.5).astype(int)

    def estimate_model(self, scores: np.ndarray, small_q: np.ndarray, large_q: np.ndarray) -> None:
        states, obs = self.state_index(small_q, large_q), self.bins(scores)
        counts = np.zeros((4, self.num_bins))
        np.add.at(counts, (states, obs), 1.0)
        state_totals = counts.sum(axis=1)
        self.prior = (state_totals + self.alpha) / (state_totals.sum() + 4 * self.alpha)
        self.observation = (counts + self.alpha) / (state_totals[:, None] + self.alpha * self.num_bins)
        if self.alpha == 0:
            # An unseen state gets a flat row rather than 0/0; its prior is 0 so it carries no weight.
            empty = state_totals == 0
            self.observation[empty] = 1.0 / self.num_bins

    def beliefs(self) -> np.ndarray:
        """(num_bins, 4): posterior over hidden states after each observation bin (Bayes' rule)."""
        joint = self.observation.T * self.prior[None, :]
        return joint / joint.sum(axis=1, keepdims=True)

    def update_belief(self, belief: np.ndarray, score: float) -> np.ndarray:
        """One Bayes update of ``belief`` with the observation bin of ``score``."""
        posterior = np.asarray(belief, dtype=np.float64) * self.observation[:, int(self.bins(score)[0])]
        return posterior / posterior.sum()

    def rewards(self, lam: float) -> np.ndarray:
        """(4 states, 2 actions [keep, escalate]) immediate reward R(x, a)."""
        small_right = np.array([s for s, _ in self.STATES], dtype=np.float64)
        large_right = np.array([l for _, l in self.STATES], dtype=np.float64)
        keep = self.reward * small_right - lam * self.costs.keep
        escalate = self.reward * large_right - lam * self.costs.escalate
        return np.stack([keep, escalate], axis=1)

    def q_values(self, lam: float | None = None) -> np.ndarray:
        """(num_bins, 2) action values of each reachable belief: the exact one-step backup."""
        return self.beliefs() @ self.rewards(self.lam if lam is None else lam)

    def value(self, lam: float | None = None) -> float:
        """Expected value of acting optimally: sum_o P(o) max_a Q(b_o, a)."""
        p_obs = self.prior @ self.observation
        return float(p_obs @ self.q_values(lam).max(axis=1))

    def switch_points(self) -> list[float]:
        """lambdas at which a bin's best action flips: Q difference = gain - lambda * large cost = 0."""
        beliefs = self.beliefs()
        small_right = beliefs[:, 2] + beliefs[:, 3]
        large_right = beliefs[:, 1] + beliefs[:, 3]
        gain = self.reward * (large_right - small_right)
        return sorted({float(g / self.costs.large) for g in gain if g > 0})

    # --- policy --------------------------------------------------------------------------------
    def fit(
        self,
        scores: Sequence[float],
        small_correct: Sequence[float],
        large_correct: Sequence[float],
        costs: CascadeCosts,
    ) -> dict[str, float]:
        s, small_q, large_q = _as_arrays(scores, small_correct, large_correct)
        self.costs = costs
        self.estimate_model(s, small_q, large_q)
        if self.cost_weight is not None:
            lambdas = [float(self.cost_weight)]
        else:
            flips = self.switch_points()
            # Just below each flip the bin still escalates; beyond the last, everything is kept.
            lambdas = [0.0, *[f * (1 - 1e-9) for f in flips], (flips[-1] * 2 if flips else 1.0)]
        decisions = [self._decide_bins(self.bins(s), lam) for lam in lambdas]
        best, stats = select_candidate(decisions, small_q, large_q, costs, self.cost_constraint)
        self.lam = float(lambdas[best])
        self.training = {**stats, "lambda": self.lam, "expected_value": self.value()}
        self.fitted = True
        return self.training

    def _decide_bins(self, bins: np.ndarray, lam: float) -> np.ndarray:
        q = self.q_values(lam)
        return (q[:, 0] - q[:, 1] < 0)[bins]

    def suitability(self, scores: np.ndarray | Sequence[float] | float) -> np.ndarray:
        q = self.q_values()
        return ((q[:, 0] - q[:, 1]) / self.reward)[self.bins(scores)]

    @property
    def decision_threshold(self) -> float:
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_bins": self.num_bins,
            "reward": self.reward,
            "alpha": self.alpha,
            "cost_weight": self.cost_weight,
            "cost_constraint": self.cost_constraint,
            "lambda": self.lam,
            "costs": {"small": self.costs.small, "large": self.costs.large, "verifier": self.costs.verifier},
            "prior": self.prior.tolist(),
            "observation": self.observation.tolist(),
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> POMDPPolicy:
        policy = cls(
            int(payload["num_bins"]),
            float(payload["reward"]),
            float(payload["alpha"]),
            payload.get("cost_weight"),
            _constraint_from_json(payload.get("cost_constraint")),
        )
        policy.lam = float(payload["lambda"])
        policy.costs = CascadeCosts(**{k: float(v) for k, v in payload["costs"].items()})
        policy.prior = np.asarray(payload["prior"], dtype=np.float64)
        policy.observation = np.asarray(payload["observation"], dtype=np.float64)
        if policy.prior.shape != (4,) or policy.observation.shape != (4, policy.num_bins):
            raise ArtifactError("POMDP policy: prior / observation shapes do not match num_bins")
        policy.training = dict(payload.get("training", {}))
        policy.fitted = True
        return policy


def _constraint_from_json(value: Any) -> CostConstraint:
    if value is None or isinstance(value, (int, float)):
        return value
    low, high = value
    return (float(low), float(high))


POLICIES: dict[str, type[Policy]] = {p.kind: p for p in (ThresholdPolicy, POMDPPolicy, SelfConsistencyPolicy)}


def policy_from_dict(payload: dict[str, Any]) -> Policy:
    kind = payload.get("kind")
    if kind not in POLICIES:
        raise ArtifactError(f"unknown AutoMix policy kind {kind!r}; known: {sorted(POLICIES)}")
    return POLICIES[kind].from_dict(payload)
