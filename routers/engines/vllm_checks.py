"""Checks of vLLM engine settings that need no GPU: do a model's heads split over the parallel sizes asked for,
and does vLLM itself accept the engine arguments (its ``VllmConfig``, built on whatever host runs the check).

vLLM refuses a tensor-parallel size that does not divide the attention heads ("Total number of attention
heads (9) must be divisible by tensor parallel size (2)") only when the engine starts, inside a Serve
replica's constructor, on a GPU. These functions find that from the model's ``config.json`` (and, where vLLM
is installed, from vLLM's own config validation) on a laptop or in CI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Multimodal configs (Gemma 3 4B+, Llama 4, ...) keep the language model's sizes in a nested block.
_TEXT_CONFIG_KEYS = ("text_config", "language_config", "llm_config")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that tensor and pipeline parallelism split."""

    attention_heads: int
    kv_heads: int
    layers: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        text = next((config[key] for key in _TEXT_CONFIG_KEYS if isinstance(config.get(key), dict)), config)
        heads = int(text["num_attention_heads"])
        # no num_key_value_heads: multi-head attention, one KV head per query head
        return cls(heads, int(text.get("num_key_value_heads") or heads), int(text["num_hidden_layers"]))

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelShape:
        return cls.from_config(json.loads((Path(model_dir) / "config.json").read_text()))


def parallel_problems(shape: ModelShape, tensor_parallel_size: int, pipeline_parallel_size: int = 1) -> list[str]:
    """Why vLLM would refuse to split ``shape`` this way (empty: it splits). vLLM's rules: the attention heads
    divide evenly over the TP ranks; KV heads too, or (fewer KV heads than ranks) each is replicated on a
    whole number of ranks; every pipeline stage gets at least one layer."""
    tp, pp = tensor_parallel_size, pipeline_parallel_size
    problems = []
    if shape.attention_heads % tp:
        problems.append(f"{shape.attention_heads} attention heads are not divisible by tensor_parallel_size {tp}")
    kv = shape.kv_heads
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        problems.append(f"{kv} KV heads neither divide over nor replicate evenly on tensor_parallel_size {tp}")
    if pp > shape.layers:
        problems.append(f"pipeline_parallel_size {pp} exceeds the model's {shape.layers} layers")
    return problems


def router_base_model(artifact_dir: str | Path) -> str:
    """The base model a LoRA router artifact is merged onto: its merged model has the base's architecture
    (LoRA changes weights, not shapes), so the base's config.json answers shape questions without merging."""
    payload = json.loads((Path(artifact_dir) / "router.json").read_text())
    base = payload.get("config", {}).get("base_model")
    if not base:
        raise ValueError(f"{artifact_dir}/router.json names no config.base_model")
    return str(base)


def local_model_dir(model: str, root: Path) -> Path | None:
    """``model`` as a local directory with a config.json (relative paths against ``root``), None for a hub id
    or a path that is not there (a RayJob's output on the cluster's runs/ volume)."""
    path = Path(model) if Path(model).is_absolute() else root / model
    return path if (path / "config.json").is_file() else None


def host_safe_arguments(engine_args: dict[str, Any]) -> dict[str, Any]:
    """``engine_args`` as this host can build them: vLLM's CPU platform refuses the Ray executor ("current
    platform cpu does not support ray"), which is not what the check is about, so GPU layouts' ``ray`` shards
    are checked as ``mp`` ones; the model, sizes and parallel split are checked as written."""
    args = dict(engine_args)
    if args.get("distributed_executor_backend") == "ray":
        args["distributed_executor_backend"] = "mp"
    return args


def build_vllm_config(engine_args: dict[str, Any]) -> Any:
    """vLLM's own ``VllmConfig`` for ``engine_args`` (the validation the engine runs before it loads weights);
    raises what vLLM raises. Needs vLLM installed; reads the model's config, loads no weights."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(**host_safe_arguments(engine_args)).create_engine_config()
