"""BertRouter: RouteLLM's ``bert`` router, a small encoder fine-tuned end to end as the routing classifier.

Where the embedding routers (Hybrid, kNN, MF, SW ranking) learn on top of a *frozen* MiniLM embedding,
this router fine-tunes the whole encoder: MiniLM (``models/all-minilm-l6-v2``, a Hugging Face BertModel)
plus a linear head on the mean-pooled output (``model.py``), trained with binary cross-entropy on
whether the small model is good enough for the query: ``win_outcomes(gap, tie_credit)``, 1 when it beat
the large model, 0 when it lost, ``tie_credit`` on a tie (default 1: when both models give the same
result the large one is not needed). RouteLLM's bert predicts whether the strong model is needed; the
score here is the other side of that, the predicted probability that the small one will do.

The router carries its own encoder, so it needs no engine: ``llmrouter train/evaluate`` bind nothing
and serving loads the encoder from the artifact. Training is sized for a CPU: at most
``max_train_examples`` queries (a seeded sample), ``max_length`` tokens (head + tail cut), one epoch by
default (a few hundred AdamW steps).

``threshold_rule`` is the embedding routers': ``fixed`` routes small iff the probability >= 0.5,
``oracle_share`` (default) picks the threshold on the training scores that escalates the share of
training queries the oracle escalates. The artifact is ``encoder/`` (safetensors weights, config and
tokenizer, a Hugging Face directory), ``head.safetensors`` and ``router.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from routers.base import RouteDecision, Thresholds, per_query
from routers.calibrated import CalibratedRouter, CalibratedRouterConfig
from routers.data import RoutingDataset
from routers.embedding import DEFAULT_EMBEDDER, MIN_TRAIN_QUERIES, win_outcomes
from routers.engines import Engines
from routers.errors import ArtifactError, ConfigError, NotFittedError
from routers.paths import resolve_model_path

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"


class BertRouterConfig(CalibratedRouterConfig):
    """Fine-tuning settings: BERT's recipe (AdamW, lr 5e-5, weight decay 0.01, 10% linear warmup then
    linear decay, dropout 0.1) sized for a CPU (1 epoch over at most 3000 queries of <= 128 tokens)."""

    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    base_model: str = Field(default=DEFAULT_EMBEDDER, min_length=1,
                            description="Hugging Face encoder directory (or hub id) to fine-tune")
    max_length: int = Field(default=128, ge=8, le=512, description="tokens per query, [CLS] and [SEP] included")
    head_share: float = Field(default=0.25, ge=0.0, le=1.0,
                              description="share of max_length a too-long query keeps from its start; "
                              "the rest comes from its end (0 = keep the end only)")
    epochs: int = Field(default=1, ge=1, le=20)
    max_steps: int | None = Field(default=None, ge=1, le=100_000, description="stop after this many steps")
    batch_size: int = Field(default=16, ge=1, le=512)
    learning_rate: float = Field(default=5e-5, gt=0.0, le=1e-2)
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="dropout before the head")
    max_train_examples: int | None = Field(
        default=3000, ge=MIN_TRAIN_QUERIES, le=10_000_000,
        description="a seeded sample of at most this many training queries (CPU budget); None = all")
    tie_credit: float = Field(default=1.0, ge=0.0, le=1.0,
                              description="target of a tie: 1 = the small model is good enough, 0.5 = half")
    balance_labels: bool = Field(default=False, description="weight both classes equally in the loss")
    score_batch_size: int = Field(default=64, ge=1, le=4096)
    threads: int | None = Field(default=None, ge=1, le=512, description="torch threads; None = torch's")


class BertRouter(CalibratedRouter):
    name = "bert"
    Config = BertRouterConfig
    engine_roles = frozenset()  # its own encoder: nothing to bind
    config: BertRouterConfig

    def __init__(self, config: Any = None, llm_data: Any = None) -> None:
        super().__init__(config, llm_data)
        # torch models are built in fit/load, not here: the registry probes routers by constructing them
        self.model: Any = None
        self.tokenizer: Any = None

    # --- learning --------------------------------------------------------------------------------
    def training_examples(self, train: RoutingDataset) -> RoutingDataset:
        """The queries both models answered, a seeded sample of ``max_train_examples`` of them."""
        pair = self.resolve_pair(train)
        data = train.complete_for([pair.small, pair.large])
        if len(data) < MIN_TRAIN_QUERIES:
            raise ConfigError(f"the bert router needs at least {MIN_TRAIN_QUERIES} queries with both models' "
                              f"results, got {len(data)}")
        limit = self.config.max_train_examples
        if limit is not None and len(data) > limit:
            picked = np.random.default_rng(self.config.seed).choice(len(data), size=limit, replace=False)
            data = data.subset(np.sort(picked).tolist())
        return data

    def targets(self, data: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the quality gap q_small - q_large and the classifier's target (module docstring)."""
        pair = self.require_pair()
        quality = data.performance_matrix([pair.small, pair.large])
        gap = quality[:, 0] - quality[:, 1]
        return gap, win_outcomes(gap, self.config.tie_credit)

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        from routers.bert.model import TrainSettings, encode_queries, seeded, train_classifier

        started = time.perf_counter()
        data = self.training_examples(train)
        gap, targets = self.targets(data)
        c = self.config
        settings = TrainSettings(c.epochs, c.batch_size, c.learning_rate, c.weight_decay, c.warmup_ratio,
                                 c.max_steps, c.balance_labels, c.seed)
        with seeded(c.seed, c.threads):
            model, tokenizer = initial_classifier(c)
            encoded = encode_queries(tokenizer, data.queries, c.max_length, c.head_share)
            train_classifier(model, encoded, targets, tokenizer.pad_token_id, settings, f"{self.name}: fine-tuning")
        self.model, self.tokenizer = model, tokenizer
        scores = self.score_encoded(encoded, f"{self.name}: scoring train queries")
        self.train_metrics = {**training_summary(settings.losses, scores, targets, len(train), len(data)),
                              **self.calibrate_on_training_scores(scores, gap),
                              "fit_seconds": round(time.perf_counter() - started, 1)}
        return dict(self.train_metrics)

    # --- scoring ---------------------------------------------------------------------------------
    def require_model(self) -> Any:
        if self.model is None or self.tokenizer is None:
            self.require_fitted()
            raise NotFittedError("the bert router has no encoder; fit() or load() it first")
        return self.model

    def score_encoded(self, encoded: Sequence[Sequence[int]], desc: str) -> np.ndarray:
        from routers.bert.model import predict_probabilities, thread_count

        model = self.require_model()
        with thread_count(self.config.threads):
            return predict_probabilities(model, encoded, self.tokenizer.pad_token_id, self.config.score_batch_size,
                                         desc)

    def score_texts(self, texts: Sequence[str], desc: str = "bert: scoring queries") -> np.ndarray:
        """P(the small model is good enough) for each text."""
        from routers.bert.model import encode_queries

        self.require_model()
        if not texts:
            return np.zeros(0)
        encoded = encode_queries(self.tokenizer, texts, self.config.max_length, self.config.head_share)
        return self.score_encoded(encoded, desc)

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        return self.score_texts(data.queries, f"{self.name}: scoring queries")

    async def aroute_many(self, queries: Sequence[str], engines: Engines,
                          thresholds: Thresholds = None) -> list[RouteDecision]:
        """One batched forward pass of the router's own encoder (no engine needed), then each decision.

        Off the event loop: the forward pass holds the GIL only in Python glue, so a Serve replica's
        health checks still answer while it runs."""
        scores = await asyncio.to_thread(self.score_texts, list(queries))
        return [self.decide(query, float(score), threshold) for query, score, threshold
                in zip(queries, scores, per_query(thresholds, len(queries)), strict=True)]

    # --- artifacts -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        model = self.require_model()
        return {"encoder_dir": ENCODER_DIR, "head_file": HEAD_FILE, "hidden_size": int(model.head.in_features),
                "calibrated_threshold": self.calibrated_threshold, "train_metrics": self.train_metrics}

    def save_tensors(self, directory: Path) -> None:
        from routers.bert.model import save_classifier

        save_classifier(self.require_model(), self.tokenizer, directory / ENCODER_DIR, directory / HEAD_FILE)

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        from routers.bert.model import BertClassifier, load_encoder, load_head, seeded

        encoder_dir = directory / state.get("encoder_dir", ENCODER_DIR)
        if not (encoder_dir / "config.json").exists():
            raise ArtifactError(f"{encoder_dir}: no encoder (config.json missing); is {directory} a bert artifact?")
        with seeded(self.config.seed, None):  # the head's throw-away init must not draw from the caller's RNG
            encoder, tokenizer = load_encoder(encoder_dir)
            model = BertClassifier(encoder, self.config.dropout)
        if int(model.head.in_features) != int(state["hidden_size"]):
            raise ArtifactError(f"{encoder_dir}: encoder width {model.head.in_features}, manifest says "
                                f"{state['hidden_size']}")
        load_head(model, directory / state.get("head_file", HEAD_FILE))
        model.eval()
        self.model, self.tokenizer = model, tokenizer
        self.calibrated_threshold = state.get("calibrated_threshold")
        self.train_metrics = dict(state.get("train_metrics", {}))


def initial_classifier(config: BertRouterConfig) -> tuple[Any, Any]:
    """The base encoder with a fresh head, and its tokenizer: what ``fit`` starts from (call it inside
    ``seeded(config.seed, ...)`` for the same head as ``fit``'s)."""
    from routers.bert.model import BertClassifier, load_encoder

    encoder, tokenizer = load_encoder(resolve_model_path(config.base_model, "hparam.base_model"))
    return BertClassifier(encoder, config.dropout), tokenizer


def training_summary(losses: list[float], scores: np.ndarray, targets: np.ndarray, n_given: int,
                     n_train: int) -> dict[str, Any]:
    """What ``fit`` reports: sizes, the loss over the first and last tenth of the steps (one step's loss
    is noise), and the eval-mode BCE on the training queries."""
    from routers.bert.model import binary_cross_entropy

    tenth = max(1, len(losses) // 10)
    return {"n_given": n_given, "n_train": n_train, "steps": len(losses),
            "positive_share": float(np.mean(targets)),
            "loss_first": float(np.mean(losses[:tenth])), "loss_last": float(np.mean(losses[-tenth:])),
            "train_bce": binary_cross_entropy(scores, targets)}
