"""Hot swap of the router-model deployments (CausalLMRouter / PolicyRouter) without loading real models:
the router class and the engine builder are replaced by recorders, the deployment code is the real one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routers.engines import GeneratorConfig
from routers.errors import ConfigError
from serve_app.deployments import router_models


class FakeEngine:
    def __init__(self, config: GeneratorConfig, events: list[str]) -> None:
        self.config = config
        self.events = events
        events.append(f"build {config.model}")

    def shutdown(self) -> None:  # Generator.shutdown: the engine's processes and memory are released
        self.events.append(f"close {self.config.model}")


class FakeRouter:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.policy_map: str | None = None
        self.engine: Any = None

    def default_engine_config(self, role: str) -> GeneratorConfig:
        return GeneratorConfig(model=f"model-{self.path.name}")

    def bind_engines(self, generators: dict[str, Any]) -> None:
        self.engine = generators["router"]

    def reload_policy_map(self, path: str) -> None:
        self.policy_map = path

    def serve_app_models(self, keys: list[str]) -> None:
        if self.policy_map is not None and Path(self.policy_map).name == "unknown-model.json":
            raise ConfigError("policy map sends Complex_Query to 'huge', which is not among the app's models")
        self.app_models = list(keys)


class FakeRouterClass:
    @staticmethod
    def load(path: str) -> FakeRouter:
        return FakeRouter(Path(path))


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    recorded: list[str] = []

    def build(config: GeneratorConfig) -> FakeEngine:
        if config.model == "model-broken":
            raise RuntimeError("cannot load")
        return FakeEngine(config, recorded)

    for name in ("art-a", "art-b", "broken"):
        (tmp_path / name).mkdir()
    (tmp_path / "map.json").write_text("{}")
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    monkeypatch.setattr(router_models, "router_class", lambda name: FakeRouterClass)
    monkeypatch.setattr(router_models, "build_generator", build)
    return recorded


def deployment(cls: Any, *args: Any) -> Any:
    return cls.func_or_class(*args)


def test_reconfigure_resolves_paths_frees_the_old_engine_first_and_reverts(events: list[str], tmp_path: Path) -> None:
    causal = deployment(router_models.CausalLMRouterDeployment, "art-a", None)
    assert causal.artifact == str(tmp_path / "art-a")  # relative to LLMROUTER_HOME, like __init__
    causal.reconfigure({"artifact": "art-b"})
    assert causal.artifact == str(tmp_path / "art-b") and causal.router.engine is causal.generator
    assert events == ["build model-art-a", "close model-art-a", "build model-art-b"]  # freed before the new load
    causal.reconfigure({})  # the override removed: back to what the replica started with
    assert causal.artifact == str(tmp_path / "art-a") and events[-2:] == ["close model-art-b", "build model-art-a"]
    causal.reconfigure({"batching": {"max_batch_size": 4}})
    assert events[-1] == "build model-art-a"  # batching alone reloads nothing


def test_reconfigure_rejects_what_it_cannot_apply(events: list[str]) -> None:
    causal = deployment(router_models.CausalLMRouterDeployment, "art-a", None)
    with pytest.raises(ValueError, match="CausalLMRouter user_config: unknown key"):
        causal.reconfigure({"policy_map": "map.json"})
    with pytest.raises(ConfigError, match="does not exist"):
        causal.reconfigure({"artifact": "nowhere"})
    with pytest.raises(RuntimeError, match="cannot load"):
        causal.reconfigure({"artifact": "broken"})
    # A failed swap reloads the old artifact and engine, so the replica keeps serving.
    assert causal.generator_config.model == "model-art-a" and causal.artifact.endswith("art-a")
    assert causal.router.path.name == "art-a" and causal.router.engine is causal.generator


def test_policy_map_override_is_reloaded_and_reverted(events: list[str], tmp_path: Path) -> None:
    policy = deployment(router_models.PolicyRouterDeployment, "art-a", None, None, None)
    policy.reconfigure({"policy_map": "map.json"})
    assert policy.router.policy_map == str(tmp_path / "map.json")
    assert events == ["build model-art-a"]  # same router model: the engine is kept
    policy.reconfigure({})
    assert policy.router.policy_map is None


def test_a_policy_map_naming_a_model_the_app_lacks_fails_the_swap_and_keeps_the_old_map(
        events: list[str], tmp_path: Path) -> None:
    (tmp_path / "unknown-model.json").write_text("{}")
    policy = deployment(router_models.PolicyRouterDeployment, "art-a", None, None, "map.json",
                        ["small", "medium", "large"])
    assert policy.router.app_models == ["small", "medium", "large"]
    with pytest.raises(ConfigError, match="'huge'"):
        policy.reconfigure({"policy_map": "unknown-model.json"})
    assert policy.router.policy_map == str(tmp_path / "map.json") and policy.policy_map.endswith("map.json")
