"""AutoMix: parallel verification sampling on Ray actors, then fit the Threshold / POMDP / SelfConsistency policy.

    python -m train_jobs.automix --config configs/train/automix.yaml
    ray job submit --working-dir . -- python -m train_jobs.automix --config configs/train/automix.yaml

Each actor loads the small model once and runs the router's own ``sample_verifications`` on its shard
(N samples per query in one generate call). Verdicts the router config's ``verifier_votes`` file already
has are joined onto the data first and not sampled again. The job writes ``OUTPUT_DIR/verifier_votes.jsonl``
(the verdicts without the public text, keyed by query sha256: ``routers.automix.stored_votes``), so a refit
(another method, other costs) needs no resampling: point hparam ``verifier_votes`` at it.

The driver hands the actors one sampling batch (``sampling_batch_size`` queries) per call and appends each
finished query's lines to the run's samples file (``verification_samples.jsonl``, LLMRouter JSONL with the
data's text: a run output, never shipped) as soon as its batch is back (one fsync'd line at a time, via
the oracle's ``ResumableJsonlWriter``), so a crash keeps every finished query and a rerun samples only the
queries whose small-model line is not in the file yet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from routers.automix.build_artifact import seeded_subset
from routers.automix.router import AutomixRouter, outcome_record, replace_outcome
from routers.automix.stored_votes import write_verifier_votes
from routers.config import build_router, load_config_file
from routers.data import QueryExample, RoutingDataset
from routers.engines import GeneratorConfig, build_generator
from routers.errors import ConfigError
from routers.oracle.pipeline import ResumableJsonlWriter
from routers.paths import config_file, resolve_model_path, resolve_path
from routers.progress import log
from train_jobs.common import JobConfig, RaySettings, init_ray, run_job, write_json


class AutomixJobConfig(JobConfig):
    router_config: str = "configs/routers/automix.yaml"
    train_data: list[str] | None = Field(
        default=None, description="routing-data files to sample and fit on, instead of the router config's")
    max_train_queries: int | None = Field(
        default=None, ge=1, description="sample at most this many: the router seed's subset, the one "
        "routers.automix.build_artifact --queries N picks")
    evaluate: bool = True


SAMPLES_FILE = "verification_samples.jsonl"
VOTES_FILE = "verifier_votes.jsonl"
# What a finished query's small-model line carries, besides the LLMRouter fields.
SIGNAL_FIELDS = ("response", "verifier_votes", "p_ver", "sampled_answers")


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


def batches(data: RoutingDataset, size: int) -> list[RoutingDataset]:
    """Consecutive subsets of ``size`` queries: one actor call each, so results come back (and are
    written) batch by batch instead of once at the end."""
    return [data.subset(list(range(start, min(start + size, len(data))))) for start in range(0, len(data), size)]


OnDone = Callable[[Sequence[QueryExample]], None]


def sample_in_parallel(router: AutomixRouter, data: RoutingDataset, engine: GeneratorConfig,
                       settings: RaySettings, on_done: OnDone | None = None) -> tuple[RoutingDataset, dict[str, Any]]:
    """Spread ``data`` over ``settings.num_workers`` sampler actors; returns the enriched data and timings.

    ``on_done`` gets each batch's enriched examples as soon as that batch is back.
    """
    import ray

    actor_cls = ray.remote(num_cpus=settings.cpus_per_worker,
                           num_gpus=settings.gpus_per_worker if settings.use_gpu else 0)(VerificationSampler)
    llm_data = {k: v.model_dump(mode="json") for k, v in router.llm_data.items()}
    parts = batches(data, router.config.sampling_batch_size)
    actors = [actor_cls.remote(router.config.model_dump(mode="json"), llm_data, engine.model_dump())
              for _ in range(min(settings.num_workers, len(parts)))]
    ray.get([a.__ray_ready__.remote() for a in actors])  # model load is not sampling time
    started = time.perf_counter()
    try:
        done, reports = _run_batches(actors, parts, on_done)
    finally:
        for actor in actors:
            ray.kill(actor)
    elapsed = time.perf_counter() - started
    by_query = {ex.query: ex for ex in done}
    examples = [by_query.get(ex.query, ex) for ex in data.examples]
    totals = {k: sum(r.get(k, 0) for r in reports) for k in ("queries", "yes", "no", "unparseable")}
    timing = {"workers": len(actors), "seconds": elapsed, "queries_per_s": len(data) / elapsed if elapsed else None,
              "samples_per_query": router.config.num_samples, **totals}
    return RoutingDataset(examples, data.llm_data), timing


def _run_batches(actors: list[Any], parts: list[RoutingDataset],
                 on_done: OnDone | None) -> tuple[list[QueryExample], list[dict[str, Any]]]:
    """Keep every actor busy with one batch at a time; hand each finished batch to ``on_done``."""
    import ray

    idle, queue = list(actors), list(parts)
    in_flight: dict[Any, Any] = {}
    done: list[QueryExample] = []
    reports: list[dict[str, Any]] = []
    while queue or in_flight:
        while idle and queue:
            actor = idle.pop()
            in_flight[actor.sample.remote(queue.pop(0))] = actor
        [ready], _ = ray.wait(list(in_flight), num_returns=1)
        idle.append(in_flight.pop(ready))
        enriched, report = ray.get(ready)
        reports.append(report)
        done.extend(enriched.examples)
        if on_done is not None:
            on_done(enriched.examples)
    return done, reports


def sample_records(example: QueryExample, small: str) -> list[dict[str, Any]]:
    """LLMRouter JSONL lines of one query (``outcome_record``: the run file's format), the small
    model's last: its line, carrying the samples, is what marks the query as done."""
    models = [m for m in example.outcomes if m != small] + ([small] if small in example.outcomes else [])
    return [outcome_record(example, model, example.outcomes[model]) for model in models]


def apply_saved_samples(router: AutomixRouter, data: RoutingDataset,
                        records: Sequence[dict[str, Any]]) -> RoutingDataset:
    """``data`` with the samples a previous run already wrote put back on the small model's records."""
    small = router.require_pair().small
    saved = {r["query"]: r for r in records if r.get("model_name") == small}
    examples = []
    for example in data.examples:
        record = saved.get(example.query)
        if record is not None and small in example.outcomes:
            update = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()
                      if k in SIGNAL_FIELDS and v is not None}
            candidate = replace_outcome(example, small, **update)
            # Only a line that carries this method's signal counts (a Threshold run's votes are not
            # SelfConsistency's sampled answers).
            example = candidate if router.signal_of(candidate, small) is not None else example
        examples.append(example)
    return RoutingDataset(examples, data.llm_data)


def sample_resumably(router: AutomixRouter, train: RoutingDataset, engine: GeneratorConfig, settings: RaySettings,
                     path: Path) -> tuple[RoutingDataset, dict[str, Any]]:
    """Sample the queries not in ``path`` yet, appending each finished query to it; returns all of ``train``
    with samples (saved + new) and the timings."""
    small = router.require_pair().small
    with ResumableJsonlWriter(path, key_field=("query", "model_name")) as writer:
        train = apply_saved_samples(router, train, writer.records)
        todo = router.missing_signal_indices(train)
        timing: dict[str, Any] = {"already_sampled": len(train) - len(todo), "queries": 0}
        if todo:
            init_ray(settings)
            log(f"sampling {router.config.num_samples} verifications for {len(todo)} queries "
                f"({timing['already_sampled']} already in {path.name}) on {settings.num_workers} actors")

            def write(examples: Sequence[QueryExample]) -> None:
                for example in examples:
                    for record in sample_records(example, small):
                        writer.write(record)

            sampled, run = sample_in_parallel(router, train.subset(todo), engine, settings, on_done=write)
            timing.update(run)
            by_query = {ex.query: ex for ex in sampled.examples}
            train = RoutingDataset([by_query.get(ex.query, ex) for ex in train.examples], train.llm_data)
        for example in train.examples:  # lines a crash cut off between a query's models
            for record in sample_records(example, small):
                writer.write(record)
    return train, timing


def train_automix(config: AutomixJobConfig) -> dict[str, Any]:
    router_cfg = load_config_file(config_file(config.router_config))
    if config.train_data:
        router_cfg.data_path.routing_data_train = list(config.train_data)
    router = build_router(router_cfg, "automix")
    assert isinstance(router, AutomixRouter)
    train = router_cfg.dataset("train")
    pair = router.resolve_pair(train)
    train = train.complete_for([pair.small, pair.large])
    if config.max_train_queries is not None and config.max_train_queries < len(train):
        train = seeded_subset(train, config.max_train_queries, router.config.seed)
    public = train
    train = router.with_stored_votes(train)
    out = config.output_path()
    summary: dict[str, Any] = {"router": "automix", "method": router.config.method, "n_train": len(train)}
    if router.missing_signal_indices(train):
        engine = router_cfg.engines.small
        if engine is None:
            raise ConfigError(f"{config.router_config}: engines.small is needed to sample verifications")
        model = resolve_model_path(engine.model, f"{config.router_config}: engines.small.model")
        engine = engine.model_copy(update={"model": model})
        train, summary["sampling"] = sample_resumably(router, train, engine, config.ray, out / SAMPLES_FILE)
        summary["samples_file"] = str(out / SAMPLES_FILE)
    summary["votes_file"] = str(write_verifier_votes(train, out / VOTES_FILE, public=public))
    summary["train"] = router.fit(train)
    save_to = router_cfg.model_path.save_model_path
    if not save_to:
        raise ConfigError(f"{config.router_config}: model_path.save_model_path is required")
    summary["saved_to"] = str(router.save(resolve_path(save_to)))
    if config.evaluate and router_cfg.data_path.routing_data_test:
        test = router.with_stored_votes(router_cfg.dataset("test").complete_for([pair.small, pair.large]))
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
