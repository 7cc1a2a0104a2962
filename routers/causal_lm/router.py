"""Causal-LM router (RouteLLM's ``causal_llm`` idea): a LoRA-finetuned small LM writes the best model's name.

Training (``fit``): every training query becomes ``Query: {query}\\n\\nBest LLM: <name><eos>`` where
``<name>`` is the best candidate (highest performance, ties to the cheaper one); a LoRA adapter is
trained on the answer tokens. The artifact holds ``router.json`` and the adapter (safetensors, a few
MB); the merged model the engines load is rebuilt from base + adapter on first use (``ensure_merged``).

How a query is routed (the seed: the LM generates the best model's name):

* **Default: the generated name decides.** The router model writes a name (greedy, one line), the parser
  maps it to a candidate (exact, normalised, fuzzy; ``parsing.py``) and the query goes to that model. When
  nothing matches, the query goes to ``fallback_model`` (the large model by default) and the result says
  ``parse_failed: true``. So ``model_name`` is always the parsed name or the fallback.
* **``router_score``** = ``sigmoid(log P(small name | prompt) - log P(large name | prompt))``: the model's
  probability of the small name when only the two names are allowed. Every result reports it; it decides
  only when a threshold is given explicitly (``router_threshold`` in the config, ``with_threshold`` /
  ``calibrate``, or a per-call threshold such as the API's ``router-causal:0.4``): then small iff
  ``router_score >= threshold``, whatever was generated (``decided_by: "threshold"``). Evaluation sweeps
  use the score to draw the cost-quality curve; the operating point without an explicit threshold is the
  generated names' (``dataset_decisions``).

Step API (the Ray Serve router-model deployment composes these over a remote engine):

1. ``router_prompt(query)`` + ``router_params()``: one greedy generate call (the model's answer text).
2. ``sequence_logprobs(router_prompt(query), candidate_continuations())`` -> ``score_from_logprobs``.
3. ``decide_from_generation(query, text, score, threshold)``: the decision.

``route_batch`` makes one generate call and one batched scoring pass for the whole batch;
``route_single`` is the batch of one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import Field, field_validator

from routers.base import RouteDecision, RouterConfig, read_artifact_manifest
from routers.causal_lm.labels import balanced_indices, best_llm_labels, router_prompt, sft_examples
from routers.causal_lm.parsing import ParseResult, parse_llm_name
from routers.causal_lm.training import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CausalLMHyperparams,
    CausalLMTrainConfig,
    evaluate_answer_loss,
    merge_lora,
    train_causal_lm,
)
from routers.data import RoutingDataset
from routers.engines import Generator, GeneratorConfig, SamplingParams, checked_engine_overrides, resolve_model_path
from routers.errors import ArtifactError, ConfigError
from routers.generative import ADAPTER_SUBDIR, MERGED_SUBDIR, GenerativeRouter
from routers.progress import progress_bar
from routers.strict import StrictModel

MERGE_SOURCE_FILE = "merge_source.json"


class LMEngineOverrides(StrictModel):
    """The ``engine`` key of a router with its own LM: ``GeneratorConfig`` fields over the artifact's model."""

    engine: dict[str, Any] = Field(default_factory=dict, description="GeneratorConfig overrides for the router model")

    @field_validator("engine")
    @classmethod
    def _engine_fields_known(cls, engine: dict[str, Any]) -> dict[str, Any]:
        checked_engine_overrides(engine)
        return engine


class CausalLMConfig(RouterConfig, CausalLMHyperparams, LMEngineOverrides):
    """The router's settings: the training hyperparameters (``CausalLMHyperparams``, one definition shared
    with ``CausalLMTrainConfig``) and how the trained model is subset, queried and parsed."""

    use_lora: bool = Field(default=True, description="only LoRA finetuning is supported (seed compatibility)")
    merge_lora: bool = Field(default=True, description="engines load base+adapter merged (seed compatibility)")
    max_train_examples: int | None = Field(default=None, ge=2, description="train on a subset of this many queries")
    balance_labels: bool = Field(default=False, description="make the subset balanced across best-LLM labels")
    fallback_model: str | None = Field(
        default=None, description="where a query goes when the generated text names no candidate; default: large"
    )
    fuzzy_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=32, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy (the seed's 0.1 is near-greedy)")
    tensor_parallel_size: int | None = Field(default=None, ge=1,
                                             description="shorthand for engine.tensor_parallel_size")
    score_batch_size: int = Field(default=16, ge=1, description="queries per forward pass in dataset_scores")

    @field_validator("use_lora")
    @classmethod
    def _lora_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("the causal-LM router trains LoRA adapters only; full finetuning is not supported")
        return value


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def adapter_fingerprint(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        digest.update((adapter_dir / name).read_bytes())
    return digest.hexdigest()


def _merged_is_current(merged: Path, source: dict[str, str]) -> bool:
    marker = merged / MERGE_SOURCE_FILE
    return (merged / "config.json").exists() and marker.exists() and json.loads(marker.read_text()) == source


def _merge_cache_dir(fingerprint: str) -> Path:
    root = Path(os.environ.get("LLMROUTER_CACHE", Path.home() / ".cache" / "llmrouter"))
    return root / "causallm_merged" / fingerprint[:16]


def ensure_merged(artifact_dir: str | Path) -> Path:
    """The merged router model of a saved artifact: ``<artifact>/merged/``, built once from base + adapter.

    Rebuilt when the adapter or base model changes (recorded in ``merged/merge_source.json``). If the
    artifact directory is read-only, the merged model goes to ``$LLMROUTER_CACHE`` (default
    ``~/.cache/llmrouter``) instead.
    """
    artifact_dir = Path(artifact_dir)
    payload = read_artifact_manifest(artifact_dir)
    base_model = payload["config"].get("base_model") or CausalLMConfig().base_model
    adapter_dir = artifact_dir / payload.get("state", {}).get("adapter_dir", ADAPTER_SUBDIR)
    return ensure_merged_from(base_model, adapter_dir, artifact_dir / MERGED_SUBDIR)


# Errors that mean "this directory cannot be written", so the merged model goes to the cache instead. A
# read-only mount (the RayService's runs/ volume) raises OSError(EROFS), which is not a PermissionError.
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _is_unwritable(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in UNWRITABLE_ERRNOS


def _open_lock_file(target: Path) -> IO[str]:
    """The lock file beside ``target``; raises OSError where its directory cannot be written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return open(target.parent / f".{target.name}.lock", "w")  # closed by _merge_lock


@contextmanager
def _merge_lock(target: Path) -> Iterator[None]:
    """Serialise merges of one target across processes (several Serve replicas start at once)."""
    with _open_lock_file(target) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_merged_from(base_model: str, adapter_dir: Path, merged: Path) -> Path:
    """``merged`` (or the cache dir) holding base + adapter merged, merging only when it is stale."""
    if not (adapter_dir / ADAPTER_WEIGHTS).exists():
        raise ArtifactError(f"{adapter_dir} has no {ADAPTER_WEIGHTS}; train or copy the adapter first")
    fingerprint = adapter_fingerprint(adapter_dir)
    source = {"base_model": resolve_model_path(base_model), "adapter_sha256": fingerprint}
    for target in (merged, _merge_cache_dir(fingerprint)):
        if _merged_is_current(target, source):
            return target
    failures: list[str] = []
    for target in (merged, _merge_cache_dir(fingerprint)):
        try:
            with _merge_lock(target):
                if not _merged_is_current(target, source):  # another process may have just merged it
                    merge_lora(base_model, adapter_dir, target)
                    (target / MERGE_SOURCE_FILE).write_text(json.dumps(source, indent=2))
        except OSError as exc:
            if not _is_unwritable(exc):
                raise
            failures.append(f"{target}: {exc}")
            continue
        return target
    raise ArtifactError("cannot write a merged model to the artifact or the cache directory: " + "; ".join(failures))


class CausalLMRouter(GenerativeRouter):
    name = "causallm_router"
    Config = CausalLMConfig
    score_key = "router_score"
    default_threshold = 0.5
    display_name = "causal-LM"
    config: CausalLMConfig

    # --- engines -------------------------------------------------------------------------------
    def merged_model_dir(self) -> Path:
        """Merged base + adapter, built on first use (saved artifact: inside it; fresh fit: a temp dir)."""
        adapter_dir = self.require_adapter()
        if self.artifact_dir is not None:
            return ensure_merged(self.artifact_dir)
        return ensure_merged_from(self.config.base_model, adapter_dir, adapter_dir.parent / MERGED_SUBDIR)

    def default_engine_config(self, role: str) -> GeneratorConfig | None:
        """The merged router model; raw prompts (no chat template, no added special tokens) as in training."""
        if role != "router" or self.adapter_dir is None:
            return None
        overrides = dict(self.config.engine)
        if self.config.tensor_parallel_size is not None:
            overrides.setdefault("tensor_parallel_size", self.config.tensor_parallel_size)
        settings: dict[str, Any] = {
            "model": str(self.merged_model_dir()),
            "prompt_format": "chat",
            "max_input_tokens": self.config.max_length,
            **overrides,
        }
        return GeneratorConfig.model_validate(settings)

    # --- step API ------------------------------------------------------------------------------
    def router_prompt(self, query: str) -> str:
        return router_prompt(query)

    def router_params(self) -> SamplingParams:
        # A name is one line; stopping at the newline keeps the generation to the answer.
        return SamplingParams(temperature=self.config.temperature, max_tokens=self.config.max_new_tokens, stop=["\n"])

    def candidate_continuations(self) -> list[str]:
        pair = self.require_pair()
        return [pair.small, pair.large]

    def score_from_logprobs(self, logprobs: Sequence[float]) -> float:
        """sigmoid(log P(small) - log P(large)): P(small name) when only the two names may be written."""
        if len(logprobs) != 2:
            raise ValueError(f"expected log-probabilities of [small, large], got {len(logprobs)} values")
        small, large = float(logprobs[0]), float(logprobs[1])
        if math.isnan(small) or math.isnan(large):
            raise ValueError("log-probabilities must not be NaN")
        if small == large:  # also both -inf (neither name possible): no preference
            return 0.5
        return sigmoid(small - large)

    def fallback_model(self) -> str:
        """The configured fallback, which must be the small or the large model (the router picks one of two)."""
        pair = self.require_pair()
        fallback = self.config.fallback_model or pair.large
        if fallback not in (pair.small, pair.large):
            raise ConfigError(
                f"fallback_model {fallback!r} is neither the small ({pair.small!r}) nor the large "
                f"({pair.large!r}) model"
            )
        return fallback

    def parse(self, text: str) -> ParseResult:
        return parse_llm_name(text, self.candidate_continuations(), self.fallback_model(), self.config.fuzzy_threshold)

    def explicit_threshold(self, threshold: float | None = None) -> float | None:
        """The threshold that makes the score decide: the per-call one, else the configured one, else None."""
        return threshold if threshold is not None else self.config.router_threshold

    def decide_from_generation(
        self, query: str, text: str, score: float | None = None, threshold: float | None = None
    ) -> RouteDecision:
        """The parsed name (or the fallback) decides; with an explicit threshold (argument or
        ``router_threshold``) the score does: small iff score >= threshold. ``score`` is reported either way."""
        parsed = self.parse(text)
        extra: dict[str, Any] = {
            "generated": text,
            "parse_method": parsed.method,
            "parsed_model": parsed.name,
            "parse_failed": not parsed.matched,
        }
        explicit = self.explicit_threshold(threshold)
        if explicit is not None:
            if score is None:
                raise ValueError("a threshold decision needs the router score (score_from_logprobs)")
            decision = self.decide(query, score, explicit, decided_by="threshold", **extra)
            decision.reason += f" (explicit threshold; the router model wrote {parsed.name!r})"
            return decision
        return self._decide_by_name(query, parsed, score, extra)

    async def adecide_batch(self, generator: Generator, queries: Sequence[str], generated: Sequence[str],
                            thresholds: Sequence[float | None]) -> list[RouteDecision]:
        """The generated name decides, or the score against an explicit threshold; the score (both names'
        log-probabilities, one scoring pass for the batch) is reported either way."""
        prompts = [self.router_prompt(q) for q in queries]
        logprobs = await generator.abatch_sequence_logprobs(prompts, self.candidate_continuations())
        return [self.decide_from_generation(query, text, score=self.score_from_logprobs(row), threshold=threshold)
                for query, text, row, threshold in zip(queries, generated, logprobs, thresholds, strict=True)]

    def _decide_by_name(
        self, query: str, parsed: ParseResult, score: float | None, extra: dict[str, Any]
    ) -> RouteDecision:
        pair = self.require_pair()
        use_large = parsed.name == pair.large
        how = (
            f"wrote nothing parseable; fallback_model {parsed.name!r}"
            if not parsed.matched
            else f"generated {parsed.name!r} ({parsed.method} match)"
        )
        return RouteDecision(
            query=query,
            model_name=parsed.name,
            use_large=use_large,
            score=score,
            reason=f"router model {how} -> {'large' if use_large else 'small'} model",
            cost=self.estimate_cost(parsed.name, query),
            extra={**extra, "decided_by": "generation"},
        )

    # --- training ------------------------------------------------------------------------------
    def train_config(self, **run_settings: Any) -> CausalLMTrainConfig:
        """The training run of this router's config; ``run_settings`` add the run's own (``checkpoint_dir``)
        or override a hyperparameter (a job passes the resolved ``base_model``)."""
        return CausalLMTrainConfig.from_router_config(self.config, seed=self.config.seed, **run_settings)

    def training_subset(self, train: RoutingDataset) -> RoutingDataset:
        pair = self.resolve_pair(train)
        data = train.complete_for([pair.small, pair.large])
        if self.config.max_train_examples is None and not self.config.balance_labels:
            return data
        if self.config.balance_labels:
            labels = best_llm_labels(data, [pair.small, pair.large])
            return data.subset(balanced_indices(labels, self.config.max_train_examples, self.config.seed))
        rng = np.random.default_rng(self.config.seed)
        count = min(self.config.max_train_examples or len(data), len(data))
        return data.subset(sorted(rng.choice(len(data), size=count, replace=False).tolist()))

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        """LoRA-finetune the base model in-process (one worker) and keep the adapter for save()."""
        data = self.training_subset(train)
        pair = self.require_pair()
        examples = sft_examples(data, [pair.small, pair.large])
        self._scratch = tempfile.TemporaryDirectory(prefix="causallm-")
        adapter_dir = Path(self._scratch.name) / ADAPTER_SUBDIR
        result = train_causal_lm(self.train_config(), examples, adapter_dir=adapter_dir)
        self.adapter_dir, self.artifact_dir = adapter_dir, None
        self.generators.pop("router", None)
        labels = [example.completion for example in examples]
        self.train_metrics = {
            "n_train": len(examples),
            "small_label_share": labels.count(pair.small) / len(labels),
            "steps": result.steps,
            "first_loss": result.losses[0],
            "final_loss": float(np.mean(result.losses[-max(1, len(result.losses) // 10):])),
            "samples_per_s": result.samples_per_s,
        }
        self.fitted = True
        self.record_reference_scores(self.dataset_scores(data))
        return dict(self.train_metrics)

    def answer_loss(self, data: RoutingDataset, adapter: bool = True) -> float:
        """Mean answer-token loss on ``data`` with the trained adapter (or the bare base model)."""
        import torch

        from routers.causal_lm.training import load_base_model, load_tokenizer

        pair = self.require_pair()
        examples = sft_examples(data.complete_for([pair.small, pair.large]), [pair.small, pair.large])
        path = str(self.merged_model_dir()) if adapter else self.config.base_model
        model = load_base_model(path, torch.device("cpu"))
        return evaluate_answer_loss(model, load_tokenizer(path), examples, self.config.max_length)

    # --- scoring & routing ---------------------------------------------------------------------
    def query_logprobs(self, queries: Sequence[str]) -> np.ndarray:
        """(n, 2) log P([small, large] name | router prompt), in batches of ``score_batch_size`` prompts, each
        one ``batch_sequence_logprobs`` call of the engine (one forward pass / one vLLM call)."""
        generator = self.router_generator()
        continuations = self.candidate_continuations()
        prompts = [self.router_prompt(q) for q in queries]
        out = np.zeros((len(prompts), len(continuations)))
        size = self.config.score_batch_size
        # A bar only for work that spans several passes: routing one query should not flash one.
        bar = progress_bar("causal-LM scores", total=len(prompts), unit="query", enabled=len(prompts) > size)
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            out[start : start + len(chunk)] = generator.batch_sequence_logprobs(chunk, continuations)
            bar.update(len(chunk))
        bar.close()
        return out

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        self.require_fitted()
        return self.query_scores(data.queries)

    def query_scores(self, queries: Sequence[str]) -> np.ndarray:
        """``router_score`` of each query, batched (``query_logprobs``)."""
        return np.array([self.score_from_logprobs(row) for row in self.query_logprobs(queries)], dtype=np.float64)

    def dataset_decisions(self, data: RoutingDataset) -> np.ndarray | None:
        """Without an explicit threshold the generated names decide, so the operating point is theirs
        (one batched generation over ``data``); with one, None: ``score < threshold`` as for every router."""
        self.require_fitted()
        if self.explicit_threshold() is not None:
            return None
        large = self.require_pair().large
        return np.array([self.parse(text).name == large for text in self.generate_names(data.queries)], dtype=bool)

    # --- artifacts -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"adapter_dir": ADAPTER_SUBDIR, "train_metrics": self.train_metrics}

    def save_tensors(self, directory: Path) -> None:
        self.save_adapter(directory)

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        self.load_adapter(state, directory)
