"""Turn the router model's generated text into one candidate name, and say how sure that match is.

Matching goes from strict to loose and stops at the first that succeeds:

* ``exact``: the first non-empty line, stripped of surrounding quotes/punctuation, is a candidate name.
* ``normalized``: equal after lower-casing, dropping an organisation prefix (``mistralai/``) and all
  punctuation/whitespace; or exactly one candidate's normalised name occurs inside the normalised text.
* ``fuzzy``: the best ``difflib.SequenceMatcher`` ratio between normalised strings is at least
  ``fuzzy_threshold`` and no other candidate reaches the same ratio.
* ``fallback``: nothing matched; the configured fallback model (the large one by default: when the
  router cannot say, the stronger model is the safe choice).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ParseMethod = Literal["exact", "normalized", "fuzzy", "fallback"]

_STRIP_CHARS = " \t\r\n\"'`*.,;:!?()[]{}<>"
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class ParseResult:
    name: str
    method: ParseMethod
    raw: str

    @property
    def matched(self) -> bool:
        return self.method != "fallback"


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip(_STRIP_CHARS):
            return line.strip(_STRIP_CHARS)
    return ""


def normalize_name(name: str, drop_org: bool = True) -> str:
    """'mistralai/Mixtral-8x7B-Instruct-v0.1' -> 'mixtral8x7binstructv01' (org prefix dropped)."""
    text = name.strip().lower()
    if drop_org and "/" in text:
        text = text.rsplit("/", 1)[1]
    return _NON_ALNUM.sub("", text)


def _normalized_match(line: str, text: str, candidates: Sequence[str]) -> str | None:
    line_forms = {normalize_name(line), normalize_name(line, drop_org=False)}
    for name in candidates:
        if line_forms & {normalize_name(name), normalize_name(name, drop_org=False)}:
            return name
    whole = normalize_name(text, drop_org=False)
    contained = [name for name in candidates if normalize_name(name) and normalize_name(name) in whole]
    return contained[0] if len(contained) == 1 else None


def _fuzzy_match(line: str, candidates: Sequence[str], threshold: float) -> str | None:
    target = normalize_name(line)
    if not target:
        return None
    ratios = [difflib.SequenceMatcher(None, target, normalize_name(name)).ratio() for name in candidates]
    best = max(ratios)
    if best < threshold or ratios.count(best) > 1:
        return None
    return candidates[ratios.index(best)]


def parse_llm_name(
    text: str, candidates: Sequence[str], fallback: str, fuzzy_threshold: float = 0.8
) -> ParseResult:
    """Map generated ``text`` to one of ``candidates`` (see the module docstring for the rules)."""
    if not candidates:
        raise ValueError("parse_llm_name needs at least one candidate name")
    line = first_line(text)
    if line in candidates:
        return ParseResult(line, "exact", text)
    if line:
        name = _normalized_match(line, text, candidates)
        if name is not None:
            return ParseResult(name, "normalized", text)
        name = _fuzzy_match(line, candidates, fuzzy_threshold)
        if name is not None:
            return ParseResult(name, "fuzzy", text)
    return ParseResult(fallback, "fallback", text)
