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
from routers.embedding import EmbeddingRouterConfig, EmbeddingWeightsRouter
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


class MatrixFactorizationRouter(EmbeddingWeightsRouter[MFWeights]):
    name = "mf"
    Config = MFConfig
    display_name = "MF"
    weights_file = WEIGHTS_FILE
    config: MFConfig

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

    def load_weights(self, path: Path, state: dict[str, Any]) -> MFWeights:
        return MFWeights.load(path)
