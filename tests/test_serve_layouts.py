"""One code path: the GPU layout (configs/serve_gpu.yaml, cluster/rayservice.yaml) and the vLLM-on-CPU layout
(configs/serve_vllm_cpu.yaml, run end to end in tests/test_serve_vllm_e2e.py) build the same deployments on
the same engine code; they differ only in device and sizing settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serve_app.config import AppConfig, parse_app_config
from serve_app.deployments.llm_server import llm_config_for

ROOT = Path(__file__).resolve().parents[1]

# Settings that say which weights run where and how big, not which code runs them.
DEVICE_SETTINGS = {
    "model", "served_name", "artifact", "dtype", "device", "tensor_parallel_size", "max_model_len",
    "max_batch_size", "gpu_memory_utilization", "kv_cache_memory_gb",
    "cpu_threads_bind", "enforce_eager", "num_threads", "max_length", "pooling", "global_attention_first_token",
    "ray_actor_options", "placement_group_bundles", "placement_group_strategy", "autoscaling_config",
    "num_replicas", "max_ongoing_requests", "max_queued_requests", "batching", "input_price", "output_price",
    "limits", "timeouts", "ingress",
}


def args_of(path: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / path).read_text())["applications"][0]["args"]


def differing_paths(a: Any, b: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differing_paths(a.get(key), b.get(key), (*path, str(key)))
        return out
    return [] if a == b else [path]


def test_the_cpu_vllm_layout_differs_from_the_gpu_layout_only_in_device_settings() -> None:
    gpu, cpu = args_of("configs/serve_gpu.yaml"), args_of("configs/serve_vllm_cpu.yaml")
    code_paths = [p for p in differing_paths(gpu, cpu) if not DEVICE_SETTINGS & set(p)]
    assert code_paths == [], f"the layouts differ beyond device settings at {code_paths}"
    rayservice = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())["spec"]["serveConfigV2"]
    assert yaml.safe_load(rayservice)["applications"][0]["args"] == gpu  # KubeRay serves the GPU layout


def test_both_layouts_run_every_model_on_vllm_with_tensor_parallel_routers() -> None:
    for path in ("configs/serve_gpu.yaml", "configs/serve_vllm_cpu.yaml"):
        config = parse_app_config(args_of(path))
        assert {spec.engine.backend for spec in config.models.values()} == {"vllm"}, path
        assert config.enabled_routers() == parse_app_config(args_of("configs/serve_gpu.yaml")).enabled_routers()
        for kind in ("causal", "policy"):
            engine = getattr(config.routers, kind).engine
            assert engine["backend"] == "vllm", (path, kind)
        assert config.routers.causal.engine["tensor_parallel_size"] == 2, path


def test_answer_models_become_the_same_ray_serve_llm_servers() -> None:
    """Both layouts go through llm_config_for: the same LLMServer settings but for the device's."""
    gpu = AppConfig.model_validate(args_of("configs/serve_gpu.yaml"))
    cpu = AppConfig.model_validate(args_of("configs/serve_vllm_cpu.yaml"))
    for key in gpu.models:
        on_gpu, on_cpu = llm_config_for(key, gpu.models[key]), llm_config_for(key, cpu.models[key])
        assert on_gpu.accelerator_config is None or on_gpu.accelerator_config.kind == "gpu"
        assert on_cpu.accelerator_config.kind == "cpu"
        assert on_gpu.engine_kwargs["load_format"] == on_cpu.engine_kwargs["load_format"] == "safetensors"
        shared = set(on_gpu.engine_kwargs) & set(on_cpu.engine_kwargs)
        assert {"tensor_parallel_size", "max_num_seqs", "dtype", "enforce_eager"} <= shared
        gpus = sum(b.get("GPU", 0) for b in on_gpu.placement_group_config["bundles"])
        assert gpus == gpu.models[key].engine.tensor_parallel_size  # one GPU per tensor-parallel rank
        assert all("GPU" not in b for b in on_cpu.placement_group_config["bundles"])
