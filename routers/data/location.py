"""Where the published routing data lies on this machine: one directory, named by ``LLMROUTER_DATA``.

The project carries no copy of public datasets; ``llmrouter data get NAME`` puts them in this directory and
every reader looks here. Its layout is the one of the shared data directory::

    <data dir>/mmlu_train.jsonl, gsm8k_test.jsonl, llm_candidates.json, ...   (routellm)
    <data dir>/multimodel/llmrouter/train.json, default_query_train.jsonl, ... (llmrouter)
    <data dir>/multimodel/routerbench/arc_challenge_train.csv, ...            (routerbench)

A config (or a command-line path) names a file in it as ``${LLMROUTER_DATA}/mmlu_train.jsonl``: the one
spelling, expanded by :func:`expand_data_path` wherever paths are resolved (``routers.paths.resolve_path``), to
``LLMROUTER_DATA`` when it is set, else to :func:`data_dir`'s fallbacks, else a ConfigError naming
``llmrouter data get``. Nothing is looked up until a path is resolved, so a config that names data but is only
served needs none.
"""

from __future__ import annotations

import os
from pathlib import Path

from routers.errors import ConfigError

DATA_ENV = "LLMROUTER_DATA"
#: How a config names the data directory: the first component of a path, e.g. ``${LLMROUTER_DATA}/mmlu_test.jsonl``.
DATA_PLACEHOLDER = "${" + DATA_ENV + "}"
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


def expand_data_path(path: str) -> str:
    """``path`` with a leading ``${LLMROUTER_DATA}`` replaced by :func:`data_dir` (a ConfigError saying how to
    get the data when there is none); any other path unchanged. The placeholder anywhere but at the start is
    a ConfigError: it would otherwise be read as a directory of that name."""
    if DATA_PLACEHOLDER not in path:
        return path
    rest = path.removeprefix(DATA_PLACEHOLDER)
    if DATA_PLACEHOLDER in rest or not (rest == "" or rest.startswith("/")):
        raise ConfigError(f"{path!r}: {DATA_PLACEHOLDER} can only start a path, as in "
                          f"{DATA_PLACEHOLDER}/mmlu_train.jsonl")
    return str(data_dir() / rest.lstrip("/"))


def missing_data_hint(path: str | Path) -> str:
    """For a file that does not exist: when it would lie in the data directory, the ``llmrouter data get NAME``
    that puts it there (or that none does: a misspelt name); else an empty string."""
    found = find_data_dir()
    if found is None:
        return ""
    try:
        relative = Path(path).resolve().relative_to(found.resolve()).as_posix()
    except ValueError:
        return ""
    from routers.data.fetch import DATASETS  # the published files each NAME puts in the data directory

    names = [name for name, spec in DATASETS.items() if any(f.path == relative for f in spec.files)]
    if not names:
        return f" in the data directory {found}, and no `llmrouter data get NAME` ({', '.join(DATASETS)}) puts it there"
    spec = DATASETS[names[0]]
    dest = "" if found.resolve() == default_data_dir().resolve() else f" --dest {found}"
    if spec.sources:  # a download writes the published sources, converted, under their own names
        return (f" in the data directory {found}: `llmrouter data get {spec.name} --from DIR{dest}` copies it there "
                f"from a data directory DIR that has it (a download converts {spec.name}'s published files instead)")
    return f" in the data directory {found}: `llmrouter data get {spec.name}{dest}` puts it there"
