"""RouteLLM's matrix-factorisation scorer on query embeddings, trained with numpy (no torch needed).

RouteLLM's ``MFModel`` scores a (prompt, model) pair as ``s(q, m) = w2 . (v_m/|v_m| * (W e_q))``: a
linear projection W of the prompt embedding into a latent space, an element-wise product with the
model's (L2-normalised) latent vector, and a linear read-out w2. The win probability of model a over
model b is ``sigmoid(s(q, a) - s(q, b))``, trained with a Bradley-Terry (logistic) loss on who won each
battle, Adam, weight decay and Gaussian noise on the prompt embeddings ("to stabilise training").

Two candidates here (row 0 small, row 1 large) and an optional per-model bias b_m (RouteLLM has none;
with one pair its difference is the prior log-odds of the small model winning):

    logit(q) = s(q, small) - s(q, large) = (W e_q) . (w2 * (v_s/|v_s| - v_l/|v_l|)) + b_s - b_l.

Gradients are written out (``MFWeights.gradients``) and checked against finite differences in the tests.
Each query is one battle with target 1 (small won), 0 (large won) or 0.5 (tie: half a win each, as in
RouteLLM's Elo fit) weighted by ``tie_weight`` (0 skips ties, as RouteLLM's MF training does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from routers.errors import ArtifactError
from routers.safe_io import load_arrays, save_arrays

PARAMETERS = ("projection", "model_vectors", "readout", "model_bias")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|


@dataclass
class MFWeights:
    #: W: (latent_dim, embedding_dim)
    projection: np.ndarray
    #: v_m, one row per model (0 small, 1 large): (2, latent_dim)
    model_vectors: np.ndarray
    #: w2: (latent_dim,)
    readout: np.ndarray
    #: b_m: (2,)
    model_bias: np.ndarray

    @classmethod
    def initial(cls, embedding_dim: int, latent_dim: int, rng: np.random.Generator) -> MFWeights:
        """torch's default inits, as RouteLLM's modules get them: Embedding N(0, 1), Linear U(+-1/sqrt(fan_in))."""
        return cls(
            projection=rng.uniform(-1, 1, (latent_dim, embedding_dim)) / np.sqrt(embedding_dim),
            model_vectors=rng.normal(size=(2, latent_dim)),
            readout=rng.uniform(-1, 1, latent_dim) / np.sqrt(latent_dim),
            model_bias=np.zeros(2),
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.projection.shape[1])

    def unit_model_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        norms = np.linalg.norm(self.model_vectors, axis=1, keepdims=True)
        return self.model_vectors / norms, norms

    def direction(self) -> np.ndarray:
        """w2 * (v_s/|v_s| - v_l/|v_l|): the latent direction along which the small model is preferred."""
        unit, _ = self.unit_model_vectors()
        return self.readout * (unit[0] - unit[1])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """s(q, small) - s(q, large) for each embedding row."""
        latent = np.asarray(embeddings, dtype=np.float64) @ self.projection.T
        return latent @ self.direction() + (self.model_bias[0] - self.model_bias[1])

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """The small model's win probability for each embedding row (the MF router's score)."""
        return sigmoid(self.logits(embeddings))

    def loss(self, embeddings: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
        """Weighted mean binary cross-entropy of the small model's win probability."""
        z = self.logits(embeddings)
        # log(1 + exp(-z)) and log(1 + exp(z)), computed stably
        nll = targets * np.logaddexp(0.0, -z) + (1.0 - targets) * np.logaddexp(0.0, z)
        return float(np.sum(weights * nll) / np.sum(weights))

    def gradients(self, embeddings: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        """d loss / d parameter, by hand (the chain rule through the normalised model vectors)."""
        latent = embeddings @ self.projection.T
        unit, norms = self.unit_model_vectors()
        delta = unit[0] - unit[1]
        direction = self.readout * delta
        z = latent @ direction + (self.model_bias[0] - self.model_bias[1])
        dz = weights * (sigmoid(z) - targets) / np.sum(weights)
        d_direction = latent.T @ dz
        d_delta = d_direction * self.readout
        d_unit = np.stack([d_delta, -d_delta])
        # d(v/|v|)/dv = (I - u u^T) / |v|
        d_vectors = (d_unit - unit * np.sum(unit * d_unit, axis=1, keepdims=True)) / norms
        return {
            "projection": np.outer(direction, embeddings.T @ dz),
            "model_vectors": d_vectors,
            "readout": d_direction * delta,
            "model_bias": np.array([dz.sum(), -dz.sum()]),
        }

    def as_stored(self) -> MFWeights:
        """These weights rounded to the float32 the artifact keeps, so a saved-and-loaded router scores
        exactly as the one that was fit."""
        return MFWeights(**{name: getattr(self, name).astype(np.float32).astype(np.float64) for name in PARAMETERS})

    def save(self, path: Path) -> None:
        save_arrays(path, {name: np.asarray(getattr(self, name), dtype=np.float32) for name in PARAMETERS})

    @classmethod
    def load(cls, path: Path) -> MFWeights:
        arrays = load_arrays(path)
        try:
            weights = cls(**{name: arrays[name].astype(np.float64) for name in PARAMETERS})
        except KeyError as exc:
            raise ArtifactError(f"{path}: missing tensor {exc}") from exc
        latent = weights.projection.shape[0]
        if (weights.model_vectors.shape != (2, latent) or weights.readout.shape != (latent,)
                or weights.model_bias.shape != (2,)):
            raise ArtifactError(f"{path}: tensor shapes do not fit together")
        return weights


@dataclass
class MFTraining:
    latent_dim: int
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    noise: float
    model_bias: bool
    seed: int
    losses: list[float] = field(default_factory=list)


def battle_targets(gap: np.ndarray, tie_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) per query: small won 1, lost 0, tied 0.5 with weight ``tie_weight``."""
    gap = np.asarray(gap, dtype=np.float64)
    targets = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, 0.5))
    weights = np.where(gap == 0, tie_weight, 1.0)
    return targets, weights


def fit_mf(embeddings: np.ndarray, targets: np.ndarray, weights: np.ndarray, settings: MFTraining) -> MFWeights:
    """Mini-batch Adam on the weighted Bradley-Terry loss (torch Adam's L2-style weight decay, as RouteLLM)."""
    # A 64-row batch makes every matmul tiny: BLAS threads cost far more than they save (10x slower
    # with OpenBLAS' default threads on a busy 2-core machine), so train single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        return adam_on_battles(embeddings, targets, weights, settings)


def adam_on_battles(embeddings: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                    settings: MFTraining) -> MFWeights:
    rng = np.random.default_rng(settings.seed)
    x = np.asarray(embeddings, dtype=np.float64)
    keep = weights > 0
    x, targets, weights = x[keep], targets[keep], weights[keep]
    if len(x) == 0:
        raise ValueError("no battles to learn from (every query a tie and tie_weight 0)")
    params = MFWeights.initial(x.shape[1], settings.latent_dim, rng)
    first = {name: np.zeros_like(getattr(params, name)) for name in PARAMETERS}
    second = {name: np.zeros_like(getattr(params, name)) for name in PARAMETERS}
    beta1, beta2 = ADAM_BETAS
    step = 0
    for _ in range(settings.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            noisy = x[batch]
            if settings.noise:
                noisy = noisy + rng.normal(scale=settings.noise, size=(len(batch), x.shape[1]))
            grads = params.gradients(noisy, targets[batch], weights[batch])
            step += 1
            for name in PARAMETERS:
                if name == "model_bias" and not settings.model_bias:
                    continue
                value = getattr(params, name)
                grad = grads[name] + settings.weight_decay * value
                first[name] = beta1 * first[name] + (1 - beta1) * grad
                second[name] = beta2 * second[name] + (1 - beta2) * grad * grad
                corrected = first[name] / (1 - beta1**step)
                scale = np.sqrt(second[name] / (1 - beta2**step)) + ADAM_EPS
                setattr(params, name, value - settings.learning_rate * corrected / scale)
        settings.losses.append(params.loss(x, targets, weights))
    return params.as_stored()
