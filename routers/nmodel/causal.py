"""The causal-LM router over N models: a LoRA-finetuned small LM scores every candidate's name by log-prob.

Training (the two-model router's prompt and trainer, ``routers.causal_lm``): each training query's label is its
best model (the highest quality; among ties the cheapest by mean training cost, since paying more for the same
quality is never better), and the LM learns to complete ``Query: {query}\\n\\nBest LLM: `` with that name and
its end-of-sequence token. Labels can be balanced for the fine-tuning subset (LLMRouter's pool: 71% of best-of-9
labels are its cheapest model, mostly ties).

Routing: one scoring pass gives ``log P(name + eos | prompt)`` for every candidate; their softmax, shifted from
the label shares fine-tuning saw back to the data's (a label-shift correction: balancing changes the prior, not
what a query says), is ``P(best = j | query)``. Every candidate's expected quality is then

    E[quality_m | query] = sum_j P(best = j | query) x E[quality_m | best = j]

with the second factor a table read off the training queries (each row shrunk toward the models' mean quality by
``prior_strength`` pseudo-queries). So the output is the N-model contract's, and every rule applies: ``default``,
``cost=``, ``quality=``, ``budget=``, ``share=``.

Calibration: ``calibration_queries`` training queries (stratified by task) are held out of fine-tuning, and
their predictions are the :class:`~routers.selection.SelectionCalibration`; cross-fitting an LM k times would
cost k fine-tuning runs.

Artifact: ``router.json``, the LoRA adapter (``adapter/``, safetensors) and ``causal.safetensors`` (the table and
the label shift); the merged model engines load is rebuilt from base + adapter on first use.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from routers.causal_lm.labels import SFTExample, balanced_indices, router_prompt
from routers.causal_lm.router import LMEngineOverrides, ensure_merged_from
from routers.causal_lm.training import CausalLMHyperparams, CausalLMTrainConfig
from routers.data.multimodel import MultiModelDataset
from routers.engines import Engines, Generator, GeneratorConfig, build_generator
from routers.errors import ArtifactError, NotFittedError
from routers.generative import ADAPTER_SUBDIR, MERGED_SUBDIR, copy_adapter, saved_adapter
from routers.nmodel.base import MultiModelRouter, MultiModelRouterConfig, stratified_folds
from routers.progress import log, progress_bar
from routers.safe_io import load_arrays, save_arrays
from routers.selection import SelectionCalibration


class CausalRouterConfig(MultiModelRouterConfig, CausalLMHyperparams, LMEngineOverrides):
    """The fine-tuning hyperparameters (``CausalLMHyperparams``, CPU-sized defaults) and how the router is
    calibrated and queried."""

    learning_rate: float = Field(default=2e-3, gt=0.0, description="LoRA on a 135M model for a few hundred steps")
    num_epochs: int = Field(default=1, ge=1)
    warmup_steps: int = Field(default=4, ge=0)
    max_length: int = Field(default=64, ge=16, description="prompt + name tokens; long queries keep their end")
    max_train_examples: int | None = Field(default=480, ge=2, description="fine-tune on at most this many queries")
    balance_labels: bool = Field(default=True, description="balance the fine-tuning subset across best-model labels")
    calibration_queries: int = Field(default=200, ge=10,
                                     description="training queries held out of fine-tuning to calibrate the rules")
    prior_strength: float = Field(default=5.0, ge=0.0,
                                  description="pseudo-queries shrinking E[quality | best = j] toward the mean")
    score_batch_size: int = Field(default=8, ge=1, description="prompts per scoring pass")

    @field_validator("grid")
    @classmethod
    def _no_grid(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is not None:
            raise ValueError("the causal-LM router fine-tunes once (no grid search); set its hyperparameters")
        return value


def best_model_labels(quality: np.ndarray, mean_cost: np.ndarray) -> np.ndarray:
    """Each query's best model: the highest quality, ties to the cheapest (by mean cost)."""
    by_cost = np.argsort(mean_cost, kind="stable")
    # argmax over the columns in cost order returns the first (cheapest) of the tied best
    return by_cost[np.argmax(quality[:, by_cost], axis=1)]


def outcome_table(labels: np.ndarray, quality: np.ndarray, prior_strength: float) -> np.ndarray:
    """(m, m): row j is every model's mean quality over the queries whose best model is j, shrunk toward the
    models' overall mean by ``prior_strength`` pseudo-queries (a label seen rarely borrows the mean)."""
    n_models = quality.shape[1]
    overall = quality.mean(axis=0)
    table = np.empty((n_models, n_models))
    for j in range(n_models):
        members = quality[labels == j]
        weight = len(members) + prior_strength
        table[j] = overall if weight == 0 else (members.sum(axis=0) + prior_strength * overall) / weight
    return table


def label_shares(labels: np.ndarray, n_models: int) -> np.ndarray:
    """Each label's share, add-one smoothed (a label the subset lacks keeps a finite log-share)."""
    counts = np.bincount(labels, minlength=n_models).astype(np.float64) + 1.0
    return counts / counts.sum()


def softmax_rows(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def held_out_indices(task_names: Sequence[str | None], count: int, seed: int) -> np.ndarray:
    """About ``count`` query indices, every task represented, never more than a third of the queries."""
    n_folds = max(3, round(len(task_names) / count))
    return np.nonzero(stratified_folds(task_names, n_folds, seed) == 0)[0]


class MultiModelCausalLMRouter(MultiModelRouter):
    """Scores every candidate's name with a fine-tuned causal LM (see the module docstring)."""

    name = "nmodel_causal"
    Config = CausalRouterConfig
    config: CausalRouterConfig
    tensors_file = "causal.safetensors"
    engine_role: ClassVar[str | None] = "router"

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.table: np.ndarray | None = None
        self.label_shift: np.ndarray | None = None
        self.eos = ""
        self.adapter_dir: Path | None = None
        self.artifact_dir: Path | None = None
        self.generator: Generator | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    # --- learning -------------------------------------------------------------------------------------------
    def fit(self, train: MultiModelDataset) -> dict[str, Any]:
        """Fine-tune on best-model labels, read the outcome table off the training queries, calibrate on the
        held-out ones."""
        from routers.causal_lm.training import load_tokenizer, train_causal_lm

        self.check_train_size(train)
        started = time.time()
        cost_estimate = self.learn_costs(train)
        assert self.mean_cost is not None
        labels = best_model_labels(train.quality, self.mean_cost)
        held_out = held_out_indices(train.task_names, self.config.calibration_queries, self.config.seed)
        fit_idx = np.setdiff1d(np.arange(len(train)), held_out)
        tuned = self.finetuning_subset(fit_idx, labels)
        examples = [SFTExample(router_prompt(train.queries[i]), self.models[labels[i]]) for i in tuned]
        self.eos = load_tokenizer(self.config.base_model).eos_token or ""
        self._scratch = tempfile.TemporaryDirectory(prefix="nmodel-causal-")
        adapter_dir = Path(self._scratch.name) / ADAPTER_SUBDIR
        log(f"{self.name}: fine-tuning {self.config.base_model} on {len(examples)} best-model labels")
        run = CausalLMTrainConfig.from_router_config(self.config, seed=self.config.seed)
        result = train_causal_lm(run, examples, adapter_dir=adapter_dir)
        self.adapter_dir, self.artifact_dir, self.generator = adapter_dir, None, None
        n_models = len(self.models)
        self.table = outcome_table(labels[fit_idx], train.quality[fit_idx], self.config.prior_strength)
        self.label_shift = (np.log(label_shares(labels[fit_idx], n_models))
                            - np.log(label_shares(labels[tuned], n_models)))
        self.fitted = True
        predicted = self.predict_quality([train.queries[i] for i in held_out])
        source = f"{len(held_out)} training queries held out of fine-tuning"
        self.calibration = SelectionCalibration(predicted, cost_estimate[held_out], train.quality[held_out],
                                                train.cost[held_out], source, self.config.default_rule)
        self.train_metrics = {
            "n_train": len(train), "models": list(self.models), "n_finetuned": len(examples),
            "n_calibration": len(held_out), "steps": result.steps, "first_loss": result.losses[0],
            "final_loss": float(np.mean(result.losses[-max(1, len(result.losses) // 10):])),
            "label_shares": {m: float(s) for m, s in zip(self.models, label_shares(labels[fit_idx], n_models),
                                                         strict=True)},
            "seconds": round(time.time() - started, 2),
        }
        return dict(self.train_metrics)

    def finetuning_subset(self, fit_idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The queries the LM is fine-tuned on: all of ``fit_idx``, or at most ``max_train_examples`` of them
        (label-balanced or at random)."""
        limit = self.config.max_train_examples
        if limit is None or limit >= len(fit_idx):
            return fit_idx
        if self.config.balance_labels:
            chosen = balanced_indices([self.models[k] for k in labels[fit_idx]], limit, self.config.seed)
            return fit_idx[np.asarray(chosen, dtype=np.int64)]
        rng = np.random.default_rng(self.config.seed)
        return np.sort(rng.choice(fit_idx, size=limit, replace=False))

    # --- predicting -----------------------------------------------------------------------------------------
    def continuations(self) -> list[str]:
        """Every candidate's name as the LM was trained to write it: the name, then its end-of-sequence."""
        return [model + self.eos for model in self.models]

    def quality_from_logprobs(self, logprobs: np.ndarray) -> np.ndarray:
        """Expected quality of every candidate from the names' log-probabilities, (n, m)."""
        if self.table is None or self.label_shift is None:
            raise NotFittedError(f"router {self.name!r} is not fitted; call fit() or load() first")
        logprobs = np.asarray(logprobs, dtype=np.float64)
        if logprobs.ndim != 2 or logprobs.shape[1] != len(self.models) or np.isnan(logprobs).any():
            raise ValueError(f"expected ({len(logprobs)}, {len(self.models)}) log-probabilities without NaN")
        return softmax_rows(logprobs + self.label_shift) @ self.table

    def best_probabilities(self, queries: Sequence[str]) -> np.ndarray:
        """P(best = j | query) for every candidate, (n, m)."""
        assert self.label_shift is not None
        return softmax_rows(self.query_logprobs(queries) + self.label_shift)

    def query_logprobs(self, queries: Sequence[str]) -> np.ndarray:
        """log P(name + eos | prompt) of every candidate, in passes of ``score_batch_size`` prompts."""
        generator = self.local_generator()
        prompts = [router_prompt(q) for q in queries]
        out = np.zeros((len(prompts), len(self.models)))
        size = self.config.score_batch_size
        bar = progress_bar(f"{self.name}: scoring names", total=len(prompts), unit="query",
                           enabled=len(prompts) > size)
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            out[start : start + len(chunk)] = generator.batch_sequence_logprobs(chunk, self.continuations())
            bar.update(len(chunk))
        bar.close()
        return out

    def predict_quality(self, queries: Sequence[str]) -> np.ndarray:
        self.require_fitted()
        return self.quality_from_logprobs(self.query_logprobs(list(queries)))

    async def apredict_quality(self, queries: Sequence[str], engines: Engines) -> np.ndarray:
        self.require_fitted()
        scorer = engines.scorer(self.engine_role, f"the {self.name} router")
        logprobs = await scorer.abatch_sequence_logprobs([router_prompt(q) for q in queries],
                                                            self.continuations())
        return self.quality_from_logprobs(logprobs)

    # --- the router LM ------------------------------------------------------------------------------------
    def require_adapter(self) -> Path:
        if self.adapter_dir is None:
            raise NotFittedError(f"router {self.name!r} has no adapter; fit() or load() it first")
        return self.adapter_dir

    def merged_model_dir(self) -> Path:
        """Base + adapter merged, built once (inside the artifact, or the cache when it is read-only)."""
        adapter_dir = self.require_adapter()
        target = (self.artifact_dir or adapter_dir.parent) / MERGED_SUBDIR
        return ensure_merged_from(self.config.base_model, adapter_dir, target)

    def engine_config(self) -> GeneratorConfig:
        """The merged router LM; raw prompts (no chat template, no added special tokens) as in training."""
        settings = {"model": str(self.merged_model_dir()), "prompt_format": "chat",
                    "max_input_tokens": self.config.max_length, **self.config.engine}
        return GeneratorConfig.model_validate(settings)

    def local_generator(self) -> Generator:
        if self.generator is None:
            self.generator = build_generator(self.engine_config())
        return self.generator

    # --- artifacts ----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"adapter_dir": ADAPTER_SUBDIR, "eos": self.eos}

    def save_tensors(self, directory: Path) -> None:
        if self.table is None or self.label_shift is None:
            raise NotFittedError(f"router {self.name!r} is not fitted")
        save_arrays(directory / self.tensors_file, {"table": self.table, "label_shift": self.label_shift})
        self.adapter_dir, self.artifact_dir = copy_adapter(self.require_adapter(), directory), directory

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        adapter_dir = saved_adapter(state, directory)
        arrays = load_arrays(directory / self.tensors_file)
        n_models = len(self.models)
        if arrays.get("table") is None or arrays["table"].shape != (n_models, n_models) \
                or arrays.get("label_shift") is None or arrays["label_shift"].shape != (n_models,):
            raise ArtifactError(f"{directory / self.tensors_file}: expected a ({n_models}, {n_models}) table and "
                                f"a ({n_models},) label shift")
        self.table = arrays["table"].astype(np.float64)
        self.label_shift = arrays["label_shift"].astype(np.float64)
        self.eos = str(state.get("eos", ""))
        self.adapter_dir, self.artifact_dir = adapter_dir, directory

