"""The oracle's 9-cell matrix: how the medium and large models did on a query -> the routing policy.

Exactly the seed's table (002, "Oracle Logic"). The medium model is the cheap one (``small`` here).

| medium    | large     | policy          | rationale                      |
|-----------|-----------|-----------------|--------------------------------|
| correct   | correct   | Standard_Query  | both correct -> optimise cost  |
| correct   | incorrect | Standard_Query  | medium correct -> use medium   |
| correct   | idk       | Standard_Query  | medium correct is best         |
| incorrect | correct   | Complex_Query   | classic escalation             |
| incorrect | incorrect | Ambiguous_Query | both failed -> don't escalate  |
| incorrect | idk       | Complex_Query   | IDK safer than incorrect       |
| idk       | correct   | Complex_Query   | large knows the answer         |
| idk       | incorrect | Ambiguous_Query | IDK was safer                  |
| idk       | idk       | Ambiguous_Query | both failed -> don't escalate  |
"""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    IDK = "idk"


class PolicyLabel(str, Enum):
    STANDARD = "Standard_Query"
    COMPLEX = "Complex_Query"
    AMBIGUOUS = "Ambiguous_Query"


C, I, K = Outcome.CORRECT, Outcome.INCORRECT, Outcome.IDK

ORACLE_MATRIX: dict[tuple[Outcome, Outcome], tuple[PolicyLabel, str]] = {
    (C, C): (PolicyLabel.STANDARD, "both correct: optimise cost"),
    (C, I): (PolicyLabel.STANDARD, "medium correct: use medium"),
    (C, K): (PolicyLabel.STANDARD, "medium correct is best"),
    (I, C): (PolicyLabel.COMPLEX, "classic escalation"),
    (I, I): (PolicyLabel.AMBIGUOUS, "both failed: don't escalate"),
    (I, K): (PolicyLabel.COMPLEX, "IDK safer than incorrect"),
    (K, C): (PolicyLabel.COMPLEX, "large knows the answer"),
    (K, I): (PolicyLabel.AMBIGUOUS, "IDK was safer"),
    (K, K): (PolicyLabel.AMBIGUOUS, "both failed: don't escalate"),
}


def policy_for(medium: Outcome | str, large: Outcome | str) -> PolicyLabel:
    return ORACLE_MATRIX[(Outcome(medium), Outcome(large))][0]


def rationale_for(medium: Outcome | str, large: Outcome | str) -> str:
    return ORACLE_MATRIX[(Outcome(medium), Outcome(large))][1]


def outcome_from_performance(performance: float, response: str | None = None) -> Outcome:
    """Routing data's 0/1 correctness -> an outcome; a wrong answer that declines to answer is IDK."""
    from routers.policy.prompts import is_idk

    if performance >= 0.5:
        return Outcome.CORRECT
    if response is not None and is_idk(response):
        return Outcome.IDK
    return Outcome.INCORRECT
