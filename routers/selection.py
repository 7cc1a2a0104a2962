"""Selection rules: which of N candidate models answers, from each one's predicted quality and known cost.

An N-model router predicts, per query, every candidate's expected quality (a ``(n_queries, n_models)``
array in the order of its ``models``); each call's cost is known (or estimated) the same way. A selection
rule turns the two arrays into one model per query. The rules, as a suffix of the router's name:

* ``default``: the artifact's own operating point (a cost weight chosen at fit time, see
  :class:`SelectionCalibration.default_weight`);
* ``cost=L``: per query, argmax ``quality - L * cost``: ``L`` converts USD to quality (a model costing
  0.001 USD more per call must promise at least 0.001 x L more expected quality); ties go to the cheaper model;
* ``quality=R``: the cheapest cost weight whose bootstrap lower bound of realised quality / best single
  model's quality, on the artifact's calibration queries, is at least ``R`` (the N-model form of
  ``routers.evaluation.quality_target``: the bound is over the aggregate, not per query, as there);
* ``budget=B``: per query, the best predicted quality among the models whose cost is at most ``B`` USD;
  the cheapest model when none fits;
* ``share=S``: the smallest cost weight whose choices on the calibration queries send at most a share
  ``S`` of them to the most expensive model (with two models: today's share of large-model traffic).

With two models, ``cost=L`` is the two-model threshold rule: small iff ``q_small - q_large >= -L * (c_large -
c_small)`` (a test checks it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from routers.errors import ArtifactError, ConfigError
from routers.evaluation.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from routers.safe_io import load_arrays, save_arrays
from routers.strict import StrictModel

#: cost weights tried when a rule is resolved on calibration data, relative to 1 / (mean cost of the dearest
#: model): from "cost hardly matters" to "always the cheapest"
WEIGHT_GRID_DECADES = (-3.0, 4.0)
WEIGHT_GRID_POINTS = 141
CALIBRATION_FILE = "selection_calibration.safetensors"


class DefaultRule(StrictModel):
    kind: Literal["default"] = "default"

    def text(self) -> str:
        return "default"


class CostRule(StrictModel):
    kind: Literal["cost"] = "cost"
    weight: float = Field(ge=0.0, description="quality given up per USD saved")

    def text(self) -> str:
        return f"cost={self.weight:g}"


class QualityRule(StrictModel):
    kind: Literal["quality"] = "quality"
    ratio: float = Field(gt=0.0, le=1.5, description="target share of the best single model's quality")
    confidence: float = Field(default=DEFAULT_CONFIDENCE, gt=0.0, lt=1.0)

    def text(self) -> str:
        return f"quality={self.ratio:g}"


class BudgetRule(StrictModel):
    kind: Literal["budget"] = "budget"
    usd: float = Field(gt=0.0, description="most USD one query may cost")

    def text(self) -> str:
        return f"budget={self.usd:g}"


class ShareRule(StrictModel):
    kind: Literal["share"] = "share"
    share: float = Field(ge=0.0, le=1.0, description="most share of queries sent to the most expensive model")

    def text(self) -> str:
        return f"share={self.share:g}"


SelectionRule = Annotated[DefaultRule | CostRule | QualityRule | BudgetRule | ShareRule, Field(discriminator="kind")]
#: suffix key -> (rule class, the field its value fills)
RULE_FIELDS: dict[str, tuple[type[StrictModel], str]] = {
    "cost": (CostRule, "weight"), "quality": (QualityRule, "ratio"), "budget": (BudgetRule, "usd"),
    "share": (ShareRule, "share"),
}


def parse_rule(text: str | None) -> DefaultRule | CostRule | QualityRule | BudgetRule | ShareRule:
    """``None``/``""``/``default`` or ``cost=L``, ``quality=R``, ``budget=B``, ``share=S`` as a rule; a bad
    value is a ConfigError naming the field and its allowed range."""
    if text is None or not text.strip() or text.strip() == "default":
        return DefaultRule()
    key, sep, value = text.strip().partition("=")
    key = key.strip()
    if not sep or key not in RULE_FIELDS:
        raise ConfigError(f"selection rule {text!r}: expected one of cost=L, quality=R, budget=USD, share=S "
                          "or default")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"selection rule {text!r}: {key} must be a number, got {value.strip()!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"selection rule {text!r}: {key} must be finite")
    cls, field_name = RULE_FIELDS[key]
    try:
        return cls.model_validate({field_name: number})  # type: ignore[return-value]
    except ValidationError as exc:
        reason = "; ".join(error["msg"] for error in exc.errors())
        raise ConfigError(f"selection rule {text!r}: {key}: {reason}") from None


# --- the per-query rules -------------------------------------------------------------------------------
def as_query_costs(cost: np.ndarray, n_queries: int) -> np.ndarray:
    """Costs as (n_queries, n_models): one row per model broadcast to every query, or per query already."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim == 1:
        return np.broadcast_to(cost, (n_queries, len(cost)))
    if cost.ndim != 2 or cost.shape[0] != n_queries:
        raise ValueError(f"cost has shape {cost.shape}; expected (n_models,) or ({n_queries}, n_models)")
    return cost


def check_shapes(quality: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    quality = np.asarray(quality, dtype=np.float64)
    if quality.ndim != 2:
        raise ValueError(f"predicted quality must be (n_queries, n_models), got shape {quality.shape}")
    cost = as_query_costs(cost, len(quality))
    if cost.shape != quality.shape:
        raise ValueError(f"cost has shape {cost.shape}, quality {quality.shape}")
    return quality, cost


def argmax_cheapest(utility: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per row, the column of highest utility; among (near-)ties the cheapest, so equal quality never costs more."""
    best = utility.max(axis=1, keepdims=True)
    tied = utility >= best - 1e-12
    return np.where(tied, cost, np.inf).argmin(axis=1)


def pick_by_cost(quality: np.ndarray, cost: np.ndarray, weight: float) -> np.ndarray:
    """``cost=L``: per query, the model maximising quality - L x cost."""
    quality, cost = check_shapes(quality, cost)
    return argmax_cheapest(quality - weight * cost, cost)


def pick_within_budget(quality: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """``budget=B``: per query, the best predicted quality among models costing at most B; else the cheapest."""
    quality, cost = check_shapes(quality, cost)
    fits = cost <= budget
    chosen = argmax_cheapest(np.where(fits, quality, -np.inf), cost)
    return np.where(fits.any(axis=1), chosen, cost.argmin(axis=1))


def weight_grid(cost: np.ndarray) -> np.ndarray:
    """Cost weights from 0 ("quality only") to ones that always pick the cheapest, on the data's cost scale."""
    cost = np.asarray(cost, dtype=np.float64)
    scale = float(cost.mean(axis=0).max()) if cost.size else 0.0
    if scale <= 0:
        return np.array([0.0])
    low, high = WEIGHT_GRID_DECADES
    return np.concatenate([[0.0], np.logspace(low, high, WEIGHT_GRID_POINTS) / scale])


# --- rules resolved on labelled calibration queries ------------------------------------------------------
class SelectionCalibration:
    """Labelled evidence for the rules that need it (``default``, ``quality=``, ``share=``): a router's
    cross-fitted predicted quality on its training queries, the realised quality and cost there, and the
    cost estimates it chose with. Kept in the artifact as ``selection_calibration.safetensors``."""

    def __init__(self, predicted: np.ndarray, cost_estimate: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                 source: str, default_rule: str = "quality=1.0") -> None:
        arrays = [np.asarray(a, dtype=np.float64) for a in (predicted, cost_estimate, quality, cost)]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2 or len(arrays[0]) == 0:
            raise ValueError("a selection calibration needs predicted quality, cost estimates, quality and cost "
                             f"of the same (n_queries, n_models) shape; got {[a.shape for a in arrays]}")
        self.predicted, self.cost_estimate, self.quality, self.cost = arrays
        self.source = source
        self.default_rule = default_rule
        self.weights = weight_grid(self.cost)
        # the realised quality and cost of every weight's choices: one (weights, queries) matrix each
        chosen = np.stack([pick_by_cost(self.predicted, self.cost_estimate, w) for w in self.weights])
        rows = np.arange(len(self.quality))
        self.chosen_quality = self.quality[rows, chosen]
        self.chosen_cost = self.cost[rows, chosen]
        self.chosen = chosen
        self._cache: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.quality)

    @property
    def best_single_quality(self) -> float:
        return float(self.quality.mean(axis=0).max())

    def weight_for_quality(self, ratio: float, confidence: float = DEFAULT_CONFIDENCE,
                           n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
        """The largest (cheapest) weight whose bootstrap lower bound of quality / best single quality >= ratio;
        0 (quality only) when none reaches it."""
        key = f"quality={ratio}:{confidence}"
        if key not in self._cache:
            n = len(self)
            rng = np.random.default_rng(seed)
            counts = np.stack([rng.multinomial(n, np.full(n, 1.0 / n)) for _ in range(max(1, n_resamples))])
            # per resample: each weight's mean quality over the best single model's mean quality in that resample
            router = counts @ self.chosen_quality.T
            single = (counts @ self.quality).max(axis=1, keepdims=True)
            ratios = router / np.where(single > 0, single, np.nan)
            lower = np.nanpercentile(ratios, 100.0 * (1.0 - confidence), axis=0)
            meeting = np.nonzero(lower >= ratio)[0]
            self._cache[key] = float(self.weights[meeting.max()]) if len(meeting) else 0.0
        return self._cache[key]

    def weight_for_share(self, share: float) -> float:
        """The smallest weight whose calibration choices send at most ``share`` of queries to the dearest model."""
        dearest = int(self.cost.mean(axis=0).argmax())
        shares = (self.chosen == dearest).mean(axis=1)
        meeting = np.nonzero(shares <= share + 1e-12)[0]
        return float(self.weights[meeting.min()]) if len(meeting) else float(self.weights[-1])

    def default_weight(self) -> float:
        """The weight of the artifact's ``default_rule`` (fit default: ``quality=1.0``, the cheapest point whose
        quality bound reaches the best single model's)."""
        rule = parse_rule(self.default_rule)
        if isinstance(rule, DefaultRule):
            raise ConfigError("a selection calibration's default rule cannot be 'default'")
        return resolve_weight(rule, self)

    # --- artifact -------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {"file": CALIBRATION_FILE, "n_queries": len(self), "source": self.source,
                "default_rule": self.default_rule}

    def save(self, directory: Path) -> None:
        save_arrays(directory / CALIBRATION_FILE, {"predicted": self.predicted, "cost_estimate": self.cost_estimate,
                                                   "quality": self.quality, "cost": self.cost})

    @classmethod
    def load(cls, directory: Path, manifest: dict[str, Any]) -> SelectionCalibration:
        path = directory / str(manifest.get("file", CALIBRATION_FILE))
        arrays = load_arrays(path)
        try:
            return cls(arrays["predicted"], arrays["cost_estimate"], arrays["quality"], arrays["cost"],
                       str(manifest.get("source", "unknown")), str(manifest.get("default_rule", "quality=1.0")))
        except KeyError as exc:
            raise ArtifactError(f"{path}: missing tensor {exc}") from exc
        except ValueError as exc:
            raise ArtifactError(f"{path}: {exc}") from exc


def resolve_weight(rule: DefaultRule | CostRule | QualityRule | ShareRule,
                   calibration: SelectionCalibration | None) -> float:
    """The cost weight a weight-based rule stands for (``budget=`` is not one: it caps each query's cost)."""
    if isinstance(rule, CostRule):
        return rule.weight
    if calibration is None:
        raise ConfigError(f"rule {rule.text()!r} needs the artifact's selection calibration (cross-fitted "
                          "predictions on its training queries); refit the router, or use cost= / budget=")
    if isinstance(rule, QualityRule):
        return calibration.weight_for_quality(rule.ratio, rule.confidence)
    if isinstance(rule, ShareRule):
        return calibration.weight_for_share(rule.share)
    return calibration.default_weight()


def select(quality: np.ndarray, cost: np.ndarray,
           rule: DefaultRule | CostRule | QualityRule | BudgetRule | ShareRule,
           calibration: SelectionCalibration | None = None) -> np.ndarray:
    """One model index per query by ``rule`` (see the module docstring)."""
    if isinstance(rule, BudgetRule):
        return pick_within_budget(quality, cost, rule.usd)
    return pick_by_cost(quality, cost, resolve_weight(rule, calibration))
