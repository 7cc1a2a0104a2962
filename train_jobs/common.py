"""What every training job shares: its YAML config (pydantic), Ray start-up, outputs, clear failures.

A job runs the same way locally (``python -m train_jobs.<job> --config ...``) and on a cluster
(``ray job submit --working-dir . -- python -m train_jobs.<job> --config ...``): ``ray.init()`` joins the
cluster named by ``RAY_ADDRESS`` when the job was submitted, and starts a local one otherwise.

A submitted job runs in Ray's temporary copy of the uploaded working directory. Its config files come
from that copy (they are what was submitted); data, models and outputs resolve against ``LLMROUTER_HOME``
(``routers.paths``), which such a job must have, because the copy lacks the git-ignored ``models/`` and is
deleted with the Ray session.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from routers.config import validate_file
from routers.errors import ConfigError, RouterError
from routers.paths import HOME_ENV, config_file, resolve_path
from routers.progress import log, set_quiet
from routers.strict import StrictModel

C = TypeVar("C", bound=BaseModel)


class RaySettings(StrictModel):
    num_workers: int = Field(default=2, ge=1, description="Ray Train workers / Ray Data actors")
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, ge=0)
    batch_size: int = Field(default=64, ge=1, description="Ray Data batch size (queries per actor call)")
    num_cpus: int | None = Field(default=None, ge=1, description="local Ray only: CPUs to declare")
    storage_path: str | None = Field(
        default=None, description="Ray Train storage (a shared dir or s3://...); default <output_dir>/ray_results")
    run_name: str | None = Field(
        default=None, description="Ray Train run name; a rerun under the same name resumes its latest checkpoint")
    checkpoints_to_keep: int = Field(default=2, ge=1, description="Ray Train checkpoints kept per run")

    def worker_resources(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        return resources


class JobConfig(StrictModel):
    """Fields every job config has; each job subclasses it with its own section."""

    output_dir: str = Field(description="where metrics, plots, samples and checkpoints go")
    ray: RaySettings = Field(default_factory=RaySettings)

    def output_path(self) -> Path:
        path = resolve_path(self.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path


def ray_working_dir_copy() -> Path | None:
    """The directory of Ray's copy of an uploaded ``working_dir`` when this process is a job's driver there."""
    job_config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not job_config:
        return None
    try:
        runtime_env = json.loads(job_config).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    return Path.cwd() if runtime_env.get("working_dir") else None


def require_home_outside_ray_copy() -> None:
    """Refuse to start a submitted job whose relative paths would resolve inside Ray's temporary copy.

    Inside it the git-ignored models are missing (the job would die in a Ray actor with a loader's
    traceback) and whatever the job wrote would be deleted with the Ray session.
    """
    copy = ray_working_dir_copy()
    if copy is None:
        return
    home = os.environ.get(HOME_ENV)
    if home and not Path(home).resolve().is_relative_to(copy.resolve()):
        return
    raise ConfigError(
        f"this job runs in Ray's temporary copy of the uploaded working directory ({copy}): it lacks the "
        f"git-ignored models/ and is deleted with the Ray session, so relative paths must not resolve there. "
        f"Set {HOME_ENV} to the checkout (or a volume every node mounts): `export {HOME_ENV}=$PWD` before "
        f"`ray start --head`, or submit with --runtime-env-json "
        f"'{{\"env_vars\": {{\"{HOME_ENV}\": \"/path/to/ray-llm-router\"}}}}'")


def router_error_in(exc: BaseException) -> RouterError | None:
    """The RouterError behind ``exc``: raised here, or inside a Ray task or actor and re-raised by Ray."""
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, RouterError):
            return current
        seen.add(id(current))
        cause = current.cause if isinstance(current, RayTaskError) else None
        current = cause or current.__cause__  # explicit chains only: not an error met while handling another
    return None


def load_job_config(path: str | Path, model: type[C]) -> C:
    """A job's YAML (found as ``routers.paths.config_file`` finds it), validated as ``model``."""
    return validate_file(config_file(path), model, model.__name__)


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
        require_home_outside_ray_copy()
        config = load_job_config(args.config, config_model)
        summary = body(config)
    except Exception as exc:
        error = router_error_in(exc)
        if error is None:
            raise
        print(f"train_jobs.{name}: error: {error}", file=sys.stderr)
        return 2
    summary["wall_time_s"] = round(time.time() - started, 2)
    log(f"train_jobs.{name} finished in {summary['wall_time_s']}s")
    print(json.dumps(summary, indent=2, default=float))
    return 0


CheckpointTest = Callable[[Path], bool]


def ray_run_location(config: JobConfig, name: str) -> tuple[str, str]:
    """(storage path, run name) of a job's Ray Train run; the same for every rerun of one config."""
    storage = config.ray.storage_path
    if storage is None:
        storage = str(config.output_path() / "ray_results")
    elif "://" not in storage:
        storage = str(resolve_path(storage))
    return storage, config.ray.run_name or name


def latest_ray_checkpoint(run_path: str) -> Any:
    """The latest checkpoint Ray Train recorded for the run at ``run_path``, or None (no run, none reported).

    This is the checkpoint Ray Train gives every worker through ``ray.train.get_checkpoint()`` when the
    run is started again under the same storage path and name.
    """
    import pyarrow.fs
    from ray.train import Result

    filesystem, path = pyarrow.fs.FileSystem.from_uri(run_path)
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    try:
        return Result.from_path(run_path).checkpoint
    except RuntimeError:  # a run that stopped before its first checkpoint: nothing to resume
        return None


def set_aside_stale_run(storage: str, run_name: str, is_current: CheckpointTest) -> str | None:
    """Move a previous run aside when its latest checkpoint belongs to other data or settings.

    Ray Train would hand that checkpoint to every worker of the new run; moving the run (rather than
    refusing to start) lets a rerun with new data just work, and keeps the old run for inspection.
    Returns where it went, or None when there was nothing stale.
    """
    import pyarrow.fs

    run_path = f"{storage.rstrip('/')}/{run_name}"
    checkpoint = latest_ray_checkpoint(run_path)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        if is_current(Path(directory)):
            return None
    stale = f"{run_path}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
    filesystem, source = pyarrow.fs.FileSystem.from_uri(run_path)
    _, target = pyarrow.fs.FileSystem.from_uri(stale)
    try:
        filesystem.move(source, target)
    except (OSError, NotImplementedError) as exc:
        raise RouterError(f"{run_path} holds a checkpoint of another run (the data or training settings changed) "
                          f"and it cannot be moved aside ({exc}); delete it or set ray.run_name") from exc
    log(f"{run_path}: latest checkpoint is from other data or settings; moved the old run to {stale}")
    return stale


def train_with_ray(config: JobConfig, name: str, loop: Callable[[dict[str, Any]], Any],
                   loop_config: dict[str, Any], is_current: CheckpointTest) -> Any:
    """Run ``loop`` on ``config.ray.num_workers`` Ray Train workers (DDP: nccl on GPU, gloo on CPU).

    The run lives at ``ray_run_location``: a rerun of the same job resumes from its latest Ray Train
    checkpoint (every worker gets it from ``ray.train.get_checkpoint()``), unless ``is_current`` says that
    checkpoint is from other data or settings, in which case the old run is moved aside first. Returns
    Ray Train's ``Result`` (its ``checkpoint`` is the last one the loop reported).
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    settings = config.ray
    storage, run_name = ray_run_location(config, name)
    set_aside_stale_run(storage, run_name, is_current)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu,
                                     resources_per_worker=settings.worker_resources()),
        torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),
        run_config=RunConfig(name=run_name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=settings.checkpoints_to_keep)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train job {name!r} finished without a checkpoint")
    return result


def report_to_ray(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
    """A trainer's per-step report inside a Ray Train worker: metrics from every rank (Ray Train keeps
    rank 0's), and the checkpoint directory when rank 0 has one (uploaded before this returns)."""
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
    ray.train.report(metrics, checkpoint=checkpoint)
