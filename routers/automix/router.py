"""AutoMix router (Aggarwal, Madaan et al., 2023): the small model answers, verifies its own answer with
N sampled verdicts, and a policy decides whether to keep the answer or escalate to the large model.

Step API (the Ray Serve ingress composes these over remote deployments; ``route_single`` runs them with
bound local generators):

1. ``answer_prompt(query)`` + ``answer_params()``: the small model's answer.
2. ``verification_request(query, answer)``: the user message and ``SamplingParams(n=num_samples)`` of
   ONE generate call (verdicts; for SelfConsistency, sampled answers).
3. ``verification_score(query, answer, samples)``: p_ver (or agreement), in [0, 1].
4. ``decide_from_score(query, score, threshold)``: the policy's decision.

Scores for the evaluation curve are the policy's small-suitability (``dataset_scores``); the router keeps
the small answer iff suitability >= threshold (the policy's own threshold unless ``router_threshold`` or
a per-call threshold overrides it). Costs are the cascade's, in the config's relative units.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import AliasChoices, Field, field_validator

from routers.automix.policies import (
    CascadeCosts,
    CostConstraint,
    Policy,
    POMDPPolicy,
    SelfConsistencyPolicy,
    ThresholdPolicy,
    policy_from_dict,
)
from routers.automix.verification import (
    VerdictTally,
    agreement_score,
    tally_verdicts,
    verification_prompt,
)
from routers.base import RouteDecision, Router, RouterConfig, query_text
from routers.data import ModelOutcome, QueryExample, RoutingDataset
from routers.engines import Generator, SamplingParams
from routers.errors import ConfigError
from routers.progress import progress_bar

if TYPE_CHECKING:
    from routers.engines import GenerationResult
    from routers.evaluation.metrics import CostModel

Method = Literal["Threshold", "POMDP", "SelfConsistency"]


class AutomixConfig(RouterConfig):
    method: Method = Field(default="POMDP", validation_alias=AliasChoices("method", "routing_method"))
    num_samples: int = Field(default=8, ge=1, le=64, description="N verdicts (or answers) per query")
    temperature: float = Field(
        default=0.7, gt=0.0, le=2.0, description="sampling temperature of the N samples"
    )
    verifier_max_tokens: int = Field(default=8, ge=1, description="a verdict is a word or two")
    answer_max_tokens: int = Field(default=256, ge=1)
    num_bins: int = Field(default=8, ge=1, le=256, description="POMDP observation bins of [0, 1]")
    small_model_cost: float = Field(default=1.0, ge=0.0)
    large_model_cost: float = Field(default=50.0, gt=0.0)
    verifier_cost: float = Field(default=1.0, ge=0.0)
    cost_constraint: float | tuple[float, float] | None = Field(
        default=None, description="max (or (min, max)) average cascade cost per query on the training data"
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Threshold/SelfConsistency: fixed score threshold (no search)",
    )
    cost_weight: float | None = Field(
        default=None, ge=0.0, description="POMDP lambda; None = chosen on training data"
    )
    correct_reward: float = Field(default=1.0, gt=0.0, description="POMDP reward for a right final answer")
    laplace_alpha: float = Field(default=1.0, ge=0.0, description="POMDP observation-model smoothing")
    sampling_batch_size: int = Field(default=8, ge=1, description="queries per generate call when sampling")

    @field_validator("cost_constraint", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


class AutomixRouter(Router):
    name = "automix"
    Config = AutomixConfig
    score_key = "verification_score"
    engine_roles = frozenset({"small", "large"})
    config: AutomixConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.policy: Policy = self.build_policy()
        self.training_summary: dict[str, Any] = {}
        #: verdict counts of the last ``sample_verifications`` run (unparseable ones reported separately)
        self.last_sampling_report: dict[str, int] = {}

    # --- configuration -------------------------------------------------------------------------
    def build_policy(self) -> Policy:
        cfg = self.config
        constraint: CostConstraint = cfg.cost_constraint
        if cfg.method == "POMDP":
            return POMDPPolicy(
                cfg.num_bins, cfg.correct_reward, cfg.laplace_alpha, cfg.cost_weight, constraint
            )
        if cfg.method == "SelfConsistency":
            return SelfConsistencyPolicy(cfg.threshold, constraint)
        return ThresholdPolicy(cfg.threshold, constraint)

    def cascade_costs(self) -> CascadeCosts:
        cfg = self.config
        return CascadeCosts(
            small=cfg.small_model_cost, large=cfg.large_model_cost, verifier=cfg.verifier_cost
        )

    @property
    def threshold(self) -> float:
        t = self.config.router_threshold
        return self.policy.decision_threshold if t is None else t

    def route_only_engine_roles(self) -> frozenset[str]:
        # The decision needs the small answer and its verification, never the large model.
        return frozenset({"small"})

    def training_engine_roles(self) -> frozenset[str]:
        """Without the data at hand, assume it lacks verification fields (the shipped data does);
        ``training_engine_roles_for(data)`` gives the exact answer."""
        return frozenset({"small"})

    def training_engine_roles_for(self, data: RoutingDataset) -> frozenset[str]:
        """{"small"} only when ``data`` lacks the verification fields the method needs."""
        pair = self.resolve_pair(data) if self.pair is None else self.pair
        missing = self.missing_signal_indices(data.complete_for([pair.small, pair.large]))
        return frozenset({"small"}) if missing else frozenset()

    # --- step API (used by the Serve ingress) --------------------------------------------------
    def answer_prompt(self, query: str) -> str:
        """The small model answers the question as asked; the serving engine applies the chat template."""
        return query_text(query)

    def answer_params(self) -> SamplingParams:
        return SamplingParams(n=1, temperature=0.0, max_tokens=self.config.answer_max_tokens)

    def verification_request(self, query: str, answer: str) -> tuple[str, SamplingParams]:
        cfg = self.config
        if cfg.method == "SelfConsistency":
            params = SamplingParams(
                n=cfg.num_samples, temperature=cfg.temperature, max_tokens=cfg.answer_max_tokens
            )
            return self.answer_prompt(query), params
        params = SamplingParams(
            n=cfg.num_samples, temperature=cfg.temperature, max_tokens=cfg.verifier_max_tokens
        )
        return verification_prompt(query, answer), params

    def verification_score(self, query: str, answer: str, samples: Sequence[str]) -> float:
        if self.config.method == "SelfConsistency":
            return agreement_score(query, answer, samples)
        return tally_verdicts(samples).p_ver

    def decide_from_score(self, query: str, score: float, threshold: float | None = None) -> RouteDecision:
        self.require_fitted()
        pair = self.require_pair()
        suitability = float(self.policy.suitability(score)[0])
        t = self.threshold if threshold is None else float(threshold)
        use_large = not (suitability >= t)
        costs = self.cascade_costs()
        relation = "<" if use_large else ">="
        side = (
            f"escalate to the large model {pair.large}"
            if use_large
            else f"keep the small model's answer ({pair.small})"
        )
        return RouteDecision(
            query=query,
            model_name=pair.name_for(use_large),
            use_large=use_large,
            score=suitability,
            threshold=t,
            reason=(
                f"{self.config.method}: verification_score {score:.3f} -> suitability {suitability:.4f} "
                f"{relation} threshold {t:.4f}: {side}"
            ),
            cost=costs.escalate if use_large else costs.keep,
            extra={
                "verification_score": float(score),
                "route_to_llm": use_large,
                "method": self.config.method,
                "suitability": suitability,
            },
        )

    # --- local end-to-end routing --------------------------------------------------------------
    def route_single(self, query: str | Mapping[str, Any]) -> dict[str, Any]:
        text = query_text(query)
        small = self.generator("small")
        answer = generate_one(small, self.answer_prompt(text), self.answer_params()).text
        prompt, params = self.verification_request(text, answer)
        samples = [c.text for c in generate_one(small, prompt, params).completions]
        score = self.verification_score(text, answer, samples)
        decision = self.decide_from_score(text, score)
        result = decision.to_dict(self.score_key)
        if self.config.method != "SelfConsistency":
            result["verdicts"] = tally_verdicts(samples).as_dict()
        result["small_response"] = answer
        if not decision.use_large:
            result["response"] = answer
        elif "large" in self.generators:
            result["response"] = generate_one(self.generator("large"), text, self.answer_params()).text
        else:
            # Route-only use (no large engine bound): the decision stands, the caller calls the large model.
            result["response"] = None
        return result

    # --- training ------------------------------------------------------------------------------
    def signal_of(self, example: QueryExample, small: str) -> float | None:
        """The method's verification score stored on the small model's record, if the data carries it."""
        outcome = example.outcomes[small]
        if self.config.method == "SelfConsistency":
            if not outcome.sampled_answers or outcome.response is None:
                return None
            return agreement_score(example.query, outcome.response, outcome.sampled_answers)
        return outcome.verification_score

    def missing_signal_indices(self, data: RoutingDataset) -> list[int]:
        small = self.require_pair().small
        return [i for i, ex in enumerate(data.examples) if self.signal_of(ex, small) is None]

    def signals(self, data: RoutingDataset) -> np.ndarray:
        """Verification score of every query; samples missing ones with the bound small model."""
        if self.missing_signal_indices(data):
            if "small" not in self.generators:
                what = (
                    "sampled_answers"
                    if self.config.method == "SelfConsistency"
                    else "verifier_votes or p_ver"
                )
                raise ConfigError(
                    f"automix: {len(self.missing_signal_indices(data))} of {len(data)} queries have no {what} "
                    f"on "
                    f"the small model's records; bind a 'small' generator to sample them, or use data that "
                    f"carries them (e.g. artifacts/automix/verification_samples.jsonl)"
                )
            data = self.sample_verifications(data)
        small = self.require_pair().small
        return np.array([self.signal_of(ex, small) for ex in data.examples], dtype=np.float64)

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        pair = self.resolve_pair(train)
        data = train.complete_for([pair.small, pair.large])
        if len(data) == 0:
            raise ConfigError(
                f"automix: no training query has records for both {pair.small} and {pair.large}"
            )
        self.last_sampling_report = {}
        scores = self.signals(data)
        matrix = data.performance_matrix([pair.small, pair.large])
        self.policy = self.build_policy()
        stats = self.policy.fit(scores, matrix[:, 0], matrix[:, 1], self.cascade_costs())
        self.training_summary = {"n_train": len(data), "mean_score": float(scores.mean()), **stats}
        if self.last_sampling_report:
            self.training_summary["sampled_verdicts"] = dict(self.last_sampling_report)
        self.fitted = True
        return {"method": self.config.method, **self.training_summary}

    def sample_verifications(self, data: RoutingDataset) -> RoutingDataset:
        """A copy of ``data`` whose small-model records carry sampled verdicts (``verifier_votes``) or, for
        SelfConsistency, ``sampled_answers``; queries that already have them are left as they are. Records
        without a small-model ``response`` get a greedy answer first. One generate call (n samples each) per
        batch of ``sampling_batch_size`` queries."""
        small_name = self.require_pair().small
        generator = self.generator("small")
        examples = list(data.examples)
        todo = self.missing_signal_indices(data)
        self._fill_missing_answers(examples, todo, small_name, generator)
        batch = self.config.sampling_batch_size
        tallies = {"yes": 0, "no": 0, "unparseable": 0}
        bar = progress_bar("automix: sampling verifications", total=len(todo), unit="query")
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            requests = [
                self.verification_request(examples[i].query, examples[i].outcomes[small_name].response or "")
                for i in chunk
            ]
            params = requests[0][1]
            results = generator.generate([generator.chat_prompt([user(p)]) for p, _ in requests], params)
            for i, result in zip(chunk, results):
                samples = [c.text for c in result.completions]
                examples[i] = self._with_samples(examples[i], small_name, samples, tallies)
            bar.update(len(chunk))
        bar.close()
        self.last_sampling_report = {"queries": len(todo), **tallies}
        return RoutingDataset(examples, data.llm_data)

    def _fill_missing_answers(
        self, examples: list[QueryExample], todo: Sequence[int], small: str, generator: Generator
    ) -> None:
        unanswered = [i for i in todo if examples[i].outcomes[small].response is None]
        for start in range(0, len(unanswered), self.config.sampling_batch_size):
            chunk = unanswered[start : start + self.config.sampling_batch_size]
            prompts = [generator.chat_prompt([user(self.answer_prompt(examples[i].query))]) for i in chunk]
            for i, result in zip(chunk, generator.generate(prompts, self.answer_params())):
                examples[i] = replace_outcome(examples[i], small, response=result.text)

    def _with_samples(
        self, example: QueryExample, small: str, samples: list[str], tallies: dict[str, int]
    ) -> QueryExample:
        if self.config.method == "SelfConsistency":
            return replace_outcome(example, small, sampled_answers=tuple(samples))
        tally: VerdictTally = tally_verdicts(samples)
        for key, value in tally.as_dict().items():
            tallies[key] += value
        return replace_outcome(example, small, verifier_votes=tuple(tally.votes()), p_ver=None)

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        self.require_fitted()
        return np.asarray(self.policy.suitability(self.signals(data)), dtype=np.float64)

    def cost_model(self, data: RoutingDataset) -> CostModel:
        """The cascade in the config's relative units: small + verifier on every query, + large if escalated."""
        from routers.evaluation.metrics import CostModel

        n, cfg = len(data), self.config
        return CostModel(
            small=np.full(n, cfg.small_model_cost),
            large=np.full(n, cfg.large_model_cost),
            overhead=cfg.verifier_cost,
            cascade=True,
        )

    # --- artifacts -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "training": self.training_summary}

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        self.policy = policy_from_dict(state["policy"])
        if self.policy.kind != self.config.method:
            raise ValueError(f"policy kind {self.policy.kind!r} does not match method {self.config.method!r}")
        self.training_summary = dict(state.get("training", {}))


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def generate_one(generator: Generator, content: str, params: SamplingParams) -> GenerationResult:
    """One chat-formatted prompt through ``generator``; returns its GenerationResult."""
    return generator.generate([generator.chat_prompt([user(content)])], params)[0]


def replace_outcome(example: QueryExample, model: str, **update: Any) -> QueryExample:
    outcome: ModelOutcome = example.outcomes[model].model_copy(update=update)
    return example.model_copy(update={"outcomes": {**example.outcomes, model: outcome}})


def write_verification_samples(data: RoutingDataset, path: str | Path) -> Path:
    """Write ``data`` in LLMRouter's JSONL form (one line per query and model), carrying the verification
    fields, so a later fit reads them instead of sampling again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for ex in data.examples:
            for model, outcome in ex.outcomes.items():
                record: dict[str, Any] = {
                    "task_name": ex.task_name,
                    "query": ex.query,
                    "ground_truth": ex.ground_truth,
                    "metric": ex.metric,
                    "model_name": model,
                    "performance": outcome.performance,
                    "response": outcome.response,
                }
                for key in ("token_num", "cost", "p_ver"):
                    if getattr(outcome, key) is not None:
                        record[key] = getattr(outcome, key)
                if outcome.verifier_votes is not None:
                    record["verifier_votes"] = list(outcome.verifier_votes)
                if outcome.sampled_answers is not None:
                    record["sampled_answers"] = list(outcome.sampled_answers)
                handle.write(json.dumps(record) + "\n")
    return path
