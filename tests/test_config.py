"""Router YAML configs: the seeds' layout is accepted, and every mistake gives a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from routers import config as config_module
from routers.baselines import RandomRouter
from routers.causal_lm.router import CausalLMConfig, CausalLMRouter
from routers.causal_lm.training import CausalLMHyperparams, CausalLMTrainConfig
from routers.config import build_router, load_config_file, load_router
from routers.errors import ConfigError
from routers.paths import resolve_path
from routers.policy.router import PolicyRouter, PolicyRouterConfig
from routers.policy.training import PolicyHyperparams, PolicyTrainConfig
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
def test_shipped_router_configs_validate(path: Path, routing_data_dir: Path) -> None:
    config = load_config_file(path)
    build_router(config)  # the router's own keys are validated too (and llm_data read from the data directory)


def config_data_paths(value: Any) -> list[str]:
    """Every string in a parsed YAML value that names a file in the data directory."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in config_data_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in config_data_paths(v)]
    return [value] if isinstance(value, str) and "LLMROUTER_DATA" in value else []


def test_configs_name_published_data_only_in_the_data_directory_and_each_file_is_there(routing_data_dir: Path) -> None:
    """The project carries no copy of the published data: configs name it as ${LLMROUTER_DATA}/<file> (uncompressed,
    as `llmrouter data get` writes it), and each file they name is in the data directory."""
    import yaml

    named: dict[str, list[str]] = {}
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        text = path.read_text()
        assert "data/routing" not in text and "data/benchmarks" not in text, path
        for value in config_data_paths(yaml.safe_load(text)):
            named.setdefault(value, []).append(path.name)
    assert "${LLMROUTER_DATA}/mmlu_train.jsonl" in named and "${LLMROUTER_DATA}/gsm8k_test.jsonl" in named
    missing = {value: files for value, files in named.items() if not resolve_path(value).is_file()}
    assert not missing, f"not in the data directory {routing_data_dir}: {missing}"


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


# max_length's bounds once drifted apart: ge=16 for the causal router, ge=8 for its training run; unbounded
# for the policy router, ge=32 for its training run. Each now has one definition, with the stricter bound.
@pytest.mark.parametrize(("router_config", "train_config", "hyperparams", "min_length"), [
    (CausalLMConfig, CausalLMTrainConfig, CausalLMHyperparams, 16),
    (PolicyRouterConfig, PolicyTrainConfig, PolicyHyperparams, 32),
], ids=["causal_lm", "policy"])
def test_router_and_training_configs_share_one_definition_of_each_hyperparameter(
        router_config: type[BaseModel], train_config: type[BaseModel], hyperparams: type[BaseModel],
        min_length: int) -> None:
    for model in (router_config, train_config):
        assert issubclass(model, hyperparams)
        for name in hyperparams.model_fields:
            assert repr(model.model_fields[name]) == repr(hyperparams.model_fields[name]), (model.__name__, name)
    for model in (router_config, train_config):
        model.model_validate({"max_length": min_length})
        with pytest.raises(ValidationError, match="max_length"):
            model.model_validate({"max_length": min_length - 1})


def test_train_config_carries_every_hyperparameter_of_the_router_config() -> None:
    causal = CausalLMRouter({"base_model": "models/x", "lora_r": 3, "lora_alpha": 5, "lora_dropout": 0.0,
                             "target_modules": ["q_proj"], "learning_rate": 0.01, "num_epochs": 2, "batch_size": 3,
                             "gradient_accumulation_steps": 2, "max_length": 40, "max_steps": 7, "warmup_steps": 1,
                             "lr_schedule": "constant", "num_threads": 1, "seed": 5})
    trained = causal.train_config(checkpoint_dir="ckpt")
    shared = set(CausalLMHyperparams.model_fields)
    assert trained.model_dump(include=shared) == causal.config.model_dump(include=shared)
    assert (trained.seed, trained.checkpoint_dir) == (5, "ckpt")
    policy = PolicyRouter({"base_model": "models/y", "lora_r": 2, "lora_alpha": 4, "lora_dropout": 0.2,
                           "target_modules": ["v_proj"], "use_qlora": True, "sft_epochs": 1.5, "dpo_epochs": 0.5,
                           "sft_max_steps": 9, "dpo_max_steps": 4, "sft_learning_rate": 0.001,
                           "dpo_learning_rate": 0.0002, "dpo_beta": 0.3, "batch_size": 2, "max_length": 64,
                           "num_threads": 2, "seed": 4})
    run = policy.train_config(save_steps=3)
    shared = set(PolicyHyperparams.model_fields)
    assert run.model_dump(include=shared) == policy.config.model_dump(include=shared)
    assert (run.seed, run.save_steps) == (4, 3)
    with pytest.raises(ValidationError, match="save_steps"):
        policy.train_config(save_steps=-1)  # the run's own settings are validated too
