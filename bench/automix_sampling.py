"""AutoMix verification sampling throughput, side by side in one run on the CPU small model:

1. Ray actors: the same queries sampled by 1 vs 2 sampler actors (``train_jobs.automix``).
2. One engine, N verdicts per query: one ``generate`` call with ``n=N`` vs N calls with ``n=1``.

    python bench/automix_sampling.py [--queries 16] [--samples 4]

Writes bench/out/automix_sampling.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "bench/out/automix_sampling.json"))
    args = parser.parse_args()
    model = ROOT / "models/smollm2-135m-instruct"
    if not model.exists():
        print("run `bash scripts/setup.sh` first (models/ missing)", file=sys.stderr)
        return 2

    import ray

    from routers.automix.router import AutomixRouter, user
    from routers.data import RoutingDataset, data_dir, load_llm_data
    from routers.engines import GeneratorConfig, build_generator
    from train_jobs.automix import sample_in_parallel
    from train_jobs.common import RaySettings

    llm_data = load_llm_data(data_dir() / "llm_candidates.json")  # `llmrouter data get routellm`
    data = RoutingDataset.from_files([data_dir() / "gsm8k_train.jsonl"], llm_data)
    router = AutomixRouter({"num_samples": args.samples, "verifier_max_tokens": 6, "sampling_batch_size": 4}, llm_data)
    pair = router.resolve_pair(data)
    data = data.complete_for([pair.small, pair.large]).head(args.queries)
    engine = GeneratorConfig(model=str(model), num_threads=1)

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    actors = {}
    try:
        for workers in (1, 2):
            _, timing = sample_in_parallel(router, data, engine, RaySettings(num_workers=workers, cpus_per_worker=1))
            actors[workers] = timing
    finally:
        ray.shutdown()

    generator = build_generator(GeneratorConfig(model=str(model), num_threads=2))
    requests = [router.verification_request(ex.query, ex.outcomes[pair.small].response or "") for ex in data.examples]
    prompts = [generator.chat_prompt([user(p)]) for p, _ in requests]
    params = requests[0][1]
    generator.generate(prompts[:1], params)  # warm-up
    started = time.perf_counter()
    for prompt in prompts:
        generator.generate([prompt], params)
    one_call = time.perf_counter() - started
    single = params.model_copy(update={"n": 1})
    started = time.perf_counter()
    for prompt in prompts:
        for _ in range(args.samples):
            generator.generate([prompt], single)
    sequential = time.perf_counter() - started

    report = {
        "queries": len(data), "samples_per_query": args.samples,
        "ray_actors": {str(k): v for k, v in actors.items()},
        "actor_speedup_2_vs_1": actors[1]["seconds"] / actors[2]["seconds"],
        "one_call_n_samples_s": one_call, "sequential_calls_s": sequential,
        "batched_n_speedup": sequential / one_call,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{len(data)} queries x N={args.samples} verdicts (SmolLM2-135M, CPU):")
    for workers, timing in actors.items():
        print(f"  {workers} Ray actor(s): {timing['seconds']:.1f}s, {timing['queries_per_s']:.2f} queries/s")
    print(f"  2 vs 1 actors: {report['actor_speedup_2_vs_1']:.2f}x")
    print(f"  one call with n={args.samples}: {one_call:.1f}s vs {args.samples} sequential calls: {sequential:.1f}s "
          f"({report['batched_n_speedup']:.2f}x)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
