"""LoRA SFT of the causal-LM router with Ray Train (``TorchTrainer``: DDP, gloo on CPU / nccl on GPU).

    python -m train_jobs.causal_lm --config configs/train/causal_lm.yaml
    ray job submit --working-dir . -- python -m train_jobs.causal_lm --config configs/train/causal_lm.yaml

Every worker runs the library's ``train_causal_lm`` on its shard and reports the loss of every step
with ``ray.train.report``; every ``checkpoint_every`` steps and at the end rank 0 attaches a checkpoint
(adapter + optimizer + position + fingerprint), which Ray Train persists under ``ray.storage_path`` /
``ray.run_name``. A rerun of the job resumes every worker from the latest of them
(``ray.train.get_checkpoint()``), so no rank reads another rank's disk and all continue at the same step;
a checkpoint of other data or settings is moved aside first, so a rerun never ships an old adapter.

The driver then saves the router artifact (adapter + router.json), merges LoRA into a plain HF directory
that vLLM and the CPU engine load, and evaluates the router on the test split.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from routers.causal_lm.labels import SFTExample, sft_examples
from routers.causal_lm.router import CausalLMRouter, ensure_merged
from routers.causal_lm.training import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CausalLMTrainConfig,
    StaleCheckpointError,
    checkpoint_matches,
    read_checkpoint_position,
    total_optimizer_steps,
    train_causal_lm,
    training_fingerprint,
)
from routers.config import build_router, load_config_file
from routers.data import RoutingDataset
from routers.errors import ConfigError
from routers.paths import config_file, resolve_model_path, resolve_path
from routers.progress import log
from routers.safe_io import copy_checkpoint_files
from train_jobs.common import (
    JobConfig,
    init_ray,
    report_to_ray,
    run_job,
    train_with_ray,
    write_json,
)


class CausalLMJobConfig(JobConfig):
    router_config: str = "configs/routers/causallm_router.yaml"
    checkpoint_every: int = Field(default=10, ge=0, description="optimizer steps between resumable checkpoints")
    eval_queries: int | None = Field(default=200, ge=1, description="test queries to score after training")


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Runs inside each Ray Train worker (the process group is already initialised by TorchTrainer).

    Returns (rank 0's value becomes ``Result.return_value``) the loss of every optimizer step of the run,
    including the steps done before a resume.
    """
    import ray.train

    config = CausalLMTrainConfig.model_validate(loop_config["train"])
    examples = [SFTExample(**e) for e in loop_config["examples"]]
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else nullcontext(None) as resume_from:
        result = train_causal_lm(config, examples, resume_from=resume_from, report=report_to_ray)
    return {"loss_per_step": result.losses, "steps": result.steps, "resumed_from_step": result.resumed_from_step}


def export_adapter(result: Any, fingerprint: str, total_steps: int, adapter_dir: Path) -> dict[str, Any]:
    """Copy the adapter out of the run's final checkpoint, after checking it is this run's finished one."""
    with result.checkpoint.as_directory() as directory:
        position = read_checkpoint_position(Path(directory)) or {}
        if position.get("fingerprint") != fingerprint:
            raise StaleCheckpointError(f"{result.checkpoint.path}: the final checkpoint is not from this run's data "
                                       "and settings; refusing to ship its adapter")
        if int(position.get("step", -1)) < total_steps:
            raise RuntimeError(f"{result.checkpoint.path}: training stopped at step {position.get('step')} "
                               f"of {total_steps}")
        copy_checkpoint_files(Path(directory), [ADAPTER_CONFIG, ADAPTER_WEIGHTS], adapter_dir)
    return position


def train_causal_lm_job(config: CausalLMJobConfig) -> dict[str, Any]:
    router_cfg = load_config_file(config_file(config.router_config))
    router = build_router(router_cfg, "causallm_router")
    assert isinstance(router, CausalLMRouter)
    train = router_cfg.dataset("train")
    data = router.training_subset(train)
    pair = router.require_pair()
    examples = sft_examples(data, [pair.small, pair.large])
    out = config.output_path()
    # No checkpoint_dir: checkpoints go through Ray Train's storage, never a path on one node's disk.
    train_config = router.train_config(
        base_model=resolve_model_path(router.config.base_model, f"{config.router_config}: hparam.base_model"),
        checkpoint_every=config.checkpoint_every, num_threads=max(1, int(config.ray.cpus_per_worker)))
    workers = config.ray.num_workers
    fingerprint = training_fingerprint(train_config, examples, workers)
    adapter_dir = out / "adapter"
    init_ray(config.ray)
    log(f"LoRA SFT on {len(examples)} examples with {workers} Ray Train workers")
    loop_config = {"train": train_config.model_dump(), "examples": [asdict(e) for e in examples]}
    result = train_with_ray(config, "causal_lm", train_loop_per_worker, loop_config,
                            is_current=lambda directory: checkpoint_matches(directory, fingerprint))
    export_adapter(result, fingerprint, total_optimizer_steps(len(examples), train_config, workers), adapter_dir)
    metrics = dict(result.metrics or {})
    history = dict(result.return_value or {})

    router.adapter_dir = adapter_dir
    labels = [e.completion for e in examples]
    reported = ("steps", "samples_per_s", "first_loss", "final_loss", "resumed_from_step")
    router.train_metrics = {"n_train": len(examples), "small_label_share": labels.count(pair.small) / len(labels),
                            **{k: metrics[k] for k in reported if k in metrics}}
    router.fitted = True
    save_to = router_cfg.model_path.save_model_path
    if not save_to:
        raise ConfigError(f"{config.router_config}: model_path.save_model_path is required")
    saved = router.save(resolve_path(save_to))
    merged = ensure_merged(saved)
    loaded = CausalLMRouter.load(saved)  # one load of the merged router model, for the scores and the test
    record_reference_scores(loaded, saved, data)
    summary: dict[str, Any] = {"router": "causallm_router", "train": router.train_metrics, "saved_to": str(saved),
                               "merged_model": str(merged), "workers": workers,
                               "ray_train": {"path": result.path, "checkpoint": result.checkpoint.path,
                                             "metrics": metrics, **history}}
    if router_cfg.data_path.routing_data_test and config.eval_queries:
        from routers.evaluation import evaluate_router

        test = router_cfg.dataset("test").complete_for([pair.small, pair.large])
        rng = np.random.default_rng(0)
        picked = rng.choice(len(test), size=min(config.eval_queries, len(test)), replace=False)
        subset = test.subset(sorted(picked.tolist()))
        report, _ = evaluate_router(loaded, subset)
        summary["test"] = report.to_dict()
    write_json(out / "metrics.json", summary)
    return summary


# Enough queries for stable percentiles of the score, few enough to score in seconds on a CPU.
REFERENCE_QUERIES = 256


def record_reference_scores(router: CausalLMRouter, saved: Path, train: RoutingDataset) -> None:
    """Store the trained router's score quantiles on (a seeded sample of) its training queries in the
    artifact, so the Serve app can turn a target large-model share into a threshold."""
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(train), size=min(REFERENCE_QUERIES, len(train)), replace=False).tolist())
    router.record_reference_scores(router.dataset_scores(train.subset(picked)))
    router.save(saved)


def main(argv: list[str] | None = None) -> int:
    return run_job("causal_lm", CausalLMJobConfig, train_causal_lm_job, argv)


if __name__ == "__main__":
    sys.exit(main())
