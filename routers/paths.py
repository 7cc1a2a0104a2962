"""Where relative paths point: one home for data, models, artifacts and run outputs.

Relative paths in every config resolve against ``LLMROUTER_HOME`` (default: the working directory). A Ray
job runs in Ray's temporary copy of the uploaded working directory, which leaves out git-ignored folders
(``models/``, ``runs/``) and is deleted with the Ray session; setting ``LLMROUTER_HOME`` to the checkout
(or a volume every node mounts) keeps the job's inputs found and its outputs durable.

Published data is not under ``LLMROUTER_HOME``: a path that starts with ``${LLMROUTER_DATA}`` names a file in the
data directory (``routers.data.location``), e.g. ``${LLMROUTER_DATA}/mmlu_train.jsonl``.
"""

from __future__ import annotations

import os
from pathlib import Path

from routers.data.location import expand_data_path
from routers.errors import ConfigError

HOME_ENV = "LLMROUTER_HOME"
LOCAL_PREFIXES = ("/", "./", "../", "models/", "artifacts/", "~")


def home() -> Path:
    return Path(os.environ.get(HOME_ENV, os.getcwd()))


def resolve_path(path: str | Path) -> Path:
    """``path`` with a leading ``${LLMROUTER_DATA}`` expanded to the data directory
    (``routers.data.location.expand_data_path``) and ``~`` expanded; relative paths against ``LLMROUTER_HOME``
    (default: the working directory)."""
    path = Path(expand_data_path(str(path))).expanduser()
    return path if path.is_absolute() else home() / path


def existing_path(path: str | Path, key: str) -> str:
    """``path`` resolved (``resolve_path``) and made absolute, or a ConfigError naming ``key`` and where it looked."""
    resolved = resolve_path(path)
    if not resolved.exists():
        raise ConfigError(f"{key}: {str(path)!r} does not exist (looked at {resolved}); "
                          "run `bash scripts/setup.sh` first?")
    return str(resolved.resolve())


def config_file(path: str | Path) -> Path:
    """A config file named on a command line or in another config: as given when it exists there (relative to
    the working directory, which for a submitted Ray job is its uploaded copy: the files that were submitted),
    else resolved against ``LLMROUTER_HOME``."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return resolve_path(path)


def model_looks_local(model: str) -> bool:
    """A model reference that must be a directory here; anything else (``org/name``) is a hub id."""
    return model.startswith(LOCAL_PREFIXES) or model.count("/") != 1


def resolve_model_path(model: str, key: str | None = None) -> str:
    """A local model directory as an absolute path, or a hub id unchanged.

    A local-looking reference that does not exist is a ConfigError naming ``key`` and the directory looked
    at, raised where the config is read rather than as a loader's stack trace inside a Ray actor.
    """
    resolved = resolve_path(model)
    if resolved.exists():
        return str(resolved.resolve())
    if not model_looks_local(model):
        return model
    base = os.environ.get(HOME_ENV)
    relative_to = f"{HOME_ENV}={base}" if base else f"the working directory {os.getcwd()} ({HOME_ENV} is not set)"
    where = f"{key}: " if key else ""
    raise ConfigError(f"{where}model directory {model!r} does not exist (looked at {resolved}; relative paths "
                      f"resolve against {relative_to}); the local models are built by `bash scripts/setup.sh`")
