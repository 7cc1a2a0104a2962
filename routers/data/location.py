"""Where the published routing data lies on this machine: one directory, named by ``LLMROUTER_DATA``.

The project carries no copy of public datasets; ``llmrouter data get NAME`` puts them in this directory and
every reader looks here. Its layout is the one of the shared data directory::

    <data dir>/mmlu_train.jsonl, gsm8k_test.jsonl, llm_candidates.json, ...   (routellm)
    <data dir>/multimodel/llmrouter/train.json, default_query_train.jsonl, ... (llmrouter)
    <data dir>/multimodel/routerbench/arc_challenge_train.csv, ...            (routerbench)
"""

from __future__ import annotations

import os
from pathlib import Path

from routers.errors import ConfigError

DATA_ENV = "LLMROUTER_DATA"
# Beside a checkout, CI and the development machines keep the data in ../shared/data.
SHARED_DATA_RELATIVE_TO_REPO = Path("..") / "shared" / "data"
# Where `llmrouter data get` writes when LLMROUTER_DATA is not set, so that a later read finds it.
USER_DATA_DIR = Path("~/.cache/llmrouter/data")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """Where ``data get`` writes without ``--dest``: ``LLMROUTER_DATA``, else the user's cache."""
    configured = os.environ.get(DATA_ENV)
    return Path(configured).expanduser() if configured else USER_DATA_DIR.expanduser()


def find_data_dir() -> Path | None:
    """``LLMROUTER_DATA`` when set; else ``../shared/data`` beside the checkout, else the user's cache, when
    either exists; else None."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured).expanduser()
    for candidate in (repo_root() / SHARED_DATA_RELATIVE_TO_REPO, USER_DATA_DIR.expanduser()):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def data_dir() -> Path:
    """The data directory, or a ConfigError saying how to get one."""
    found = find_data_dir()
    if found is None or not found.is_dir():
        where = f"{DATA_ENV}={found}" if found is not None else f"{DATA_ENV} is not set and neither " \
            f"{repo_root() / SHARED_DATA_RELATIVE_TO_REPO} nor {USER_DATA_DIR} exists"
        raise ConfigError(f"no routing-data directory ({where}); run `llmrouter data get NAME` "
                          f"(routellm, llmrouter, routerbench) or set {DATA_ENV}")
    return found
