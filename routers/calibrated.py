"""Routers whose default threshold can be calibrated on their own training scores (``threshold_rule``).

Every score-based router that learns (the embedding routers, BERT) shares one rule for the threshold it
routes at when the config sets none:

* ``fixed``: the router's own break-even point (``fixed_threshold``, e.g. 0.5 for a probability);
* ``oracle_share``: the threshold that escalates, on the training queries, the share of queries the oracle
  escalates (those the large model answers strictly better). On skewed data a break-even threshold sends
  almost everything one way (on the shipped data the large model wins 4x as often as the small one).

``calibrate_on_training_scores`` sets it, keeps the training-score quantiles and marks the router fitted.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from routers.base import Router, RouterConfig
from routers.evaluation.calibrate import threshold_for_large_share


class CalibratedRouterConfig(RouterConfig):
    threshold_rule: Literal["fixed", "oracle_share"] = Field(
        default="oracle_share",
        description="with router_threshold unset: 'fixed' = the router's break-even point; 'oracle_share' = "
        "the threshold calibrated on train to escalate the oracle's share of queries",
    )


class CalibratedRouter(Router):
    """A trainable score router with the ``threshold_rule`` of the module docstring."""

    Config: ClassVar[type[RouterConfig]] = CalibratedRouterConfig
    config: CalibratedRouterConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.calibrated_threshold: float | None = None
        self.train_metrics: dict[str, Any] = {}

    @property
    def threshold(self) -> float:
        if self.config.router_threshold is not None:
            return self.config.router_threshold
        if self.config.threshold_rule == "oracle_share" and self.calibrated_threshold is not None:
            return self.calibrated_threshold
        return self.fixed_threshold()

    def fixed_threshold(self) -> float:
        """The threshold of ``threshold_rule: fixed``: where the score says the two models break even."""
        return self.default_threshold

    def calibrate_on_training_scores(self, scores: np.ndarray, gap: np.ndarray) -> dict[str, Any]:
        """Calibrate the ``oracle_share`` threshold, keep the score quantiles, mark the router fitted."""
        oracle_large_share = float(np.mean(np.asarray(gap) < 0))
        self.calibrated_threshold = threshold_for_large_share(scores, oracle_large_share)
        self.record_reference_scores(scores)
        self.fitted = True
        return {"oracle_large_share": oracle_large_share, "calibrated_threshold": self.calibrated_threshold,
                "threshold": self.threshold}
