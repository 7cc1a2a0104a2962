# Sourced by scripts/setup.sh and scripts/llmrouter_lib_env.sh: install the pinned CPU build of torch into
# a venv, never PyPI's CUDA one. The caller sets VENV_PY (the venv's python), TORCH_VERSION and
# TORCH_CPU_INDEX, and defines say() and pip_install().

torch_is_cpu_build() {
    "$VENV_PY" - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
import torch
wanted = sys.argv[1]
sys.exit(0 if torch.__version__.split("+")[0] == wanted and torch.version.cuda is None else 1)
PY
}

# Reads the installed wheel's metadata, so it works before torch's dependencies are installed.
torch_wheel_is_cpu() {
    "$VENV_PY" - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import requires, version
wanted = sys.argv[1]
cuda_deps = [r for r in requires("torch") or [] if r.lower().startswith("nvidia")]
sys.exit(0 if version("torch").split("+")[0] == wanted and not cuda_deps else 1)
PY
}

install_cpu_torch() {
    if torch_is_cpu_build; then
        say "torch $TORCH_VERSION (CPU) already installed"
        return 0
    fi
    say "installing torch $TORCH_VERSION, CPU build"
    # Never torch from plain PyPI: its Linux wheel depends on the CUDA libraries (several GB).
    # A CPU wheel already on this machine (pip's find-links) first, then its few pure-Python
    # dependencies from the usual index; otherwise PyTorch's CPU index.
    if pip_install --no-index --no-deps "torch==$TORCH_VERSION" >/dev/null 2>&1 && torch_wheel_is_cpu; then
        pip_install "torch==$TORCH_VERSION"
    else
        pip_install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
    fi
    torch_is_cpu_build || { echo "error: the installed torch is not the $TORCH_VERSION CPU build" >&2; exit 1; }
}
