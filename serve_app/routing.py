"""The typed routing outcome the ingress carries from the library's ``RouteDecision`` to the HTTP response.

A ``Routing`` is built once per request: from a decision (``Routing.decided``), for a model asked by name
(``Routing.direct``), or for a router that failed (``Routing.fallback_to``). Its ``info`` is the
``routing`` object of every response (``api.RoutingInfo``, ``api.RouteItem``), written in one place.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, Field

from routers.base import RouteDecision
from routers.engines import GenerationResult
from routers.strict import StrictModel


class ModelCall(BaseModel):
    """One answer-model call a request paid for (``purpose``: answer, verification, final)."""

    model_key: str
    prompt_tokens: int
    completion_tokens: int
    purpose: str


class ThresholdChoice(StrictModel):
    """The threshold a request's ``model`` field asked for (``value`` None: the router's own), and how it
    was chosen; the set fields are reported in the routing object."""

    value: float | None = None
    large_share: float | None = None
    quality_target: float | None = None
    quality_lower_bound: float | None = None
    quality_target_met: bool | None = None
    calibration_large_share: float | None = None
    threshold_source: str | None = None
    routellm_threshold: float | None = None

    @property
    def info(self) -> dict[str, Any]:
        """What the routing object reports of it: every field set, except the value itself."""
        return self.model_dump(exclude={"value"}, exclude_none=True)


class Routing(BaseModel):
    """Which model answers a request and why, and what routing already spent."""

    #: the served router kind; "direct" for a model asked by name
    router: str
    model_key: str
    use_large: bool
    reason: str
    decision: RouteDecision | None = None
    fallback: bool = False
    #: the model that answered instead, after ``model_key`` failed
    retried_on: str | None = None
    #: the models that failed before one answered, in order: ``{"model": key, "error": kind}``
    failures: list[dict[str, str]] = Field(default_factory=list)
    #: the model the router chose, when another answered because the request needs what it lacks
    rerouted_from: str | None = None
    #: the capabilities the request needs (tools, json_schema, images, logprobs)
    needs: list[str] = Field(default_factory=list)
    #: the answer's token counts were estimated from characters (the model sent none)
    usage_estimated: bool = False
    threshold: ThresholdChoice = Field(default_factory=ThresholdChoice)
    calls: list[ModelCall] = Field(default_factory=list)

    # --- the three ways a routing comes about ----------------------------------------------------
    @classmethod
    def decided(cls, kind: str, decision: RouteDecision, model_key: str, served: str,
                role_keys: dict[str, str]) -> Routing:
        """From a library decision, answered by ``model_key`` (served as ``served``); ``role_keys`` maps the
        decision's model roles (``small``, ``large``) to the app's model keys.

        A router artifact names the models of the data it was trained on (say Mixtral and GPT-4), while the
        app serves its own pair under other names: the reason names the served model, and
        ``decision_model`` keeps the artifact's name for the side it chose.
        """
        reason = decision.reason
        if decision.model_name and decision.model_name != served:  # the name as a word: not 'small' in 'smallest'
            reason = re.sub(rf"(?<![\w./-]){re.escape(decision.model_name)}(?![\w-]|\.\w)",
                            lambda _: f"{served} (the artifact's {decision.model_name})", reason)
        calls = [ModelCall(model_key=role_keys[u.role], prompt_tokens=u.prompt_tokens,
                           completion_tokens=u.completion_tokens, purpose=u.purpose) for u in decision.usage]
        return cls(router=kind, model_key=model_key, use_large=bool(decision.use_large), reason=reason,
                   decision=decision, calls=calls)

    @classmethod
    def direct(cls, model_key: str, use_large: bool) -> Routing:
        return cls(router="direct", model_key=model_key, use_large=use_large,
                   reason="model requested by name; no routing")

    @classmethod
    def fallback_to(cls, kind: str, model_key: str, use_large: bool, why: str) -> Routing:
        return cls(router=kind, model_key=model_key, use_large=use_large, fallback=True,
                   reason=f"router failed ({why}); answered by fallback model {model_key!r}")

    # --- what it says ------------------------------------------------------------------------------
    @property
    def answer(self) -> GenerationResult | None:
        """An answer routing already produced and keeps (AutoMix's verified small-model answer)."""
        return None if self.decision is None else self.decision.answer

    @property
    def score(self) -> float | None:
        return None if self.decision is None else self.decision.score

    def failed_on(self, model_key: str, kind: str) -> None:
        """``model_key`` failed (``kind``: connect, timeout, server_error, rate_limited, ...)."""
        self.failures.append({"model": model_key, "error": kind})

    def retried(self, model_key: str) -> None:
        """``model_key`` answered because the routed model failed."""
        self.reason += f"; {self.model_key!r} failed, answered by {model_key!r}"
        self.retried_on = model_key
        self.model_key = model_key

    def rerouted(self, model_key: str, why: str) -> None:
        """``model_key`` answers instead of the router's choice, which cannot take this request (``why``)."""
        self.reason += f"; {self.model_key!r} {why}, so {model_key!r} answers"
        self.rerouted_from = self.model_key
        self.model_key = model_key

    @property
    def info(self) -> dict[str, Any]:
        """The routing object's fields (without the answer's model name, cost and latency)."""
        if self.router == "direct":
            return self.with_answering({"router": None, "reason": self.reason, "fallback": False,
                                        "use_large": self.use_large})
        out: dict[str, Any] = {"router": self.router, "use_large": self.use_large, "score": None, "threshold": None,
                               "reason": self.reason, "verification_score": None, "escalated": None, "policy": None,
                               "fallback": self.fallback}
        decision = self.decision
        if decision is not None:
            extra = decision.extra
            out.update({"decision_model": decision.model_name, "score": decision.score,
                        "threshold": finite_or_none(decision.threshold),
                        "verification_score": extra.get("verification_score"), "policy": extra.get("policy")})
            if self.router == "automix":
                out["escalated"] = bool(decision.use_large)
                out["verification_samples"] = extra.get("verification_samples")
                if "tiers" in extra:  # a cascade over tiers: each visited tier's score and whether it kept
                    out["tiers"] = extra["tiers"]
            for key in ("generated", "domain", "domain_probability"):  # causal-LM text; domain prior's guess
                if key in extra:
                    out[key] = extra[key]
            if decision.candidates:  # an N-model router: every candidate, the rule, the cost weight
                out.update(candidates_info(decision))
            out.update(self.threshold.info)
        return self.with_answering(out)

    def with_answering(self, out: dict[str, Any]) -> dict[str, Any]:
        """What happened on the way to the answering model: fallbacks, a capability reroute, estimated usage."""
        if self.retried_on is not None:
            out["retried_on"] = self.retried_on
        if self.failures:
            out["fallbacks"] = list(self.failures)
        if self.rerouted_from is not None:
            out["rerouted_from"] = self.rerouted_from
        if self.needs:
            out["needs"] = list(self.needs)
        if self.usage_estimated:
            out["usage_estimated"] = True
        return out


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: a threshold of -inf (a budget rule that forces the small model) is reported as null."""
    return value if value is None or math.isfinite(value) else None


def candidates_info(decision: RouteDecision) -> dict[str, Any]:
    """An N-model decision's part of the routing object: the rule that chose, its cost weight (USD -> quality;
    none for ``budget=``), and every candidate's app model key, served name, the artifact's model it stands for,
    predicted quality and estimated cost (USD)."""
    names = decision.extra.get("candidate_models") or {}
    out: dict[str, Any] = {"rule": decision.rule}
    if decision.extra.get("cost_weight") is not None:
        out["cost_weight"] = decision.extra["cost_weight"]
    out["candidates"] = [{"model_key": c.model, **names.get(c.model, {}), "quality": c.quality, "cost": c.cost}
                         for c in decision.candidates]
    return out
