"""MatrixFactorizationRouter: RouteLLM's MF router on the project's query embeddings and model pair.

Learns a projection of the query embedding and one latent vector per candidate model (``model.py``),
trained on one Bradley-Terry battle per training query (small vs large: who was right). The score is
the predicted probability that the small model wins, ``sigmoid(s(q, small) - s(q, large))``, with a
tie worth half a win: ties enter the loss as target 0.5 with weight ``tie_weight`` (0 = RouteLLM's
training, which drops ties). ``threshold_rule: fixed`` routes small iff the score >= 0.5, the point
where neither model is expected to win.

For two models the factorised form is one learned direction in embedding space plus a bias (a logistic
model on the embedding); the factorisation, weight decay, embedding noise and epoch count are RouteLLM's
regularisers. The artifact is the factors in safetensors plus ``router.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from routers.data import RoutingDataset
from routers.embedding import EmbeddingRouter, EmbeddingRouterConfig
from routers.errors import ArtifactError
from routers.mf.model import MFTraining, MFWeights, battle_targets, fit_mf

WEIGHTS_FILE = "mf.safetensors"


class MFConfig(EmbeddingRouterConfig):
    """MF settings: RouteLLM's (latent 128, batch 64, lr 3e-4, weight decay 1e-5, noise 0.1) except the
    epoch count, the per-model bias and the tie weight, chosen on a validation split of the train files."""

    latent_dim: int = Field(default=128, ge=1, description="size of the latent space (RouteLLM: 128)")
    epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=3e-4, gt=0.0)
    weight_decay: float = Field(default=1e-5, ge=0.0, description="L2 added to the gradients, as torch Adam")
    noise: float = Field(default=0.1, ge=0.0, description="std of the Gaussian noise on training embeddings")
    model_bias: bool = Field(default=True, description="learn a bias per model (RouteLLM: no)")
    tie_weight: float = Field(default=1.0, ge=0.0, description="weight of a tie (target 0.5) in the loss; 0 skips ties")


class MatrixFactorizationRouter(EmbeddingRouter):
    name = "mf"
    Config = MFConfig
    display_name = "MF"
    config: MFConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        self.weights: MFWeights | None = None

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        training = self.embedded_training_set(train)
        c = self.config
        targets, battle_weights = battle_targets(training.gap, c.tie_weight)
        settings = MFTraining(c.latent_dim, c.epochs, c.batch_size, c.learning_rate, c.weight_decay, c.noise,
                              c.model_bias, c.seed)
        self.weights = fit_mf(training.embeddings, targets, battle_weights, settings)
        scores = self.score_embeddings(training.embeddings)
        calibration = self.calibrate_on_training_set(training, scores)
        self.train_metrics = {"n_train": len(training.data), "n_battles": int(np.sum(battle_weights > 0)),
                              "final_loss": settings.losses[-1], "epochs": c.epochs, **calibration}
        return dict(self.train_metrics)

    def require_weights(self) -> MFWeights:
        if self.weights is None:
            self.require_fitted()
            raise ArtifactError("the MF router has no factors")
        return self.weights

    def embedding_dim(self) -> int:
        return self.require_weights().embedding_dim

    def score_matrix(self, embeddings: np.ndarray) -> np.ndarray:
        return self.require_weights().small_win_probability(embeddings)

    def state(self) -> dict[str, Any]:
        weights = self.require_weights()
        return {"weights_file": WEIGHTS_FILE, "embedding_dim": weights.embedding_dim, **self.embedding_state()}

    def save_tensors(self, directory: Path) -> None:
        self.require_weights().save(directory / WEIGHTS_FILE)

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        path = directory / state.get("weights_file", WEIGHTS_FILE)
        self.weights = MFWeights.load(path)
        if self.weights.embedding_dim != int(state["embedding_dim"]):
            raise ArtifactError(f"{path}: factors expect {self.weights.embedding_dim}-d embeddings, "
                                f"manifest says {state['embedding_dim']}")
        self.load_embedding_state(state)
