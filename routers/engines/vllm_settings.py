"""vLLM engine settings, shared by the project's vLLM engine and the Ray Serve LLM answer deployments.

Pure functions of a :class:`GeneratorConfig` (no vLLM import), so the Serve app can build its
``LLMServer`` deployments on a head node that has no vLLM installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from routers.engines.base import GeneratorConfig
from routers.errors import EngineError

# Never unpickle weights (.bin / .pt checkpoints can run code on load): the same rule as the transformers engine.
SAFE_LOAD_FORMAT = "safetensors"


def split_cores(cores: Sequence[int], ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` giving each tensor-parallel rank an equal, disjoint share of ``cores``."""
    cores = sorted(cores)
    if ranks > len(cores):
        raise EngineError(f"tensor_parallel_size {ranks} needs at least {ranks} CPU cores; this process has "
                          f"{len(cores)}: lower tensor_parallel_size or set cpu_threads_bind")
    share = len(cores) // ranks
    groups = [cores[rank * share : (rank + 1) * share] for rank in range(ranks)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def cpu_engine_settings(config: GeneratorConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Engine arguments and environment variables for vLLM's CPU backend: the dtype the CPU computes fast,
    and each tensor-parallel rank bound to its own cores.

    The environment must be set before the engine starts: vLLM's CPU workers read it when they spawn.
    """
    env: dict[str, str] = {}
    if config.cpu_threads_bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_threads_bind
    elif config.tensor_parallel_size > 1:
        # vLLM's default ("auto") binds by NUMA node and refuses more ranks than nodes.
        env["VLLM_CPU_OMP_THREADS_BIND"] = split_cores(sorted(os.sched_getaffinity(0)), config.tensor_parallel_size)
    args: dict[str, Any] = {"dtype": cpu_default_dtype() if config.dtype == "auto" else config.dtype}
    return args, env


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere vLLM emulates it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def cpu_default_dtype() -> str:
    """bfloat16 where the CPU has it (as fast as float32 here, half the memory), else float32: emulated
    bfloat16 is several times slower."""
    return "bfloat16" if cpu_has_bf16() else "float32"


def engine_arguments(config: GeneratorConfig, path: str, on_cpu: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """vLLM engine arguments (and, on CPU, the environment) for ``config``."""
    args: dict[str, Any] = {
        "model": path,
        "tensor_parallel_size": config.tensor_parallel_size,
        "dtype": config.dtype,
        "enforce_eager": config.enforce_eager,
        "max_num_seqs": max(config.max_batch_size, 1),
        "load_format": SAFE_LOAD_FORMAT,
    }
    env: dict[str, str] = {}
    if on_cpu:
        cpu_args, env = cpu_engine_settings(config)
        args.update(cpu_args)
    else:
        args["gpu_memory_utilization"] = config.gpu_memory_utilization
    if config.max_model_len:
        args["max_model_len"] = config.max_model_len
    if config.kv_cache_memory_gb is not None:
        # below vLLM's CPU default (4 GiB, or the whole-GB VLLM_CPU_KVCACHE_SPACE): a 2-core machine serves
        # four engines at once in 24 GB only with a few hundred MB each
        args["kv_cache_memory_bytes"] = int(config.kv_cache_memory_gb * 2**30)
    backend = config.distributed_executor_backend
    if backend != "auto":  # asked for by name: kept at any size (one Ray worker at TP=1 is a real layout too)
        args["distributed_executor_backend"] = backend
    elif config.tensor_parallel_size > 1:
        # GPU: shards are Ray workers in the replica's placement group (one GPU bundle per shard). CPU:
        # vLLM 0.32 refuses Ray there ("current platform cpu does not support ray"), so the shards run
        # as local processes of the replica, bound to the cores its bundles reserve.
        args["distributed_executor_backend"] = "mp" if on_cpu else "ray"
    return args, env
