"""The YAML file a router is trained or served from (the seeds' layout, validated).

```yaml
router: hybrid_llm
data_path:
  routing_data_train: "${LLMROUTER_DATA}/mmlu_train.jsonl"   # or a list of files
  routing_data_test: "${LLMROUTER_DATA}/mmlu_test.jsonl"
  llm_data: "${LLMROUTER_DATA}/llm_candidates.json"
model_path:
  save_model_path: artifacts/hybrid_llm
  load_model_path: artifacts/hybrid_llm
router_mode: probabilistic          # router keys may sit at the top level (Hybrid seed) ...
hparam:                             # ... or under hparam (AutoMix / causal seeds); both are merged
  hidden_layer_sizes: [128, 64]
engines:
  embedder: {model: models/all-minilm-l6-v2}
  small: {model: models/smollm2-135m-instruct}
  large: {model: models/gemma-3-270m}
```

Relative paths resolve against ``LLMROUTER_HOME`` (default: the working directory). The published routing
data is not in the checkout: a path starting with ``${LLMROUTER_DATA}`` names a file in the data directory,
expanded when the path is resolved (``routers.paths.resolve_path``, so only when a file is read; a trained
artifact is served without it) to ``$LLMROUTER_DATA``, else ``../shared/data`` beside the checkout, else
``~/.cache/llmrouter/data``; without any, the read fails naming ``llmrouter data get NAME``, which fills that
directory (``routers.data.location``). Quote such paths in YAML: ``{`` is not allowed unquoted in a ``[...]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from routers.base import Router
from routers.data import LLMCandidate, RoutingDataset, load_llm_data
from routers.engines import EmbedderConfig, GeneratorConfig
from routers.errors import ConfigError
from routers.paths import resolve_path
from routers.registry import canonical_name, router_class
from routers.strict import StrictModel

# Router keys the seeds put at the top level of the YAML rather than under hparam.
TOP_LEVEL_ROUTER_KEYS = ("router_mode", "router_tau", "router_threshold")

M = TypeVar("M", bound=BaseModel)


def load_mapping_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The top-level mapping of a YAML file (JSON is YAML too), read safely (``yaml.safe_load``: no tags that
    build objects). Every failure is a ConfigError naming the file: missing, unreadable, not valid YAML, or
    not a mapping at the top level. An empty file is an empty mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def validate_file(path: str | Path, model: type[M], what: str = "config") -> M:
    """``load_mapping_file(path)`` validated as ``model``; invalid fields are a ConfigError naming the file."""
    raw = load_mapping_file(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid {what}:\n{exc}") from exc


class DataPaths(StrictModel):
    routing_data_train: list[str] | None = None
    routing_data_test: list[str] | None = None
    llm_data: str | None = None
    query_data_test: str | None = None

    @field_validator("routing_data_train", "routing_data_test", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ModelPaths(StrictModel):
    save_model_path: str | None = None
    load_model_path: str | None = None


class EnginesConfig(StrictModel):
    """Engines a router needs to route end to end (not needed to train or evaluate on data)."""

    embedder: EmbedderConfig | None = None
    small: GeneratorConfig | None = None
    large: GeneratorConfig | None = None
    router: GeneratorConfig | None = None


class RouterFileConfig(StrictModel):
    router: str | None = None
    data_path: DataPaths = Field(default_factory=DataPaths)
    model_path: ModelPaths = Field(default_factory=ModelPaths)
    hparam: dict[str, Any] = Field(default_factory=dict)
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    router_mode: str | None = None
    router_tau: float | None = None
    router_threshold: float | None = None
    metric: dict[str, Any] | None = Field(
        default=None, description="accepted for LLMRouter compatibility; routing optimises performance"
    )

    def router_params(self) -> dict[str, Any]:
        params = dict(self.hparam)
        for key in TOP_LEVEL_ROUTER_KEYS:
            value = getattr(self, key)
            if value is not None:
                params.setdefault(key, value)
        return params

    def llm_candidates(self) -> dict[str, LLMCandidate]:
        if not self.data_path.llm_data:
            return {}
        return load_llm_data(resolve_path(self.data_path.llm_data))

    def dataset(self, split: str) -> RoutingDataset:
        paths = self.data_path.routing_data_train if split == "train" else self.data_path.routing_data_test
        if not paths:
            raise ConfigError(f"config has no data_path.routing_data_{split}")
        return RoutingDataset.from_files([resolve_path(p) for p in paths], self.llm_candidates())


def load_config_file(path: str | Path) -> RouterFileConfig:
    """A router's YAML file, validated (``validate_file``)."""
    return validate_file(path, RouterFileConfig)


def build_router(config: RouterFileConfig, name: str | None = None) -> Router:
    """A fresh (unfitted) router of ``name`` (or ``config.router``) from a validated config file."""
    chosen = name or config.router
    if not chosen:
        raise ConfigError("name the router with --router or a top-level 'router:' key")
    cls = router_class(canonical_name(chosen))
    return cls(config.router_params(), config.llm_candidates())


def load_router(config: RouterFileConfig, name: str | None = None) -> Router:
    """A trained router from ``model_path.load_model_path`` (JSON + safetensors)."""
    chosen = name or config.router
    if not chosen:
        raise ConfigError("name the router with --router or a top-level 'router:' key")
    cls = router_class(canonical_name(chosen))
    if not cls.trainable:
        router = cls(config.router_params(), config.llm_candidates())
        router.resolve_pair()
        return router
    if not config.model_path.load_model_path:
        raise ConfigError(f"router {chosen!r} needs model_path.load_model_path to route")
    overrides = {k: v for k, v in config.router_params().items() if k == "router_threshold"}
    return cls.load(resolve_path(config.model_path.load_model_path), **overrides)
