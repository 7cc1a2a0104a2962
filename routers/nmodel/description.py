"""A router that scores (query, model description) pairs, so a model added to the pool is routed to from its
description and a few labelled examples, without retraining (seed 002's "adaptable to new models").

Each model is a vector: the embedding of its description (the ``feature`` text of LLMRouter's candidate file,
embedded by the router's own embedder) and the log of its mean cost per call. One MLP reads the standardised
query embedding beside a model's vector and predicts that model's quality on the query; it is trained on every
(query, model) pair of the training data, so what it learns is about descriptions and prices, not about model
names. ``add_model`` puts a new model in the pool: its vector comes from its description and price, and ``k``
labelled queries, when given, fit its read-out (Platt scaling on them) from two logits: the network's for the new
model, and the pool's (the fitted models' mean predicted quality: how hard the query is). So a network whose
opinion of the new model does not track its quality still predicts it lower on hard queries. The network is not
refitted.

Artifacts: ``description.safetensors`` (the MLP, the standardisation, every model's vector and bias).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from routers.data.dataset import estimate_tokens
from routers.data.multimodel import MultiModelDataset
from routers.embedding import standardisation
from routers.engines import Embedder
from routers.errors import ArtifactError, ConfigError
from routers.nmodel.base import CostEstimator, FeatureRouter, MultiModelRouterConfig
from routers.nmodel.routers import read_tensors, sigmoid
from routers.safe_io import save_arrays

#: the candidate file's field that describes a model (LLMRouter's ``default_llm.json``)
DESCRIPTION_FIELD = "feature"
EPSILON = 1e-3
#: a fitted model's read-out: its own logit, nothing from the pool's, no shift
FITTED_READOUT = np.array([1.0, 0.0, 0.0])


class DescriptionConfig(MultiModelRouterConfig):
    hidden: int = Field(default=128, ge=1)
    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=512, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=1e-2, ge=0.0)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    num_threads: int = Field(default=1, ge=1, description="torch CPU threads while training")


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


def platt_scaling(features: np.ndarray, quality: np.ndarray, ridge: float = 1.0,
                  steps: int = 100) -> np.ndarray:
    """Weights and bias of sigmoid(features @ w + b) fitted to ``quality`` on a few examples: Platt's method
    (Newton steps on the log-loss; targets smoothed toward 1/2 by one pseudo-example each way, so k examples
    cannot make it sure) on standardised features, with a unit ridge on the weights. Returns (w..., b) in the
    features' own units. Weights near 0 say a feature does not track the new model's quality on them."""
    y = np.asarray(quality, dtype=np.float64)
    positives = float((y >= 0.5).sum())
    high, low = (positives + 1) / (positives + 2), 1 / (len(y) - positives + 2)
    target = low + (high - low) * y
    z = np.asarray(features, dtype=np.float64).reshape(len(y), -1)
    centre, spread = z.mean(axis=0), z.std(axis=0)
    spread[spread < 1e-9] = 1.0
    design = np.column_stack([(z - centre) / spread, np.ones(len(y))])
    penalty = np.diag([ridge] * z.shape[1] + [0.0])
    params = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ params, -40, 40)))
        gradient = design.T @ (p - target) + penalty @ params
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(params))
        step = np.linalg.solve(hessian, gradient)
        params = params - step
        if np.abs(step).max() < 1e-10:
            break
    weights = params[:-1] / spread
    return np.append(weights, params[-1] - weights @ centre)


def descriptions_of(data: MultiModelDataset) -> list[str]:
    """Every model's description from the data's candidate file; a clear error naming the models without one."""
    texts, missing = [], []
    for model in data.models:
        candidate = data.candidates.get(model)
        extra = {} if candidate is None else (candidate.model_extra or {})
        text = extra.get(DESCRIPTION_FIELD)
        if not isinstance(text, str) or not text.strip():
            missing.append(model)
        texts.append(text or "")
    if missing:
        raise ConfigError(f"the description router needs each model's {DESCRIPTION_FIELD!r} text in the candidate "
                          f"file; none for {missing}")
    return texts


class DescriptionRouter(FeatureRouter):
    """Query embedding x model vector (description embedding, log mean cost) -> quality (module docstring)."""

    name = "nmodel_desc"
    Config = DescriptionConfig
    config: DescriptionConfig
    default_grid = ({},)
    tensors_file = "description.safetensors"
    tensor_names: ClassVar[tuple[str, ...]] = ("w_query", "w_model", "b1", "w2", "b2", "mean", "scale",
                                               "model_mean", "model_scale", "model_vectors", "model_readout")
    needs_descriptions = True

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        #: (n_models, dim + 1): each model's description embedding and log mean cost, in ``models`` order
        self.model_vectors: np.ndarray | None = None
        #: (n_models, 3): logit = a x the network's logit + c x the pool's logit + b; (1, 0, 0) for fitted models
        self.model_readout: np.ndarray | None = None
        #: how many of ``models`` the network was fitted on (added models come after them)
        self.n_fitted = 0
        #: the training queries' mean estimated tokens (a new model's mean cost from its cost line)
        self.mean_tokens = 0.0
        self.tensors: dict[str, np.ndarray] | None = None

    # --- model vectors ------------------------------------------------------------------------------------
    def model_vector(self, description: str, mean_cost: float) -> np.ndarray:
        if not isinstance(self.embedder, Embedder):
            raise ConfigError(f"the {self.name} router needs a (synchronous) embedder for the model descriptions")
        vector = np.asarray(self.embedder.embed([description]), dtype=np.float64)[0]
        return np.concatenate([vector, [np.log(max(mean_cost, 1e-12))]])

    def fit(self, train: MultiModelDataset) -> dict[str, Any]:
        texts = descriptions_of(train)
        mean_cost = train.cost.mean(axis=0)
        self.model_vectors = np.stack([self.model_vector(t, c) for t, c in zip(texts, mean_cost, strict=True)])
        self.model_readout, self.n_fitted = np.tile(FITTED_READOUT, (len(texts), 1)), len(texts)
        self.mean_tokens = float(np.mean([estimate_tokens(q) for q in train.queries]))
        return super().fit(train)

    def fresh(self) -> DescriptionRouter:
        router = type(self)(self.config)
        router.embedder, router.model_vectors = self.embedder, self.model_vectors
        router.model_readout = None if self.model_readout is None else self.model_readout.copy()
        router.n_fitted, router.mean_tokens = self.n_fitted, self.mean_tokens
        return router

    def add_model(self, name: str, description: str, cost_line: tuple[float, float],
                  examples: tuple[Sequence[str], np.ndarray] | None = None) -> None:
        """Put ``name`` in the pool from its description and its price: ``cost_line`` is USD per call as
        (intercept, slope per estimated query token), as the fitted models' lines are (``CostEstimator``; for a
        price per token p_in and an answer of A tokens: (p_out x A, p_in)). ``examples`` (queries, their quality
        under it) fit its read-out. The network is not refitted; the selection calibration, which was about the
        fitted pool, is dropped (rules other than ``cost=`` and ``budget=`` need a refit)."""
        self.require_fitted()
        assert self.model_vectors is not None and self.model_readout is not None and self.costs is not None
        if name in self.models:
            raise ConfigError(f"model {name!r} is already in the pool")
        self.models = (*self.models, name)
        intercept, slope = cost_line
        mean_cost = intercept + slope * self.mean_tokens
        self.model_vectors = np.vstack([self.model_vectors, self.model_vector(description, mean_cost)])
        self.model_readout = np.vstack([self.model_readout, FITTED_READOUT])
        self.costs = CostEstimator(np.append(self.costs.intercept, intercept), np.append(self.costs.slope, slope))
        self.mean_cost = None if self.mean_cost is None else np.append(self.mean_cost, mean_cost)
        self.calibration = None
        if examples is not None and len(examples[0]):
            queries, quality = examples
            x = self.features(list(queries), f"{self.name}: embedding {name}'s examples")
            own, pool = self.network_logits(x)
            self.model_readout[-1] = platt_scaling(np.column_stack([own[:, -1], pool]), quality)

    # --- the network --------------------------------------------------------------------------------------
    def fit_arrays(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        import torch

        if self.model_vectors is None:
            raise ConfigError(f"the {self.name} router embeds the model descriptions in fit(); call fit()")
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            self.train_network(x, quality, self.model_vectors)
        finally:
            torch.set_num_threads(threads)

    def train_network(self, x: np.ndarray, quality: np.ndarray, model_vectors: np.ndarray) -> None:
        import torch

        cfg = self.config
        mean, scale = standardisation(x)
        m_mean, m_scale = standardisation(model_vectors)
        torch.manual_seed(cfg.seed)
        queries = torch.tensor((x - mean) / scale, dtype=torch.float32)
        models = torch.tensor((model_vectors - m_mean) / m_scale, dtype=torch.float32)
        targets = torch.tensor(quality, dtype=torch.float32)
        q_layer = torch.nn.Linear(queries.shape[1], cfg.hidden)
        m_layer = torch.nn.Linear(models.shape[1], cfg.hidden, bias=False)
        head = torch.nn.Linear(cfg.hidden, 1)
        dropout = torch.nn.Dropout(cfg.dropout)
        with torch.no_grad():
            head.bias.fill_(float(logit(quality.mean())))
        parameters = [*q_layer.parameters(), *m_layer.parameters(), *head.parameters()]
        optimiser = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(cfg.seed)
        n, m = quality.shape
        for _ in range(cfg.epochs):
            order = torch.randperm(n * m, generator=generator)
            for start in range(0, n * m, cfg.batch_size):
                pairs = order[start : start + cfg.batch_size]
                rows, cols = pairs // m, pairs % m
                hidden = torch.relu(q_layer(queries[rows]) + m_layer(models[cols]))
                optimiser.zero_grad()
                loss_fn(head(dropout(hidden)).squeeze(-1), targets[rows, cols]).backward()
                optimiser.step()
        self.tensors = {
            "w_query": q_layer.weight.detach().double().numpy().T, "b1": q_layer.bias.detach().double().numpy(),
            "w_model": m_layer.weight.detach().double().numpy().T, "w2": head.weight.detach().double().numpy()[0],
            "b2": head.bias.detach().double().numpy(), "mean": mean, "scale": scale,
            "model_mean": m_mean, "model_scale": m_scale,
        }

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(x))

    def network_logits(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's logit of every model, (n, m), and the pool's: the logit of the fitted models' mean
        predicted quality, (n,)."""
        if self.tensors is None or self.model_vectors is None:
            raise ArtifactError(f"the {self.name} router has no weights")
        t = self.tensors
        query_part = ((x - t["mean"]) / t["scale"]) @ t["w_query"] + t["b1"]
        model_part = ((self.model_vectors - t["model_mean"]) / t["model_scale"]) @ t["w_model"]
        hidden = np.maximum(query_part[:, None, :] + model_part[None, :, :], 0.0)
        own = hidden @ t["w2"] + t["b2"]
        return own, logit(sigmoid(own[:, : self.n_fitted]).mean(axis=1))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Every model's quality logit, (n, m), through its read-out."""
        if self.model_readout is None:
            raise ArtifactError(f"the {self.name} router has no weights")
        own, pool = self.network_logits(x)
        r = self.model_readout
        return r[None, :, 0] * own + r[None, :, 1] * pool[:, None] + r[None, :, 2]

    # --- artifacts ----------------------------------------------------------------------------------------
    def save_tensors(self, directory: Path) -> None:
        if self.tensors is None or self.model_vectors is None or self.model_readout is None:
            raise ArtifactError(f"the {self.name} router has no weights")
        save_arrays(directory / self.tensors_file, {**self.tensors, "model_vectors": self.model_vectors,
                                                    "model_readout": self.model_readout})

    def state(self) -> dict[str, Any]:
        return {"n_fitted": self.n_fitted, "mean_tokens": self.mean_tokens}

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        arrays = read_tensors(directory / self.tensors_file, self.tensor_names)
        self.model_vectors, self.model_readout = arrays.pop("model_vectors"), arrays.pop("model_readout")
        self.n_fitted = int(state.get("n_fitted", len(self.models)))
        self.mean_tokens = float(state.get("mean_tokens", 0.0))
        if len(self.model_vectors) != len(self.models) or self.model_readout.shape != (len(self.models), 3):
            raise ArtifactError(f"{directory}: {len(self.model_vectors)} model vectors for {len(self.models)} models")
        self.tensors = arrays
