"""LoRA SFT of the causal-LM router with Ray Train (``TorchTrainer``: DDP, gloo on CPU / nccl on GPU).

    python -m train_jobs.causal_lm --config configs/train/causal_lm.yaml
    ray job submit --working-dir . -- python -m train_jobs.causal_lm --config configs/train/causal_lm.yaml

Every worker runs the library's ``train_causal_lm`` on its shard; rank 0 writes the adapter. The driver
then saves the router artifact (adapter + router.json), merges LoRA into a plain HF directory that vLLM
and the CPU engine load, and evaluates the router on the test split.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
from typing import Any

import numpy as np
from pydantic import Field

from routers.causal_lm.labels import SFTExample, sft_examples
from routers.causal_lm.router import CausalLMRouter, ensure_merged
from routers.causal_lm.training import CausalLMTrainConfig, train_causal_lm
from routers.config import build_router, load_config_file, resolve_path
from routers.errors import ConfigError
from routers.progress import log
from train_jobs.common import JobConfig, init_ray, run_job, train_adapter_with_ray, write_json


class CausalLMJobConfig(JobConfig):
    router_config: str = "configs/routers/causallm_router.yaml"
    checkpoint_every: int = Field(default=10, ge=0, description="optimizer steps between resumable checkpoints")
    eval_queries: int | None = Field(default=200, ge=1, description="test queries to score after training")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs inside each Ray Train worker (the process group is already initialised by TorchTrainer)."""
    import ray.train

    config = CausalLMTrainConfig.model_validate(loop_config["train"])
    examples = [SFTExample(**e) for e in loop_config["examples"]]

    def report(metrics: dict[str, float]) -> None:
        ray.train.report(metrics)

    with tempfile.TemporaryDirectory(prefix="adapter-") as adapter_dir:
        result = train_causal_lm(config, examples, on_step=report, adapter_dir=adapter_dir)
        final = {"steps": float(result.steps), "samples_per_s": result.samples_per_s,
                 "first_loss": result.losses[0], "final_loss": result.losses[-1],
                 "resumed_from_step": float(result.resumed_from_step)}
        # Rank 0 hands the adapter to Ray Train's storage; the driver reads it from the result checkpoint.
        checkpoint = ray.train.Checkpoint.from_directory(adapter_dir) if ray.train.get_context().get_world_rank() == 0 else None
        ray.train.report(final, checkpoint=checkpoint)


def train_causal_lm_job(config: CausalLMJobConfig) -> dict[str, Any]:
    router_cfg = load_config_file(resolve_path(config.router_config))
    router = build_router(router_cfg, "causallm_router")
    assert isinstance(router, CausalLMRouter)
    train = router_cfg.dataset("train")
    data = router.training_subset(train)
    pair = router.require_pair()
    examples = sft_examples(data, [pair.small, pair.large])
    out = config.output_path()
    train_config = router.train_config(checkpoint_dir=str(out / "checkpoint"))
    train_config = train_config.model_copy(update={
        "base_model": str(resolve_path(train_config.base_model)), "checkpoint_every": config.checkpoint_every,
        "num_threads": max(1, int(config.ray.cpus_per_worker))})
    adapter_dir = out / "adapter"
    init_ray(config.ray)
    log(f"LoRA SFT on {len(examples)} examples with {config.ray.num_workers} Ray Train workers")
    loop_config = {"train": train_config.model_dump(), "examples": [asdict(e) for e in examples]}
    metrics = train_adapter_with_ray(config, "causal_lm", train_loop_per_worker, loop_config, adapter_dir)

    router.adapter_dir = adapter_dir
    labels = [e.completion for e in examples]
    router.train_metrics = {"n_train": len(examples), "small_label_share": labels.count(pair.small) / len(labels),
                            **{k: metrics[k] for k in ("steps", "samples_per_s", "first_loss", "final_loss") if k in metrics}}
    router.fitted = True
    save_to = router_cfg.model_path.save_model_path
    if not save_to:
        raise ConfigError(f"{config.router_config}: model_path.save_model_path is required")
    saved = router.save(resolve_path(save_to))
    merged = ensure_merged(saved)
    summary: dict[str, Any] = {"router": "causallm_router", "train": router.train_metrics, "saved_to": str(saved),
                               "merged_model": str(merged), "workers": config.ray.num_workers}
    if router_cfg.data_path.routing_data_test and config.eval_queries:
        from routers.evaluation import evaluate_router

        loaded = CausalLMRouter.load(saved)
        test = router_cfg.dataset("test").complete_for([pair.small, pair.large])
        rng = np.random.default_rng(0)
        subset = test.subset(sorted(rng.choice(len(test), size=min(config.eval_queries, len(test)), replace=False).tolist()))
        report, _ = evaluate_router(loaded, subset)
        summary["test"] = report.to_dict()
    write_json(out / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("causal_lm", CausalLMJobConfig, train_causal_lm_job, argv)


if __name__ == "__main__":
    sys.exit(main())
