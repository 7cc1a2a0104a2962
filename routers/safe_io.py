"""Safe artifact I/O: tensors in safetensors, everything else in JSON. Nothing here can run code on load."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from routers.errors import ArtifactError

# Formats whose loaders can execute code (pickle and its wrappers). We never read them.
UNSAFE_SUFFIXES = frozenset({".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt", ".npy", ".npz"})


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ArtifactError(f"{path}: tensors are only written as .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.suffix in UNSAFE_SUFFIXES:
        raise ArtifactError(f"{path}: refusing to load a {path.suffix} file (pickle-based formats can run code)")
    if path.suffix != ".safetensors":
        raise ArtifactError(f"{path}: expected a .safetensors file")
    if not path.exists():
        raise ArtifactError(f"{path}: file does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a valid safetensors file ({exc})") from exc


def assert_no_unsafe_weights(directory: str | Path) -> None:
    """A model directory we load must hold safetensors weights, never pickle-based ones."""
    directory = Path(directory)
    if not directory.is_dir():
        return  # a hub id on a GPU cluster; transformers is told to accept safetensors only
    unsafe = sorted(p.name for p in directory.iterdir() if p.suffix in UNSAFE_SUFFIXES)
    if unsafe:
        raise ArtifactError(
            f"{directory} contains pickle-based weight files {unsafe}; convert them to safetensors "
            "(they can execute code when loaded)"
        )


def copy_checkpoint_files(source: str | Path, names: Sequence[str], target: str | Path) -> Path:
    """Copy ``names`` from a checkpoint directory into a fresh ``target``: only what an artifact needs
    (the adapter), never the optimizer state or anything else a checkpoint may hold."""
    source, target = Path(source), Path(target)
    missing = [n for n in names if not (source / n).exists()]
    if missing:
        raise ArtifactError(f"checkpoint {source} lacks {missing}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / name, target / name)
    return target
