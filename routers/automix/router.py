"""AutoMix router (Aggarwal, Madaan et al., 2023): the small model answers, verifies its own answer with
N sampled verdicts, and a policy decides whether to keep the answer or escalate to the large model.

``aroute`` / ``aroute_many`` run the cascade once, for the Serve app (the small model behind an adapter
over its deployment) and for ``route_single`` / ``route_queries`` (bound local generators) alike, from
these steps:

1. ``answer_prompt(query)`` + ``answer_params()``: the small model's answer.
2. ``verification_request(query, answer)``: the user message and ``SamplingParams(n=num_samples)`` of
   ONE generate call (verdicts; for SelfConsistency, sampled answers).
3. ``verification_score(query, answer, samples)``: p_ver (or agreement), in [0, 1].
4. ``decide_from_score(query, score, threshold)``: the policy's decision.

A batch takes one generate call per step: all answers, then all verification prompts (``n`` samples
each); ``route_queries`` then answers the escalated queries on the large model when one is bound.
``route_single`` is the batch of one, so both give the same result for a query.

**Tiers** (``with_tiers``): a cascade over an ordered list of models, cheapest first, whose names are the
engine roles (the Serve app's model keys). Every tier but the last answers the queries still open, verifies its
own answer and keeps it or escalates, by the same policy and threshold; the last tier answers what is left.
Decisions then name the tier (``app_model``), keep the tier's answer, and list each visited tier under
``extra["tiers"]``. The default tiers, ``("small", "large")``, are the two-model cascade above, unchanged.

Scores for the evaluation curve are the policy's small-suitability (``dataset_scores``); the router keeps
the small answer iff suitability >= threshold (the policy's own threshold unless ``router_threshold`` or
a per-call threshold overrides it). Costs are the cascade's, in the config's relative units.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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
from routers.automix.stored_votes import join_votes, read_verifier_votes
from routers.automix.verification import (
    VerdictTally,
    agreement_score,
    tally_verdicts,
    verification_prompt,
)
from routers.base import (
    ModelUsage,
    QueryLike,
    RouteContext,
    RouteDecision,
    Router,
    RouterConfig,
    Thresholds,
    per_query,
    query_text,
    run_sync,
)
from routers.data import ModelOutcome, QueryExample, RoutingDataset
from routers.engines import ChatModel, Engines, GenerationResult, Generator, Messages, SamplingParams
from routers.errors import ConfigError
from routers.paths import resolve_path
from routers.progress import log, progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm

    from routers.evaluation.metrics import CostModel

Method = Literal["Threshold", "POMDP", "SelfConsistency"]
#: the two-model cascade: the small model answers and verifies, the large one takes what it escalates
PAIR_TIERS = ("small", "large")
R = TypeVar("R")


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
    # The seed's runtime keys (seed 004's hparam table). They change how the work runs, never the decision.
    verbose: bool = Field(default=True, description="progress bars and a fit summary line (--quiet still wins)")
    max_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="generate calls in flight at once when sampling verifications over a dataset "
        "(chunks of sampling_batch_size); >1 pays off with remote/API or vLLM engines",
    )
    device: str | None = Field(
        default=None,
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="where the small/large engines built from this config run, unless an engine sets its "
        "own device; None = the engines' setting (auto)",
    )
    # Stored verification evidence (routers.automix.stored_votes): joined onto the routing data by query hash.
    verifier_votes: str | None = Field(
        default=None,
        description="a verifier_votes.jsonl (e.g. artifacts/automix/verifier_votes.jsonl) whose verdicts are "
        "joined onto the routing data by query sha256 and model name before missing ones are sampled",
    )
    verified_only: bool = Field(
        default=False,
        description="fit only on the training queries whose verdicts are stored (in verifier_votes or the "
        "data itself) and leave the rest out instead of sampling them",
    )

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
        #: the engine roles the cascade walks, cheapest first (module docstring: Tiers)
        self.tiers: tuple[str, ...] = PAIR_TIERS

    def with_tiers(self, tiers: Sequence[str]) -> AutomixRouter:
        """Cascade over ``tiers`` (engine roles, cheapest first; at least two, no repeats)."""
        tiers = tuple(tiers)
        if len(tiers) < 2 or len(set(tiers)) != len(tiers):
            raise ConfigError(f"AutoMix tiers must be at least two distinct models, got {list(tiers)}")
        self.tiers = tiers
        return self

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

    def engine_device(self) -> str | None:
        return self.config.device

    def map_chunks(self, work: Callable[[list[int]], R], chunks: Sequence[list[int]], bar: tqdm) -> list[R]:
        """``work`` on every chunk of query indices, up to ``max_workers`` at once, results in chunk order.

        Threads, not processes: the work is waiting on an engine (a remote deployment, vLLM, an API), and a
        local transformers engine serialises its forward passes anyway.
        """
        def collect(outputs: Iterable[R]) -> list[R]:
            results = []
            for chunk, output in zip(chunks, outputs):
                results.append(output)
                bar.update(len(chunk))
            return results

        if self.config.max_workers == 1 or len(chunks) < 2:
            return collect(map(work, chunks))
        with ThreadPoolExecutor(max_workers=self.config.max_workers) as pool:
            return collect(pool.map(work, chunks))

    def training_engine_roles(self) -> frozenset[str]:
        """Without the data at hand, assume it lacks verification fields (the shipped data does);
        ``training_engine_roles_for(data)`` gives the exact answer."""
        return frozenset({"small"})

    def training_engine_roles_for(self, data: RoutingDataset) -> frozenset[str]:
        """{"small"} only when ``data`` (with the stored votes joined, less what ``verified_only`` leaves out)
        lacks the verification fields the method needs."""
        pair = self.resolve_pair(data) if self.pair is None else self.pair
        train = self.training_set(data.complete_for([pair.small, pair.large]), announce=False)
        return frozenset({"small"}) if self.missing_signal_indices(train) else frozenset()

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

    # --- the cascade -----------------------------------------------------------------------------
    def answer_chat(self, query: str, context: RouteContext | None) -> Messages:
        """The chat the small model answers: the request's own, with the query's turn as ``answer_prompt``
        words it, or just the query."""
        messages = list(context.messages) if context is not None else []
        if messages and messages[-1]["role"] == "user" and messages[-1]["content"] == query:
            return [*messages[:-1], user(self.answer_prompt(query))]
        return messages or [user(self.answer_prompt(query))]

    def answer_settings(self, context: RouteContext | None) -> SamplingParams:
        """The request's sampling settings for the one answer that may be kept, else ``answer_params``."""
        if context is None or context.params is None:
            return self.answer_params()
        return context.params.model_copy(update={"n": 1})

    async def aroute(self, query: str, engines: Engines, threshold: float | None = None,
                     context: RouteContext | None = None) -> RouteDecision:
        return (await self.cascade([query], engines, [threshold], [context]))[0]

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        return await self.cascade(queries, engines, per_query(thresholds, len(queries)), [None] * len(queries))

    async def cascade(self, queries: Sequence[str], engines: Engines, thresholds: Sequence[float | None],
                      contexts: Sequence[RouteContext | None]) -> list[RouteDecision]:
        """Walk the tiers: at each but the last, the queries still open are answered, verified and kept or
        escalated (``verify_stage``); a kept answer travels in ``decision.answer``."""
        self.require_fitted()
        if not queries:
            return []
        open_queries = list(range(len(queries)))
        stages: list[list[RouteDecision]] = [[] for _ in queries]
        for tier in self.tiers[:-1]:
            decided = await self.verify_stage(tier, [queries[i] for i in open_queries], engines,
                                              [thresholds[i] for i in open_queries],
                                              [contexts[i] for i in open_queries])
            for i, decision in zip(open_queries, decided, strict=True):
                stages[i].append(decision)
            open_queries = [i for i, decision in zip(open_queries, decided, strict=True) if decision.use_large]
            if not open_queries:
                break
        if self.tiers == PAIR_TIERS:
            return [visited[0] for visited in stages]
        return [self.tiered_decision(visited) for visited in stages]

    async def verify_stage(self, tier: str, queries: Sequence[str], engines: Engines,
                           thresholds: Sequence[float | None],
                           contexts: Sequence[RouteContext | None]) -> list[RouteDecision]:
        """``tier`` answers every query, verifies its answers, and the policy decides (module docstring): one
        call for the answers, one for all verifications."""
        model = engines.chat_model(tier, "the AutoMix router")
        # Requests with their own sampling settings cannot share one call; route_queries' all share defaults.
        settings = [self.answer_settings(c) for c in contexts]
        answers = await self.answer_all(model, [self.answer_chat(q, c) for q, c in zip(queries, contexts)], settings)
        requests = [self.verification_request(q, a.text) for q, a in zip(queries, answers, strict=True)]
        # Every query's request has the same SamplingParams (n samples, temperature): one call serves all.
        verified = await model.achat([[user(prompt)] for prompt, _ in requests], requests[0][1])
        return [self.decision_for(query, answer, samples, threshold, role=tier)
                for query, answer, samples, threshold in zip(queries, answers, verified, thresholds, strict=True)]

    def tiered_decision(self, visited: Sequence[RouteDecision]) -> RouteDecision:
        """One decision from the tiers a query went through: the tier that kept its answer, or the last tier."""
        last = visited[-1]
        kept = not last.use_large
        tier = self.tiers[len(visited) - 1] if kept else self.tiers[len(visited)]
        steps = [{"model": self.tiers[k], "verification_score": d.extra["verification_score"],
                  "suitability": d.score, "kept": not d.use_large} for k, d in enumerate(visited)]
        reason = "; ".join(f"{self.tiers[k]}: {d.reason}" for k, d in enumerate(visited))
        return last.model_copy(update={
            "model_name": tier, "app_model": tier, "use_large": tier == self.tiers[-1],
            "reason": reason if kept else f"{reason}; the last tier, {tier}, answers",
            "usage": [u for d in visited for u in d.usage],
            "extra": {**last.extra, "route_to_llm": not kept, "tiers": steps},
        })

    @staticmethod
    async def answer_all(small: ChatModel, chats: list[Messages],
                         settings: list[SamplingParams]) -> list[GenerationResult]:
        if all(s == settings[0] for s in settings):
            return list(await small.achat(chats, settings[0]))
        parts = await asyncio.gather(*[small.achat([chat], s) for chat, s in zip(chats, settings, strict=True)])
        return [part[0] for part in parts]

    def decision_for(self, query: str, answer: GenerationResult, verification: GenerationResult,
                     threshold: float | None, role: str = "small") -> RouteDecision:
        samples = [c.text for c in verification.completions]
        decision = self.decide_from_score(query, self.verification_score(query, answer.text, samples), threshold)
        if self.config.method != "SelfConsistency":
            decision.extra["verdicts"] = tally_verdicts(samples).as_dict()
        decision.extra["small_response"] = answer.text
        decision.extra["verification_samples"] = len(samples)
        decision.answer = None if decision.use_large else answer
        decision.usage = [
            ModelUsage(role=role, purpose="answer", prompt_tokens=answer.prompt_tokens,
                       completion_tokens=answer.completion_tokens),
            ModelUsage(role=role, purpose="verification", prompt_tokens=verification.prompt_tokens,
                       completion_tokens=verification.completion_tokens),
        ]
        return decision

    # --- local end-to-end routing --------------------------------------------------------------
    def route_queries(self, queries: Sequence[QueryLike]) -> list[dict[str, Any]]:
        """The cascade for every query (``aroute_many``), then the escalated ones on the large model."""
        texts = [query_text(q) for q in queries]
        if not texts:
            return []
        decisions = run_sync(self.aroute_many(texts, self.local_engines()))
        results = [self.result_for(decision) for decision in decisions]
        self.answer_escalated(texts, results)
        return results

    def result_for(self, decision: RouteDecision) -> dict[str, Any]:
        """The seeds' result dict (``response`` is filled in for kept answers)."""
        result = decision.to_dict(self.score_key)
        result.pop("verification_samples", None)
        # Route-only use (no large engine bound) leaves escalated answers None: the caller calls the large model.
        result["response"] = None if decision.use_large else result["small_response"]
        return result

    def answer_escalated(self, texts: Sequence[str], results: list[dict[str, Any]]) -> None:
        """Fill in the large model's answers for escalated queries, in one call, when a large engine is bound."""
        escalated = [i for i, r in enumerate(results) if r["route_to_llm"]]
        if not escalated or "large" not in self.generators:
            return
        outputs = generate_chat(self.generator("large"), [texts[i] for i in escalated], self.answer_params())
        for i, output in zip(escalated, outputs):
            results[i]["response"] = output.text

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

    def votes_path(self) -> Path | None:
        return None if self.config.verifier_votes is None else resolve_path(self.config.verifier_votes)

    def with_stored_votes(self, data: RoutingDataset) -> RoutingDataset:
        """``data`` with the ``verifier_votes`` file's verdicts joined onto the small model's records (by query
        sha256 and model name; records that carry their own are left as they are); ``data`` without that key."""
        path = self.votes_path()
        if path is None:
            return data
        joined, _ = join_votes(data, read_verifier_votes(path), str(path), wanted=[self.require_pair().small])
        return joined

    def training_set(self, data: RoutingDataset, announce: bool = True) -> RoutingDataset:
        """The queries ``fit`` learns from: ``data`` with the stored votes joined; with ``verified_only``, only
        those that carry verdicts (a ConfigError when none do; ``announce`` logs how many are left out)."""
        data = self.with_stored_votes(data)
        if not self.config.verified_only:
            return data
        missing = set(self.missing_signal_indices(data))
        kept = data.subset(i for i in range(len(data)) if i not in missing)
        if len(kept) == 0:
            raise ConfigError(f"automix: verified_only, but none of the {len(data)} training queries has stored "
                              f"verdicts ({self.signal_name()}) in the data or in {self.votes_source()}")
        if missing and announce and self.config.verbose:
            log(f"automix: verified_only: fitting on the {len(kept)} training queries with stored verdicts, "
                f"leaving out {len(missing)}")
        return kept

    def signal_name(self) -> str:
        return "sampled_answers" if self.config.method == "SelfConsistency" else "verifier_votes or p_ver"

    def votes_source(self) -> str:
        path = self.votes_path()
        return "no verifier_votes file (hparam verifier_votes unset)" if path is None else f"verifier_votes {path}"

    def signals(self, data: RoutingDataset) -> np.ndarray:
        """Verification score of every query: stored verdicts (the data's, or the ``verifier_votes`` file's),
        else sampled with the bound small model."""
        return self.joined_signals(self.with_stored_votes(data))

    def joined_signals(self, data: RoutingDataset) -> np.ndarray:
        missing = self.missing_signal_indices(data)
        if missing:
            if "small" not in self.generators:
                raise ConfigError(
                    f"automix: {len(missing)} of {len(data)} queries have no {self.signal_name()} on the small "
                    f"model's records, in the data or in {self.votes_source()}; bind a 'small' generator to "
                    f"sample them, or store them in a votes file (e.g. artifacts/automix/verifier_votes.jsonl, "
                    f"written by python -m routers.automix.build_artifact) named by hparam verifier_votes"
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
        data = self.training_set(data)
        scores = self.joined_signals(data)
        matrix = data.performance_matrix([pair.small, pair.large])
        self.policy = self.build_policy()
        stats = self.policy.fit(scores, matrix[:, 0], matrix[:, 1], self.cascade_costs())
        self.training_summary = {"n_train": len(data), "mean_score": float(scores.mean()), **stats}
        if self.last_sampling_report:
            self.training_summary["sampled_verdicts"] = dict(self.last_sampling_report)
        self.record_reference_scores(self.policy.suitability(scores))
        self.fitted = True
        if self.config.verbose:
            log(f"automix: {self.config.method} policy fitted on {len(data)} queries "
                f"(mean verification score {scores.mean():.3f})")
        return {"method": self.config.method, **self.training_summary}

    def sample_verifications(self, data: RoutingDataset) -> RoutingDataset:
        """A copy of ``data`` whose small-model records carry sampled verdicts (``verifier_votes``) or, for
        SelfConsistency, ``sampled_answers``; queries that already have them are left as they are. Records
        without a small-model ``response`` get a greedy answer first. One generate call (n samples each) per
        chunk of ``sampling_batch_size`` queries, up to ``max_workers`` chunks at once."""
        small_name = self.require_pair().small
        generator = self.generator("small")
        examples = list(data.examples)
        todo = self.missing_signal_indices(data)
        self._fill_missing_answers(examples, todo, small_name, generator)
        tallies = {"yes": 0, "no": 0, "unparseable": 0}

        def sample(chunk: list[int]) -> list[GenerationResult]:
            requests = [
                self.verification_request(examples[i].query, examples[i].outcomes[small_name].response or "")
                for i in chunk
            ]
            return generate_chat(generator, [prompt for prompt, _ in requests], requests[0][1])

        chunks = self.chunks(todo)
        bar = progress_bar("automix: sampling verifications", len(todo), unit="query", enabled=self.config.verbose)
        for chunk, results in zip(chunks, self.map_chunks(sample, chunks, bar)):
            for i, result in zip(chunk, results):
                examples[i] = self._with_samples(examples[i], small_name, [c.text for c in result.completions], tallies)
        bar.close()
        self.last_sampling_report = {"queries": len(todo), **tallies}
        return RoutingDataset(examples, data.llm_data)

    def chunks(self, indices: Sequence[int]) -> list[list[int]]:
        size = self.config.sampling_batch_size
        return [list(indices[start : start + size]) for start in range(0, len(indices), size)]

    def _fill_missing_answers(
        self, examples: list[QueryExample], todo: Sequence[int], small: str, generator: Generator
    ) -> None:
        unanswered = [i for i in todo if examples[i].outcomes[small].response is None]

        def answer(chunk: list[int]) -> list[GenerationResult]:
            prompts = [self.answer_prompt(examples[i].query) for i in chunk]
            return generate_chat(generator, prompts, self.answer_params())

        chunks = self.chunks(unanswered)
        quiet = progress_bar("", len(unanswered), enabled=False)
        for chunk, results in zip(chunks, self.map_chunks(answer, chunks, quiet)):
            for i, result in zip(chunk, results):
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


def generate_chat(generator: Generator, contents: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
    """Each user message chat-formatted, all in ONE generate call (the engine batches them)."""
    if not contents:
        return []
    return generator.generate([generator.chat_prompt([user(c)]) for c in contents], params)


def replace_outcome(example: QueryExample, model: str, **update: Any) -> QueryExample:
    outcome: ModelOutcome = example.outcomes[model].model_copy(update=update)
    return example.model_copy(update={"outcomes": {**example.outcomes, model: outcome}})


def outcome_record(example: QueryExample, model: str, outcome: ModelOutcome) -> dict[str, Any]:
    """One LLMRouter JSONL line (one query, one model) carrying the verification fields: the lines of
    ``train_jobs.automix``'s resumable run file (``runs/``, never shipped: it copies the public text; what
    is shipped is ``stored_votes.write_verifier_votes``'s file)."""
    record: dict[str, Any] = {
        "task_name": example.task_name,
        "query": example.query,
        "ground_truth": example.ground_truth,
        "metric": example.metric,
        "model_name": model,
        "performance": outcome.performance,
        "response": outcome.response,
    }
    for key in ("token_num", "cost", "p_ver"):
        if getattr(outcome, key) is not None:
            record[key] = getattr(outcome, key)
    for key in ("verifier_votes", "sampled_answers"):
        if getattr(outcome, key) is not None:
            record[key] = list(getattr(outcome, key))
    return record
