"""The Hybrid router's MLP: trained with scikit-learn, stored and run without it.

scikit-learn fits an ``MLPRegressor`` on (standardised embedding, label); the learned ``coefs_`` /
``intercepts_`` are exported to safetensors and inference is a small numpy forward pass (hidden layers
use the configured activation, the output layer is linear exactly as in ``MLPRegressor``), so a saved
router is tensors + JSON (no pickle) and serving needs no scikit-learn object.

Scores: the labels live in [0, 1] (0/1 or sigmoid(gap / tau)), but a linear output layer can overshoot.
``squash_scores`` maps the raw output r into [0, 1] with a *sigmoid-clip*: r itself inside
[margin, 1 - margin] (so the score stays on the label's scale and 0.5 still means "predicted label
0.5"), and outside it a logistic tail that approaches 0 or 1. The map is continuous and strictly
increasing, so unlike a hard clip it does not tie queries whose raw outputs differ (until float64 rounds
the far upper tail, r > ~1.7, to exactly 1), and the cost-quality curve can still separate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routers.embedding import standardisation
from routers.errors import ArtifactError
from routers.safe_io import load_arrays, save_arrays

ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "logistic": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "identity": lambda x: x,
}


#: width of the sigmoid tails of ``squash_scores``
SQUASH_MARGIN = 0.02


def squash_scores(raw: np.ndarray, margin: float = SQUASH_MARGIN) -> np.ndarray:
    """Strictly increasing map of raw regression outputs into (0, 1) (see module docstring).

    Inside [margin, 1 - margin]: the identity. Below ``margin``: ``2 * margin * sigmoid((r - margin) /
    margin)``, which equals ``margin`` with slope 1/2 at r = margin and tends to 0; symmetrically above.
    """
    r = np.asarray(raw, dtype=np.float64)
    with np.errstate(over="ignore"):  # far tails underflow to exactly 0 or 1, which is the right limit
        low = 2.0 * margin / (1.0 + np.exp(-(r - margin) / margin))
        high = 1.0 - 2.0 * margin / (1.0 + np.exp((r - (1.0 - margin)) / margin))
    return np.where(r < margin, low, np.where(r > 1.0 - margin, high, r))


@dataclass
class MLPWeights:
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str
    #: feature standardisation learned on the training embeddings
    mean: np.ndarray
    scale: np.ndarray

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw regression output (the MLP's last layer is linear, as in MLPRegressor)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected embeddings of shape (n, {self.input_dim}), got {x.shape}")
        h = (x - self.mean) / self.scale
        act = ACTIVATIONS[self.activation]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = act(h)
        return h[:, 0]

    def save(self, path: Path) -> None:
        arrays = {"mean": self.mean, "scale": self.scale}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"layers.{i}.weight"] = w
            arrays[f"layers.{i}.bias"] = b
        save_arrays(path, {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})

    @classmethod
    def load(cls, path: Path, activation: str, n_layers: int) -> MLPWeights:
        if activation not in ACTIVATIONS:
            raise ArtifactError(f"{path}: unknown activation {activation!r}")
        arrays = load_arrays(path)
        try:
            weights = [arrays[f"layers.{i}.weight"].astype(np.float64) for i in range(n_layers)]
            biases = [arrays[f"layers.{i}.bias"].astype(np.float64) for i in range(n_layers)]
            mean, scale = arrays["mean"].astype(np.float64), arrays["scale"].astype(np.float64)
        except KeyError as exc:
            raise ArtifactError(f"{path}: missing tensor {exc}") from exc
        return cls(weights, biases, activation, mean, scale)


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden_layer_sizes: tuple[int, ...], activation: str, solver: str,
            max_iter: int, alpha: float, learning_rate_init: float, early_stopping: bool,
            seed: int) -> tuple[MLPWeights, dict[str, float]]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    x = np.asarray(x, dtype=np.float64)
    mean, scale = standardisation(x)
    model = MLPRegressor(hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
                         max_iter=max_iter, alpha=alpha, learning_rate_init=learning_rate_init,
                         early_stopping=early_stopping, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit((x - mean) / scale, y)
    weights = MLPWeights([w.copy() for w in model.coefs_], [b.copy() for b in model.intercepts_], activation,
                         mean, scale)
    return weights, {"n_iter": float(model.n_iter_), "final_loss": float(model.loss_)}
