"""The BERT routing classifier: an encoder, mean pooling and one logit, fine-tuned end to end on CPU.

Kept apart from the router so the torch parts (tokenising with head + tail truncation, the training loop,
chunked scoring) are plain functions of tensors and settings that tests can call directly.

* **Tokens**: a query longer than ``max_length`` keeps its first ``head_share`` of the room and its end
  for the rest. An MMLU prompt ends with the question, its choices and ``Answer:``, while a long passage
  (professional law) opens it; the head + tail cut keeps both the domain cue and the question
  (Sun et al. 2019 found head + tail the best cut for fine-tuning BERT classifiers).
* **Training**: AdamW (no decay on biases and LayerNorm weights), linear warmup then linear decay to 0,
  gradient clipping at 1, binary cross-entropy on soft targets, optionally with the positive term
  re-weighted so both classes carry the same total weight. Batches hold queries of similar length and
  are padded to their own longest, not to ``max_length``: most queries are far shorter, and padding is
  what a CPU pays for.
* **Determinism**: every random draw (head init, dropout, shuffling) comes from torch's generator seeded
  inside ``torch.random.fork_rng``, so a fit does not disturb the caller's RNG and repeats exactly for a
  seed and thread count (CPU matmul reductions depend on the thread count, hence ``threads``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from routers.engines.batching import pad_token_ids
from routers.progress import progress_bar
from routers.safe_io import assert_no_unsafe_weights, load_arrays, save_arrays

#: parameters AdamW leaves undecayed (BERT's recipe)
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "norm.weight")
#: batches per length-sorted window of ``length_grouped_batches``
GROUP_BATCHES = 50


class BertClassifier(nn.Module):
    """Encoder -> attention-masked mean of the last hidden states -> dropout -> one logit.

    Mean pooling, as the sentence-transformers MiniLM was trained with, so fine-tuning starts from
    pooled vectors that already separate topics instead of from an untrained [CLS] output.
    """

    def __init__(self, encoder: nn.Module, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.config.hidden_size), 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(pooled)).squeeze(-1)


# --- loading and saving ------------------------------------------------------------------------------
def load_encoder(path: str | Path) -> tuple[nn.Module, Any]:
    """A Hugging Face encoder directory (safetensors weights only) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    assert_no_unsafe_weights(path)
    encoder = AutoModel.from_pretrained(str(path), dtype=torch.float32, use_safetensors=True)
    return encoder, AutoTokenizer.from_pretrained(str(path))


def save_classifier(model: BertClassifier, tokenizer: Any, encoder_dir: Path, head_path: Path) -> None:
    """Encoder + tokenizer as a Hugging Face directory (safetensors), the head as its own safetensors."""
    model.encoder.save_pretrained(str(encoder_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(encoder_dir))
    save_arrays(head_path, {"weight": model.head.weight.detach().numpy(), "bias": model.head.bias.detach().numpy()})


def load_head(model: BertClassifier, head_path: Path) -> None:
    arrays = load_arrays(head_path)
    for name, param in (("weight", model.head.weight), ("bias", model.head.bias)):
        if name not in arrays:
            raise ValueError(f"{head_path}: missing tensor {name!r}")
        if tuple(arrays[name].shape) != tuple(param.shape):
            raise ValueError(f"{head_path}: {name} has shape {arrays[name].shape}, "
                             f"the encoder needs {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.asarray(arrays[name], dtype=np.float32)))


# --- tokens ------------------------------------------------------------------------------------------
def encode_queries(tokenizer: Any, texts: Sequence[str], max_length: int, head_share: float) -> list[list[int]]:
    """Token ids with [CLS]/[SEP], at most ``max_length`` long, long queries cut head + tail (module doc)."""
    # verbose=False: untruncated ids may exceed the model's 512 positions; they are cut right below.
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    room = max_length - 2
    head = round(room * head_share)
    encoded = []
    for seq in ids:
        if len(seq) > room:
            seq = seq[:head] + seq[len(seq) - (room - head):]
        encoded.append([tokenizer.cls_token_id, *seq, tokenizer.sep_token_id])
    return encoded


def pad_batch(encoded: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, as long as the batch's longest query."""
    ids, mask = pad_token_ids(encoded, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(mask)


# --- training ----------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    max_steps: int | None
    balance_labels: bool
    seed: int
    #: filled by ``train_classifier``: the training loss of every optimizer step
    losses: list[float] = field(default_factory=list)

    def total_steps(self, n_examples: int) -> int:
        steps = self.epochs * math.ceil(n_examples / self.batch_size)
        return steps if self.max_steps is None else min(steps, self.max_steps)


def linear_warmup_decay(step: int, total: int, warmup_ratio: float) -> float:
    """LR multiplier: 0 -> 1 over the warmup steps, then 1 -> 0 at the last step (BERT's schedule)."""
    warmup = round(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def positive_weight(targets: np.ndarray, balance: bool) -> float:
    """BCE weight of the positive term: 1, or (negative mass / positive mass) so both classes weigh the same."""
    positive = float(np.sum(targets))
    negative = float(len(targets) - positive)
    if not balance or positive <= 0 or negative <= 0:
        return 1.0
    return negative / positive


def optimizer_for(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if any(key in name for key in NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all 22M parameters; the per-tensor loop took as long as the backward pass on CPU
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)


def length_grouped_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar-length queries, for ever (the caller stops): each epoch is shuffled by
    torch's (seeded) generator, cut into windows of ``GROUP_BATCHES`` batches, each window sorted by
    length and cut into batches, and the batches shuffled (Hugging Face's ``group_by_length``).
    A random batch of 16 nearly always holds one query at ``max_length`` and pads every row to it."""
    window = batch_size * GROUP_BATCHES
    while True:
        order = torch.randperm(len(lengths)).numpy()
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
        for b in torch.randperm(len(batches)).tolist():
            yield batches[b]


def train_classifier(model: BertClassifier, encoded: Sequence[Sequence[int]], targets: np.ndarray, pad_id: int,
                     settings: TrainSettings, desc: str) -> list[float]:
    """Fine-tune encoder and head together; returns (and keeps in ``settings.losses``) each step's loss.

    Call inside ``seeded(settings.seed)`` so shuffling and dropout repeat.
    """
    total = settings.total_steps(len(encoded))
    optimizer = optimizer_for(model, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_warmup_decay(step, total, settings.warmup_ratio))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(positive_weight(targets, settings.balance_labels)))
    target_tensor = torch.as_tensor(targets, dtype=torch.float32)
    model.train()
    bar = progress_bar(desc, total=total, unit="step")
    batches = length_grouped_batches(np.array([len(seq) for seq in encoded]), settings.batch_size)
    for _ in range(total):
        rows = next(batches)
        ids, mask = pad_batch([encoded[i] for i in rows], pad_id)
        loss = loss_fn(model(ids, mask), target_tensor[torch.from_numpy(rows)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        settings.losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{settings.losses[-1]:.4f}")
    bar.close()
    model.eval()
    return settings.losses


# --- scoring -----------------------------------------------------------------------------------------
def predict_probabilities(model: BertClassifier, encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                          desc: str) -> np.ndarray:
    """Sigmoid of the logit per query, in the given order. Queries are batched by length (sorted) so a
    batch pads to near its own length (the mask hides the padding: a query's score depends on its batch
    mates only through float rounding)."""
    order = np.argsort([len(seq) for seq in encoded], kind="stable")
    out = np.empty(len(encoded), dtype=np.float64)
    model.eval()
    bar = progress_bar(desc, total=len(encoded), unit="query", enabled=len(encoded) > batch_size)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = pad_batch([encoded[i] for i in rows], pad_id)
            out[rows] = torch.sigmoid(model(ids, mask)).double().numpy()
            bar.update(len(rows))
    bar.close()
    return out


def binary_cross_entropy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean BCE of probabilities against (soft) targets, clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    t = np.asarray(targets, dtype=np.float64)
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


# --- reproducibility ---------------------------------------------------------------------------------
@contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """torch's thread count set to ``threads`` (None: left alone) and restored after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def seeded(seed: int, threads: int | None) -> Iterator[None]:
    """torch's RNG seeded (the caller's state restored after) on ``threads`` threads."""
    with thread_count(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
