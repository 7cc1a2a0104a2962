"""The sentence embedder on ONNX Runtime: the same weights as the transformers embedder, run by a runtime
that fuses attention, layer norm and GELU into single kernels.

The encoder is exported once from the local model directory (``torch.onnx``, float32, dynamic batch and
sequence axes) to ``<model>/onnx/encoder.onnx``, or, where the model directory is read-only, to
``~/.cache/llmrouter/onnx/<model-identity>/``; ``llmrouter setup-models`` exports it ahead of time. Pooling
and normalisation are the transformers embedder's, in numpy. Float32 only: int8 dynamic quantisation was
measured and left out (``bench/route_throughput.py --runtimes``): even per-channel its vectors move far enough
(cosine to the float32 ones down to ~0.987) to flip routing decisions the artifacts were calibrated on.

``lanes: N`` adds N single-thread sessions: a call with several texts (the batcher under load, a query's two
halves) deals them to the lanes by token count and runs the lanes side by side, while a lone text keeps all
``num_threads`` for itself. On two cores two lanes embed about 15% more queries per second than one
two-thread session: small matrices leave intra-op threads waiting on each other at every op, and a core
taken by the Serve proxy stalls one lane rather than every op.

The transformers embedder stays the reference and the portable fallback (``backend: transformers``); a
test checks the two agree to 1e-4 per vector and decide identically on the test split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from routers.engines.base import Embedder, EmbedderConfig, model_identity
from routers.engines.batching import length_buckets, pad_token_ids
from routers.errors import EngineError

logger = logging.getLogger(__name__)

ONNX_FILE = "encoder.onnx"
ONNX_OPSET = 17
#: bumped when the export itself changes, so older exports are redone: 2 traces the eager attention (plain
#: MatMul/Softmax, which ONNX Runtime fuses and runs faster than the traced SDPA graph)
EXPORT_VERSION = 2
USER_ONNX_DIR = Path("~/.cache/llmrouter/onnx")


def _identity_slug(model_dir: Path) -> str:
    digest = hashlib.sha256(_identity_json(model_dir).encode()).hexdigest()
    return f"{model_dir.name}-{digest[:12]}"


def onnx_candidates(model_dir: Path) -> list[Path]:
    """Where the exported encoder may lie, in the order looked at: beside the weights, then the user cache."""
    return [model_dir / "onnx" / ONNX_FILE, USER_ONNX_DIR.expanduser() / _identity_slug(model_dir) / ONNX_FILE]


def _identity_json(model_dir: Path) -> str:
    return json.dumps({**model_identity(str(model_dir)), "export": EXPORT_VERSION}, sort_keys=True)


def _is_current(onnx_path: Path, model_dir: Path) -> bool:
    """The export exists and was made from these weights (the marker beside it records their identity)."""
    marker = onnx_path.with_suffix(".json")
    try:
        return onnx_path.is_file() and marker.read_text() == _identity_json(model_dir)
    except OSError:
        return False


def export_encoder(model_dir: str | Path) -> Path:
    """The exported encoder of ``model_dir``: found when current, else exported (atomically, so replicas
    starting together never read half a file) where the first writable candidate place is."""
    model_dir = Path(model_dir)
    for candidate in onnx_candidates(model_dir):
        if _is_current(candidate, model_dir):
            return candidate
    errors = []
    for candidate in onnx_candidates(model_dir):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            _export_to(model_dir, candidate)
            return candidate
        except OSError as exc:  # a read-only model mount: try the next place
            errors.append(f"{candidate.parent}: {exc}")
    raise EngineError(f"cannot write the ONNX export of {model_dir}: " + "; ".join(errors))


def _export_to(model_dir: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True,
                                      attn_implementation="eager").eval()
    if model.config.model_type == "longformer":
        raise EngineError("the ONNX embedder does not run Longformer (global attention); use backend: transformers")
    inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in tokenizer.model_input_names]

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(inputs, tensors, strict=True))).last_hidden_state

    example = tokenizer(["an example query to trace"], return_tensors="pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "last_hidden_state"]}
    handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(handle)
    try:
        # The tracer warns about every data-dependent branch in the model code; the export is checked by
        # the agreement test instead (tests/test_onnx_embedder.py).
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Encoder(), tuple(example[name] for name in inputs), tmp, input_names=inputs,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                              dynamo=False)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    target.with_suffix(".json").write_text(_identity_json(model_dir))
    logger.info("exported %s to %s", model_dir, target)


def _session(path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineError("backend: onnx needs the onnxruntime package (pip install onnxruntime), or use "
                          "backend: transformers") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin by default; beside the Serve proxy and the ingress on a few cores they would
    # burn the CPU those need between queries.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def balanced_shares(lengths: Sequence[int], lanes: int) -> list[list[int]]:
    """Indices of ``lengths`` dealt to ``lanes`` so that each lane's token total is about equal (longest first,
    each to the lightest lane): the lanes finish together."""
    shares: list[list[int]] = [[] for _ in range(lanes)]
    load = [0] * lanes
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        lightest = load.index(min(load))
        shares[lightest].append(index)
        load[lightest] += lengths[index]
    return shares


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class OnnxEmbedder(Embedder):
    """Mean- or CLS-pooled encoder embeddings on ONNX Runtime's CPU kernels, batched by token length."""

    def __init__(self, config: EmbedderConfig) -> None:
        from transformers import AutoTokenizer

        if config.device not in ("auto", "cpu"):
            raise EngineError(f"backend: onnx runs on the CPU; device {config.device!r} needs backend: transformers")
        self.config = config
        path = Path(config.resolved_model())
        self.model_name = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                            if n in self.tokenizer.model_input_names]
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        exported = export_encoder(path)
        self.session = _session(exported, config.num_threads or os.cpu_count() or 1)
        # lanes: one single-thread session each, so a call with several texts runs them side by side
        self.lane_sessions = [_session(exported, 1) for _ in range(config.lanes)] if config.lanes > 1 else []
        self._lane_pool = (ThreadPoolExecutor(len(self.lane_sessions), thread_name_prefix="onnx-lane")
                           if self.lane_sessions else None)
        with open(path / "config.json") as f:
            self.dim = int(json.load(f)["hidden_size"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        rows = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length,
                              add_special_tokens=True)["input_ids"]
        if self._lane_pool is None or len(rows) < 2:
            self._embed_into(out, rows, range(len(rows)), self.session)
            return out
        shares = balanced_shares([len(r) for r in rows], len(self.lane_sessions))
        done = [self._lane_pool.submit(self._embed_into, out, rows, share, session)
                for share, session in zip(shares, self.lane_sessions, strict=True) if share]
        for future in done:
            future.result()
        return out

    def _embed_into(self, out: np.ndarray, rows: list[list[int]], indices: Sequence[int], session: Any) -> None:
        """Embed ``rows[indices]`` on ``session`` in length buckets, writing each vector to its row of ``out``."""
        indices = list(indices)
        for bucket in length_buckets([len(rows[i]) for i in indices], self.config.max_batch_size):
            members = [indices[k] for k in bucket]
            out[members] = self._embed_rows([rows[i] for i in members], session)

    def _embed_rows(self, rows: list[list[int]], session: Any) -> np.ndarray:
        ids, mask = pad_token_ids(rows, self.pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {name: feeds[name] for name in self.input_names})[0]
        pooled = hidden[:, 0] if self.config.pooling == "cls" else mean_pool(hidden, mask)
        return l2_normalise(pooled) if self.config.normalize else pooled
