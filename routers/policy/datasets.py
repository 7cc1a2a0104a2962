"""Training data of the policy router, built from an oracle dataset.

* An oracle record: a query, how the medium (small) and large models did, and the matrix's policy.
  ``oracle_records_from_routing`` derives them from routing data (performance 1 -> correct; a wrong
  answer that declines -> IDK); ``routers.oracle`` produces them from live models and a blind judge.
* SFT examples: (prompt, target) with the right policy and a short reason.
* DPO pairs: the same prompt, ``chosen`` = the right policy + reason, ``rejected`` = the most tempting
  wrong policy written just as confidently (Standard <-> Complex; Ambiguous -> Complex, the costly mistake).
* ``split_by_query`` keeps every query on one side, so no evaluation query is ever trained on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from routers.data import RoutingDataset
from routers.errors import DataError
from routers.policy.matrix import Outcome, PolicyLabel, outcome_from_performance, policy_for
from routers.policy.prompts import router_prompt, target_text

REJECTED_FOR = {
    PolicyLabel.STANDARD: PolicyLabel.COMPLEX,
    PolicyLabel.COMPLEX: PolicyLabel.STANDARD,
    PolicyLabel.AMBIGUOUS: PolicyLabel.COMPLEX,
}


class OracleRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str
    task_name: str | None = None
    medium_outcome: Outcome
    large_outcome: Outcome
    policy: PolicyLabel


def oracle_records_from_routing(data: RoutingDataset, medium: str, large: str) -> list[OracleRecord]:
    records = []
    for example in data.complete_for([medium, large]).examples:
        m, l_ = example.outcomes[medium], example.outcomes[large]
        mo = outcome_from_performance(m.performance, m.response)
        lo = outcome_from_performance(l_.performance, l_.response)
        records.append(OracleRecord(query=example.query, task_name=example.task_name, medium_outcome=mo,
                                    large_outcome=lo, policy=policy_for(mo, lo)))
    return records


def read_oracle_records(path: str | Path) -> list[OracleRecord]:
    """An oracle dataset JSONL (as written by ``routers.oracle``); a bad line names its file and number."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(OracleRecord.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(path, number, f"not valid JSON ({exc.msg})") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise DataError(path, number, first["msg"], field=field) from exc
    return records


def sft_examples(records: Iterable[OracleRecord]) -> list[dict[str, str]]:
    return [{"prompt": router_prompt(r.query), "completion": target_text(r.policy, r.query, r.task_name)}
            for r in records]


def dpo_pairs(records: Iterable[OracleRecord]) -> list[dict[str, str]]:
    return [{"prompt": router_prompt(r.query),
             "chosen": target_text(r.policy, r.query, r.task_name),
             "rejected": target_text(REJECTED_FOR[r.policy], r.query, r.task_name)} for r in records]


def split_by_query(records: Sequence[OracleRecord], eval_fraction: float,
                   seed: int = 0) -> tuple[list[OracleRecord], list[OracleRecord]]:
    queries = sorted({r.query for r in records})
    random.Random(seed).shuffle(queries)
    held_out = set(queries[: round(len(queries) * eval_fraction)])
    train = [r for r in records if r.query not in held_out]
    evaluation = [r for r in records if r.query in held_out]
    return train, evaluation


def balanced(records: Sequence[OracleRecord], limit: int | None, seed: int = 0) -> list[OracleRecord]:
    """Up to ``limit`` records with the policies as even as the data allows (round-robin over shuffled classes)."""
    rng = random.Random(seed)
    by_policy: dict[PolicyLabel, list[OracleRecord]] = {}
    for record in records:
        by_policy.setdefault(record.policy, []).append(record)
    for group in by_policy.values():
        rng.shuffle(group)
    out: list[OracleRecord] = []
    target = len(records) if limit is None else min(limit, len(records))
    while len(out) < target:
        for group in by_policy.values():
            if group and len(out) < target:
                out.append(group.pop())
    return out
