"""Train an N-model router (``routers.nmodel``) as a Ray job, evaluate it on the test split, save the artifact.

    python -m train_jobs.nmodel --config configs/train/nmodel.yaml
    ray job submit --working-dir . -- python -m train_jobs.nmodel --config configs/train/nmodel.yaml

The fit runs in one Ray task with the resources of the config's ``ray`` section (``cpus_per_worker``, and
``gpus_per_worker`` with ``use_gpu``), so on a cluster the causal-LM router's fine-tune lands on a GPU node; the
artifact goes to ``save_to``, resolved against ``LLMROUTER_HOME`` (a volume every node mounts). The data is a
published pool (``pool: llmrouter | routerbench``, from ``LLMROUTER_DATA``) or N-model files (``train:`` /
``test:``). ``metrics.json`` in ``output_dir`` holds the fit's metrics and the test split's report (quality,
cost, AIQ, quality at the best single model's cost, task-cluster intervals).
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from routers.cli import multimodel_embedder
from routers.data.location import DATA_ENV, data_dir
from routers.evaluation.multimodel import evaluate_runs
from routers.nmodel.evaluate import Pool, fit_and_predict, load_files, load_pool
from routers.paths import HOME_ENV, home, resolve_path
from routers.progress import log
from routers.registry import canonical_name, multimodel_router_class
from train_jobs.common import JobConfig, init_ray, run_job, write_json


class NModelJobConfig(JobConfig):
    router: str = Field(description="an N-model router of the registry (nmodel_knn, nmodel_causal, ...)")
    params: dict[str, Any] = Field(default_factory=dict, description="the router's config (its hyperparameters)")
    pool: Literal["llmrouter", "routerbench"] | None = Field(default=None, description="a published pool")
    train: list[str] | None = Field(default=None, description="N-model files (RouterBench CSV, LLMRouter JSON, "
                                    "JSONL) instead of a pool")
    test: list[str] | None = None
    llm_data: str | None = Field(default=None, description="prices for files without per-call costs")
    max_train_queries: int | None = Field(default=None, ge=10, description="fit on a random subset (quick runs)")
    save_to: str = Field(description="the artifact directory")
    bootstrap: int = Field(default=1000, ge=10, description="task-cluster bootstrap resamples of the test report")
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> NModelJobConfig:
        canonical_name(self.router)
        multimodel_router_class(self.router)  # a two-model router is refused here, with the N-model ones listed
        if (self.pool is None) == (self.train is None):
            raise ValueError("give either pool (llmrouter | routerbench) or train (and test) files")
        if self.train is not None and not self.test:
            raise ValueError("train files need test files too")
        return self


def read_pool(config: NModelJobConfig) -> Pool:
    if config.pool is not None:
        pool = load_pool(config.pool, data_dir())
    else:
        assert config.train is not None and config.test is not None
        pool = load_files([resolve_path(p) for p in config.train], [resolve_path(p) for p in config.test],
                          resolve_path(config.llm_data) if config.llm_data else None)
    if config.max_train_queries is not None and config.max_train_queries < len(pool.train):
        rng = np.random.default_rng(config.seed)
        keep = sorted(rng.choice(len(pool.train), size=config.max_train_queries, replace=False).tolist())
        pool = Pool(pool.name, pool.train.subset(keep), pool.test, (*pool.notes, f"{len(keep)} training queries"))
    return pool


def fit_evaluate_save(config: NModelJobConfig) -> dict[str, Any]:
    """The job's work, inside its Ray task: fit on the train split, report on the test split, save."""
    pool = read_pool(config)
    for note in pool.notes:
        log(f"{pool.name}: {note}")
    embedder = multimodel_embedder() if multimodel_router_class(config.router).uses_embeddings else None
    router, run = fit_and_predict(config.router, pool.train, pool.test, embedder, config.params)
    saved = router.save(resolve_path(config.save_to))
    report = evaluate_runs([run], pool.test.models, pool.test.quality, pool.test.cost, pool.test.task_names,
                           n_resamples=config.bootstrap, seed=config.seed)[0]
    return {"router": router.name, "pool": pool.name, "n_train": len(pool.train), "n_test": len(pool.test),
            "train": router.train_metrics, "test": report.summary(), "saved_to": str(saved),
            "fit_s": round(run.fit_seconds or 0.0, 2), "route_s": round(run.route_seconds or 0.0, 2)}


def train_nmodel(config: NModelJobConfig) -> dict[str, Any]:
    import ray

    init_ray(config.ray)
    settings = config.ray
    # Relative paths (models/, the data, save_to) resolve on the worker as they do here.
    env = {HOME_ENV: str(home().resolve()), DATA_ENV: str(data_dir())} if config.pool else {HOME_ENV: str(home())}
    task = ray.remote(num_cpus=settings.cpus_per_worker,
                      num_gpus=settings.gpus_per_worker if settings.use_gpu else 0)(fit_evaluate_save)
    summary = ray.get(task.options(runtime_env={"env_vars": env}).remote(config))
    write_json(config.output_path() / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("nmodel", NModelJobConfig, train_nmodel, argv)


if __name__ == "__main__":
    sys.exit(main())
