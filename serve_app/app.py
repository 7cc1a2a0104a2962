"""``serve run serve_config.yaml`` builds the application here from the validated ``args``.

Deployment graph::

    Ingress ──┬── Embedder            (Hybrid, kNN, MF, SW ranking: embed -> library score in the ingress)
              ├── AnswerModel-small   (answers; AutoMix answer + N verification samples in one call)
              ├── AnswerModel-large   (backend vllm: a Ray Serve LLM LLMServer; else our transformers deployment)
              │   (models with an ``endpoint`` have no deployment: the ingress calls their URL)
              ├── CausalLMRouter      (generates the best model's name)
              ├── PolicyRouter        (policy label -> policy map -> model)
              ├── BertRouter          (a fine-tuned encoder scores the query; RouteLLM's BERT router)
              └── RouterLM-<name>     (an N-model causal-LM router's LM: every candidate's name log-prob;
                                       the router decides in the ingress)
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from serve_app.config import AnswerModelSpec, AppConfig, DeploymentSettings, parse_app_config
from serve_app.deployments.answer_model import AnswerModelDeployment
from serve_app.deployments.embedder import EmbedderDeployment
from serve_app.deployments.llm_server import build_llm_server
from serve_app.deployments.router_lm import RouterLMDeployment
from serve_app.deployments.router_models import (
    BertRouterDeployment,
    CausalLMRouterDeployment,
    PolicyRouterDeployment,
)
from serve_app.ingress import RouterIngress
from serve_app.multimodel import has_own_lm


def _options(settings: DeploymentSettings, name: str, user_config: dict[str, Any] | None = None) -> dict[str, Any]:
    options = settings.serve_options()
    options["name"] = name
    # Relative model paths inside artifacts (a router's base model) resolve against the project root,
    # wherever Ray starts the replica.
    actor = dict(options.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars.setdefault("LLMROUTER_HOME", os.environ.get("LLMROUTER_HOME", os.getcwd()))
    runtime_env["env_vars"] = env_vars
    actor["runtime_env"] = runtime_env
    options["ray_actor_options"] = actor
    if user_config is not None:
        options["user_config"] = user_config
    return options


def answer_model_app(key: str, spec: AnswerModelSpec) -> Application:
    """vLLM answer models are Ray Serve LLM ``LLMServer`` deployments; transformers ones our AnswerModel."""
    assert spec.engine is not None
    if spec.engine.backend == "vllm":
        return build_llm_server(key, spec)
    return AnswerModelDeployment.options(**_options(spec.deployment, f"AnswerModel-{key}")).bind(
        key, spec.public_name(), spec.engine.model_dump(), spec.batching.model_dump())


def build_app(args: dict[str, Any] | AppConfig) -> Application:
    config = parse_app_config(args).resolved()
    # Models at endpoints get no deployment: the ingress calls them over HTTP.
    answer = {key: answer_model_app(key, spec) for key, spec in config.models.items() if spec.hosted}
    embedder = None
    if config.embedder is not None and config.embedder.placement == "deployment" and config.routers.need_embedder():
        spec = config.embedder
        embedder = EmbedderDeployment.options(**_options(spec.deployment, "Embedder")).bind(
            spec.engine.model_dump(), spec.batching.model_dump())
    causal = policy = None
    if config.routers.causal is not None:
        spec_c = config.routers.causal
        causal = CausalLMRouterDeployment.options(**_options(spec_c.deployment, "CausalLMRouter")).bind(
            spec_c.artifact, spec_c.engine)
    if config.routers.policy is not None:
        spec_p = config.routers.policy
        policy = PolicyRouterDeployment.options(**_options(spec_p.deployment, "PolicyRouter")).bind(
            spec_p.artifact, spec_p.engine, None, spec_p.policy_map, list(config.models))
    bert = None
    if config.routers.bert is not None:
        spec_b = config.routers.bert
        bert = BertRouterDeployment.options(**_options(spec_b.deployment, "BertRouter")).bind(spec_b.artifact)
    # N-model routers that score with their own LM: the LM in a deployment, the router in the ingress
    router_lms = {name: RouterLMDeployment.options(**_options(spec.deployment, f"RouterLM-{name}")).bind(
        name, spec.artifact, spec.engine) for name, spec in config.routers.multimodel.items() if has_own_lm(spec)}
    ingress = RouterIngress.options(**_options(config.ingress.deployment, "Ingress"))
    return ingress.bind(config.model_dump(mode="json"), answer, embedder, causal, policy, bert, router_lms)
