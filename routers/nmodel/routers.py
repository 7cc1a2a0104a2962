"""The N-model routers: an MLP and a matrix factorisation that predict every model's quality from the query
embedding, a kNN over the training queries, and the baselines the curves need (the per-model prior, random,
oracle).

Learned state is numpy arrays in one safetensors file; inference is numpy (torch only trains the MLP and MF).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from routers.data.multimodel import MultiModelDataset
from routers.embedding import standardisation, unit_rows
from routers.errors import ArtifactError, ConfigError
from routers.nmodel.base import FeatureRouter, MultiModelRouterConfig
from routers.safe_io import load_arrays, save_arrays

#: rows of the query-by-bank similarity matrix computed at once
SIMILARITY_CHUNK = 512


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def read_tensors(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    arrays = load_arrays(path)
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ArtifactError(f"{path}: missing tensor(s) {missing}")
    return {name: arrays[name].astype(np.float64) for name in names}


# --- the MLP and MF: a network from the standardised embedding to one logit per model -------------------------
class NetworkConfig(MultiModelRouterConfig):
    epochs: int = 25
    batch_size: int = 256
    learning_rate: float = 3e-3
    #: torch CPU threads while training (small nets: more threads mostly contend)
    num_threads: int = 1


class MultiModelMLPRouter(FeatureRouter):
    """Multi-output MLP: standardised embedding -> hidden layer (ReLU, dropout) -> one logit per model,
    trained with binary cross-entropy against each model's quality (soft labels in [0, 1]); the sigmoid of a
    logit is that model's predicted quality. Sharing the hidden layer across models is what lets a model
    with few wins borrow what the others' labels say about a query."""

    name = "nmodel_mlp"
    Config = NetworkConfig
    config: NetworkConfig
    activation: ClassVar[str] = "relu"
    default_grid = ({"hidden": 128, "weight_decay": 1e-2, "dropout": 0.2},
                    {"hidden": 256, "weight_decay": 1e-1, "dropout": 0.5, "epochs": 10})
    tensors_file = "mlp.safetensors"
    tensor_names: ClassVar[tuple[str, ...]] = ("w1", "b1", "w2", "b2", "mean", "scale")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.tensors: dict[str, np.ndarray] | None = None

    def fit_arrays(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            self.train_network(x, quality, params)
        finally:
            torch.set_num_threads(threads)

    def train_network(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        import torch

        mean, scale = standardisation(x)
        torch.manual_seed(self.config.seed)
        inputs = torch.tensor((x - mean) / scale, dtype=torch.float32)
        targets = torch.tensor(quality, dtype=torch.float32)
        hidden = int(params.get("hidden", 128))
        act = torch.nn.ReLU() if self.activation == "relu" else torch.nn.Identity()
        net = torch.nn.Sequential(torch.nn.Dropout(float(params.get("input_dropout", 0.0))),
                                  torch.nn.Linear(x.shape[1], hidden), act,
                                  torch.nn.Dropout(float(params.get("dropout", 0.0))),
                                  torch.nn.Linear(hidden, quality.shape[1]))
        with torch.no_grad():
            # start every model's logit at its base rate, so the net learns what the query adds to it
            base = np.clip(quality.mean(axis=0), 1e-3, 1 - 1e-3)
            net[4].bias.copy_(torch.tensor(np.log(base / (1 - base)), dtype=torch.float32))
        learning_rate = float(params.get("learning_rate", self.config.learning_rate))
        optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate,
                                      weight_decay=float(params.get("weight_decay", 1e-4)))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(self.config.seed)
        epochs = int(params.get("epochs", self.config.epochs))
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), self.config.batch_size):
                batch = order[start : start + self.config.batch_size]
                optimiser.zero_grad()
                loss_fn(net(inputs[batch]), targets[batch]).backward()
                optimiser.step()
        first, second = net[1], net[4]
        self.tensors = {"w1": first.weight.detach().double().numpy().T, "b1": first.bias.detach().double().numpy(),
                        "w2": second.weight.detach().double().numpy().T, "b2": second.bias.detach().double().numpy(),
                        "mean": mean, "scale": scale}

    def require_tensors(self) -> dict[str, np.ndarray]:
        if self.tensors is None:
            self.require_fitted()
            raise ArtifactError(f"the {self.name} router has no weights")
        return self.tensors

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        t = self.require_tensors()
        if x.shape[1] != t["w1"].shape[0]:
            raise ConfigError(f"embedding size {x.shape[1]} does not match the router's {t['w1'].shape[0]}: "
                              "route with the embedder it was trained with")
        hidden = ((x - t["mean"]) / t["scale"]) @ t["w1"] + t["b1"]
        if self.activation == "relu":
            hidden = np.maximum(hidden, 0.0)
        return sigmoid(hidden @ t["w2"] + t["b2"])

    def state(self) -> dict[str, Any]:
        return {"tensors_file": self.tensors_file}

    def save_tensors(self, directory: Path) -> None:
        save_arrays(directory / self.tensors_file, self.require_tensors())

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        self.tensors = read_tensors(directory / str(state.get("tensors_file", self.tensors_file)), self.tensor_names)


class MultiModelMFRouter(MultiModelMLPRouter):
    """Matrix factorisation: the standardised embedding projected to a ``hidden``-dimensional latent query
    vector, dotted with a learned vector per model, plus the model's bias (RouteLLM's MF, bilinear, one output
    per model instead of a pairwise win). The MLP's network without its non-linearity."""

    name = "nmodel_mf"
    activation = "identity"
    default_grid = ({"hidden": 16, "weight_decay": 1e-2, "dropout": 0.0},
                    {"hidden": 64, "weight_decay": 1e-2, "dropout": 0.0, "input_dropout": 0.2})
    tensors_file = "mf.safetensors"


# --- kNN -------------------------------------------------------------------------------------------------------
class MultiModelKNNRouter(FeatureRouter):
    """Each model's mean quality over the ``k`` most similar training queries (cosine of the embeddings)."""

    name = "nmodel_knn"
    default_grid = ({"k": 10}, {"k": 25}, {"k": 50}, {"k": 100}, {"k": 200})
    tensors_file = "bank.safetensors"

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.bank: np.ndarray | None = None
        self.bank_quality: np.ndarray | None = None
        self.k = 25

    def fit_arrays(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        self.k = int(params.get("k", 25))
        self.bank = unit_rows(x).astype(np.float32)
        self.bank_quality = np.asarray(quality, dtype=np.float32)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        if self.bank is None or self.bank_quality is None:
            self.require_fitted()
            raise ArtifactError(f"the {self.name} router has no training embeddings")
        if x.shape[1] != self.bank.shape[1]:
            raise ConfigError(f"embedding size {x.shape[1]} does not match the router's {self.bank.shape[1]}: "
                              "route with the embedder it was trained with")
        k = min(self.k, len(self.bank))
        queries = unit_rows(x)
        out = np.empty((len(x), self.bank_quality.shape[1]))
        for start in range(0, len(x), SIMILARITY_CHUNK):
            sims = queries[start : start + SIMILARITY_CHUNK] @ self.bank.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            out[start : start + SIMILARITY_CHUNK] = self.bank_quality[nearest].mean(axis=1)
        return out

    def state(self) -> dict[str, Any]:
        return {"tensors_file": self.tensors_file, "k": self.k}

    def save_tensors(self, directory: Path) -> None:
        if self.bank is None or self.bank_quality is None:
            raise ArtifactError(f"the {self.name} router has no training embeddings")
        save_arrays(directory / self.tensors_file, {"embeddings": self.bank, "quality": self.bank_quality})

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        path = directory / str(state.get("tensors_file", self.tensors_file))
        arrays = load_arrays(path)
        if "embeddings" not in arrays or "quality" not in arrays:
            raise ArtifactError(f"{path}: missing tensor 'embeddings' or 'quality'")
        if len(arrays["embeddings"]) != len(arrays["quality"]) or arrays["quality"].shape[1] != len(self.models):
            raise ArtifactError(f"{path}: {arrays['embeddings'].shape} embeddings, {arrays['quality'].shape} quality "
                                f"for {len(self.models)} models")
        self.bank, self.bank_quality = arrays["embeddings"].astype(np.float32), arrays["quality"].astype(np.float32)
        self.k = int(state["k"])


# --- baselines ---------------------------------------------------------------------------------------------------
class PriorRouter(FeatureRouter):
    """Every model's mean training quality and mean training cost, the same for every query: its ``cost=L``
    sweep walks the single models (the default rule picks the best single model, or a cheaper one as good); the
    baseline a router must beat by reading the query. (Per-query cost estimates would let it route by query
    length, which on RouterBench tells ARC from MBPP: a router, not a single model.)"""

    name = "nmodel_single"
    uses_embeddings = False
    trainable = False
    tensors_file = "prior.safetensors"

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.prior: np.ndarray | None = None

    def fit_arrays(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        self.prior = np.asarray(quality, dtype=np.float64).mean(axis=0)

    def cost_estimates(self, queries: Sequence[str]) -> np.ndarray:
        if self.mean_cost is None:
            raise ArtifactError(f"the {self.name} router has no mean costs")
        return np.broadcast_to(self.mean_cost, (len(queries), len(self.mean_cost))).copy()

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        if self.prior is None:
            raise ArtifactError(f"the {self.name} router has no prior")
        return np.broadcast_to(self.prior, (len(x), len(self.prior))).copy()

    def save_tensors(self, directory: Path) -> None:
        if self.prior is None:
            raise ArtifactError(f"the {self.name} router has no prior")
        save_arrays(directory / self.tensors_file, {"prior": self.prior})

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        self.prior = read_tensors(directory / self.tensors_file, ("prior",))["prior"]


class MultiModelRandomRouter(PriorRouter):
    """Random predicted qualities, seeded by the query text (its feature is a hash of it): a ``cost=L`` sweep
    mixes the models by chance alone, tilted to the cheap ones as L grows."""

    name = "nmodel_random"

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        if self.prior is None:
            raise ArtifactError(f"the {self.name} router is not fitted")
        rows = [np.random.default_rng([self.config.seed, int(h)]).random(len(self.prior)) for h in x[:, 0]]
        return np.array(rows).reshape(len(x), len(self.prior))


class MultiModelOracleRouter(PriorRouter):
    """The best model for each query, read from the labels: evaluation only (it cannot route a new query)."""

    name = "nmodel_oracle"
    evaluation_rule = "cost=0"

    def dataset_predictions(self, data: MultiModelDataset) -> tuple[np.ndarray, np.ndarray]:
        self.check_models(data.models)
        # the realised quality and cost: with weight 0 the selection rule picks the oracle's choice
        return np.asarray(data.quality, dtype=np.float64), np.asarray(data.cost, dtype=np.float64)

    def route(self, queries: Any, rule: str | None = None) -> Any:
        raise ConfigError("the oracle router needs the labels; it only evaluates (dataset_predictions)")

    async def aroute_many(self, queries: Any, engines: Any, rule: str | None = None) -> Any:
        return self.route(queries, rule)


# --- blend ------------------------------------------------------------------------------------------------------
class BlendConfig(NetworkConfig):
    knn_k: int = Field(default=25, ge=1)
    mlp: dict[str, Any] = Field(default_factory=lambda: {"hidden": 128, "weight_decay": 1e-2, "dropout": 0.2})


class MultiModelBlendRouter(FeatureRouter):
    """``weight`` x the MLP's predicted quality + (1 - ``weight``) x the kNN's: the MLP generalises across
    queries, the kNN remembers its neighbourhood; their errors differ, so their mean is better calibrated
    than either. The weight is chosen by cross-validated AIQ; the members are fitted once per fold (their
    out-of-fold predictions are blended at every weight)."""

    name = "nmodel_blend"
    Config = BlendConfig
    config: BlendConfig
    default_grid = ({"weight": 0.25}, {"weight": 0.5}, {"weight": 0.75})

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.mlp = MultiModelMLPRouter(self.member_config())
        self.knn = MultiModelKNNRouter({"seed": self.config.seed})
        self.weight = 0.5
        self._members_oof: tuple[int, np.ndarray, np.ndarray] | None = None

    def member_config(self) -> dict[str, Any]:
        return {key: getattr(self.config, key) for key in ("seed", "epochs", "batch_size", "learning_rate",
                                                           "num_threads")}

    def cross_fitted(self, x: np.ndarray, quality: np.ndarray, folds: np.ndarray,
                     params: Mapping[str, Any]) -> np.ndarray:
        key = hash((x.shape, folds.tobytes(), float(x.sum())))
        if self._members_oof is None or self._members_oof[0] != key:
            mlp = self.mlp.cross_fitted(x, quality, folds, self.config.mlp)
            knn = self.knn.cross_fitted(x, quality, folds, {"k": self.config.knn_k})
            self._members_oof = (key, mlp, knn)
        _, mlp, knn = self._members_oof
        weight = float(params.get("weight", 0.5))
        return weight * mlp + (1.0 - weight) * knn

    def fit_arrays(self, x: np.ndarray, quality: np.ndarray, params: Mapping[str, Any]) -> None:
        self.weight = float(params.get("weight", 0.5))
        self.mlp.models = self.knn.models = self.models
        self.mlp.fit_arrays(x, quality, self.config.mlp)
        self.knn.fit_arrays(x, quality, {"k": self.config.knn_k})

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        return self.weight * self.mlp.predict_arrays(x) + (1.0 - self.weight) * self.knn.predict_arrays(x)

    def state(self) -> dict[str, Any]:
        return {"weight": self.weight, "k": self.knn.k}

    def save_tensors(self, directory: Path) -> None:
        self.mlp.save_tensors(directory)
        self.knn.save_tensors(directory)

    def load_state(self, state: Mapping[str, Any], directory: Path) -> None:
        self.weight = float(state["weight"])
        self.mlp.models = self.knn.models = self.models
        self.mlp.load_state({}, directory)
        self.knn.load_state({"k": state["k"]}, directory)
