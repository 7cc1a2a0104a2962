"""N-model routing data: the quality and the cost of every candidate model on every query.

One type, :class:`MultiModelDataset`, read from each form the data is published in:

* LLMRouter's ``{"question", "scores": {model: 0..1}}`` JSON list (``train.json`` / ``test.json``), joined on
  the question text to its query file (``default_query_*.jsonl``) for ``task_name``, priced from its
  candidate file (``default_llm.json``): :func:`read_llmrouter_scores`;
* RouterBench's wide CSV (one row per prompt: a 0/1 correctness column per model, ``<model>|model_response``,
  ``<model>|total_cost``): :func:`read_routerbench_csv`;
* this project's JSONL forms (LLMRouter's one line per (query, model), the compact form), through
  :class:`~routers.data.dataset.RoutingDataset`: :func:`read_routing_jsonl`,
  :meth:`MultiModelDataset.from_routing_dataset`.

Cost per (query, model) is the call's own cost where the data has it (RouterBench's ``total_cost``, a JSONL
record's ``cost``), else price x tokens (see :func:`estimated_call_cost`); ``call_cost_known`` says which.

A bad row stops the load with a ``DataError`` naming the file, the line and the field. Rows a format is known
to leave blank (28 of RouterBench's ARC-Challenge rows lack some model's correctness) are skipped and counted
in the :class:`PublishedLoadReport`, never dropped silently.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from routers.data.dataset import RoutingDataset, estimate_tokens, order_by_cost
from routers.data.loaders import iter_jsonl, load_llm_data
from routers.data.schema import LLMCandidate
from routers.errors import DataError

ROUTERBENCH_ID, ROUTERBENCH_PROMPT, ROUTERBENCH_TASK = "sample_id", "prompt", "eval_name"
RESPONSE_SUFFIX, COST_SUFFIX = "|model_response", "|total_cost"


@dataclass
class PublishedLoadReport:
    """What a load of one published file did with every row."""

    path: str
    rows: int = 0
    kept: int = 0
    skipped_blank_lines: list[int] = field(default_factory=list)
    without_task_name: int = 0
    ambiguous_task_name: int = 0
    incomplete: int = 0

    @property
    def skipped_blank(self) -> int:
        return len(self.skipped_blank_lines)

    def summary(self) -> str:
        text = f"{self.path}: {self.rows} rows, {self.kept} kept"
        if self.skipped_blank_lines:
            lines = ", ".join(str(n) for n in self.skipped_blank_lines[:10])
            more = ", ..." if self.skipped_blank > 10 else ""
            text += f", {self.skipped_blank} skipped for blank model cells (lines {lines}{more})"
        if self.incomplete:
            text += f", {self.incomplete} queries skipped for lacking some model's outcome"
        if self.without_task_name:
            text += f", {self.without_task_name} questions not in the query file (task_name unknown)"
        if self.ambiguous_task_name:
            text += f", {self.ambiguous_task_name} questions under several task names (the first taken)"
        return text


@dataclass(frozen=True, eq=False)
class MultiModelDataset:
    """Per (query, model): quality (the task metric, 0..1 for the published pools) and USD cost of the call.

    Rows are queries, columns are ``models``. Every cell is known: loaders skip (and count) queries that
    lack a model. The arrays are read-only; :meth:`subset` and :meth:`select_models` make new datasets.
    """

    models: tuple[str, ...]
    queries: tuple[str, ...]
    task_names: tuple[str | None, ...]
    ids: tuple[str, ...]
    quality: np.ndarray
    cost: np.ndarray
    call_cost_known: np.ndarray
    responses: tuple[tuple[str | None, ...], ...] | None = None
    candidates: Mapping[str, LLMCandidate] = field(default_factory=dict)
    reports: tuple[PublishedLoadReport, ...] = ()

    def __post_init__(self) -> None:
        n, m = len(self.queries), len(self.models)
        if len(set(self.models)) != m:
            raise ValueError(f"a model is named twice in {self.models}")
        if len(self.task_names) != n or len(self.ids) != n:
            raise ValueError(f"{n} queries but {len(self.task_names)} task names and {len(self.ids)} ids")
        if len(set(self.ids)) != n:
            raise ValueError("query ids must be distinct")
        for name, array, dtype in (("quality", self.quality, np.float64), ("cost", self.cost, np.float64),
                                   ("call_cost_known", self.call_cost_known, np.bool_)):
            if array.shape != (n, m):
                raise ValueError(f"{name} has shape {array.shape}, expected ({n}, {m}) (queries, models)")
            if array.dtype != dtype:
                raise ValueError(f"{name} has dtype {array.dtype}, expected {np.dtype(dtype)}")
            array.setflags(write=False)
        if n and not (np.isfinite(self.quality).all() and np.isfinite(self.cost).all()):
            raise ValueError("quality and cost must be finite for every (query, model)")
        if n and (self.cost < 0).any():
            raise ValueError("cost must not be negative")
        if self.responses is not None and (len(self.responses) != n or any(len(r) != m for r in self.responses)):
            raise ValueError("responses must hold one entry per (query, model)")

    # --- shape and lookup --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.queries)

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise DataError("routing data", None, f"no model {model!r}; the data has {list(self.models)}") from None

    def load_summary(self) -> str:
        head = f"{self.n_queries} queries x {self.n_models} models"
        return "\n".join([head, *(report.summary() for report in self.reports)])

    # --- views ---------------------------------------------------------------------------------------------
    def subset(self, indices: Iterable[int]) -> MultiModelDataset:
        rows = list(indices)
        return MultiModelDataset(
            models=self.models,
            queries=tuple(self.queries[i] for i in rows),
            task_names=tuple(self.task_names[i] for i in rows),
            ids=tuple(self.ids[i] for i in rows),
            quality=self.quality[rows].copy(),
            cost=self.cost[rows].copy(),
            call_cost_known=self.call_cost_known[rows].copy(),
            responses=None if self.responses is None else tuple(self.responses[i] for i in rows),
            candidates=self.candidates,
            reports=self.reports,
        )

    def select_models(self, models: Sequence[str]) -> MultiModelDataset:
        """The same queries, only ``models`` (in that order): e.g. a pair of them, for a two-model router."""
        columns = [self.model_index(m) for m in models]
        return MultiModelDataset(
            models=tuple(models),
            queries=self.queries,
            task_names=self.task_names,
            ids=self.ids,
            quality=self.quality[:, columns].copy(),
            cost=self.cost[:, columns].copy(),
            call_cost_known=self.call_cost_known[:, columns].copy(),
            responses=None if self.responses is None else tuple(tuple(r[c] for c in columns) for r in self.responses),
            candidates={m: c for m, c in self.candidates.items() if m in models},
            reports=self.reports,
        )

    def without_queries_in(self, other: MultiModelDataset) -> tuple[MultiModelDataset, int]:
        """This dataset less the queries whose text is also in ``other``, and how many those were.

        LLMRouter's test split repeats 119 of its 500 questions in train; evaluate on the rest.
        """
        seen = set(other.queries)
        kept = [i for i, query in enumerate(self.queries) if query not in seen]
        return self.subset(kept), self.n_queries - len(kept)

    @classmethod
    def concat(cls, parts: Sequence[MultiModelDataset]) -> MultiModelDataset:
        """Queries of several files over the same models (RouterBench's ARC-Challenge and MBPP, say)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        models = parts[0].models
        for part in parts[1:]:
            if part.models != models:
                raise DataError(part.reports[0].path if part.reports else "routing data", None,
                                f"models {list(part.models)} differ from the first file's {list(models)}")
        with_responses = all(part.responses is not None for part in parts)
        return cls(
            models=models,
            queries=tuple(q for part in parts for q in part.queries),
            task_names=tuple(t for part in parts for t in part.task_names),
            ids=tuple(i for part in parts for i in part.ids),
            quality=np.concatenate([part.quality for part in parts]),
            cost=np.concatenate([part.cost for part in parts]),
            call_cost_known=np.concatenate([part.call_cost_known for part in parts]),
            responses=tuple(r for part in parts for r in part.responses or ()) if with_responses else None,
            candidates={name: c for part in parts for name, c in part.candidates.items()},
            reports=tuple(report for part in parts for report in part.reports),
        )

    # --- today's two-model data as the special case -----------------------------------------------------
    @classmethod
    def from_routing_dataset(cls, data: RoutingDataset, models: Sequence[str] | None = None) -> MultiModelDataset:
        """A :class:`RoutingDataset` (today's JSONL forms) as an N-model dataset over ``models``.

        ``models`` defaults to every model in the data, cheapest first when ``llm_data`` prices them. Queries
        lacking any of them are skipped and counted (``incomplete`` in the report). Costs are
        ``RoutingDataset.call_costs``: the record's ``cost``, else price x tokens.
        """
        if models is None:
            present = data.models
            models = [m for m in order_by_cost(data.llm_data) if m in present] if data.llm_data else present
            models += [m for m in present if m not in models]
        models = list(models)
        data.require_models(models)
        complete = data.complete_for(models, warn=False)
        shape = (len(complete), len(models))
        costs = np.column_stack([complete.call_costs(m) for m in models]) if len(complete) else np.zeros(shape)
        unpriced = [m for j, m in enumerate(models) if np.isnan(costs[:, j]).any()]
        if unpriced:
            raise DataError("routing data", None, f"no cost for model(s) {unpriced}: the records carry no 'cost' "
                            "and llm_data gives no price for them")
        report = PublishedLoadReport(path=", ".join(r.path for r in data.reports) or "routing data",
                                     rows=len(data), kept=len(complete), incomplete=len(data) - len(complete))
        outcomes = [[ex.outcomes[m] for m in models] for ex in complete.examples]
        return cls(
            models=tuple(models),
            queries=tuple(ex.query for ex in complete.examples),
            task_names=tuple(ex.task_name for ex in complete.examples),
            ids=tuple(str(i) for i in range(len(complete))),
            quality=np.array([[o.performance for o in row] for row in outcomes], dtype=np.float64).reshape(shape),
            cost=costs.astype(np.float64),
            call_cost_known=np.array([[o.cost is not None for o in row] for row in outcomes],
                                     dtype=np.bool_).reshape(shape),
            responses=tuple(tuple(o.response for o in row) for row in outcomes),
            candidates={m: data.llm_data[m] for m in models if m in data.llm_data},
            reports=(report,),
        )


def estimated_call_cost(candidate: LLMCandidate, query: str, response: str | None = None) -> float:
    """USD cost of one call by price x tokens, by the rule ``RoutingDataset.call_costs`` applies.

    Tokens are estimated from the text (about 4 characters a token); without a response the answer is taken
    to be as long as the question. An estimate, used only where the data has no cost of its own.
    """
    input_tokens = estimate_tokens(query)
    output_tokens = estimate_tokens(response) if response else input_tokens
    return candidate.call_cost(input_tokens, output_tokens)


# --- this project's JSONL forms --------------------------------------------------------------------------
def read_routing_jsonl(paths: str | Path | Iterable[str | Path], llm_data: str | Path | None = None,
                       models: Sequence[str] | None = None) -> MultiModelDataset:
    """Today's JSONL routing data (either form, gzipped or not) as an N-model dataset."""
    candidates = load_llm_data(llm_data) if llm_data is not None else None
    return MultiModelDataset.from_routing_dataset(RoutingDataset.from_files(paths, candidates), models)


# --- LLMRouter's JSON -------------------------------------------------------------------------------------
class LineCounter:
    """Line numbers of increasing offsets in one text, counting each newline once (the files run to MBs)."""

    def __init__(self, text: str) -> None:
        self.text, self.offset, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        if offset < self.offset:
            return self.text.count("\n", 0, offset) + 1
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, element) for each element of a JSON list, so a bad element is named by its line."""
    if not path.exists():
        raise DataError(str(path), None, "file does not exist")
    text = path.read_text(encoding="utf-8")
    lines = LineCounter(text)
    decoder = json.JSONDecoder()

    def skip_space(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_space(0)
    if pos >= len(text) or text[pos] != "[":
        raise DataError(str(path), lines.at(pos), "expected a JSON list of {question, scores} objects")
    pos = skip_space(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(str(path), exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        yield lines.at(pos), element
        pos = skip_space(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_space(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return
        raise DataError(str(path), lines.at(pos), "expected ',' or ']' after a list element")


def read_task_names(path: Path) -> tuple[dict[str, str], set[str]]:
    """LLMRouter's query file: question text -> task_name (first seen), and the questions under several."""
    task_of: dict[str, str] = {}
    ambiguous: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        if obj is None:
            continue
        query, task = obj.get("query"), obj.get("task_name")
        for name, value in (("query", query), ("task_name", task)):
            if not isinstance(value, str) or not value:
                raise DataError(str(path), lineno, "missing or not a non-empty string", field=name)
        assert isinstance(query, str) and isinstance(task, str)
        if task_of.setdefault(query, task) != task:
            ambiguous.add(query)
    return task_of, ambiguous


def unit_score(path: Path, lineno: int, field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(str(path), lineno, f"expected a number, got {value!r}", field=field_name)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise DataError(str(path), lineno, f"expected a score in [0, 1], got {value!r}", field=field_name)
    return float(value)


def canonical_model_order(models: Sequence[str], candidates: Mapping[str, LLMCandidate]) -> tuple[str, ...]:
    """Cheapest first when every model is priced (``order_by_cost``), else by name."""
    if models and all(m in candidates for m in models):
        return tuple(order_by_cost({m: candidates[m] for m in models}))
    return tuple(sorted(models))


def read_llmrouter_scores(scores_path: str | Path, queries_path: str | Path | None = None,
                          llm_data: str | Path | None = None) -> MultiModelDataset:
    """LLMRouter's ``[{"question", "scores": {model: score}}]`` as an N-model dataset.

    ``queries_path`` (its ``default_query_*.jsonl``) gives each question's ``task_name``; a question it lacks
    keeps ``None`` and one it lists under several names takes the first, both counted. ``llm_data`` (its
    ``default_llm.json``) prices the calls: the data has no cost or token counts, so cost is price x
    tokens (:func:`estimated_call_cost`); without it every cost is 0 and ``call_cost_known`` False.
    """
    scores_path = Path(scores_path)
    report = PublishedLoadReport(path=str(scores_path))
    task_of, ambiguous = read_task_names(Path(queries_path)) if queries_path is not None else ({}, set())
    candidates = load_llm_data(llm_data) if llm_data is not None else {}
    models: tuple[str, ...] | None = None
    queries: list[str] = []
    rows: list[Any] = []
    for lineno, element in iter_json_array(scores_path):
        report.rows += 1
        if not isinstance(element, dict):
            raise DataError(str(scores_path), lineno, f"expected an object, got {type(element).__name__}")
        question, scores = element.get("question"), element.get("scores")
        if not isinstance(question, str) or not question:
            raise DataError(str(scores_path), lineno, "missing or not a non-empty string", field="question")
        if not isinstance(scores, dict) or not scores:
            raise DataError(str(scores_path), lineno, "expected an object {model: score}", field="scores")
        if models is None:
            models = tuple(scores)
        elif set(scores) != set(models):
            missing, extra = sorted(set(models) - set(scores)), sorted(set(scores) - set(models))
            raise DataError(str(scores_path), lineno, f"models differ from the first entry's: missing {missing}, "
                            f"extra {extra}", field="scores")
        rows.append({m: unit_score(scores_path, lineno, f"scores.{m}", scores[m]) for m in models})
        queries.append(question)
    if models is None:
        raise DataError(str(scores_path), None, "the list has no {question, scores} entries")
    if llm_data is not None and (unpriced := [m for m in models if m not in candidates]):
        raise DataError(str(llm_data), None, f"no price for scored model(s) {unpriced}")
    # The files list each entry's scores in varying order; one fixed column order makes splits line up.
    models = canonical_model_order(models, candidates)
    rows = [[row_scores[m] for m in models] for row_scores in rows]
    report.kept = len(queries)
    report.without_task_name = sum(q not in task_of for q in queries) if queries_path is not None else 0
    report.ambiguous_task_name = sum(q in ambiguous for q in queries)
    cost = np.array([[estimated_call_cost(candidates[m], q) if m in candidates else 0.0 for m in models]
                     for q in queries], dtype=np.float64).reshape(-1, len(models))
    return MultiModelDataset(
        models=models,
        queries=tuple(queries),
        task_names=tuple(task_of.get(q) for q in queries),
        ids=tuple(f"{scores_path.stem}:{i}" for i in range(len(queries))),
        quality=np.array(rows, dtype=np.float64).reshape(-1, len(models)),
        cost=cost,
        call_cost_known=np.zeros(cost.shape, dtype=np.bool_),
        candidates={m: candidates[m] for m in models if m in candidates},
        reports=(report,),
    )


# --- RouterBench's wide CSV -------------------------------------------------------------------------------
def iter_csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the record starts, cells); the header is line 1."""
    # Response cells can be long; the csv module's default cap (128 kB a cell) is not a property of the data.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        previous_end = 0
        for row in reader:
            yield previous_end + 1, row
            previous_end = reader.line_num


def listed_text(path: Path, lineno: int, field_name: str, cell: str) -> str:
    """RouterBench stores prompts and responses as a Python list literal of strings (``"['...']"``)."""
    if not cell.startswith("["):
        return cell
    try:
        parts = ast.literal_eval(cell)
    except (ValueError, SyntaxError) as exc:
        raise DataError(str(path), lineno, f"not a list of strings ({type(exc).__name__})",
                        field=field_name) from exc
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise DataError(str(path), lineno, "not a list of strings", field=field_name)
    # A few rows repeat the prompt twice in the list; the model saw one prompt.
    distinct = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    return "\n\n".join(distinct)


def csv_number(path: Path, lineno: int, field_name: str, cell: str, unit_interval: bool) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(str(path), lineno, f"expected a number, got {cell!r}", field=field_name) from None
    if not math.isfinite(value) or value < 0 or (unit_interval and value > 1):
        bound = "in [0, 1]" if unit_interval else ">= 0"
        raise DataError(str(path), lineno, f"expected a finite number {bound}, got {cell!r}", field=field_name)
    return value


def routerbench_columns(path: Path, header: list[str]) -> tuple[list[str], dict[str, int]]:
    """The models (columns with a ``|total_cost`` twin, in header order) and every column's index."""
    index = {name: i for i, name in enumerate(header)}
    for required in (ROUTERBENCH_ID, ROUTERBENCH_PROMPT, ROUTERBENCH_TASK):
        if required not in index:
            raise DataError(str(path), 1, f"no column {required!r}: not RouterBench's wide CSV", field=required)
    models = [name for name in header if "|" not in name and name + COST_SUFFIX in index]
    if not models:
        raise DataError(str(path), 1, "no model columns (a '<model>' column with a '<model>|total_cost' twin)")
    for model in models:
        if model + RESPONSE_SUFFIX not in index:
            raise DataError(str(path), 1, f"no column {model + RESPONSE_SUFFIX!r}", field=model + RESPONSE_SUFFIX)
    return models, index


def read_routerbench_csv(path: str | Path) -> MultiModelDataset:
    """RouterBench's wide CSV as an N-model dataset: correctness as quality, ``total_cost`` as cost.

    A row with a blank correctness cell for some model (RouterBench's ARC-Challenge has 28, the halves of
    prompts whose models were run separately) is skipped and its line recorded; any other bad cell is an error.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "file does not exist")
    report = PublishedLoadReport(path=str(path))
    rows = iter_csv_rows(path)
    _, header = next(rows, (1, []))
    models, index = routerbench_columns(path, header)
    ids: list[str] = []
    queries: list[str] = []
    tasks: list[str] = []
    quality: list[list[float]] = []
    cost: list[list[float]] = []
    responses: list[tuple[str | None, ...]] = []
    for lineno, cells in rows:
        report.rows += 1
        if len(cells) != len(header):
            raise DataError(str(path), lineno, f"{len(cells)} cells, the header has {len(header)}")
        if any(not cells[index[m]].strip() for m in models):
            report.skipped_blank_lines.append(lineno)
            continue
        sample_id = cells[index[ROUTERBENCH_ID]]
        if not sample_id:
            raise DataError(str(path), lineno, "blank", field=ROUTERBENCH_ID)
        ids.append(sample_id)
        queries.append(listed_text(path, lineno, ROUTERBENCH_PROMPT, cells[index[ROUTERBENCH_PROMPT]]))
        tasks.append(cells[index[ROUTERBENCH_TASK]])
        quality.append([csv_number(path, lineno, m, cells[index[m]], unit_interval=True) for m in models])
        cost.append([csv_number(path, lineno, m + COST_SUFFIX, cells[index[m + COST_SUFFIX]], unit_interval=False)
                     for m in models])
        responses.append(tuple(listed_text(path, lineno, m + RESPONSE_SUFFIX, cells[index[m + RESPONSE_SUFFIX]])
                               or None for m in models))
    duplicated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicated:
        raise DataError(str(path), None, f"sample_id repeated on complete rows: {duplicated[:5]}", field=ROUTERBENCH_ID)
    report.kept = len(ids)
    shape = (len(ids), len(models))
    return MultiModelDataset(
        models=tuple(models),
        queries=tuple(queries),
        task_names=tuple(tasks),
        ids=tuple(ids),
        quality=np.array(quality, dtype=np.float64).reshape(shape),
        cost=np.array(cost, dtype=np.float64).reshape(shape),
        call_cost_known=np.ones(shape, dtype=np.bool_),
        responses=tuple(responses),
        reports=(report,),
    )


# --- the published pools where `llmrouter data get` puts them -------------------------------------------------
LLMROUTER_DIR = Path("multimodel") / "llmrouter"
ROUTERBENCH_DIR = Path("multimodel") / "routerbench"
ROUTERBENCH_TASKS = ("arc_challenge", "mbpp")


def load_llmrouter(data_dir: str | Path, split: str) -> MultiModelDataset:
    """LLMRouter's pool, ``split`` ``train`` or ``test``, from the data directory (see ``routers.data.location``)."""
    base = Path(data_dir) / LLMROUTER_DIR
    return read_llmrouter_scores(base / f"{split}.json", base / f"default_query_{split}.jsonl",
                                 base / "default_llm.json")


def load_routerbench(data_dir: str | Path, split: str, tasks: Sequence[str] = ROUTERBENCH_TASKS) -> MultiModelDataset:
    """RouterBench's pool, ``split`` ``train`` or ``test``, its ``tasks`` files joined."""
    base = Path(data_dir) / ROUTERBENCH_DIR
    return MultiModelDataset.concat([read_routerbench_csv(base / f"{task}_{split}.csv") for task in tasks])


def read_multimodel(path: str | Path, llm_data: str | Path | None = None) -> MultiModelDataset:
    """Any one file by its form: ``.csv`` RouterBench, ``.json`` LLMRouter scores (its query file and
    ``default_llm.json`` beside it are used when present), ``.jsonl[.gz]`` this project's JSONL."""
    path = Path(path)
    if path.suffix == ".csv":
        return read_routerbench_csv(path)
    if path.suffix == ".json":
        queries = path.with_name(f"default_query_{path.stem}.jsonl")
        prices = llm_data if llm_data is not None else path.with_name("default_llm.json")
        return read_llmrouter_scores(path, queries if queries.exists() else None,
                                     prices if Path(prices).exists() else None)
    return read_routing_jsonl(path, llm_data)
