"""Policy router: the oracle matrix cell by cell, parsing, the policy map, SFT/DPO data, TRL training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routers.errors import ConfigError, DataError
from routers.policy.datasets import (
    OracleRecord,
    balanced,
    dpo_pairs,
    oracle_records_from_routing,
    read_oracle_records,
    sft_examples,
    split_by_query,
)
from routers.policy.matrix import ORACLE_MATRIX, Outcome, PolicyLabel, outcome_from_performance, policy_for
from routers.policy.policy_map import load_policy_map
from routers.policy.prompts import is_idk, parse_policy, router_prompt, target_text
from routers.policy.router import PolicyRouter
from tests.synthetic_data import POLICY_LARGE as LARGE
from tests.synthetic_data import POLICY_SMALL as SMALL
from tests.synthetic_data import policy_dataset as dataset

ROOT = Path(__file__).resolve().parents[1]
GEMMA = ROOT / "models/gemma-3-270m"

# The seed's table (002, "Oracle Logic (9-Cell Matrix)"), row by row.
SEED_TABLE = [
    ("correct", "correct", "Standard_Query"),
    ("correct", "incorrect", "Standard_Query"),
    ("correct", "idk", "Standard_Query"),
    ("incorrect", "correct", "Complex_Query"),
    ("incorrect", "incorrect", "Ambiguous_Query"),
    ("incorrect", "idk", "Complex_Query"),
    ("idk", "correct", "Complex_Query"),
    ("idk", "incorrect", "Ambiguous_Query"),
    ("idk", "idk", "Ambiguous_Query"),
]


@pytest.mark.parametrize(("medium", "large", "policy"), SEED_TABLE)
def test_oracle_matrix_cell(medium: str, large: str, policy: str) -> None:
    assert policy_for(medium, large).value == policy
    assert policy_for(Outcome(medium), Outcome(large)) == PolicyLabel(policy)


def test_matrix_has_exactly_nine_cells() -> None:
    assert len(ORACLE_MATRIX) == 9


def test_outcomes_from_routing_performance_and_idk_answers() -> None:
    assert outcome_from_performance(1.0) == Outcome.CORRECT
    assert outcome_from_performance(0.0, "The answer is 12.") == Outcome.INCORRECT
    assert outcome_from_performance(0.0, "I'm not sure; there is not enough information.") == Outcome.IDK
    assert is_idk("I don't know") and not is_idk("I know the answer: 4")


@pytest.mark.parametrize(
    ("text", "policy", "method"),
    [
        ("Standard_Query", PolicyLabel.STANDARD, "exact"),
        (" Complex_Query\nReason: needs steps", PolicyLabel.COMPLEX, "exact"),
        ("complex query", PolicyLabel.COMPLEX, "normalized"),
        ("AMBIGUOUS", PolicyLabel.AMBIGUOUS, "normalized"),
        ("Route: Standard_Query.", PolicyLabel.STANDARD, "keyword"),
        ("I think complex, not standard", PolicyLabel.COMPLEX, "keyword"),
        ("\n\n  Ambiguous_Query  \n", PolicyLabel.AMBIGUOUS, "exact"),
    ],
)
def test_parse_policy(text: str, policy: PolicyLabel, method: str) -> None:
    parsed = parse_policy(text)
    assert (parsed.policy, parsed.method, parsed.ok) == (policy, method, True)


@pytest.mark.parametrize("text", ["", "   ", "Paris", "medium model please"])
def test_unparseable_output_falls_back_and_says_so(text: str) -> None:
    parsed = parse_policy(text, default=PolicyLabel.AMBIGUOUS)
    assert parsed.policy == PolicyLabel.AMBIGUOUS and parsed.method == "fallback" and parsed.ok is False


def test_policy_map_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"Standard_Query": "a", "Complex_Query": "b", "Ambiguous_Query": "a"}))
    assert load_policy_map(good).target(PolicyLabel.COMPLEX) == "b"
    for bad in ({"Standard_Query": "a", "Complex_Query": "b"},
                {"Standard_Query": "a", "Complex_Query": "b", "Ambiguous_Query": "a", "Other_Query": "c"},
                {"Standard_Query": " ", "Complex_Query": "b", "Ambiguous_Query": "a"}):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="policy map"):
            load_policy_map(path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_policy_map(tmp_path / "broken.json")
    assert load_policy_map(ROOT / "artifacts/policy_map.json").target(PolicyLabel.STANDARD) == "small"


def test_oracle_records_sft_and_dpo_data() -> None:
    records = oracle_records_from_routing(dataset(), SMALL, LARGE)
    by_query = {r.query: r for r in records}
    assert by_query["q0"].policy == PolicyLabel.STANDARD
    assert by_query["q1"].policy == PolicyLabel.COMPLEX
    assert by_query["q2"].policy == PolicyLabel.AMBIGUOUS
    assert by_query["q-idk"].medium_outcome == Outcome.IDK and by_query["q-idk"].policy == PolicyLabel.COMPLEX
    sft = sft_examples(records[:3])
    assert sft[0]["prompt"] == router_prompt("q0") and sft[0]["completion"].startswith(" Standard_Query\nReason: ")
    pairs = dpo_pairs(records)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(parse_policy(p["chosen"]).policy == r.policy for p, r in zip(pairs, records))
    assert "<query>q0</query>" in sft[0]["prompt"] and "Standard_Query" in sft[0]["prompt"]


def test_reasons_never_contain_the_answer() -> None:
    text = target_text(PolicyLabel.STANDARD, "What is 17 + 25? The answer is 42", "gsm8k")
    assert "42" not in text and "math word problem" in text


def test_split_by_query_never_leaks_and_balancing_evens_classes() -> None:
    records = oracle_records_from_routing(dataset(), SMALL, LARGE)
    records = records + records[:5]  # duplicated queries must land on one side
    train, held = split_by_query(records, 0.3, seed=1)
    assert {r.query for r in train}.isdisjoint({r.query for r in held}) and held
    chosen = balanced(records, 9, seed=0)
    counts = {p: sum(r.policy == p for r in chosen) for p in PolicyLabel}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_bad_oracle_line_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "oracle.jsonl"
    good = OracleRecord(query="q", medium_outcome="correct", large_outcome="correct", policy="Standard_Query")
    bad = {"query": "q", "medium_outcome": "maybe", "large_outcome": "correct", "policy": "Standard_Query"}
    path.write_text(good.model_dump_json() + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as info:
        read_oracle_records(path)
    assert info.value.line == 2 and info.value.field == "medium_outcome"


def test_decisions_follow_the_policy_map(tmp_path: Path) -> None:
    router = PolicyRouter({}, dataset().llm_data)
    router.resolve_pair(dataset())
    decision = router.decide_from_generation("q", " Complex_Query\nReason: hard")
    assert decision.use_large is True and decision.model_name == LARGE and decision.extra["policy"] == "Complex_Query"
    assert router.decide_from_generation("q", "Ambiguous_Query").use_large is False  # seed: Ambiguous -> cheap model
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Standard_Query": "small", "Complex_Query": "large", "Ambiguous_Query": "large"}))
    router.reload_policy_map(str(path))  # edit the map, no retraining
    assert router.decide_from_generation("q", "Ambiguous_Query").use_large is True
    fallback = router.decide_from_generation("q", "no idea")
    assert fallback.extra["policy_parse_method"] == "fallback" and fallback.use_large is True
    path.write_text(json.dumps({"Standard_Query": "gpt-9", "Complex_Query": "large", "Ambiguous_Query": "small"}))
    router.reload_policy_map(str(path))
    with pytest.raises(ConfigError, match="gpt-9"):
        router.decide_from_generation("q", "Standard_Query")


def test_the_policy_map_may_name_any_of_the_apps_models(tmp_path: Path) -> None:
    router = PolicyRouter({}, dataset().llm_data)
    router.resolve_pair(dataset())
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Standard_Query": "small", "Complex_Query": "medium", "Ambiguous_Query": "large"}))
    router.reload_policy_map(str(path))
    router.serve_app_models(["small", "medium", "large"])
    chosen = router.decide_from_generation("q", "Complex_Query")
    assert chosen.app_model == chosen.model_name == "medium" and chosen.use_large is None
    standard = router.decide_from_generation("q", "Standard_Query")  # a role still names the pair's side
    assert standard.app_model is None and standard.use_large is False and standard.model_name == SMALL
    path.write_text(json.dumps({"Standard_Query": "small", "Complex_Query": "huge", "Ambiguous_Query": "small"}))
    router.reload_policy_map(str(path))
    with pytest.raises(ConfigError, match=r"'huge'.*the app's models \['large', 'medium', 'small'\]"):
        router.serve_app_models(["small", "medium", "large"])  # checked at load, not at the first query


@pytest.mark.slow
def test_sft_then_dpo_trains_saves_and_routes(tiny_gemma: Path, tmp_path: Path) -> None:
    from routers.evaluation import evaluate_router

    data = dataset()
    router = PolicyRouter({"base_model": str(tiny_gemma), "sft_max_steps": 6, "dpo_max_steps": 3, "batch_size": 4,
                           "sft_learning_rate": 5e-3, "dpo_learning_rate": 1e-3, "max_length": 160,
                           "eval_fraction": 0.2, "lora_r": 4, "lora_alpha": 8}, data.llm_data)
    metrics = router.fit(data)
    assert metrics["sft_steps"] == 6 and metrics["dpo_steps"] == 3
    assert metrics["sft_final_loss"] < metrics["sft_first_loss"]
    saved = router.save(tmp_path / "policy")
    names = sorted(p.name for p in saved.rglob("*") if p.is_file() and "merged" not in p.parts)
    assert names == ["adapter_config.json", "adapter_model.safetensors", "policy_map.json", "router.json"]
    loaded = PolicyRouter.load(saved)
    result = loaded.route_single("What is 2 + 2?")
    assert result["policy"] in {p.value for p in PolicyLabel} and result["model_name"] in (SMALL, LARGE)
    report, _ = evaluate_router(loaded, data)
    assert 0.0 <= report.large_share <= 1.0
    scores = loaded.dataset_scores(data)
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.slow
def test_shipped_policy_artifact_routes_with_real_gemma() -> None:
    artifact = ROOT / "artifacts/policy_router"
    if not (artifact / "router.json").exists() or not GEMMA.exists():
        pytest.skip("needs models/gemma-3-270m and artifacts/policy_router")
    router = PolicyRouter.load(artifact)
    result = router.route_single("Natalia sold 48 clips in April and half as many in May. How many in total?")
    assert result["policy"] in {p.value for p in PolicyLabel}
    assert result["policy_parse_method"] in ("exact", "normalized", "keyword", "fallback")
