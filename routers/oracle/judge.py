"""Blind judging: a judge model grades the medium and large answers without knowing which is which.

Bias control (seed 002, "Blind Judging"): the prompt holds the question, the reference answer when
there is one, and the two answers labelled only "Answer A" and "Answer B". Which model is A is decided
per query by a seeded hash, so the judge cannot learn a position -> model mapping and a position bias
spreads evenly over both models. Model names never enter the prompt.

The judge answers one verdict line per answer (``A: correct``); :func:`parse_verdicts` accepts the usual
drift (``**Answer A**: Incorrect``, ``B - IDK``, ``A: wrong``) but not an echo of the format line
(``A: correct|idk``). A missing or unreadable verdict is
reported on the result (``unparsed``) and counted as incorrect, so a judge failure never turns into a
false "correct".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from routers.engines import Generator, SamplingParams
from routers.policy.matrix import Outcome

Role = Literal["medium", "large"]
Order = tuple[Role, Role]
LETTERS = ("A", "B")

JUDGE_TEMPLATE = """You are grading two anonymous answers to the same question.

Question:
{question}

{reference}

Answer A:
{answer_a}

Answer B:
{answer_b}

Grade each answer on its final result only:
- correct: the final answer matches the reference (or is right, when there is no reference)
- incorrect: the final answer is wrong or missing
- idk: the answer declines, e.g. says it does not know or cannot answer

Reply with exactly two lines and nothing else:
A: correct|incorrect|idk
B: correct|incorrect|idk"""

_VERDICT_WORDS: dict[str, Outcome] = {
    "correct": Outcome.CORRECT, "right": Outcome.CORRECT, "true": Outcome.CORRECT, "yes": Outcome.CORRECT,
    "incorrect": Outcome.INCORRECT, "not correct": Outcome.INCORRECT, "wrong": Outcome.INCORRECT,
    "false": Outcome.INCORRECT, "no": Outcome.INCORRECT,
    "idk": Outcome.IDK, "i don't know": Outcome.IDK, "i dont know": Outcome.IDK, "unknown": Outcome.IDK,
    "abstain": Outcome.IDK, "abstained": Outcome.IDK, "declined": Outcome.IDK, "declines": Outcome.IDK,
}
# Longest words first so "incorrect" / "not correct" win over "correct". A word followed by "|" or "/"
# is the judge echoing the format line ("A: correct|idk"), not a verdict.
_WORDS_ALT = "|".join(re.escape(w) for w in sorted(_VERDICT_WORDS, key=len, reverse=True))
_VERDICT_LINE_RE = re.compile(
    r"^[\s\*\-#>]*(?:answer\s*)?\**\s*([AB])\s*\**\s*(?::|-|=|–|is)\s*\**\s*(" + _WORDS_ALT + r")\b(?!\s*[|/])",
    re.IGNORECASE | re.MULTILINE,
)


def answer_order(query: str, seed: int) -> Order:
    """Which model is "Answer A" for this query: a seeded hash, stable across runs and workers."""
    digest = hashlib.sha256(f"{seed}\x00{query}".encode()).digest()
    return ("medium", "large") if digest[0] % 2 == 0 else ("large", "medium")


def reference_block(reference: str | None) -> str:
    if reference is None or not str(reference).strip():
        return "There is no reference answer; judge from your own knowledge."
    return f"Reference answer:\n{str(reference).strip()}"


def clip(text: str, max_chars: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= max_chars else text[:max_chars] + " [...]"


def build_judge_prompt(question: str, reference: str | None, answer_a: str, answer_b: str,
                       max_answer_chars: int = 2000) -> str:
    """The judge's user message: no model names, answers labelled A and B only."""
    return JUDGE_TEMPLATE.format(
        question=question.strip(), reference=reference_block(reference),
        answer_a=clip(answer_a, max_answer_chars) or "(empty)", answer_b=clip(answer_b, max_answer_chars) or "(empty)",
    )


def parse_verdicts(text: str) -> dict[str, Outcome]:
    """Letter -> verdict from the judge's reply; the first verdict given for a letter counts."""
    verdicts: dict[str, Outcome] = {}
    for letter, word in _VERDICT_LINE_RE.findall(text or ""):
        key = letter.upper()
        if key not in verdicts:
            verdicts[key] = _VERDICT_WORDS[" ".join(word.lower().split())]
    return verdicts


@dataclass
class JudgeRequest:
    query: str
    reference: str | None
    medium_answer: str
    large_answer: str


@dataclass
class JudgeVerdict:
    """The judge's outcomes, already mapped back to the models; ``unparsed`` lists the roles whose
    verdict could not be read (each counted as incorrect)."""

    medium: Outcome
    large: Outcome
    order: Order
    raw: str
    unparsed: list[Role] = field(default_factory=list)


def deanonymise(verdicts: dict[str, Outcome], order: Order, raw: str = "") -> JudgeVerdict:
    """Letter verdicts -> (medium, large) outcomes; a missing letter is incorrect and reported."""
    by_role: dict[Role, Outcome] = {}
    unparsed: list[Role] = []
    for letter, role in zip(LETTERS, order):
        if letter in verdicts:
            by_role[role] = verdicts[letter]
        else:
            by_role[role] = Outcome.INCORRECT
            unparsed.append(role)
    return JudgeVerdict(medium=by_role["medium"], large=by_role["large"], order=order, raw=raw,
                        unparsed=sorted(unparsed))


class BlindJudge:
    """Grades (medium, large) answer pairs with a judge model, blind to which model wrote which."""

    def __init__(self, generator: Generator, seed: int = 0, params: SamplingParams | None = None,
                 max_answer_chars: int = 2000) -> None:
        self.generator = generator
        self.seed = seed
        self.params = params or SamplingParams(temperature=0.0, max_tokens=24)
        self.max_answer_chars = max_answer_chars

    @property
    def model_name(self) -> str:
        return self.generator.model_name

    def prompt_for(self, request: JudgeRequest) -> tuple[str, Order]:
        order = answer_order(request.query, self.seed)
        answers = {"medium": request.medium_answer, "large": request.large_answer}
        message = build_judge_prompt(request.query, request.reference, answers[order[0]], answers[order[1]],
                                     self.max_answer_chars)
        return self.generator.chat_prompt([{"role": "user", "content": message}]), order

    def judge(self, requests: Sequence[JudgeRequest]) -> list[JudgeVerdict]:
        """One batched generate call for all requests."""
        if not requests:
            return []
        prompts, orders = zip(*(self.prompt_for(r) for r in requests))
        results = self.generator.generate(list(prompts), self.params)
        return [deanonymise(parse_verdicts(result.text), order, result.text)
                for result, order in zip(results, orders)]
