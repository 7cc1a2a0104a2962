"""AutoMix: parallel verification sampling on Ray actors, then fit the Threshold / POMDP / SelfConsistency policy.

    python -m train_jobs.automix --config configs/train/automix.yaml
    ray job submit --working-dir . -- python -m train_jobs.automix --config configs/train/automix.yaml

Each actor loads the small model once and runs the router's own ``sample_verifications`` on its shard
(N samples per query in one generate call). The samples are written in LLMRouter JSONL with
``verifier_votes`` so a refit (another method, other costs) needs no resampling: point
``routing_data_train`` at the samples file.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from pydantic import Field

from routers.automix.router import AutomixRouter, write_verification_samples
from routers.config import build_router, load_config_file, resolve_path
from routers.data import RoutingDataset
from routers.engines import GeneratorConfig, build_generator
from routers.errors import ConfigError
from routers.progress import log
from train_jobs.common import JobConfig, RaySettings, init_ray, run_job, write_json


class AutomixJobConfig(JobConfig):
    router_config: str = "configs/routers/automix.yaml"
    train_data: list[str] | None = Field(
        default=None, description="routing-data files to sample and fit on, instead of the router config's")
    max_train_queries: int | None = Field(default=None, ge=1, description="sample at most this many (seeded)")
    evaluate: bool = True


class VerificationSampler:
    """A Ray actor: the small model plus the router's sampling step."""

    def __init__(self, router_config: dict[str, Any], llm_data: dict[str, Any], engine: dict[str, Any]) -> None:
        from routers.data import LLMCandidate

        self.router = AutomixRouter(router_config, {k: LLMCandidate.model_validate(v) for k, v in llm_data.items()})
        self.router.bind_engines(generators={"small": build_generator(GeneratorConfig.model_validate(engine))})

    def sample(self, data: RoutingDataset) -> tuple[RoutingDataset, dict[str, Any]]:
        self.router.resolve_pair(data)
        started = time.perf_counter()
        enriched = self.router.sample_verifications(data)
        report = dict(self.router.last_sampling_report)
        report["seconds"] = time.perf_counter() - started
        return enriched, report


def shard(data: RoutingDataset, parts: int) -> list[RoutingDataset]:
    indices = np.array_split(np.arange(len(data)), parts)
    return [data.subset(chunk.tolist()) for chunk in indices if len(chunk)]


def sample_in_parallel(router: AutomixRouter, data: RoutingDataset, engine: GeneratorConfig,
                       settings: RaySettings) -> tuple[RoutingDataset, dict[str, Any]]:
    """Spread ``data`` over ``settings.num_workers`` sampler actors; returns the enriched data and timings."""
    import ray

    actor_cls = ray.remote(num_cpus=settings.cpus_per_worker,
                           num_gpus=settings.gpus_per_worker if settings.use_gpu else 0)(VerificationSampler)
    llm_data = {k: v.model_dump(mode="json") for k, v in router.llm_data.items()}
    actors = [actor_cls.remote(router.config.model_dump(mode="json"), llm_data, engine.model_dump())
              for _ in range(settings.num_workers)]
    ray.get([a.__ray_ready__.remote() for a in actors])  # model load is not sampling time
    started = time.perf_counter()
    parts = shard(data, len(actors))
    results = ray.get([actor.sample.remote(part) for actor, part in zip(actors, parts)])
    elapsed = time.perf_counter() - started
    for actor in actors:
        ray.kill(actor)
    examples = [ex for enriched, _ in results for ex in enriched.examples]
    reports = [r for _, r in results]
    totals = {k: sum(r.get(k, 0) for r in reports) for k in ("queries", "yes", "no", "unparseable")}
    timing = {"workers": len(actors), "seconds": elapsed, "queries_per_s": len(data) / elapsed if elapsed else None,
              "samples_per_query": router.config.num_samples, **totals}
    return RoutingDataset(examples, data.llm_data), timing


def train_automix(config: AutomixJobConfig) -> dict[str, Any]:
    router_cfg = load_config_file(resolve_path(config.router_config))
    if config.train_data:
        router_cfg.data_path.routing_data_train = list(config.train_data)
    router = build_router(router_cfg, "automix")
    assert isinstance(router, AutomixRouter)
    train = router_cfg.dataset("train")
    pair = router.resolve_pair(train)
    train = train.complete_for([pair.small, pair.large])
    if config.max_train_queries is not None and config.max_train_queries < len(train):
        rng = np.random.default_rng(router.config.seed)
        train = train.subset(sorted(rng.choice(len(train), size=config.max_train_queries, replace=False).tolist()))
    out = config.output_path()
    summary: dict[str, Any] = {"router": "automix", "method": router.config.method, "n_train": len(train)}
    if router.missing_signal_indices(train):
        engine = router_cfg.engines.small
        if engine is None:
            raise ConfigError(f"{config.router_config}: engines.small is needed to sample verifications")
        engine = engine.model_copy(update={"model": str(resolve_path(engine.model))})
        init_ray(config.ray)
        log(f"sampling {router.config.num_samples} verifications for {len(train)} queries on {config.ray.num_workers} actors")
        train, timing = sample_in_parallel(router, train, engine, config.ray)
        summary["sampling"] = timing
        summary["samples_file"] = str(write_verification_samples(train, out / "verification_samples.jsonl"))
    summary["train"] = router.fit(train)
    save_to = router_cfg.model_path.save_model_path
    if not save_to:
        raise ConfigError(f"{config.router_config}: model_path.save_model_path is required")
    summary["saved_to"] = str(router.save(resolve_path(save_to)))
    if config.evaluate and router_cfg.data_path.routing_data_test:
        test = router_cfg.dataset("test").complete_for([pair.small, pair.large])
        if router.missing_signal_indices(test):
            summary["test"] = "skipped: the test data has no verification samples (sample it with this job first)"
        else:
            from routers.evaluation import evaluate_router

            report, _ = evaluate_router(router, test)
            summary["test"] = report.to_dict()
    write_json(out / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("automix", AutomixJobConfig, train_automix, argv)


if __name__ == "__main__":
    sys.exit(main())
