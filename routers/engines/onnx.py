"""The sentence embedder on ONNX Runtime: the same weights as the transformers embedder, run by a runtime
that fuses attention, layer norm and GELU into single kernels.

The encoder is exported once from the local model directory (``torch.onnx``, float32, dynamic batch and
sequence axes) to ``<model>/onnx/encoder.onnx``, or, where the model directory is read-only, to
``~/.cache/llmrouter/onnx/<model-identity>/``; ``llmrouter setup-models`` exports it ahead of time. Pooling
and normalisation are the transformers embedder's, in numpy.

``quantize: int8`` runs a copy of the export whose matrix products take int8 weights (dynamic quantisation,
per channel), made once beside it: about twice the speed on CPUs with int8 dot products (VNNI). Its vectors
are not the float32 ones (cosine ~0.993 on average, ~0.98 at worst), so a query whose score lies at its
router's threshold may go the other way: ~1.5% of the shipped routers' decisions on the test split, at no
measured cost in routing quality (``bench/embedder_quantisation.py``). Activations are quantised per call, so
int8 embeds one text per call: batched, a text's vector would depend on the texts beside it.
Float32 stays the default.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from routers.engines.base import Embedder, EmbedderConfig, Quantize, model_identity
from routers.engines.batching import length_buckets, pad_token_ids
from routers.errors import EngineError

logger = logging.getLogger(__name__)

ONNX_FILE = "encoder.onnx"
ONNX_OPSET = 17
#: bumped when the export itself changes, so older exports are redone: 2 traces the eager attention (plain
#: MatMul/Softmax, which ONNX Runtime fuses and runs faster than the traced SDPA graph)
EXPORT_VERSION = 2
USER_ONNX_DIR = Path("~/.cache/llmrouter/onnx")
#: how each quantised form is made; recorded in its marker, so a change of settings redoes the file. int8:
#: dynamic (activations quantised per call), weights per output channel, the matrix products only. Reduced
#: range (7-bit weights) keeps the u8 x s8 products from saturating on CPUs without VNNI; on this VNNI CPU
#: full range measured no closer to float32 (bench/embedder_quantisation.py)
QUANTISATIONS: dict[str, dict[str, Any]] = {
    "int8": {"per_channel": True, "reduce_range": True, "ops": ["MatMul"]},
}


def _identity_slug(model_dir: Path) -> str:
    digest = hashlib.sha256(_identity_json(model_dir).encode()).hexdigest()
    return f"{model_dir.name}-{digest[:12]}"


def onnx_candidates(model_dir: Path, quantize: Quantize = "none") -> list[Path]:
    """Where the exported encoder may lie, in the order looked at: beside the weights, then the user cache."""
    name = ONNX_FILE if quantize == "none" else f"encoder_{quantize}.onnx"
    return [model_dir / "onnx" / name, USER_ONNX_DIR.expanduser() / _identity_slug(model_dir) / name]


def _identity_json(model_dir: Path, quantize: Quantize = "none") -> str:
    identity: dict[str, Any] = {**model_identity(str(model_dir)), "export": EXPORT_VERSION}
    if quantize != "none":
        identity["quantize"] = QUANTISATIONS[quantize]
    return json.dumps(identity, sort_keys=True)


def _is_current(onnx_path: Path, identity: str) -> bool:
    """The export exists and was made from these weights (the marker beside it records their identity)."""
    marker = onnx_path.with_suffix(".json")
    try:
        return onnx_path.is_file() and marker.read_text() == identity
    except OSError:
        return False


def export_encoder(model_dir: str | Path, quantize: Quantize = "none") -> Path:
    """The exported encoder of ``model_dir`` (its int8 form with ``quantize: int8``, made from the float32
    export): found when current, else made (atomically, so replicas starting together never read half a
    file) where the first writable candidate place is."""
    model_dir = Path(model_dir)
    identity = _identity_json(model_dir, quantize)
    for candidate in onnx_candidates(model_dir, quantize):
        if _is_current(candidate, identity):
            return candidate
    if quantize == "none":
        def make(tmp: str) -> None:
            _export_to(model_dir, tmp)
    else:
        source = export_encoder(model_dir)

        def make(tmp: str) -> None:
            _quantise(source, tmp, quantize)
    errors = []
    for candidate in onnx_candidates(model_dir, quantize):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(candidate, make)
        except OSError as exc:  # a read-only model mount: try the next place
            errors.append(f"{candidate.parent}: {exc}")
            continue
        candidate.with_suffix(".json").write_text(identity)
        logger.info("exported %s to %s", model_dir, candidate)
        return candidate
    raise EngineError(f"cannot write the ONNX export of {model_dir}: " + "; ".join(errors))


def _write_atomically(target: Path, make: Callable[[str], None]) -> None:
    handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(handle)
    try:
        make(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export_to(model_dir: Path, target: str) -> None:
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
    # The tracer warns about every data-dependent branch in the model code; the export is checked by the
    # agreement test instead (tests/test_onnx_embedder.py).
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder(), tuple(example[name] for name in inputs), target, input_names=inputs,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                          dynamo=False)


def _quantise(source: Path, target: str, quantize: Quantize) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EngineError("quantize: int8 needs the onnxruntime package (pip install onnxruntime)") from exc
    settings = QUANTISATIONS[quantize]
    # quantize_dynamic logs a pre-processing hint on the root logger; the shape inference it suggests
    # changes nothing for this graph
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), target, weight_type=QuantType.QInt8, op_types_to_quantize=settings["ops"],
                         per_channel=settings["per_channel"], reduce_range=settings["reduce_range"])
    finally:
        root.setLevel(level)


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
        exported = export_encoder(path, config.quantize)
        self.session = _session(exported, config.num_threads or os.cpu_count() or 1)
        # lanes: one single-thread session each, so a call with several texts runs them side by side
        self.lane_sessions = [_session(exported, 1) for _ in range(config.lanes)] if config.lanes > 1 else []
        self._lane_pool = (ThreadPoolExecutor(len(self.lane_sessions), thread_name_prefix="onnx-lane")
                           if self.lane_sessions else None)
        with open(path / "config.json") as f:
            self.dim = int(json.load(f)["hidden_size"])
        # int8 quantises each call's activations with one scale for the whole tensor, so batched texts would
        # move each other's vectors (and a query's decision would hang on its batch-mates): one text per call
        self.texts_per_call = 1 if config.quantize != "none" else config.max_batch_size

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
        for bucket in length_buckets([len(rows[i]) for i in indices], self.texts_per_call):
            members = [indices[k] for k in bucket]
            out[members] = self._embed_rows([rows[i] for i in members], session)

    def _embed_rows(self, rows: list[list[int]], session: Any) -> np.ndarray:
        ids, mask = pad_token_ids(rows, self.pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {name: feeds[name] for name in self.input_names})[0]
        pooled = hidden[:, 0] if self.config.pooling == "cls" else mean_pool(hidden, mask)
        return l2_normalise(pooled) if self.config.normalize else pooled
