"""One code path: the GPU layout (configs/serve_gpu.yaml, cluster/rayservice.yaml) and the vLLM-on-CPU layout
(configs/serve_vllm_cpu.yaml, run end to end in tests/test_serve_vllm_e2e.py) build the same deployments on
the same engine code; they differ only in device and sizing settings."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from routers.engines import GeneratorConfig
from routers.engines.vllm_checks import (
    ModelShape,
    build_vllm_config,
    local_model_dir,
    parallel_problems,
    router_base_model,
)
from routers.engines.vllm_settings import engine_arguments
from serve_app.config import AppConfig, parse_app_config
from serve_app.deployments.llm_server import llm_config_for, llm_engine_kwargs
from tests.conftest import require_vllm

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
# The embedder runs on ONNX Runtime inside the ingress on CPUs, in a deployment of its own on a GPU.
EMBEDDER_DEVICE_SETTINGS = {"backend", "placement", "deployment"}


def is_device_setting(path: tuple[str, ...]) -> bool:
    return bool(DEVICE_SETTINGS & set(path)) or (path[0] == "embedder" and bool(EMBEDDER_DEVICE_SETTINGS & set(path)))


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
    code_paths = [p for p in differing_paths(gpu, cpu) if not is_device_setting(p)]
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


# --- every vLLM engine of every shipped layout starts: its model splits over its parallel sizes ---------------
# The layouts the project ships; the RayService serves its serveConfigV2 (the GPU layout, checked equal above).
LAYOUTS = ("serve_config.yaml", "configs/serve_vllm_cpu.yaml", "configs/serve_gpu.yaml", "cluster/rayservice.yaml")


def layout_args(layout: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / layout).read_text())
    if document.get("kind") == "RayService":
        document = yaml.safe_load(document["spec"]["serveConfigV2"])
    return document["applications"][0]["args"]


@dataclass(frozen=True)
class VllmEngine:
    """One vLLM engine a layout starts, with the local directory holding its model's config.json (None: a
    hub id, or an artifact a RayJob writes to runs/ on the cluster)."""

    name: str
    config: GeneratorConfig
    model_dir: Path | None

    def engine_args(self) -> dict[str, Any]:
        """The arguments the engine is started with: Ray Serve LLM's for answer models (the model is
        LLMServer's to set), the project's VLLMGenerator's for router models."""
        assert self.model_dir is not None
        on_cpu = self.config.device == "cpu"
        if self.name.startswith("models."):
            args, _ = llm_engine_kwargs(self.config)
            return {"model": str(self.model_dir), **args}
        args, _ = engine_arguments(self.config, str(self.model_dir), on_cpu=on_cpu)
        return args


def router_engine(kind: str, artifact: str, override: dict[str, Any]) -> VllmEngine:
    """A router deployment's engine as ``_GenerativeRouterModel.engine_config`` builds it (the artifact's own
    engine settings, the layout's on top), on the base model: merging the adapter changes weights, not shapes."""
    manifest = ROOT / artifact / "router.json"
    if not manifest.is_file():  # a RayJob writes it on the cluster (runs/...)
        return VllmEngine(f"routers.{kind}", GeneratorConfig.model_validate({"model": artifact, **override}), None)
    saved = json.loads(manifest.read_text())["config"]
    settings = dict(saved.get("engine") or {})
    if saved.get("tensor_parallel_size"):
        settings.setdefault("tensor_parallel_size", saved["tensor_parallel_size"])
    model = override.get("model") or router_base_model(ROOT / artifact)
    config = GeneratorConfig.model_validate({**settings, **override, "model": model})
    return VllmEngine(f"routers.{kind}", config, local_model_dir(model, ROOT))


def vllm_engines(args: dict[str, Any]) -> list[VllmEngine]:
    config = AppConfig.model_validate(args)
    engines = [VllmEngine(f"models.{key}", spec.engine, local_model_dir(spec.engine.model, ROOT))
               for key, spec in config.models.items() if spec.engine.backend == "vllm"]
    for kind in ("causal", "policy"):
        spec = getattr(config.routers, kind)
        if spec is not None and (spec.engine or {}).get("backend") == "vllm":
            engines.append(router_engine(kind, spec.artifact, spec.engine or {}))
    return engines


def local_engines(layout: str) -> list[VllmEngine]:
    """The layout's vLLM engines whose model is local; skips where `scripts/setup.sh` has not built models/."""
    engines = vllm_engines(layout_args(layout))
    expected = [e for e in engines if re.match(r"^(models|artifacts)/", str(e.config.model))]
    missing = [e.config.model for e in expected if e.model_dir is None]
    if missing:
        pytest.skip(f"{layout}: local models {missing} are not there; run `bash scripts/setup.sh`")
    return [e for e in engines if e.model_dir is not None]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_local_vllm_engine_splits_its_heads_over_its_parallel_sizes(layout: str) -> None:
    """vLLM refuses a TP size that does not divide the heads only when the engine starts (on the cluster's GPUs,
    inside the replica's constructor): the model's config.json says so here."""
    if not vllm_engines(layout_args(layout)):
        pytest.skip(f"{layout} starts no vLLM engine")
    engines = local_engines(layout)
    assert any(e.config.tensor_parallel_size > 1 for e in engines), f"{layout}: the TP=2 router is checked"
    for engine in engines:
        shape = ModelShape.from_dir(engine.model_dir)
        problems = parallel_problems(shape, engine.config.tensor_parallel_size)
        assert not problems, f"{layout} {engine.name} ({engine.model_dir.name}): {problems}"


def test_the_head_check_catches_smollm2_at_tensor_parallel_size_2() -> None:
    """The defect the GPU layout shipped with: SmolLM2's 9 heads (3 KV heads) at TP=2."""
    args = copy.deepcopy(layout_args("configs/serve_gpu.yaml"))
    args["routers"]["causal"]["artifact"] = "artifacts/causallm_router"
    causal = next(e for e in vllm_engines(args) if e.name == "routers.causal")
    if causal.model_dir is None:
        pytest.skip("models/smollm2-135m-instruct is not there; run `bash scripts/setup.sh`")
    problems = parallel_problems(ModelShape.from_dir(causal.model_dir), causal.config.tensor_parallel_size)
    assert any("9 attention heads" in p for p in problems) and any("3 KV heads" in p for p in problems)
    assert parallel_problems(ModelShape(4, 1, 18), 2) == []   # Gemma 3 270M: the KV head is replicated
    assert parallel_problems(ModelShape(8, 8, 2), 2, pipeline_parallel_size=3) == [
        "pipeline_parallel_size 3 exceeds the model's 2 layers"]


def test_model_shape_reads_nested_text_configs() -> None:
    nested = {"architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": {"num_attention_heads": 8, "num_key_value_heads": 4, "num_hidden_layers": 34}}
    assert ModelShape.from_config(nested) == ModelShape(8, 4, 34)
    assert ModelShape.from_config({"num_attention_heads": 12, "num_hidden_layers": 6}) == ModelShape(12, 12, 6)


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_every_local_vllm_engine_builds_vllm_engine_config(layout: str) -> None:
    """vLLM's own validation of each engine's arguments (VllmConfig: model, dtype, parallel split, lengths),
    built on this CPU for the GPU layouts too (their Ray shards checked as mp ones; no weights load)."""
    require_vllm()
    engines = local_engines(layout)
    assert engines
    for engine in engines:
        config = build_vllm_config(engine.engine_args())
        assert config.parallel_config.tensor_parallel_size == engine.config.tensor_parallel_size, engine.name
        assert config.load_config.load_format == "safetensors", engine.name


@pytest.mark.slow
def test_vllm_refuses_what_the_head_check_refuses() -> None:
    """The fast check agrees with vLLM's own: the old GPU causal router does not build."""
    require_vllm()
    args = copy.deepcopy(layout_args("configs/serve_gpu.yaml"))
    args["routers"]["causal"]["artifact"] = "artifacts/causallm_router"
    causal = next(e for e in vllm_engines(args) if e.name == "routers.causal")
    if causal.model_dir is None:
        pytest.skip("models/smollm2-135m-instruct is not there; run `bash scripts/setup.sh`")
    with pytest.raises(Exception, match=r"attention heads \(9\) must be divisible by tensor parallel size \(2\)"):
        build_vllm_config(causal.engine_args())


# --- the vLLM release the GPU install gets is the one tested here -------------------------------------------
def optional_dependencies() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def pinned(requirements: list[str], name: str) -> str:
    """The ``==`` version ``requirements`` pin ``name`` to (fails on a range: installs would float)."""
    for requirement in requirements:
        match = re.match(rf"^{re.escape(name)}==([0-9][^;\s]*)", requirement)
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned with == in {requirements}")


def test_the_gpu_extra_pins_the_vllm_release_the_cpu_extra_runs() -> None:
    """The code and Ray Serve LLM import vLLM internals that move between releases: a GPU image gets exactly
    the vLLM release CI runs (vllm-cpu is the same release built for CPUs), and the README says how to move it."""
    extras = optional_dependencies()
    version = pinned(extras["gpu"], "vllm")
    assert version == pinned(extras["vllm-cpu"], "vllm-cpu")
    assert f"vllm=={version}" in (ROOT / "README.md").read_text()
