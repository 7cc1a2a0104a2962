"""Progress bars for long steps; ``--quiet`` (or LLMROUTER_QUIET=1) silences all of them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_quiet = os.environ.get("LLMROUTER_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet
    os.environ["LLMROUTER_QUIET"] = "1" if quiet else "0"


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=_quiet, file=sys.stderr, leave=False))


def progress_bar(desc: str, total: int, unit: str = "it", enabled: bool = True) -> tqdm:
    """A bar for a long step; ``enabled=False`` (a caller's own verbosity switch) or quiet mode hides it."""
    return tqdm(desc=desc, total=total, unit=unit, disable=_quiet or not enabled, file=sys.stderr, leave=False)


def log(message: str) -> None:
    if not _quiet:
        print(message, file=sys.stderr)
