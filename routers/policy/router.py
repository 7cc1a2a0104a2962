"""PolicyRouter: a small Gemma model, trained SFT then DPO, writes a policy label; the policy map turns it
into a model. The router learns *policies* (Standard / Complex / Ambiguous), not model names, so models
can change by editing ``policy_map.json`` without retraining.

Score for threshold sweeps: the router model's probability (restricted to the three labels) of the
labels that the policy map sends to the small model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from routers.base import RouteDecision, Router, RouterConfig, query_text, read_artifact_manifest
from routers.causal_lm.router import ensure_merged_from, transformers_batch_logprobs
from routers.config import resolve_path
from routers.data import RoutingDataset
from routers.engines import Generator, GeneratorConfig, SamplingParams
from routers.errors import ArtifactError, ConfigError
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
from routers.policy.training import PolicyTrainConfig, train_policy_router
from routers.progress import progress_bar

ADAPTER_SUBDIR = "adapter"
MERGED_SUBDIR = "merged"
POLICY_MAP_FILE = "policy_map.json"
LABELS = list(PolicyLabel)


class PolicyRouterConfig(RouterConfig):
    base_model: str = "models/gemma-3-270m"
    policy_map_path: str | None = Field(default=None, description="policy map JSON; default: the artifact's copy")
    default_policy: PolicyLabel = Field(default=PolicyLabel.COMPLEX, description="used when the output cannot be parsed")
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    use_qlora: bool = False
    sft_epochs: float = 3.0
    dpo_epochs: float = 1.0
    sft_max_steps: int | None = None
    dpo_max_steps: int | None = None
    sft_learning_rate: float = 2e-4
    dpo_learning_rate: float = 5e-5
    dpo_beta: float = 0.1
    batch_size: int = 4
    max_length: int = 256
    max_train_examples: int | None = Field(default=None, ge=3, description="balanced subset of the oracle labels")
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="queries held out of training")
    num_threads: int | None = None
    max_new_tokens: int = Field(default=8, ge=1, description="the label is on the first line")
    engine: dict[str, Any] = Field(default_factory=dict, description="GeneratorConfig overrides for serving")


class PolicyRouter(Router):
    name = "policy_router"
    Config = PolicyRouterConfig
    score_key = "router_score"
    engine_roles = frozenset({"router"})
    config: PolicyRouterConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.policy_map: PolicyMap = DEFAULT_POLICY_MAP
        if self.config.policy_map_path:
            self.policy_map = load_policy_map(resolve_path(self.config.policy_map_path))
        self.adapter_dir: Path | None = None
        self.artifact_dir: Path | None = None
        self.train_metrics: dict[str, Any] = {}
        self.held_out: list[Any] = []
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    # --- policy map ----------------------------------------------------------------------------
    def reload_policy_map(self, path: str | None = None) -> None:
        """Re-read the policy map (``path``, else the configured one, else the artifact's copy)."""
        source = path or self.config.policy_map_path
        if source is None and self.artifact_dir is not None:
            source = str(self.artifact_dir / POLICY_MAP_FILE)
        if source is None:
            raise ConfigError("no policy map to reload: pass a path or set policy_map_path")
        self.policy_map = load_policy_map(resolve_path(source))

    def target_for(self, policy: PolicyLabel) -> tuple[str, bool]:
        """(model name, use_large) of a policy under the current map."""
        pair = self.require_pair()
        target = self.policy_map.target(policy)
        if target in ("small", "large"):
            return pair.name_for(target == "large"), target == "large"
        if self.llm_data and target not in self.llm_data:
            raise ConfigError(f"policy map sends {policy.value} to {target!r}, which is not in llm_data {sorted(self.llm_data)}")
        return target, target != pair.small

    def small_policies(self) -> list[PolicyLabel]:
        return [label for label in LABELS if not self.target_for(label)[1]]

    # --- engines ---------------------------------------------------------------------------------
    def evaluation_engine_roles(self) -> frozenset[str]:
        return frozenset({"router"})

    def merged_model_dir(self) -> Path:
        if self.adapter_dir is None:
            raise ConfigError("the policy router has no adapter yet; fit() or load() it first")
        target = (self.artifact_dir or self.adapter_dir.parent) / MERGED_SUBDIR
        return ensure_merged_from(self.config.base_model, self.adapter_dir, target)

    def default_engine_config(self, role: str) -> GeneratorConfig | None:
        if role != "router" or self.adapter_dir is None:
            return None
        # "plain": the prompt is raw text with the tokenizer's BOS, as TRL tokenised it in training.
        settings = {"model": str(self.merged_model_dir()), "prompt_format": "plain",
                    "max_input_tokens": self.config.max_length, **self.config.engine}
        return GeneratorConfig.model_validate(settings)

    def router_generator(self) -> Generator:
        """The bound router engine, or one built from the artifact's merged model."""
        return self.generator_or_default("router")

    # --- step API (the Serve deployment calls these) ------------------------------------------------
    def router_prompt(self, query: str) -> str:
        return router_prompt(query)

    def router_params(self) -> SamplingParams:
        return SamplingParams(n=1, temperature=0.0, max_tokens=self.config.max_new_tokens, stop=["\n"])

    def decide_from_generation(self, query: str, text: str) -> RouteDecision:
        parsed = parse_policy(text, self.config.default_policy)
        model, use_large = self.target_for(parsed.policy)
        how = "wrote" if parsed.ok else f"could not be parsed ({text.strip()[:40]!r}); default"
        return RouteDecision(
            query=query, model_name=model, use_large=use_large,
            reason=f"router model {how} policy {parsed.policy.value} -> policy map -> {model}",
            cost=self.estimate_cost(model, query),
            extra={"policy": parsed.policy.value, "policy_parse_method": parsed.method, "generated": text},
        )

    def route_single(self, query: str | Mapping[str, Any]) -> dict[str, Any]:
        return self.route_queries([query])[0]

    def route_queries(self, queries: Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One generate call for the whole batch: the engine batches the prompts (vLLM schedules them together)."""
        texts = [query_text(q) for q in queries]
        outputs = self.router_generator().generate([self.router_prompt(t) for t in texts], self.router_params())
        return [self.decide_from_generation(t, o.text).to_dict(self.score_key) for t, o in zip(texts, outputs, strict=True)]

    # --- scores for evaluation ---------------------------------------------------------------------
    def label_probabilities(self, queries: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """(n, 3) P(label | prompt) restricted to the three labels, in ``PolicyLabel`` order."""
        generator = self.router_generator()
        continuations = [f" {label.value}" for label in LABELS]
        out = np.zeros((len(queries), len(LABELS)))
        bar = progress_bar("policy router: scoring", total=len(queries), unit="query")
        for start in range(0, len(queries), batch_size):
            prompts = [self.router_prompt(q) for q in queries[start:start + batch_size]]
            if hasattr(generator, "model"):
                logprobs = transformers_batch_logprobs(generator, prompts, continuations)
            else:
                logprobs = np.array([generator.sequence_logprobs(p, continuations) for p in prompts])
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
    def train_config(self) -> PolicyTrainConfig:
        fields = set(PolicyTrainConfig.model_fields)
        values = {k: v for k, v in self.config.model_dump().items() if k in fields}
        values["base_model"] = str(resolve_path(self.config.base_model)) if Path(resolve_path(self.config.base_model)).exists() else self.config.base_model
        return PolicyTrainConfig.model_validate(values)

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
        self.train_metrics = {"n_sft": len(sft), "n_dpo": len(dpo), "n_held_out": len(self.held_out), **result.summary()}
        self.fitted = True
        return dict(self.train_metrics)

    def policy_accuracy(self, records: Sequence[Any]) -> dict[str, float]:
        """Share of oracle records whose policy the router writes (greedy), and the parse-failure share."""
        if not records:
            return {"policy_accuracy": float("nan"), "parse_failures": 0.0, "n": 0.0}
        generator = self.router_generator()
        texts = [r.text for r in generator.generate([self.router_prompt(r.query) for r in records], self.router_params())]
        parsed = [parse_policy(t, self.config.default_policy) for t in texts]
        right = sum(p.policy == r.policy for p, r in zip(parsed, records))
        return {"policy_accuracy": right / len(records), "parse_failures": sum(not p.ok for p in parsed) / len(records),
                "n": float(len(records))}

    # --- artifacts -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"adapter_dir": ADAPTER_SUBDIR, "policy_map_file": POLICY_MAP_FILE, "train_metrics": self.train_metrics}

    def save_tensors(self, directory: Path) -> None:
        if self.adapter_dir is None:
            raise ConfigError("nothing to save: the policy router has no adapter")
        target = directory / ADAPTER_SUBDIR
        if self.adapter_dir.resolve() != target.resolve():
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copyfile(self.adapter_dir / name, target / name)
        (directory / POLICY_MAP_FILE).write_text(json.dumps(self.policy_map.to_json(), indent=2) + "\n")
        self.adapter_dir, self.artifact_dir = target, directory

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        adapter_dir = directory / state.get("adapter_dir", ADAPTER_SUBDIR)
        missing = [n for n in ("adapter_config.json", "adapter_model.safetensors") if not (adapter_dir / n).exists()]
        if missing:
            raise ArtifactError(f"{adapter_dir}: missing {missing}")
        self.adapter_dir, self.artifact_dir = adapter_dir, directory
        self.train_metrics = dict(state.get("train_metrics", {}))
        if self.config.policy_map_path is None:
            self.policy_map = load_policy_map(directory / state.get("policy_map_file", POLICY_MAP_FILE))


def artifact_policy_map(directory: str | Path) -> dict[str, str]:
    """The policy map saved with an artifact (for tools that only read JSON)."""
    payload = read_artifact_manifest(Path(directory))
    return json.loads((Path(directory) / payload["state"].get("policy_map_file", POLICY_MAP_FILE)).read_text())
