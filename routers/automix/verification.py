"""AutoMix's confidence signals: few-shot-free self-verification and self-consistency.

**Self-verification.** The small model is shown the question and its own answer and asked whether the
answer is correct; N verdicts are sampled in one generate call (``n=N``, temperature > 0). Each verdict
is parsed into *yes*, *no* or *unparseable* (:func:`parse_verdict`). The verification score is

    p_ver = (#yes) / N

so an unparseable verdict counts as "not confirmed": a verifier that cannot say the answer is right gives
no evidence for keeping it, which errs towards escalating. The unparseable count is kept in
:class:`VerdictTally` so callers can report how often the verifier failed to answer the question asked.

**Self-consistency.** N answers are sampled from the small model and compared with its main answer after
normalisation (:func:`normalize_answer`): the final number for math, the option letter for multiple
choice, else lower-cased text without punctuation. The score is the share of samples that agree with the
main answer; :func:`answer_entropy` gives the normalised entropy of the sampled answers as a diagnostic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

VERIFY_TEMPLATE = (
    "Question: {question}\n\n"
    "Proposed answer: {answer}\n\n"
    "Is the proposed answer to the question correct? Reply with only Yes or No."
)

# Longer than any verdict prompt needs; keeps a rambling answer from pushing the question out of context.
MAX_ANSWER_CHARS_IN_VERIFY_PROMPT = 1500

Verdict = Literal["yes", "no", "unparseable"]

# Negative patterns are listed so that "incorrect" / "not correct" are never read as "correct": at the same
# position the longer (negative) match wins, and the earliest verdict word in the text decides.
_NEGATIVE = (
    r"no|nope|incorrect|wrong|false|invalid|not\s+(?:correct|right|true|valid)|isn'?t\s+(?:correct|right)"
)
_POSITIVE = r"yes|yeah|yep|correct|right|true|valid"
_VERDICT_RE = re.compile(rf"\b(?:(?P<neg>{_NEGATIVE})|(?P<pos>{_POSITIVE}))\b", re.IGNORECASE)


def verification_prompt(question: str, answer: str) -> str:
    """User message asking the model to judge ``answer``; the serving engine applies the chat template."""
    answer = answer.strip()
    if len(answer) > MAX_ANSWER_CHARS_IN_VERIFY_PROMPT:
        answer = "..." + answer[-MAX_ANSWER_CHARS_IN_VERIFY_PROMPT:]
    return VERIFY_TEMPLATE.format(question=question.strip(), answer=answer)


def parse_verdict(text: str) -> Verdict:
    """The first verdict word in ``text``: yes/correct/true/right -> "yes"; no/incorrect/wrong/false/not
    correct -> "no"; none of them -> "unparseable". Markdown, quotes and case are ignored."""
    cleaned = re.sub(r"[*_`\"']+(?=\w)|(?<=\w)[*_`\"]+", "", text)
    match = _VERDICT_RE.search(cleaned)
    if match is None:
        return "unparseable"
    return "no" if match.group("neg") else "yes"


@dataclass(frozen=True)
class VerdictTally:
    """Counts of parsed verdicts for one answer."""

    yes: int
    no: int
    unparseable: int

    @property
    def total(self) -> int:
        return self.yes + self.no + self.unparseable

    @property
    def p_ver(self) -> float:
        """Share of all N verdicts that confirm the answer (unparseable ones count as not confirming)."""
        return self.yes / self.total if self.total else 0.0

    def votes(self) -> list[float]:
        """0/1 votes in LLMRouter's ``verifier_votes`` form (unparseable -> 0, matching ``p_ver``)."""
        return [1.0] * self.yes + [0.0] * (self.no + self.unparseable)

    def as_dict(self) -> dict[str, int]:
        return {"yes": self.yes, "no": self.no, "unparseable": self.unparseable}


def tally_verdicts(samples: Sequence[str]) -> VerdictTally:
    counts = Counter(parse_verdict(s) for s in samples)
    return VerdictTally(yes=counts["yes"], no=counts["no"], unparseable=counts["unparseable"])


# --- self-consistency ----------------------------------------------------------------------------
AnswerKind = Literal["choice", "number", "text"]

_OPTION_LINE_RE = re.compile(r"(?:^|\n)\s*\(?([A-J])[\).:]\s+\S")
_GSM_FINAL_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_ANSWER_IS_NUMBER_RE = re.compile(r"answer\s*(?:is|:)?\s*:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
# Option letters are matched in upper case only, so "the answer is a dog" or "I think" are not options.
_ANSWER_IS_LETTER_RE = re.compile(r"(?i:answer)\s*(?:(?i:is)|:)\s*:?\s*\(?([A-J])\b\)?")
_LEADING_LETTER_RE = re.compile(r"^\s*\(?([A-J])(?:[\).:]|\s*$)")
_PAREN_LETTER_RE = re.compile(r"\(([A-J])\)")


def answer_kind(question: str, answer: str) -> AnswerKind:
    """Multiple choice when the question lists lettered options (two or more), number when the answer
    has one, else free text."""
    if len(set(_OPTION_LINE_RE.findall(question))) >= 2:
        return "choice"
    if _NUMBER_RE.search(answer):
        return "number"
    return "text"


def _canonical_number(raw: str) -> str:
    value = raw.replace(",", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else repr(round(number, 6))


def extract_number(text: str) -> str | None:
    """GSM8K's ``#### 42``, else "the answer is 42", else the last number in the text."""
    for pattern in (_GSM_FINAL_RE, _ANSWER_IS_NUMBER_RE):
        found = pattern.findall(text)
        if found:
            return _canonical_number(found[-1])
    numbers = _NUMBER_RE.findall(text)
    return _canonical_number(numbers[-1]) if numbers else None


def extract_choice(text: str) -> str | None:
    """ "The answer is (B)", else a leading "B." / "(B)", else the first "(B)" anywhere."""
    for pattern in (_ANSWER_IS_LETTER_RE, _LEADING_LETTER_RE, _PAREN_LETTER_RE):
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return None


def normalize_text(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def normalize_answer(text: str, kind: AnswerKind) -> str:
    """The comparable core of an answer; text that yields no number / letter falls back to its text."""
    extracted = (
        extract_choice(text) if kind == "choice" else extract_number(text) if kind == "number" else None
    )
    return extracted if extracted is not None else normalize_text(text)


def agreement_score(question: str, answer: str, samples: Sequence[str]) -> float:
    """Share of sampled answers whose normalised form equals the main answer's (0 with no samples)."""
    if not samples:
        return 0.0
    kind = answer_kind(question, answer)
    main = normalize_answer(answer, kind)
    return sum(normalize_answer(s, kind) == main for s in samples) / len(samples)


def answer_entropy(question: str, samples: Sequence[str]) -> float:
    """Entropy of the normalised sampled answers divided by log(N): 0 = all agree, 1 = all differ."""
    if len(samples) < 2:
        return 0.0
    kind = answer_kind(question, samples[0])
    counts = Counter(normalize_answer(s, kind) for s in samples)
    total = len(samples)
    entropy = -sum((c / total) * math.log(c / total) for c in counts.values())
    return entropy / math.log(total)
