"""The N-model router contract: predict every candidate's expected quality per query; a rule picks the model.

A :class:`MultiModelRouter` has one job beyond fitting: ``predict_quality(queries)`` (``apredict_quality``
over the app's engines), a ``(n_queries, n_models)`` array in the order of ``models``. Costs are known:
:class:`CostEstimator` prices each call from the query's length (per model, a line fitted on the training
data's own costs: exact for data priced as price x tokens, the best linear guess for RouterBench's real
bills). ``routers.selection`` turns the two into a choice (``default``, ``cost=L``, ``quality=R``,
``budget=USD``, ``share=S``), and ``route`` returns one ``RouteDecision`` per query naming the model, every
candidate's predicted quality and cost, and the rule.

A :class:`FeatureRouter` (the embedding routers and the baselines) chooses its hyperparameters inside the
training data (k-fold over the training queries, stratified by ``task_name``, best AIQ of the pooled
out-of-fold predictions), refits on all of it, and keeps the chosen setting's out-of-fold predictions as the
:class:`~routers.selection.SelectionCalibration` the rules ``default``, ``quality=`` and ``share=`` are
resolved on (no prediction there comes from a fit that saw its query's label). The causal-LM router
(``routers.nmodel.causal``) is calibrated on training queries held out of its one fine-tuning run.

Artifacts: ``router.json`` (config, models, cost lines, learned state's small fields) plus safetensors files;
nothing is pickled.
"""

from __future__ import annotations

import json
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, ValidationError, field_validator

from routers.base import CandidateEstimate, RouteDecision
from routers.data.dataset import estimate_tokens
from routers.data.multimodel import MultiModelDataset
from routers.engines import AsyncEmbedder, Embedder, EmbedderConfig, Engines, GeneratorConfig
from routers.errors import ArtifactError, ConfigError, NotFittedError
from routers.progress import log, progress_bar
from routers.selection import (
    DefaultRule,
    SelectionCalibration,
    parse_rule,
    resolve_weight,
    select,
)
from routers.strict import StrictModel

ARTIFACT_FILE = "router.json"
ARTIFACT_KIND = "multimodel"
ARTIFACT_FORMAT_VERSION = 1
DEFAULT_EMBEDDER = "models/all-minilm-l6-v2"
EMBED_CHUNK = 256
MIN_TRAIN_QUERIES = 10


class MultiModelRouterConfig(StrictModel):
    """Settings every N-model router has."""

    seed: int = 0
    embedder: EmbedderConfig | None = None
    cv_folds: int = Field(default=5, ge=2, description="folds over the training queries for hparams and calibration")
    default_rule: str = Field(default="quality=1.0",
                              description="the operating point `default` stands for (cost=, quality=, share=)")
    #: hyperparameter settings tried by cross-validation (None: the router's own grid; one entry: no search)
    grid: list[dict[str, Any]] | None = None

    @field_validator("default_rule")
    @classmethod
    def _rule_parses(cls, value: str) -> str:
        rule = parse_rule(value)
        if isinstance(rule, DefaultRule) or rule.kind == "budget":
            raise ValueError("default_rule must be cost=L, quality=R or share=S")
        return value


def text_hashes(queries: Sequence[str]) -> np.ndarray:
    """One column: the CRC32 of each query (a stable per-query seed; no embedder needed)."""
    return np.array([[zlib.crc32(q.encode("utf-8"))] for q in queries], dtype=np.float64).reshape(len(queries), 1)


# --- costs --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostEstimator:
    """Per model, USD per call = intercept + slope x the query's estimated tokens, fitted by least squares on
    the training calls (clipped at 0). For data priced as price x tokens the line is exact."""

    intercept: np.ndarray
    slope: np.ndarray

    @classmethod
    def fit(cls, queries: Sequence[str], cost: np.ndarray) -> CostEstimator:
        tokens = np.array([estimate_tokens(q) for q in queries], dtype=np.float64)
        design = np.column_stack([np.ones_like(tokens), tokens])
        coefficients, *_ = np.linalg.lstsq(design, np.asarray(cost, dtype=np.float64), rcond=None)
        return cls(intercept=coefficients[0], slope=coefficients[1])

    def predict(self, queries: Sequence[str]) -> np.ndarray:
        tokens = np.array([estimate_tokens(q) for q in queries], dtype=np.float64)
        return np.maximum(self.intercept[None, :] + tokens[:, None] * self.slope[None, :], 0.0)

    def to_json(self) -> dict[str, list[float]]:
        return {"intercept": [float(x) for x in self.intercept], "slope": [float(x) for x in self.slope]}

    @classmethod
    def from_json(cls, saved: Mapping[str, Any], n_models: int) -> CostEstimator:
        intercept, slope = np.asarray(saved["intercept"], dtype=np.float64), np.asarray(saved["slope"], np.float64)
        if intercept.shape != (n_models,) or slope.shape != (n_models,):
            raise ValueError(f"cost lines for {len(intercept)} models, the router has {n_models}")
        return cls(intercept, slope)


# --- cross-validation ---------------------------------------------------------------------------------------
def stratified_folds(task_names: Sequence[str | None], n_folds: int, seed: int) -> np.ndarray:
    """A fold number per query: each task's queries shuffled and dealt round-robin (the deal runs on across
    tasks), so every fold holds every task of at least ``n_folds`` queries."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(task_names), dtype=np.int64)
    labels = ["" if t is None else t for t in task_names]
    dealt = 0
    for task in dict.fromkeys(labels):
        members = np.array([i for i, label in enumerate(labels) if label == task])
        rng.shuffle(members)
        fold[members] = (dealt + np.arange(len(members))) % n_folds
        dealt += len(members)
    return fold


def out_of_fold(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], folds: np.ndarray,
                n_models: int) -> np.ndarray:
    """Each query's prediction from a fit on the other folds: ``fit_predict(fit_indices, eval_indices)``."""
    predicted = np.full((len(folds), n_models), np.nan)
    for k in np.unique(folds):
        held_out = np.nonzero(folds == k)[0]
        predicted[held_out] = fit_predict(np.nonzero(folds != k)[0], held_out)
    return predicted


def training_aiq(predicted: np.ndarray, cost_estimate: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> float:
    """AIQ of out-of-fold predictions on the training queries: the figure hyperparameters are chosen by."""
    from routers.evaluation.multimodel import Predictions, curve_metrics, operating_points, reference

    points = operating_points(Predictions(predicted, cost_estimate), quality, cost)
    point_quality, point_cost = points.means()
    value = curve_metrics(point_quality, point_cost, reference(quality, cost))["aiq"]
    return float("nan") if value is None else float(value)


# --- the contract -------------------------------------------------------------------------------------------
class MultiModelRouter(ABC):
    """Base of every N-model router: ``fit`` on N-model data, then ``predict_quality`` (and its async twin over
    the app's engines) gives every candidate's expected quality per query; costs, the rules, decisions and the
    artifact's manifest are shared. :class:`FeatureRouter` is the kind that learns from query embeddings."""

    name: ClassVar[str]
    Config: ClassVar[type[MultiModelRouterConfig]] = MultiModelRouterConfig
    #: whether it reads query embeddings (the CLI and the app then bind an embedder)
    uses_embeddings: ClassVar[bool] = False
    #: whether it reads each model's description from the data's candidate file (LLMRouter's pool has them)
    needs_descriptions: ClassVar[bool] = False
    #: the engine role of its own language model, scored through ``Engines.scorer`` (None: it has none; the
    #: app hosts one in a router-LM deployment when set)
    engine_role: ClassVar[str | None] = None
    #: the rule its evaluation reports ``quality`` and ``cost`` at (None: the artifact's default)
    evaluation_rule: ClassVar[str | None] = None
    tensors_file: ClassVar[str] = "weights.safetensors"

    def __init__(self, config: MultiModelRouterConfig | Mapping[str, Any] | None = None) -> None:
        self.config = self.validate_config(config)
        self.models: tuple[str, ...] = ()
        self.costs: CostEstimator | None = None
        #: each model's mean training cost per call (the baselines price every query at it)
        self.mean_cost: np.ndarray | None = None
        self.calibration: SelectionCalibration | None = None
        self.embedder: AsyncEmbedder | None = None
        self.params: dict[str, Any] = {}
        self.train_metrics: dict[str, Any] = {}
        self.fitted = False

    @classmethod
    def validate_config(cls, config: MultiModelRouterConfig | Mapping[str, Any] | None) -> MultiModelRouterConfig:
        if isinstance(config, cls.Config):
            return config
        if isinstance(config, MultiModelRouterConfig):
            config = config.model_dump(exclude_unset=True)
        try:
            return cls.Config.model_validate(dict(config or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid config for router {cls.name!r}:\n{exc}") from exc

    # --- engines ------------------------------------------------------------------------------------------
    def bind_engines(self, embedder: AsyncEmbedder | None = None) -> MultiModelRouter:
        if embedder is not None:
            self.embedder = embedder
        return self

    def default_embedder_config(self) -> EmbedderConfig:
        return self.config.embedder or EmbedderConfig(model=DEFAULT_EMBEDDER)

    def engine_config(self) -> GeneratorConfig:
        """The engine of its own language model (a router with an ``engine_role``)."""
        raise ConfigError(f"the {self.name} router has no language model of its own")

    # --- learning -----------------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: MultiModelDataset) -> dict[str, Any]:
        """Learn from ``train``; set ``models``, the cost lines and the calibration; return the run's metrics."""

    def check_train_size(self, train: MultiModelDataset) -> None:
        if len(train) < MIN_TRAIN_QUERIES:
            raise ConfigError(f"the {self.name} router needs at least {MIN_TRAIN_QUERIES} training queries, "
                              f"got {len(train)}")

    def learn_costs(self, train: MultiModelDataset) -> np.ndarray:
        """Take ``train``'s models and fit the cost lines; the lines' estimates on the training queries."""
        self.models = train.models
        self.costs = CostEstimator.fit(train.queries, train.cost)
        self.mean_cost = train.cost.mean(axis=0)
        return self.cost_estimates(train.queries)

    # --- predicting ---------------------------------------------------------------------------------------
    @abstractmethod
    def predict_quality(self, queries: Sequence[str]) -> np.ndarray:
        """Every candidate's expected quality per query, (n_queries, n_models) in ``models`` order."""

    @abstractmethod
    async def apredict_quality(self, queries: Sequence[str], engines: Engines) -> np.ndarray:
        """``predict_quality`` with the app's engines (an embedder deployment, a router-model deployment)."""

    # --- routing --------------------------------------------------------------------------------------------
    def require_fitted(self) -> None:
        if not self.fitted or self.costs is None:
            raise NotFittedError(f"router {self.name!r} is not fitted; call fit() or load() first")

    def estimate_costs(self, queries: Sequence[str]) -> np.ndarray:
        """Every candidate's estimated USD cost per query, (n_queries, n_models)."""
        self.require_fitted()
        return self.cost_estimates(queries)

    def cost_estimates(self, queries: Sequence[str]) -> np.ndarray:
        """The cost lines (``CostEstimator``) on ``queries``: longer queries cost more."""
        if self.costs is None:
            raise NotFittedError(f"router {self.name!r} has no cost estimates; fit or load it first")
        return self.costs.predict(queries)

    def dataset_predictions(self, data: MultiModelDataset) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and cost estimates on labelled ``data`` (the oracle reads the labels here)."""
        self.check_models(data.models)
        return self.predict_quality(data.queries), self.estimate_costs(data.queries)

    def check_models(self, models: Sequence[str]) -> None:
        if tuple(models) != self.models:
            raise ConfigError(f"the {self.name} router was fitted on models {list(self.models)}; the data has "
                              f"{list(models)}")

    def choose(self, quality: np.ndarray, cost: np.ndarray, rule: str | None = None) -> np.ndarray:
        """One model index per query by ``rule`` (``routers.selection``; None: the artifact's default)."""
        return select(quality, cost, parse_rule(rule), self.calibration)

    def decisions(self, queries: Sequence[str], quality: np.ndarray, cost: np.ndarray,
                  rule: str | None) -> list[RouteDecision]:
        parsed = parse_rule(rule)
        chosen = select(quality, cost, parsed, self.calibration)
        weight = None if parsed.kind == "budget" else resolve_weight(parsed, self.calibration)  # type: ignore[arg-type]
        how = parsed.text() + ("" if weight is None or parsed.kind == "cost" else f" (cost weight {weight:.4g})")
        out = []
        for query, row_q, row_c, k in zip(queries, quality, cost, chosen, strict=True):
            out.append(RouteDecision(
                query=query, model_name=self.models[k], score=float(row_q[k]), rule=parsed.text(),
                reason=f"{how}: {self.models[k]} (predicted quality {row_q[k]:.3f}, cost ${row_c[k]:.6f})",
                cost=float(row_c[k]),
                candidates=[CandidateEstimate(model=m, quality=float(q), cost=float(c))
                            for m, q, c in zip(self.models, row_q, row_c, strict=True)]))
        return out

    def route(self, queries: Sequence[str], rule: str | None = None) -> list[RouteDecision]:
        """Decide for each query with the bound embedder."""
        queries = list(queries)
        return self.decisions(queries, self.predict_quality(queries), self.estimate_costs(queries), rule)

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          rule: str | None = None) -> list[RouteDecision]:
        """Decide for each query with ``engines`` (one engine call for the batch)."""
        self.require_fitted()
        queries = list(queries)
        quality = await self.apredict_quality(queries, engines)
        return self.decisions(queries, quality, self.estimate_costs(queries), rule)

    # --- artifacts ----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-safe learned state beyond the tensors."""
        return {}

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        """Restore what ``state`` and ``save_tensors`` wrote."""

    def save_tensors(self, directory: Path) -> None:
        """Write learned tensors (safetensors only)."""

    def save(self, directory: str | Path) -> Path:
        self.require_fitted()
        assert self.costs is not None
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_tensors(directory)
        payload: dict[str, Any] = {
            "format_version": ARTIFACT_FORMAT_VERSION, "kind": ARTIFACT_KIND, "router": self.name,
            "config": self.config.model_dump(mode="json"), "models": list(self.models),
            "costs": self.costs.to_json(),
            "mean_cost": None if self.mean_cost is None else [float(c) for c in self.mean_cost],
            "params": self.params, "train_metrics": self.train_metrics,
            "embedder": self.default_embedder_config().model_dump(mode="json") if self.uses_embeddings else None,
            "state": self.state(),
        }
        if self.calibration is not None:
            self.calibration.save(directory)
            payload["selection_calibration"] = self.calibration.manifest()
        (directory / ARTIFACT_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True, default=float))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> MultiModelRouter:
        """A saved router: JSON and safetensors only, so loading can never run code."""
        directory = Path(directory)
        payload = read_manifest(directory)
        if payload["router"] != cls.name:
            raise ArtifactError(f"{directory} holds a {payload['router']!r} router, not {cls.name!r}")
        router = cls(payload["config"])
        try:
            router.models = tuple(str(m) for m in payload["models"])
            router.costs = CostEstimator.from_json(payload["costs"], len(router.models))
            if payload.get("mean_cost") is not None:
                router.mean_cost = np.asarray(payload["mean_cost"], dtype=np.float64)
            router.params = dict(payload.get("params", {}))
            router.train_metrics = dict(payload.get("train_metrics", {}))
            if router.config.embedder is None and payload.get("embedder"):
                router.config = router.config.model_copy(
                    update={"embedder": EmbedderConfig.model_validate(payload["embedder"])})
            router.load_state(payload.get("state", {}), directory)
            manifest = payload.get("selection_calibration")
            router.calibration = None if manifest is None else SelectionCalibration.load(directory, manifest)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{directory}: corrupt N-model router state: {exc}") from exc
        router.fitted = True
        return router


class FeatureRouter(MultiModelRouter):
    """An N-model router over per-query features: the query embeddings, or for baselines a hash of the text.
    Subclasses set ``default_grid`` and implement ``fit_arrays`` / ``predict_arrays`` and the state they save;
    ``fit`` chooses the hyperparameters by k-fold AIQ and keeps the out-of-fold predictions as calibration."""

    uses_embeddings: ClassVar[bool] = True
    #: whether it learns anything (whether fit cross-validates and calibrates)
    trainable: ClassVar[bool] = True
    #: hyperparameter settings tried when the config gives no ``grid``
    default_grid: ClassVar[tuple[dict[str, Any], ...]] = ({},)

    def features(self, queries: Sequence[str], desc: str) -> np.ndarray:
        """The router's input for ``queries``: their embeddings (in chunks, with progress), or for baselines a
        hash of each text (the random router's seed)."""
        if not self.uses_embeddings:
            return text_hashes(queries)
        if not isinstance(self.embedder, Embedder):
            raise ConfigError(f"the {self.name} router needs a (synchronous) embedder; bind one with "
                              "bind_engines(embedder=...)")
        bar = progress_bar(desc, total=len(queries), unit="query")
        chunks = []
        for start in range(0, len(queries), EMBED_CHUNK):
            chunk = list(queries[start : start + EMBED_CHUNK])
            chunks.append(np.asarray(self.embedder.embed(chunk), dtype=np.float64))
            bar.update(len(chunk))
        bar.close()
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    @abstractmethod
    def fit_arrays(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        """Learn from features ``x`` (n, d) and realised quality (n, m) with hyperparameters ``params``."""

    @abstractmethod
    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """Predicted quality (n, m) for features ``x``."""

    def fresh(self) -> FeatureRouter:
        """An unfitted router of the same kind and config (cross-validation fits copies)."""
        return type(self)(self.config)

    def fit(self, train: MultiModelDataset) -> dict[str, Any]:
        """Choose hyperparameters by k-fold AIQ on ``train``, refit on all of it, keep the calibration."""
        self.check_train_size(train)
        started = time.time()
        cost_estimate = self.learn_costs(train)
        x = self.features(train.queries, f"{self.name}: embedding train queries")
        metrics: dict[str, Any] = {"n_train": len(train), "models": list(self.models)}
        if self.trainable:
            grid = list(self.config.grid or self.default_grid)
            folds = stratified_folds(train.task_names, self.config.cv_folds, self.config.seed)
            scored = [(self.cross_fitted(x, train.quality, folds, params), params) for params in grid]
            aiqs = [training_aiq(predicted, cost_estimate, train.quality, train.cost) for predicted, _ in scored]
            best = int(np.nanargmax(aiqs)) if np.isfinite(aiqs).any() else 0
            predicted, self.params = scored[best][0], dict(scored[best][1])
            metrics["cv"] = {"folds": self.config.cv_folds, "aiq": [round(a, 5) for a in aiqs],
                             "grid": grid, "chosen": self.params}
            if len(grid) > 1:
                log(f"{self.name}: chose {self.params} by {self.config.cv_folds}-fold AIQ "
                    f"({aiqs[best]:.4f}; grid {[round(a, 4) for a in aiqs]})")
            source = f"cross-fit, {self.config.cv_folds} folds over {len(train)} training queries"
        else:
            predicted, source = None, "training queries (nothing learned)"
        self.fit_arrays(x, train.quality, self.params)
        if predicted is None:
            predicted = self.predict_arrays(x)
        self.calibration = SelectionCalibration(predicted, cost_estimate, train.quality, train.cost, source,
                                                self.config.default_rule)
        self.fitted = True
        metrics["seconds"] = round(time.time() - started, 2)
        self.train_metrics = metrics
        return metrics

    def cross_fitted(self, x: np.ndarray, quality: np.ndarray, folds: np.ndarray,
                     params: Mapping[str, Any]) -> np.ndarray:
        def fit_predict(fit_idx: np.ndarray, eval_idx: np.ndarray) -> np.ndarray:
            fold_router = self.fresh()
            fold_router.fit_arrays(x[fit_idx], quality[fit_idx], params)
            return fold_router.predict_arrays(x[eval_idx])

        return out_of_fold(fit_predict, folds, quality.shape[1])

    def predict_quality(self, queries: Sequence[str]) -> np.ndarray:
        self.require_fitted()
        return self.predict_arrays(self.features(queries, f"{self.name}: embedding queries"))

    async def apredict_quality(self, queries: Sequence[str], engines: Engines) -> np.ndarray:
        self.require_fitted()
        if self.uses_embeddings:
            x = np.asarray(await engines.require_embedder(self.name).aembed(list(queries)), dtype=np.float64)
        else:
            x = text_hashes(queries)
        return self.predict_arrays(x)


def read_manifest(directory: Path) -> dict[str, Any]:
    manifest = directory / ARTIFACT_FILE
    if not manifest.exists():
        raise ArtifactError(f"{directory} has no {ARTIFACT_FILE}; is it a saved router directory?")
    try:
        payload = json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(payload, dict) or payload.get("kind") != ARTIFACT_KIND or "router" not in payload:
        raise ArtifactError(f"{manifest}: not an N-model router artifact (no kind: {ARTIFACT_KIND!r})")
    if payload.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(f"{manifest}: unsupported format_version {payload.get('format_version')!r}")
    return payload
