"""What every training job shares: its YAML config (pydantic), Ray start-up, outputs, clear failures.

A job runs the same way locally (``python -m train_jobs.<job> --config ...``) and on a cluster
(``ray job submit --working-dir . -- python -m train_jobs.<job> --config ...``): ``ray.init()`` joins the
cluster named by ``RAY_ADDRESS`` when the job was submitted, and starts a local one otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from routers.config import resolve_path
from routers.errors import RouterError
from routers.progress import log, set_quiet

C = TypeVar("C", bound=BaseModel)


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(default=2, ge=1, description="Ray Train workers / Ray Data actors")
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=64, ge=1, description="Ray Data batch size (queries per actor call)")
    num_cpus: int | None = Field(default=None, ge=1, description="local Ray only: CPUs to declare")

    def worker_resources(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        return resources


class JobConfig(BaseModel):
    """Fields every job config has; each job subclasses it with its own section."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    output_dir: str = Field(description="where metrics, plots, samples and checkpoints go")
    ray: RaySettings = Field(default_factory=RaySettings)

    def output_path(self) -> Path:
        path = resolve_path(self.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path


def load_job_config(path: str | Path, model: type[C]) -> C:
    path = Path(path)
    if not path.exists():
        raise RouterError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RouterError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RouterError(f"{path}: invalid {model.__name__}:\n{exc}") from exc


def init_ray(settings: RaySettings) -> None:
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
        if settings.num_cpus is not None:
            kwargs["num_cpus"] = settings.num_cpus
        try:
            ray.init(**kwargs)
        except ValueError:
            # Connected to an existing cluster: resource declarations belong to the cluster.
            kwargs.pop("num_cpus", None)
            ray.init(**kwargs)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def run_job(name: str, config_model: type[C], body: Callable[[C], dict[str, Any]],
            argv: list[str] | None = None) -> int:
    """Parse ``--config``, validate it, run ``body``; print its summary JSON; exit 2 with a clear error."""
    parser = argparse.ArgumentParser(prog=f"python -m train_jobs.{name}")
    parser.add_argument("--config", required=True, help="job YAML (see configs/train/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    started = time.time()
    try:
        config = load_job_config(args.config, config_model)
        summary = body(config)
    except RouterError as exc:
        print(f"train_jobs.{name}: error: {exc}", file=sys.stderr)
        return 2
    summary["wall_time_s"] = round(time.time() - started, 2)
    log(f"train_jobs.{name} finished in {summary['wall_time_s']}s")
    print(json.dumps(summary, indent=2, default=float))
    return 0


def train_adapter_with_ray(config: JobConfig, name: str, loop: Callable[[dict[str, Any]], None],
                           loop_config: dict[str, Any], adapter_dir: Path) -> dict[str, Any]:
    """Run ``loop`` on ``config.ray.num_workers`` Ray Train workers (DDP: nccl on GPU, gloo on CPU).

    The loop's rank 0 reports its adapter directory as the final checkpoint; it is copied to
    ``adapter_dir`` and the last reported metrics are returned.
    """
    import shutil

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    settings = config.ray
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu,
                                     resources_per_worker=settings.worker_resources()),
        torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(config.output_path() / "ray_results")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train job {name!r} finished without the adapter checkpoint")
    with result.checkpoint.as_directory() as directory:
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        shutil.copytree(directory, adapter_dir)
    return dict(result.metrics or {})
