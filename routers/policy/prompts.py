"""The policy router's prompt (in-context route descriptions), its target text, and parsing of its output.

The router reads the routes as XML descriptions and the query, and writes the route name on the first
line followed by a one-line reason. Reasons describe the *kind* of query (task, size), never its answer,
so training on them cannot leak answers into the router (the seed's "query analysis").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from routers.policy.matrix import PolicyLabel

ROUTES = {
    PolicyLabel.STANDARD: "a clear question with one well-defined answer that a smaller model gets right",
    PolicyLabel.COMPLEX: "needs multi-step reasoning, specialised knowledge or careful calculation: "
                         "a smaller model fails where a stronger one succeeds",
    PolicyLabel.AMBIGUOUS: "under-specified, unanswerable or beyond both models: escalating does not help",
}

PROMPT_TEMPLATE = (
    "Pick the route for the user query. Answer with the route name, then a one-line reason.\n"
    "<routes>\n{routes}\n</routes>\n"
    "<query>{query}</query>\n"
    "Route:"
)

REASONS = {
    PolicyLabel.STANDARD: "a {kind} that a smaller model answers reliably; the cheaper model is enough.",
    PolicyLabel.COMPLEX: "a {kind} whose steps a smaller model gets wrong; the stronger model is worth its cost.",
    PolicyLabel.AMBIGUOUS: "a {kind} that even a stronger model misses; escalating would not help.",
}

TASK_KINDS = {"gsm8k": "math word problem", "mmlu": "multiple-choice knowledge question"}

IDK_PATTERNS = re.compile(
    r"\b(i do not know|i don't know|i dont know|i'm not sure|i am not sure|not enough information|"
    r"cannot (?:be )?(?:answer|determine)|can't (?:answer|determine)|unable to (?:answer|determine)|"
    r"no way to (?:know|determine)|insufficient information)\b",
    re.IGNORECASE,
)


def route_block() -> str:
    return "\n".join(f'  <route name="{label.value}">{text}</route>' for label, text in ROUTES.items())


def router_prompt(query: str) -> str:
    return PROMPT_TEMPLATE.format(routes=route_block(), query=query.strip())


def query_kind(query: str, task_name: str | None) -> str:
    """What sort of query it is, from the task and its length only (never its content's answer)."""
    task = (task_name or "").lower()
    kind = next((v for k, v in TASK_KINDS.items() if task.startswith(k)), "question")
    return f"long {kind}" if len(query) > 600 else kind


def target_text(policy: PolicyLabel, query: str, task_name: str | None = None) -> str:
    """What the router is trained to write after ``Route:``."""
    reason = REASONS[policy].format(kind=query_kind(query, task_name))
    return f" {policy.value}\nReason: {reason[0].upper()}{reason[1:]}"


def is_idk(text: str) -> bool:
    return bool(IDK_PATTERNS.search(text or ""))


@dataclass(frozen=True)
class ParsedPolicy:
    policy: PolicyLabel
    ok: bool
    method: Literal["exact", "normalized", "keyword", "fallback"]
    raw: str


_KEYWORDS = {"standard": PolicyLabel.STANDARD, "complex": PolicyLabel.COMPLEX, "ambiguous": PolicyLabel.AMBIGUOUS}


def parse_policy(text: str, default: PolicyLabel = PolicyLabel.COMPLEX) -> ParsedPolicy:
    """The route on the first non-empty line: exact label, then normalised, then the first keyword.

    Anything else falls back to ``default`` (reported with ``ok=False``); the default is the large-model
    policy, so a confused router costs money rather than quality.
    """
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    first = lines[0] if lines else ""
    for label in PolicyLabel:
        if first == label.value:
            return ParsedPolicy(label, True, "exact", text)
    squashed = re.sub(r"[^a-z]", "", first.lower())
    for label in PolicyLabel:
        if squashed in (label.value.lower().replace("_", ""), label.value.lower().split("_")[0]):
            return ParsedPolicy(label, True, "normalized", text)
    found = [(m.start(), _KEYWORDS[m.group(1)]) for m in re.finditer(r"(standard|complex|ambiguous)", first.lower())]
    if found:
        return ParsedPolicy(min(found)[1], True, "keyword", text)
    return ParsedPolicy(default, False, "fallback", text)
