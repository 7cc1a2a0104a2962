#!/usr/bin/env bash
# A separate venv with ulab-uiuc's LLMRouter (`llmrouter-lib` on PyPI), for bench/llmrouter_lib.py only.
# It is never a dependency of this project: its own venv, git-ignored, not in pyproject.toml.
#
#   bash scripts/llmrouter_lib_env.sh            # creates .venv-llmrouter-lib/ (about 2.1 GB); safe to rerun
#
# Environment knobs:
#   PYTHON=python3.11                 interpreter for the venv (default: the one .venv uses, else python3)
#   LLMROUTER_LIB_VENV=<dir>          where the venv goes (default: .venv-llmrouter-lib)
#   TORCH_CPU_INDEX=<url>             where the CPU torch wheel comes from when none is on this machine
#
# torch is pinned to this project's CPU build (2.13.0) and installed first, so the lib's `torch>=2.0`
# never pulls a CUDA wheel from PyPI; scikit-learn is pinned to the version .venv has, so both
# implementations' MLPRegressor is the same code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LIB_VERSION="0.4.0"
TORCH_VERSION="2.13.0"
SKLEARN_VERSION="1.9.1"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
VENV="${LLMROUTER_LIB_VENV:-.venv-llmrouter-lib}"

say() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    PY="${PYTHON:-}"
    if [ -z "$PY" ]; then
        if [ -x .venv/bin/python ]; then
            PY="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
        else
            PY=python3
        fi
    fi
    say "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
VENV_PY="$ROOT/$VENV/bin/python"
pip_install() { "$VENV_PY" -m pip install --disable-pip-version-check "$@"; }

# shellcheck source=scripts/cpu_torch.sh
. "$ROOT/scripts/cpu_torch.sh"
install_cpu_torch

say "llmrouter-lib $LIB_VERSION"
pip_install "llmrouter-lib==$LIB_VERSION" "torch==$TORCH_VERSION" "scikit-learn==$SKLEARN_VERSION"
torch_is_cpu_build || { echo "error: installing llmrouter-lib replaced the CPU torch build" >&2; exit 1; }

say "check"
LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV_PY" - <<'PY'
from importlib.metadata import version

from llmrouter.models import HybridLLMRouter, KNNRouter, MLPRouter  # noqa: F401

print("llmrouter-lib", version("llmrouter-lib"), "| torch", version("torch"), "| scikit-learn", version("scikit-learn"))
PY
