"""PolicyRouter: a small Gemma model, trained SFT then DPO, writes a policy label; the policy map turns it
into a model. The router learns *policies* (Standard / Complex / Ambiguous), not model names, so models
can change by editing ``policy_map.json`` without retraining.

Score for threshold sweeps: the router model's probability (restricted to the three labels) of the
labels that the policy map sends to the small model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from routers.base import RouteDecision, RouterConfig
from routers.causal_lm.router import ensure_merged_from
from routers.data import RoutingDataset
from routers.engines import Generator, GeneratorConfig, SamplingParams
from routers.errors import ConfigError
from routers.generative import ADAPTER_SUBDIR, MERGED_SUBDIR, GenerativeRouter
from routers.paths import resolve_path
from routers.policy.datasets import (
    balanced,
    dpo_pairs,
    oracle_records_from_routing,
    sft_examples,
    split_by_query,
)
from routers.policy.matrix import PolicyLabel
from routers.policy.policy_map import DEFAULT_POLICY_MAP, PolicyMap, load_policy_map
from routers.policy.prompts import parse_policy, router_prompt
from routers.policy.training import PolicyHyperparams, PolicyTrainConfig, train_policy_router
from routers.progress import progress_bar

POLICY_MAP_FILE = "policy_map.json"
LABELS = list(PolicyLabel)


class PolicyRouterConfig(RouterConfig, PolicyHyperparams):
    """The router's settings: the training hyperparameters (``PolicyHyperparams``, one definition shared with
    ``PolicyTrainConfig``) and how the trained model is subset, queried and mapped to models."""

    policy_map_path: str | None = Field(default=None, description="policy map JSON; default: the artifact's copy")
    default_policy: PolicyLabel = Field(default=PolicyLabel.COMPLEX,
                                        description="used when the output cannot be parsed")
    max_train_examples: int | None = Field(default=None, ge=3, description="balanced subset of the oracle labels")
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="queries held out of training")
    max_new_tokens: int = Field(default=8, ge=1, description="the label is on the first line")
    engine: dict[str, Any] = Field(default_factory=dict, description="GeneratorConfig overrides for serving")


class PolicyRouter(GenerativeRouter):
    name = "policy_router"
    Config = PolicyRouterConfig
    score_key = "router_score"
    display_name = "policy"
    config: PolicyRouterConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.policy_map: PolicyMap = DEFAULT_POLICY_MAP
        #: the serving app's model keys the policy map may name besides the roles and llm_data's models
        self.app_models: frozenset[str] = frozenset()
        if self.config.policy_map_path:
            self.policy_map = load_policy_map(resolve_path(self.config.policy_map_path))
        self.held_out: list[Any] = []

    # --- policy map ----------------------------------------------------------------------------
    def reload_policy_map(self, path: str | None = None) -> None:
        """Re-read the policy map (``path``, else the configured one, else the artifact's copy)."""
        source = path or self.config.policy_map_path
        if source is None and self.artifact_dir is not None:
            source = str(self.artifact_dir / POLICY_MAP_FILE)
        if source is None:
            raise ConfigError("no policy map to reload: pass a path or set policy_map_path")
        self.policy_map = load_policy_map(resolve_path(source))

    def serve_app_models(self, keys: Collection[str]) -> None:
        """Let the policy map name any of the serving app's models by key (an N-model app), and check that
        every label's target is a role, a model of llm_data or one of these: a bad map fails here, at load."""
        self.app_models = frozenset(keys)
        for label in LABELS:
            self.target_for(label)

    def target_for(self, policy: PolicyLabel) -> tuple[str, bool | None]:
        """(model name, use_large) of a policy under the current map; use_large is None for one of the app's
        models named by key (``serve_app_models``), which is neither side of the pair."""
        pair = self.require_pair()
        target = self.policy_map.target(policy)
        if target in ("small", "large"):
            return pair.name_for(target == "large"), target == "large"
        if target in self.app_models:
            return target, None
        if self.llm_data and target not in self.llm_data:
            apps = f" or the app's models {sorted(self.app_models)}" if self.app_models else ""
            raise ConfigError(f"policy map sends {policy.value} to {target!r}, which is not in llm_data "
                              f"{sorted(self.llm_data)}{apps}")
        return target, target != pair.small

    def small_policies(self) -> list[PolicyLabel]:
        return [label for label in LABELS if not self.target_for(label)[1]]

    # --- engines ---------------------------------------------------------------------------------
    def merged_model_dir(self) -> Path:
        adapter_dir = self.require_adapter()
        target = (self.artifact_dir or adapter_dir.parent) / MERGED_SUBDIR
        return ensure_merged_from(self.config.base_model, adapter_dir, target)

    def default_engine_config(self, role: str) -> GeneratorConfig | None:
        if role != "router" or self.adapter_dir is None:
            return None
        # "plain": the prompt is raw text with the tokenizer's BOS, as TRL tokenised it in training.
        settings = {"model": str(self.merged_model_dir()), "prompt_format": "plain",
                    "max_input_tokens": self.config.max_length, **self.config.engine}
        return GeneratorConfig.model_validate(settings)

    # --- step API (the Serve deployment calls these) ------------------------------------------------
    def router_prompt(self, query: str) -> str:
        return router_prompt(query)

    def router_params(self) -> SamplingParams:
        return SamplingParams(n=1, temperature=0.0, max_tokens=self.config.max_new_tokens, stop=["\n"])

    async def adecide_batch(self, generator: Generator, queries: Sequence[str], generated: Sequence[str],
                            thresholds: Sequence[float | None]) -> list[RouteDecision]:
        # The policy label and the policy map decide: there is no score for a threshold to move.
        return [self.decide_from_generation(query, text) for query, text in zip(queries, generated, strict=True)]

    def decide_from_generation(self, query: str, text: str) -> RouteDecision:
        parsed = parse_policy(text, self.config.default_policy)
        model, use_large = self.target_for(parsed.policy)
        how = "wrote" if parsed.ok else f"could not be parsed ({text.strip()[:40]!r}); default"
        return RouteDecision(
            query=query, model_name=model, use_large=use_large,
            app_model=model if use_large is None else None,
            reason=f"router model {how} policy {parsed.policy.value} -> policy map -> {model}",
            cost=self.estimate_cost(model, query),
            extra={"policy": parsed.policy.value, "policy_parse_method": parsed.method, "generated": text},
        )

    # --- scores for evaluation ---------------------------------------------------------------------
    def label_probabilities(self, queries: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """(n, 3) P(label | prompt) restricted to the three labels, in ``PolicyLabel`` order."""
        generator = self.router_generator()
        continuations = [f" {label.value}" for label in LABELS]
        out = np.zeros((len(queries), len(LABELS)))
        bar = progress_bar("policy router: scoring", total=len(queries), unit="query")
        for start in range(0, len(queries), batch_size):
            prompts = [self.router_prompt(q) for q in queries[start:start + batch_size]]
            logprobs = np.asarray(generator.batch_sequence_logprobs(prompts, continuations), dtype=np.float64)
            logprobs -= logprobs.max(axis=1, keepdims=True)
            probs = np.exp(logprobs)
            out[start:start + len(prompts)] = probs / probs.sum(axis=1, keepdims=True)
            bar.update(len(prompts))
        bar.close()
        return out

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        self.require_fitted()
        probs = self.label_probabilities(data.queries)
        small = [LABELS.index(label) for label in self.small_policies()]
        return probs[:, small].sum(axis=1)

    # --- training ------------------------------------------------------------------------------------
    def train_config(self, **run_settings: Any) -> PolicyTrainConfig:
        """The training run of this router's config; ``run_settings`` add the run's own (``save_steps``) or
        override a hyperparameter (a job passes the resolved ``base_model``)."""
        return PolicyTrainConfig.from_router_config(self.config, seed=self.config.seed, **run_settings)

    def training_sets(self, train: RoutingDataset) -> tuple[list[dict[str, str]], list[dict[str, str]], list[Any]]:
        pair = self.resolve_pair(train)
        records = oracle_records_from_routing(train, pair.small, pair.large)
        fit_records, held_out = split_by_query(records, self.config.eval_fraction, self.config.seed)
        chosen = balanced(fit_records, self.config.max_train_examples, self.config.seed)
        return sft_examples(chosen), dpo_pairs(chosen), held_out

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        sft, dpo, self.held_out = self.training_sets(train)
        self._scratch = tempfile.TemporaryDirectory(prefix="policy-router-")
        result = train_policy_router(self.train_config(), sft, dpo, self._scratch.name)
        self.adapter_dir, self.artifact_dir = Path(self._scratch.name) / ADAPTER_SUBDIR, None
        self.generators.pop("router", None)
        self.train_metrics = {"n_sft": len(sft), "n_dpo": len(dpo), "n_held_out": len(self.held_out),
                              **result.summary()}
        self.fitted = True
        return dict(self.train_metrics)

    def policy_accuracy(self, records: Sequence[Any]) -> dict[str, float]:
        """Share of oracle records whose policy the router writes (greedy), and the parse-failure share."""
        if not records:
            return {"policy_accuracy": float("nan"), "parse_failures": 0.0, "n": 0.0}
        generator = self.router_generator()
        prompts = [self.router_prompt(r.query) for r in records]
        texts = [r.text for r in generator.generate(prompts, self.router_params())]
        parsed = [parse_policy(t, self.config.default_policy) for t in texts]
        right = sum(p.policy == r.policy for p, r in zip(parsed, records))
        return {"policy_accuracy": right / len(records), "parse_failures": sum(not p.ok for p in parsed) / len(records),
                "n": float(len(records))}

    # --- artifacts -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"adapter_dir": ADAPTER_SUBDIR, "policy_map_file": POLICY_MAP_FILE, "train_metrics": self.train_metrics}

    def save_tensors(self, directory: Path) -> None:
        self.save_adapter(directory)
        (directory / POLICY_MAP_FILE).write_text(json.dumps(self.policy_map.to_json(), indent=2) + "\n")

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        self.load_adapter(state, directory)
        if self.config.policy_map_path is None:
            self.policy_map = load_policy_map(directory / state.get("policy_map_file", POLICY_MAP_FILE))
