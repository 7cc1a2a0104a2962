"""The policy router: TRL SFT then DPO of a small Gemma inside Ray Train workers (``TorchTrainer``).

    python -m train_jobs.policy --config configs/train/policy.yaml
    ray job submit --working-dir . -- python -m train_jobs.policy --config configs/train/policy.yaml

Training data comes from an oracle dataset (``oracle_data``, written by ``train_jobs.oracle``) or, when
none is given, from the routing data of the router config (performance -> correct / incorrect / IDK ->
the 9-cell matrix). Every logged step is reported with ``ray.train.report``; every ``save_steps`` steps
and at the end of each stage rank 0 attaches a checkpoint (safetensors + JSON, see
``routers.policy.training``) that Ray Train persists under ``ray.storage_path`` / ``ray.run_name``. A rerun
resumes every worker from the latest one (``ray.train.get_checkpoint()``): a finished SFT stage is skipped,
an interrupted stage continues at its step; a checkpoint of other SFT data or settings is moved aside.
The driver takes the final adapter from the last checkpoint, saves the router artifact, merges the adapter
for serving, and reports policy accuracy on held-out queries.
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydantic import Field

from routers.config import build_router, load_config_file
from routers.errors import ConfigError
from routers.paths import config_file, resolve_model_path, resolve_path
from routers.policy.datasets import balanced, dpo_pairs, read_oracle_records, sft_examples, split_by_query
from routers.policy.router import PolicyRouter
from routers.policy.training import (
    ADAPTER_FILES,
    FINAL_ADAPTER_SUBDIR,
    PolicyTrainConfig,
    checkpoint_sft_matches,
    read_policy_state,
    stage_fingerprints,
    train_policy_router,
)
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


class PolicyJobConfig(JobConfig):
    router_config: str = "configs/routers/policy_router.yaml"
    oracle_data: str | None = Field(default=None, description="oracle dataset JSONL; default: derive from routing data")
    eval_queries: int = Field(default=40, ge=0, description="held-out queries to measure policy accuracy on")
    save_steps: int = Field(default=10, ge=0,
                            description="optimizer steps between resumable checkpoints; 0 = stage ends")


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Runs inside each Ray Train worker; rank 0's return value (the loss curves) is ``Result.return_value``."""
    import ray.train

    config = PolicyTrainConfig.model_validate(loop_config["train"])
    checkpoint = ray.train.get_checkpoint()
    with (checkpoint.as_directory() if checkpoint is not None else nullcontext(None)) as resume_from, \
            tempfile.TemporaryDirectory(prefix="policy-") as scratch:
        result = train_policy_router(config, loop_config["sft"], loop_config["dpo"], scratch,
                                     report=report_to_ray, resume_from=resume_from)
    return {"sft_losses": result.sft_losses, "dpo_losses": result.dpo_losses,
            "dpo_reward_accuracy": result.dpo_reward_accuracy}


def export_adapter(result: Any, fingerprints: dict[str, str], adapter_dir: Path) -> dict[str, Any]:
    """The final adapter out of the run's last checkpoint, after checking it is this run's, finished."""
    with result.checkpoint.as_directory() as directory:
        state = read_policy_state(directory) or {}
        if state.get("fingerprints") != fingerprints or not (state.get("sft_done") and state.get("dpo_done")):
            raise RuntimeError(f"{result.checkpoint.path}: the last checkpoint is not this run's finished training; "
                               "refusing to ship its adapter")
        copy_checkpoint_files(Path(directory) / FINAL_ADAPTER_SUBDIR, list(ADAPTER_FILES), adapter_dir)
    return state


def train_policy(config: PolicyJobConfig) -> dict[str, Any]:
    router_cfg = load_config_file(config_file(config.router_config))
    router = build_router(router_cfg, "policy_router")
    assert isinstance(router, PolicyRouter)
    if config.oracle_data:
        records = read_oracle_records(resolve_path(config.oracle_data))
        fit_records, held_out = split_by_query(records, router.config.eval_fraction, router.config.seed)
        chosen = balanced(fit_records, router.config.max_train_examples, router.config.seed)
        sft, dpo = sft_examples(chosen), dpo_pairs(chosen)
        router.resolve_pair()
    else:
        sft, dpo, held_out = router.training_sets(router_cfg.dataset("train"))
    train_config = router.train_config(
        base_model=resolve_model_path(router.config.base_model, f"{config.router_config}: hparam.base_model"),
        num_threads=max(1, int(config.ray.cpus_per_worker)), save_steps=config.save_steps)
    fingerprints = stage_fingerprints(train_config, sft, dpo, config.ray.num_workers)
    out = config.output_path()
    init_ray(config.ray)
    log(f"policy router: SFT on {len(sft)} and DPO on {len(dpo)} examples, "
        f"{config.ray.num_workers} Ray Train worker(s)")
    loop_config = {"train": train_config.model_dump(), "sft": sft, "dpo": dpo}
    result = train_with_ray(config, "policy", train_loop_per_worker, loop_config,
                            is_current=lambda directory: checkpoint_sft_matches(directory, fingerprints))
    export_adapter(result, fingerprints, out / "adapter")
    metrics = {k: v for k, v in (result.metrics or {}).items() if k != "done"}
    router.adapter_dir = out / "adapter"
    router.train_metrics = {"n_sft": len(sft), "n_dpo": len(dpo), "n_held_out": len(held_out), **metrics}
    router.fitted = True
    save_to = router_cfg.model_path.save_model_path
    if not save_to:
        raise ConfigError(f"{config.router_config}: model_path.save_model_path is required")
    saved = router.save(resolve_path(save_to))
    summary: dict[str, Any] = {"router": "policy_router", "train": router.train_metrics, "saved_to": str(saved),
                               "workers": config.ray.num_workers,
                               "ray_train": {"path": result.path, "checkpoint": result.checkpoint.path,
                                             **(result.return_value or {})}}
    if config.eval_queries and held_out:
        loaded = PolicyRouter.load(saved)
        summary["held_out"] = loaded.policy_accuracy(held_out[: config.eval_queries])
        summary["held_out"]["majority_baseline"] = max(
            sum(r.policy == p for r in held_out[: config.eval_queries]) for p in {r.policy for r in held_out}
        ) / min(len(held_out), config.eval_queries)
    write_json(out / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("policy", PolicyJobConfig, train_policy, argv)


if __name__ == "__main__":
    sys.exit(main())
