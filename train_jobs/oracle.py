"""Oracle dataset generation on Ray actors: both models answer each benchmark query, outcomes -> policy labels.

    python -m train_jobs.oracle --config configs/train/oracle.yaml
    ray job submit --working-dir . -- python -m train_jobs.oracle --config configs/train/oracle.yaml

Each actor holds the medium model, the large model and (when configured) the judge, and runs
``routers.oracle.OraclePipeline`` on shards of ``ray.batch_size`` queries. One actor per worker holding
all models, rather than one actor pool per model, because an oracle label needs both answers of a query
(and the judge needs both side by side): with separate pools the driver would have to ship every answer
back and join them before scoring, and a shard would be half done whenever one pool crashed. The small
models here fit several times into one CPU worker or GPU; a large model that needs its own GPUs
(tensor parallelism) is the case where separate pools pay off.

The driver writes each finished shard through the resumable writers (one fsync'd line per record), so
a crash keeps every finished shard and a rerun only does the queries not in the oracle file yet.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pydantic import Field

from routers.engines import GeneratorConfig, SamplingParams, build_generator
from routers.oracle import (
    BenchmarkItem,
    BlindJudge,
    OracleOutputs,
    OraclePipeline,
    read_benchmark,
    summarize,
)
from routers.oracle.pipeline import display_name, require_auto_scorable
from routers.paths import resolve_model_path, resolve_path
from routers.progress import log
from train_jobs.common import JobConfig, init_ray, run_job, write_json


class OracleJobConfig(JobConfig):
    benchmark: str = Field(description="benchmark JSONL: query/ground_truth/metric/task_name (routing data too: a "
                           "query's per-model lines are merged), or GSM8K question/answer; e.g. "
                           "${LLMROUTER_DATA}/gsm8k_test.jsonl")
    limit: int | None = Field(default=None, ge=1, description="use only the first N distinct queries")
    medium: GeneratorConfig
    large: GeneratorConfig
    judge: GeneratorConfig | None = Field(default=None, description="needed only for items without an automatic metric")
    judge_seed: int = Field(default=0, description="seeds which model is 'Answer A' for each query")
    answer_max_tokens: int = Field(default=256, ge=1, le=8192)


class OracleWorker:
    """A Ray actor: medium, large and judge models loaded once, then one pipeline call per shard."""

    def __init__(self, medium: dict[str, Any], large: dict[str, Any], judge: dict[str, Any] | None,
                 judge_seed: int, answer_max_tokens: int, batch_size: int) -> None:
        judge_model = (BlindJudge(build_generator(GeneratorConfig.model_validate(judge)), seed=judge_seed)
                       if judge else None)
        self.pipeline = OraclePipeline(
            medium=build_generator(GeneratorConfig.model_validate(medium)),
            large=build_generator(GeneratorConfig.model_validate(large)),
            judge=judge_model,
            answer_params=SamplingParams(temperature=0.0, max_tokens=answer_max_tokens),
            batch_size=batch_size,
            medium_name=display_name(medium["model"]),
            large_name=display_name(large["model"]),
        )

    def run(self, shard_index: int, items: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]], float]:
        """(shard index, [{"routing": [...], "oracle": {...}}, ...], seconds)."""
        started = time.perf_counter()
        results = self.pipeline.run([BenchmarkItem.from_dict(item) for item in items])
        records = [{"routing": r.routing_records(), "oracle": r.oracle_record()} for r in results]
        return shard_index, records, time.perf_counter() - started


def with_local_model(engine: GeneratorConfig, key: str) -> dict[str, Any]:
    """Engine config for an actor: local model directories as absolute paths (actors may run elsewhere),
    checked here so a missing one fails before any actor starts."""
    return engine.model_copy(update={"model": resolve_model_path(engine.model, key)}).model_dump()


def shards(items: list[BenchmarkItem], size: int) -> list[list[BenchmarkItem]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def generate_on_actors(config: OracleJobConfig, pending: list[BenchmarkItem], outputs: OracleOutputs) -> dict[str, Any]:
    """Run the pending items on ``ray.num_workers`` actors; write each shard as soon as it is back."""
    import ray

    settings = config.ray
    parts = shards(pending, settings.batch_size)
    worker_cls = ray.remote(num_cpus=settings.cpus_per_worker,
                            num_gpus=settings.gpus_per_worker if settings.use_gpu else 0)(OracleWorker)
    engines = [with_local_model(config.medium, "medium.model"), with_local_model(config.large, "large.model"),
               with_local_model(config.judge, "judge.model") if config.judge else None]
    actors = [worker_cls.remote(*engines, config.judge_seed, config.answer_max_tokens, settings.batch_size)
              for _ in range(min(settings.num_workers, len(parts)))]
    load_started = time.perf_counter()
    ray.get([actor.__ray_ready__.remote() for actor in actors])
    load_seconds = time.perf_counter() - load_started
    started = time.perf_counter()
    written = 0
    try:
        idle = list(actors)
        queue = list(enumerate(parts))
        in_flight: dict[Any, Any] = {}
        while queue or in_flight:
            while idle and queue:
                actor = idle.pop()
                index, part = queue.pop(0)
                in_flight[actor.run.remote(index, [item.to_dict() for item in part])] = actor
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            idle.append(in_flight.pop(done))
            index, records, seconds = ray.get(done)
            for record in records:
                for line in record["routing"]:
                    outputs.routing.write(line)
                written += outputs.oracle.write(record["oracle"])
            log(f"shard {index + 1}/{len(parts)}: {len(records)} queries in {seconds:.1f}s "
                f"({written}/{len(pending)} written)")
    finally:
        for actor in actors:
            ray.kill(actor)
    elapsed = time.perf_counter() - started
    return {"workers": len(actors), "shards": len(parts), "written": written, "model_load_s": round(load_seconds, 2),
            "generation_s": round(elapsed, 2), "queries_per_s": round(written / elapsed, 4) if elapsed else None}


def run_oracle(config: OracleJobConfig) -> dict[str, Any]:
    items = read_benchmark(resolve_path(config.benchmark), limit=config.limit)
    out = config.output_path()
    summary: dict[str, Any] = {"job": "oracle", "benchmark": config.benchmark, "items": len(items),
                               "medium_model": display_name(config.medium.model),
                               "large_model": display_name(config.large.model),
                               "judge_model": display_name(config.judge.model) if config.judge else None}
    with OracleOutputs(out) as outputs:
        pending = outputs.pending(items)
        summary["already_done"] = len(items) - len(pending)
        if pending:
            if config.judge is None:
                # Fail before starting Ray and loading models when a judge would be needed.
                require_auto_scorable(pending)
            init_ray(config.ray)
            log(f"oracle: {len(pending)} of {len(items)} queries to answer on {config.ray.num_workers} actors")
            summary["run"] = generate_on_actors(config, pending, outputs)
        else:
            summary["run"] = {"written": 0, "note": "every query is already in the oracle file"}
        wanted = {item.query for item in items}
        summary["oracle"] = summarize([r for r in outputs.oracle.records if r["query"] in wanted])
        summary["routing_data"] = str(outputs.routing.path)
        summary["oracle_dataset"] = str(outputs.oracle.path)
    write_json(out / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("oracle", OracleJobConfig, run_oracle, argv)


if __name__ == "__main__":
    sys.exit(main())
