"""Automatic scoring of a model's answer against a benchmark's reference: correct, incorrect or IDK.

Definitions:

* **number metric** (``exact_answer``, ``gsm8k``): the answer's final number (GSM8K's ``#### 72``, else
  "the answer is 72" / "Answer: 72", else ``\\boxed{72}``, else the last number in the text), with
  commas, ``$`` and a trailing period removed, equals the reference's number numerically.
* **choice metric** (``multiple_choice``, ``mmlu``, ``multiple_choice_correct``): the answer's option
  letter A-D equals the reference letter.
* **IDK**: the answer declines ("I don't know", "cannot answer", "not sure", "unable to determine", ...)
  and does not then commit to an explicit final answer ("#### 72", "the answer is 72", "Answer: B").
  Declining is checked first; the commitment exception exists because reasoning text such as "we cannot
  determine x directly, so ..." followed by "#### 5" is an answer, not an abstention.

``score_answer`` returns ``None`` when it cannot score automatically (unknown metric, or no reference):
the blind judge decides those.
"""

from __future__ import annotations

import re

from routers.policy.matrix import Outcome

NUMBER_METRICS = frozenset({"exact_answer", "gsm8k", "exact_match", "number"})
CHOICE_METRICS = frozenset({"multiple_choice", "mmlu", "multiple_choice_correct", "choice"})

_NUMBER = r"(?:-\$?|\$-?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_GSM_FINAL_RE = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS_NUMBER_RE = re.compile(
    r"\banswer\s*(?:is|=|:)\s*(?:about\s+|approximately\s+)?\**\s*(" + _NUMBER + ")", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}")
_ANY_NUMBER_RE = re.compile(_NUMBER)

# Option letters are upper case only, so the article "a" or the pronoun "I" never count as options.
_ANSWER_LETTER_RE = re.compile(
    r"(?i:\banswer)\s*(?:(?i:is)|:|=)?\s*(?:(?i:option)\s+)?[\*\(\[]*([A-D])\b(?![\w'])")
_OPTION_LETTER_RE = re.compile(r"(?i:\boption)\s+\(?([A-D])\b")
_LEADING_LETTER_RE = re.compile(r"^\s*[\*\(\[]*([A-D])(?:[\)\].:]|\s*$|\s+-\s)")
_PAREN_LETTER_RE = re.compile(r"\(([A-D])\)")

IDK_RE = re.compile(
    r"\b(?:i\s+(?:do\s*n[o']?t|dont|really\s+don't)\s+know|i\s+am\s+not\s+sure|i'm\s+not\s+sure|not\s+sure|"
    r"(?:can\s*not|can't|cannot|could\s*n[o']?t|unable\s+to|impossible\s+to)\s+(?:be\s+)?"
    r"(?:answer(?:ed)?|determine[d]?|know|tell|say|solve[d]?)|"
    r"not\s+enough\s+information|insufficient\s+information|no\s+way\s+to\s+(?:know|determine|tell)|"
    r"i\s+have\s+no\s+idea|no\s+idea|idk)\b",
    re.IGNORECASE,
)


def normalize_number(raw: str) -> str | None:
    """'$1,200.50' -> '1200.5', '72.' -> '72', '-3.0' -> '-3'; None when it is not a number."""
    value = raw.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return None
    if number.is_integer():
        return str(int(number))
    return f"{round(number, 6):.6f}".rstrip("0").rstrip(".")


def _last_normalized(matches: list[str]) -> str | None:
    for raw in reversed(matches):
        normalized = normalize_number(raw)
        if normalized is not None:
            return normalized
    return None


def extract_number(text: str | None) -> str | None:
    """The final numeric answer of a (GSM8K-style) response, normalised; None when there is no number."""
    if not text:
        return None
    for pattern in (_GSM_FINAL_RE, _ANSWER_IS_NUMBER_RE, _BOXED_RE, _ANY_NUMBER_RE):
        found = _last_normalized(pattern.findall(text))
        if found is not None:
            return found
    return None


def extract_choice(text: str | None) -> str | None:
    """The chosen option letter A-D: "Answer: B" / "the answer is (C)", else "option C", else a leading
    "B." / "(B)" / bare "B", else the first "(C)" anywhere; None when there is none."""
    if not text:
        return None
    for pattern in (_ANSWER_LETTER_RE, _OPTION_LETTER_RE):
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    for line in text.strip().splitlines()[:1]:
        match = _LEADING_LETTER_RE.match(line)
        if match:
            return match.group(1)
    match = _PAREN_LETTER_RE.search(text)
    return match.group(1) if match else None


def commits_to_answer(text: str) -> bool:
    """Whether the text states an explicit final answer ("#### 72", "the answer is 72", "Answer: B")."""
    return bool(_GSM_FINAL_RE.search(text) or _ANSWER_IS_NUMBER_RE.search(text)
                or _ANSWER_LETTER_RE.search(text) or _BOXED_RE.search(text))


def is_idk(text: str | None) -> bool:
    """The answer declines to answer (see the module docstring for the exact rule)."""
    if not text:
        return False
    return bool(IDK_RE.search(text)) and not commits_to_answer(text)


def metric_kind(metric: str | None) -> str | None:
    """'number', 'choice', or None when the metric has no automatic scorer."""
    name = (metric or "").strip().lower()
    if name in NUMBER_METRICS:
        return "number"
    if name in CHOICE_METRICS:
        return "choice"
    return None


def reference_value(ground_truth: str | None, kind: str) -> str | None:
    """The reference's comparable core: its number, or its option letter."""
    if ground_truth is None or not str(ground_truth).strip():
        return None
    text = str(ground_truth)
    if kind == "number":
        return extract_number(text)
    letter = text.strip().upper()
    return letter if letter in {"A", "B", "C", "D"} else extract_choice(text)


def can_auto_score(ground_truth: str | None, metric: str | None) -> bool:
    kind = metric_kind(metric)
    return kind is not None and reference_value(ground_truth, kind) is not None


def score_answer(answer: str | None, ground_truth: str | None, metric: str | None) -> Outcome | None:
    """IDK when the answer declines; else correct / incorrect against the reference; None when the
    metric or the missing reference rule out automatic scoring (the judge decides)."""
    if is_idk(answer):
        return Outcome.IDK
    kind = metric_kind(metric)
    if kind is None:
        return None
    expected = reference_value(ground_truth, kind)
    if expected is None:
        return None
    got = extract_number(answer) if kind == "number" else extract_choice(answer)
    return Outcome.CORRECT if got is not None and got == expected else Outcome.INCORRECT
