"""What the routers that are language models share (the causal-LM router, the policy router).

Such a router is a LoRA adapter over a base model, merged into one model directory for serving. It
decides by prompting its model with the query (``router_prompt`` / ``router_params``), generating, and
turning the generated texts into decisions (``adecide_batch``; the causal-LM router also scores both
model names, in one pass for the batch). ``aroute_many`` does that for a batch with one generate call,
whoever hosts the model: a script with a local engine, or the Serve deployment that holds it.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from routers.base import RouteDecision, Router, Thresholds, per_query
from routers.engines import Engines, Generator, SamplingParams
from routers.errors import ArtifactError, ConfigError

ADAPTER_SUBDIR = "adapter"
MERGED_SUBDIR = "merged"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def copy_adapter(adapter_dir: Path, directory: Path) -> Path:
    """The LoRA adapter copied into ``directory/adapter`` (replacing an older one; nothing to do when it is
    already there); returns where it is."""
    target = directory / ADAPTER_SUBDIR
    if adapter_dir.resolve() != target.resolve():
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(adapter_dir / name, target / name)
    return target


def saved_adapter(state: Mapping[str, Any], directory: Path) -> Path:
    """The adapter directory a saved artifact's state names; an error when its files are missing."""
    adapter_dir = directory / str(state.get("adapter_dir", ADAPTER_SUBDIR))
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).exists()]
    if missing:
        raise ArtifactError(f"{adapter_dir}: missing {missing}")
    return adapter_dir


class GenerativeRouter(Router):
    """Base of the routers whose decision is text their own fine-tuned language model generates."""

    engine_roles = frozenset({"router"})
    #: how messages name the router ("the policy router has no adapter")
    display_name = "generative"

    def __init__(self, config: Any = None, llm_data: Mapping[str, Any] | None = None) -> None:
        super().__init__(config, llm_data)
        self.artifact_dir: Path | None = None
        self.adapter_dir: Path | None = None
        self.train_metrics: dict[str, Any] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    # --- engines ---------------------------------------------------------------------------------
    def evaluation_engine_roles(self) -> frozenset[str]:
        return frozenset({"router"})

    def router_generator(self) -> Generator:
        """The bound router engine, or one built from the artifact's merged model."""
        return self.generator_or_default("router")

    def local_engines(self) -> Engines:
        return Engines(embedder=self.embedder, models={**self.generators, "router": self.router_generator()})

    # --- deciding --------------------------------------------------------------------------------
    @abstractmethod
    def router_prompt(self, query: str) -> str:
        """The prompt the router model was fine-tuned on, for ``query``."""

    @abstractmethod
    def router_params(self) -> SamplingParams:
        """How the router model generates its answer (greedy, one line)."""

    @abstractmethod
    async def adecide_batch(self, generator: Generator, queries: Sequence[str], generated: Sequence[str],
                            thresholds: Sequence[float | None]) -> list[RouteDecision]:
        """The decision for each query given what the router model generated for it."""

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        """One generate call for the batch (the engine schedules the prompts together), then each decision."""
        self.require_fitted()
        generator = engines.generator("router", f"the {self.display_name} router")
        results = await generator.agenerate([self.router_prompt(q) for q in queries], self.router_params())
        return await self.adecide_batch(generator, queries, [r.text for r in results],
                                        per_query(thresholds, len(queries)))

    def generate_names(self, queries: Sequence[str]) -> list[str]:
        """The router model's generated text for each query, in one generate call."""
        if not queries:
            return []
        outputs = self.router_generator().generate([self.router_prompt(q) for q in queries], self.router_params())
        return [output.text for output in outputs]

    # --- the adapter in the artifact --------------------------------------------------------------
    def require_adapter(self) -> Path:
        if self.adapter_dir is None:
            raise ConfigError(f"the {self.display_name} router has no adapter yet; fit() or load() it first")
        return self.adapter_dir

    def save_adapter(self, directory: Path) -> None:
        """Copy the adapter into ``directory/adapter`` (replacing an older one) and point at the copy."""
        if self.adapter_dir is None:
            raise ConfigError(f"nothing to save: the {self.display_name} router has no adapter")
        self.adapter_dir, self.artifact_dir = copy_adapter(self.adapter_dir, directory), directory

    def load_adapter(self, state: dict[str, Any], directory: Path) -> None:
        adapter_dir = saved_adapter(state, directory)
        self.adapter_dir, self.artifact_dir = adapter_dir, directory
        self.train_metrics = dict(state.get("train_metrics", {}))
