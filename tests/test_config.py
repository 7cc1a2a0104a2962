"""Router YAML configs: the seeds' layout is accepted, and every mistake gives a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routers import config as config_module
from routers.baselines import RandomRouter
from routers.config import build_router, load_config_file, load_router
from routers.errors import ConfigError
from routers.paths import resolve_path
from serve_app.cli import app_args_from_serve_config
from train_jobs.common import load_job_config
from train_jobs.hybrid import HybridJobConfig

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


def test_seed_layout_is_accepted(tmp_path: Path, llm_data_path: Path, mmlu_test_path: Path) -> None:
    config = load_config_file(write(tmp_path, f"""
router: random
data_path:
  routing_data_train: {mmlu_test_path}
  routing_data_test: [{mmlu_test_path}]
  llm_data: {llm_data_path}
model_path:
  save_model_path: artifacts/x
router_threshold: 0.3
hparam:
  large_share: 0.25
engines:
  small: {{model: models/smollm2-135m-instruct}}
"""))
    assert config.data_path.routing_data_train == [str(mmlu_test_path)]
    assert config.router_params() == {"large_share": 0.25, "router_threshold": 0.3}
    router = build_router(config)
    assert isinstance(router, RandomRouter) and router.threshold == 0.3 and router.config.large_share == 0.25
    assert len(config.dataset("train")) > 1000
    assert config.engines.small is not None and config.engines.small.prompt_format == "auto"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"router\.yaml: invalid config[\s\S]*routr"):
        load_config_file(write(tmp_path, "routr: random\n"))


def test_unknown_nested_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_path.train"):
        load_config_file(write(tmp_path, "data_path:\n  train: x.jsonl\n"))
    with pytest.raises(ConfigError, match="temperature"):
        load_config_file(write(tmp_path, "engines:\n  small: {model: m, temperature: 0.2}\n"))


def test_unknown_router_hparam(tmp_path: Path) -> None:
    config = load_config_file(write(tmp_path, "router: random\nhparam:\n  larg_share: 0.5\n"))
    with pytest.raises(ConfigError, match=r"invalid config for router 'random'[\s\S]*larg_share"):
        build_router(config)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "absent.yaml")


def test_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(write(tmp_path, "router: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config_file(write(tmp_path, "- a\n- b\n"))


def test_unknown_router_name_and_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown router 'nope'"):
        build_router(load_config_file(write(tmp_path, "router: nope\n")))
    empty = load_config_file(write(tmp_path, "{}\n"))
    with pytest.raises(ConfigError, match="name the router"):
        build_router(empty)
    with pytest.raises(ConfigError, match="routing_data_train"):
        empty.dataset("train")


class TrainedRandom(RandomRouter):
    """Stands in for any learned router: only its ``trainable`` flag matters to ``load_router``."""

    trainable = True


def test_learned_router_needs_a_load_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "router_class", lambda name: TrainedRandom)
    with pytest.raises(ConfigError, match="needs model_path.load_model_path"):
        load_router(load_config_file(write(tmp_path, "router: hybrid_llm\n")))


def test_resolve_path_uses_llmrouter_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    assert resolve_path("data/x.jsonl") == tmp_path / "data" / "x.jsonl"
    assert resolve_path("/abs/x") == Path("/abs/x")


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "routers").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_router_configs_validate(path: Path) -> None:
    config = load_config_file(path)
    build_router(config)  # the router's own keys are validated too


@pytest.mark.parametrize("read", [
    pytest.param(load_config_file, id="router config"),
    pytest.param(lambda path: app_args_from_serve_config(path), id="serve config"),
    pytest.param(lambda path: load_job_config(path, HybridJobConfig), id="train job config"),
])
def test_every_config_file_is_read_by_one_loader_naming_the_file(tmp_path: Path, read: Any) -> None:
    with pytest.raises(ConfigError, match="absent.yaml does not exist"):
        read(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"router\.yaml: not valid YAML"):
        read(write(tmp_path, "router: [unclosed\n"))
    with pytest.raises(ConfigError, match=r"router\.yaml: expected a mapping at the top level, got list"):
        read(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match=r"cannot read"):
        read(tmp_path)  # a directory


def test_job_config_errors_name_the_file_and_the_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"router\.yaml: invalid HybridJobConfig[\s\S]*output_dri"):
        load_job_config(write(tmp_path, "output_dri: runs/x\n"), HybridJobConfig)

