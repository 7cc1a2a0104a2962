"""AutoMix: verdict parsing, self-consistency, the three policies, the router's step API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routers.automix.policies import (
    CascadeCosts,
    POMDPPolicy,
    SelfConsistencyPolicy,
    ThresholdPolicy,
    policy_from_dict,
)
from routers.automix.router import AutomixRouter
from routers.automix.stored_votes import read_verifier_votes, text_sha256, write_verifier_votes
from routers.automix.verification import (
    agreement_score,
    answer_entropy,
    answer_kind,
    extract_choice,
    extract_number,
    parse_verdict,
    tally_verdicts,
    verification_prompt,
)
from routers.data import RoutingDataset
from routers.errors import ConfigError, DataError
from routers.evaluation import evaluate_router
from tests.synthetic_data import VOTES_LLM_DATA, vote_scores, votes_dataset

ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = "small-llm", "large-llm"
# --- verdicts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Yes", "yes"),
        (" yes.", "yes"),
        ("**Yes**, it is right", "yes"),
        ("Correct.", "yes"),
        ("TRUE", "yes"),
        ("No", "no"),
        ("no, the answer is wrong", "no"),
        ("Incorrect", "no"),
        ("The proposed answer is not correct", "no"),
        ("It isn't correct", "no"),
        ("False.", "no"),
        ("The answer is wrong, not right", "no"),
        ("", "unparseable"),
        ("7 * 8 = 56", "unparseable"),
        ("Yesterday I", "unparseable"),
        ("Nothing here", "unparseable"),
        ("No.\nThe proposed answer is correct", "no"),
        ("Yes.\nThe answer is", "yes"),
    ],
)
def test_parse_verdict(text: str, verdict: str) -> None:
    assert parse_verdict(text) == verdict


def test_tally_counts_unparseable_separately_and_as_not_confirming() -> None:
    tally = tally_verdicts(["Yes", "No", "hmm", "correct"])
    assert tally.as_dict() == {"yes": 2, "no": 1, "unparseable": 1}
    assert tally.p_ver == 0.5 and tally.votes() == [1.0, 1.0, 0.0, 0.0]
    assert tally_verdicts([]).p_ver == 0.0


def test_verification_prompt_has_question_and_answer() -> None:
    prompt = verification_prompt("What is 2+2?", "  4 ")
    assert "What is 2+2?" in prompt and "Proposed answer: 4\n" in prompt and "Yes or No" in prompt


# --- self-consistency ---------------------------------------------------------------------------
def test_number_extraction() -> None:
    assert extract_number("so 1,600 / 200 = 8\n#### 800") == "800"
    assert extract_number("The answer is $1,234.50.") == "1234.5"
    assert extract_number("she has 3 apples then 7.0") == "7"
    assert extract_number("no digits") is None


def test_choice_extraction_and_kind() -> None:
    question = "Which planet?\nA) Mars\nB) Venus\nC) Earth\nD) Jupiter"
    assert answer_kind(question, "B") == "choice"
    assert answer_kind("What is 3*4?", "12") == "number"
    assert answer_kind("Capital of France?", "Paris") == "text"
    assert extract_choice("The answer is (C).") == "C"
    assert extract_choice("B. Venus") == "B"
    assert extract_choice("I think (D) is right") == "D"


def test_agreement_on_math_multiple_choice_and_text() -> None:
    assert (
        agreement_score("What is 3*4?", "3*4 = 12\n#### 12", ["12", "The answer is 12.", "13", "twelve 12"])
        == 0.75
    )
    question = "Pick one:\nA) red\nB) blue\nC) green"
    assert agreement_score(question, "The answer is (B)", ["B", "(B) blue", "A) red", "answer: B"]) == 0.75
    assert agreement_score("Capital of France?", "Paris.", ["paris", "PARIS!", "Lyon"]) == pytest.approx(
        2 / 3
    )
    assert agreement_score("q?", "1", []) == 0.0
    assert answer_entropy("What is 1+1?", ["2", "2", "2", "2"]) == 0.0
    assert answer_entropy("What is 1+1?", ["1", "2", "3", "4"]) == pytest.approx(1.0)


# --- policies ----------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [ThresholdPolicy(), SelfConsistencyPolicy(), POMDPPolicy(num_bins=8)])
def test_policies_learn_and_round_trip_through_json(policy) -> None:
    scores, small, large = vote_scores()
    stats = policy.fit(scores, small, large, CascadeCosts())
    assert 0.0 < stats["train_large_share"] < 1.0
    assert stats["train_delta_ibc"] > 0  # an informative score beats the random mix
    restored = policy_from_dict(json.loads(json.dumps(policy.to_dict())))
    assert type(restored) is type(policy)
    grid = np.linspace(0, 1, 21)
    np.testing.assert_allclose(restored.suitability(grid), policy.suitability(grid))
    np.testing.assert_array_equal(restored.decide(grid), policy.decide(grid))
    # Low verification scores are less suitable; some are escalated, a unanimous "yes" is kept.
    assert policy.suitability(0.0)[0] < policy.suitability(1.0)[0]
    assert policy.decide(grid).any() and not policy.decide(1.0)[0]


def test_pomdp_belief_update_is_bayes() -> None:
    scores, small, large = vote_scores()
    policy = POMDPPolicy(num_bins=4)
    policy.fit(scores, small, large, CascadeCosts())
    posterior = policy.update_belief(policy.prior, 0.95)
    expected = policy.prior * policy.observation[:, 3]
    np.testing.assert_allclose(posterior, expected / expected.sum())
    np.testing.assert_allclose(policy.beliefs()[3], posterior)
    small_right_high = posterior[2] + posterior[3]
    low = policy.update_belief(policy.prior, 0.05)
    small_right_low = low[2] + low[3]
    assert small_right_high > policy.prior[2] + policy.prior[3] > small_right_low
    # Laplace smoothing: every observation has positive probability in every state.
    assert np.all(policy.observation > 0)
    np.testing.assert_allclose(policy.observation.sum(axis=1), 1.0)


def test_pomdp_value_is_the_best_action_per_belief() -> None:
    scores, small, large = vote_scores()
    policy = POMDPPolicy(num_bins=8, cost_weight=0.005)
    policy.fit(scores, small, large, CascadeCosts())
    q = policy.q_values()
    p_obs = policy.prior @ policy.observation
    assert policy.value() == pytest.approx(float(p_obs @ q.max(axis=1)))
    assert policy.value() >= float(p_obs @ q[:, 0]) and policy.value() >= float(p_obs @ q[:, 1])
    assert policy.decision_threshold == 0.0


def test_pomdp_cost_constraint_is_met_on_training_data() -> None:
    scores, small, large = vote_scores()
    costs = CascadeCosts(small=1, large=50, verifier=1)
    for budget in (5.0, 12.0, 30.0):
        policy = POMDPPolicy(num_bins=8, cost_constraint=budget)
        stats = policy.fit(scores, small, large, costs)
        assert stats["train_cost"] <= budget + 1e-9
        assert float(costs.per_query(policy.decide(scores)).mean()) <= budget + 1e-9
    with pytest.raises(ConfigError, match="cannot be met"):
        POMDPPolicy(cost_constraint=1.0).fit(scores, small, large, costs)


def test_dearer_large_model_means_fewer_escalations() -> None:
    scores, small, large = vote_scores()
    shares = []
    for large_cost in (5.0, 20.0, 80.0):
        policy = POMDPPolicy(num_bins=8, cost_weight=0.004)
        policy.fit(scores, small, large, CascadeCosts(large=large_cost))
        shares.append(float(policy.decide(scores).mean()))
    assert shares[0] > shares[1] > shares[2]
    budget_shares = []
    for large_cost in (20.0, 80.0):
        policy = ThresholdPolicy(cost_constraint=10.0)
        policy.fit(scores, small, large, CascadeCosts(large=large_cost))
        budget_shares.append(float(policy.decide(scores).mean()))
    assert budget_shares[0] > budget_shares[1]


def test_threshold_policy_keeps_a_fixed_threshold() -> None:
    scores, small, large = vote_scores()
    policy = ThresholdPolicy(threshold=0.5)
    policy.fit(scores, small, large, CascadeCosts())
    assert policy.threshold == 0.5
    np.testing.assert_array_equal(policy.decide(scores), scores < 0.5)


# --- router -------------------------------------------------------------------------------------
def test_router_fits_on_votes_and_decides_from_score(tmp_path: Path) -> None:
    train, test = votes_dataset(300, seed=1), votes_dataset(200, seed=2)
    # lambda * large cost = 0.25: escalate when the large model is >= 25 points likelier to be right.
    router = AutomixRouter({"method": "POMDP", "num_samples": 8, "cost_weight": 0.005}, VOTES_LLM_DATA)
    metrics = router.fit(train)
    assert metrics["lambda"] == 0.005
    assert metrics["n_train"] == 300 and router.pair.small == SMALL
    decision = router.decide_from_score("What is 2+2?", 0.0)
    out = decision.to_dict(router.score_key)
    assert decision.use_large and out["route_to_llm"] is True and out["model_name"] == LARGE
    assert out["verification_score"] == 0.0 and "reason" in out and "small_answer" not in out
    assert decision.cost == 1 + 1 + 50
    kept = router.decide_from_score("What is 2+2?", 1.0)
    assert not kept.use_large and kept.cost == 2 and kept.extra["route_to_llm"] is False
    forced = router.decide_from_score("q", 1.0, threshold=1e9)
    assert forced.use_large and forced.threshold == 1e9

    report, _ = evaluate_router(router, test)
    assert report.delta_ibc is not None and report.delta_ibc > 0
    assert report.cost_small == 2 and report.cost_large == 52  # the cascade: small + verifier (+ large)
    ibc_chosen = AutomixRouter({"method": "POMDP"}, VOTES_LLM_DATA)
    ibc_chosen.fit(train)
    held_out, _ = evaluate_router(ibc_chosen, test)
    assert held_out.delta_ibc is not None and held_out.delta_ibc > 0 and 0 < held_out.large_share < 1

    router.save(tmp_path)
    loaded = AutomixRouter.load(tmp_path)
    np.testing.assert_allclose(loaded.dataset_scores(test), router.dataset_scores(test))
    assert loaded.decide_from_score("q", 0.25).use_large == router.decide_from_score("q", 0.25).use_large


def test_router_step_api() -> None:
    router = AutomixRouter({"num_samples": 5, "temperature": 0.9, "verifier_max_tokens": 4}, VOTES_LLM_DATA)
    prompt, params = router.verification_request("What is 2+2?", "4")
    assert (
        params.n == 5
        and params.temperature == 0.9
        and params.max_tokens == 4
        and "Proposed answer: 4" in prompt
    )
    assert router.verification_score("What is 2+2?", "4", ["Yes", "No", "??", "yes", "Correct"]) == 0.6
    assert router.answer_params().n == 1 and router.answer_prompt("What is 2+2?") == "What is 2+2?"
    assert router.route_only_engine_roles() == frozenset({"small"})
    sc = AutomixRouter({"routing_method": "SelfConsistency", "num_samples": 3}, VOTES_LLM_DATA)
    prompt, params = sc.verification_request("What is 2+2?", "4")
    assert prompt == "What is 2+2?" and params.n == 3 and params.temperature > 0
    assert sc.verification_score("What is 2+2?", "4", ["4", "5", "The answer is 4"]) == pytest.approx(2 / 3)


def test_fit_without_verification_fields_needs_a_small_model() -> None:
    data = votes_dataset(20, with_votes=False)
    router = AutomixRouter({}, VOTES_LLM_DATA)
    with pytest.raises(ConfigError, match="verifier_votes or p_ver"):
        router.fit(data)
    assert router.training_engine_roles_for(data) == frozenset({"small"})
    assert router.training_engine_roles_for(votes_dataset(20)) == frozenset()


def test_votes_file_keeps_the_verdicts_without_the_text_and_refits_identically(tmp_path: Path) -> None:
    data = votes_dataset(30)
    path = write_verifier_votes(data, tmp_path / "verifier_votes.jsonl")
    text = path.read_text()
    assert all(ex.query not in text and ex.outcomes[SMALL].response not in text for ex in data.examples)
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 30  # the small model's records only: the large model's carry nothing we computed
    assert records[3] == {"query_sha256": text_sha256(data[3].query), "model_name": SMALL,
                          "response_sha256": text_sha256(data[3].outcomes[SMALL].response),
                          "verifier_votes": list(data[3].outcomes[SMALL].verifier_votes)}
    assert len(read_verifier_votes(path)) == 30

    bare = votes_dataset(30, with_votes=False)  # the public data: same queries and answers, no verdicts
    stored = AutomixRouter({"cost_weight": 0.005, "verifier_votes": str(path)}, VOTES_LLM_DATA)
    assert stored.training_engine_roles_for(bare) == frozenset()
    direct = AutomixRouter({"cost_weight": 0.005}, VOTES_LLM_DATA)
    assert stored.fit(bare) == direct.fit(data)
    assert stored.state() == direct.state()
    np.testing.assert_array_equal(stored.dataset_scores(bare), direct.dataset_scores(data))


def test_stored_votes_cover_some_queries(tmp_path: Path) -> None:
    path = write_verifier_votes(votes_dataset(30).subset(range(20)), tmp_path / "votes.jsonl")
    bare = votes_dataset(30, with_votes=False)
    router = AutomixRouter({"verifier_votes": str(path)}, VOTES_LLM_DATA)
    # Without a small model the other 10 cannot be sampled: the error names the votes file.
    with pytest.raises(ConfigError, match=r"10 of 30 queries have no verifier_votes.*votes\.jsonl"):
        router.fit(bare)
    assert router.training_engine_roles_for(bare) == frozenset({"small"})
    only = AutomixRouter({"verifier_votes": str(path), "verified_only": True, "verbose": False}, VOTES_LLM_DATA)
    assert only.training_engine_roles_for(bare) == frozenset()
    assert only.fit(bare)["n_train"] == 20
    none = AutomixRouter({"verified_only": True}, VOTES_LLM_DATA)
    with pytest.raises(ConfigError, match="verified_only, but none of the 30"):
        none.fit(bare)


def test_stored_votes_are_never_joined_onto_another_answer(tmp_path: Path) -> None:
    data = votes_dataset(5)
    path = write_verifier_votes(data, tmp_path / "votes.jsonl")
    changed = votes_dataset(5, with_votes=False)
    example = changed.examples[2]
    small = example.outcomes[SMALL].model_copy(update={"response": "#### 999"})
    changed.examples[2] = example.model_copy(update={"outcomes": {**example.outcomes, SMALL: small}})
    router = AutomixRouter({"verifier_votes": str(path)}, VOTES_LLM_DATA)
    with pytest.raises(DataError, match="computed on another answer"):
        router.fit(changed)
    # An answer the build generated (the public record had none) is ours: the line carries it.
    public = votes_dataset(5, with_votes=False)
    unanswered = [ex.model_copy(update={"outcomes": {
        **ex.outcomes, SMALL: ex.outcomes[SMALL].model_copy(update={"response": None})}}) for ex in public.examples]
    generated = write_verifier_votes(data, tmp_path / "generated.jsonl",
                                     public=RoutingDataset(unanswered, VOTES_LLM_DATA))
    assert json.loads(generated.read_text().splitlines()[0])["response"] == data[0].outcomes[SMALL].response
    joined = AutomixRouter({"verifier_votes": str(generated)}, VOTES_LLM_DATA)
    joined.resolve_pair(public)
    assert joined.with_stored_votes(RoutingDataset(unanswered, VOTES_LLM_DATA))[0].outcomes[SMALL].response == "#### 0"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(generated.read_text().splitlines()[0] + "\n" + generated.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: a second line"):
        read_verifier_votes(bad)


def test_default_artifact_loads() -> None:
    directory = ROOT / "artifacts/automix"
    if not (directory / "router.json").exists():
        pytest.skip("artifacts/automix not built (python -m routers.automix.build_artifact)")
    router = AutomixRouter.load(directory)
    assert router.policy.kind == router.config.method
    assert router.decide_from_score("What is 12 + 30?", 0.0).use_large


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested dicts as {"a.b": leaf}; lists are leaves."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "costs":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_config_refits_the_shipped_artifact_from_the_data_and_the_stored_votes(
        routing_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/routers/automix.yaml: the data directory's GSM8K training file joined with
    artifacts/automix/verifier_votes.jsonl fits exactly the shipped policy, sampling nothing."""
    from routers.config import build_router, load_config_file
    from routers.data.location import DATA_ENV
    from routers.paths import HOME_ENV

    monkeypatch.setenv(DATA_ENV, str(routing_data_dir))
    monkeypatch.setenv(HOME_ENV, str(ROOT))
    config = load_config_file(ROOT / "configs/routers/automix.yaml")
    router = build_router(config)
    assert isinstance(router, AutomixRouter)
    train = config.dataset("train")
    assert router.training_engine_roles_for(train) == frozenset()  # no small model: nothing is sampled
    router.fit(train)
    shipped = json.loads((ROOT / "artifacts/automix/router.json").read_text())
    refit = flat(json.loads(json.dumps(router.state(), default=float)))
    expected = flat(shipped["state"])
    assert refit.keys() == expected.keys() and refit["training.n_train"] == 96
    for key in ("policy.lambda", "policy.prior", "policy.observation", "policy.num_bins", "policy.costs"):
        assert refit[key] == expected[key], key  # the fitted parameters, bit for bit
    for key, value in refit.items():  # summary statistics: equal up to float summation order
        assert value == (pytest.approx(expected[key], rel=1e-12) if isinstance(value, float) else expected[key]), key
    assert router.reference_scores().tolist() == shipped["reference_scores"]["quantiles"]
    # The shipped files carry none of the public text: no query or answer of the data is in them.
    texts = {ex.query for ex in train.examples} | {o.response for ex in train.examples
                                                   for o in ex.outcomes.values() if o.response}
    for path in (ROOT / "artifacts/automix").iterdir():
        content = path.read_text()
        assert not [t for t in texts if len(t) > 40 and t in content], path


@pytest.mark.slow
def test_route_single_with_the_real_small_model() -> None:
    model_dir = ROOT / "models/smollm2-135m-instruct"
    if not model_dir.exists():
        pytest.skip("models/smollm2-135m-instruct is not present")
    from routers.engines import GeneratorConfig, build_generator

    router = AutomixRouter({"num_samples": 3, "verifier_max_tokens": 4, "answer_max_tokens": 12}, VOTES_LLM_DATA)
    router.fit(votes_dataset(100))
    router.bind_engines(generators={"small": build_generator(GeneratorConfig(model=str(model_dir)))})
    result = router.route_single("What is 12 + 30?")
    assert set(result) >= {"model_name", "verification_score", "route_to_llm", "cost", "reason", "response"}
    assert 0.0 <= result["verification_score"] <= 1.0
    assert sum(result["verdicts"].values()) == 3
    assert result["verification_score"] == result["verdicts"]["yes"] / 3
    if result["route_to_llm"]:
        assert result["model_name"] == LARGE and result["response"] is None  # no large engine bound
    else:
        assert result["model_name"] == SMALL and result["response"] == result["small_response"]


# --- the seed's YAML (seed 004, verbatim) -------------------------------------------------------
SEED_TRAIN_YAML = """\
data_path:
  routing_data_train: 'data/example_data/routing_data/default_routing_train_data.jsonl'
  routing_data_test: 'data/example_data/routing_data/default_routing_test_data.jsonl'
  llm_data: 'data/example_data/llm_candidates/default_llm.json'

model_path:
  save_model_path: 'saved_models/automix/automix_model.pkl'

hparam:
  routing_method: "POMDP"      # Recommended for optimal performance
  num_bins: 8                  # Discretization granularity
  small_model_cost: 1          # Cost of small model
  large_model_cost: 50         # Cost of large model (50x more expensive)
  verifier_cost: 1             # Cost of verification
  verbose: true
  max_workers: 5               # Parallel API calls for speed

metric:
  weights:
    performance: 1
    cost: 0
    llm_judge: 0
"""

SEED_TEST_YAML = """\
data_path:
  query_data_test: 'data/example_data/query_data/default_query_test.jsonl'
  llm_data: 'data/example_data/llm_candidates/default_llm.json'

model_path:
  load_model_path: 'saved_models/automix/automix_model.pkl'

hparam:
  routing_method: "POMDP"
  num_bins: 8
  small_model_cost: 1
  large_model_cost: 50
  verifier_cost: 1
  max_workers: 5
"""


@pytest.mark.parametrize("text", [SEED_TRAIN_YAML, SEED_TEST_YAML], ids=["train", "test"])
def test_the_seeds_yaml_examples_parse(tmp_path: Path, text: str) -> None:
    from routers.config import build_router, load_config_file

    path = tmp_path / "automix.yaml"
    path.write_text(text)
    config = load_config_file(path)
    # llm_data names a file of the seed's repository; the router itself needs only the hparams.
    router = AutomixRouter(config.router_params(), VOTES_LLM_DATA)
    cfg = router.config
    assert (cfg.method, cfg.num_bins, cfg.small_model_cost, cfg.large_model_cost, cfg.verifier_cost) == (
        "POMDP", 8, 1.0, 50.0, 1.0)
    assert cfg.max_workers == 5 and cfg.verbose is True and cfg.device is None
    assert config.data_path.llm_data == "data/example_data/llm_candidates/default_llm.json"
    with pytest.raises(DataError, match="does not exist"):
        build_router(config, "automix")  # the seed's llm_data file is not in this repository


def test_runtime_hparams_are_validated_and_device_reaches_engines() -> None:
    from routers.cli import with_router_device
    from routers.engines import GeneratorConfig

    router = AutomixRouter({"device": "cuda:1", "max_workers": 3, "verbose": False}, VOTES_LLM_DATA)
    assert router.engine_device() == "cuda:1"
    assert with_router_device(GeneratorConfig(model="m"), router.engine_device()).device == "cuda:1"
    own = GeneratorConfig(model="m", device="cpu")  # an engine that names its own device keeps it
    assert with_router_device(own, router.engine_device()).device == "cpu"
    assert with_router_device(GeneratorConfig(model="m"), None).device == "auto"
    for bad in ({"device": "gpu"}, {"max_workers": 0}, {"verbose": "loud"}):
        with pytest.raises(ConfigError):
            AutomixRouter(bad, VOTES_LLM_DATA)


def test_fit_records_reference_scores_and_they_survive_save_load(tmp_path: Path) -> None:
    from routers.evaluation import threshold_for_large_share

    train = votes_dataset(300, seed=1)
    router = AutomixRouter({"method": "Threshold"}, VOTES_LLM_DATA)
    router.fit(train)
    suitability = router.dataset_scores(train)
    reference = router.reference_scores()
    assert reference is not None and len(reference) == 101
    assert reference[0] == suitability.min() and reference[-1] == suitability.max()
    threshold = threshold_for_large_share(reference, 0.3)
    achieved = float(np.mean(suitability < threshold))
    # p_ver takes 9 values here, so a share is reachable only up to the tie it falls in.
    assert abs(achieved - 0.3) <= float(np.max(np.unique(suitability, return_counts=True)[1])) / len(suitability)
    router.save(tmp_path)
    np.testing.assert_array_equal(AutomixRouter.load(tmp_path).reference_scores(), reference)


def test_the_train_job_with_the_stored_votes_samples_nothing_and_refits_the_shipped_policy(
        routing_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """configs/train/automix.yaml picks the seeded 96 that build_artifact verified: all in the votes file, so
    the job joins them, starts no sampler, writes its own votes file and fits the shipped policy."""
    import yaml

    from routers.data.location import DATA_ENV
    from routers.paths import HOME_ENV
    from train_jobs.automix import AutomixJobConfig, train_automix

    monkeypatch.setenv(DATA_ENV, str(routing_data_dir))
    monkeypatch.setenv(HOME_ENV, str(ROOT))
    router_cfg = yaml.safe_load((ROOT / "configs/routers/automix.yaml").read_text())
    router_cfg["model_path"] = {"save_model_path": str(tmp_path / "artifact")}
    router_cfg["hparam"]["verified_only"] = False  # every one of the job's 96 queries must have stored votes
    (tmp_path / "automix.yaml").write_text(yaml.safe_dump(router_cfg))
    job = yaml.safe_load((ROOT / "configs/train/automix.yaml").read_text())
    job.update(router_config=str(tmp_path / "automix.yaml"), output_dir=str(tmp_path / "run"), evaluate=False)
    summary = train_automix(AutomixJobConfig.model_validate(job))
    assert "sampling" not in summary and summary["train"]["n_train"] == 96
    written = (tmp_path / "run/verifier_votes.jsonl").read_text()
    assert written == (ROOT / "artifacts/automix/verifier_votes.jsonl").read_text()  # the same lines, in order
    refit = flat(json.loads((tmp_path / "artifact/router.json").read_text())["state"])
    shipped = flat(json.loads((ROOT / "artifacts/automix/router.json").read_text())["state"])
    assert all(refit[key] == shipped[key] for key in ("policy.lambda", "policy.prior", "policy.observation"))


# --- tiers: a cascade over N models -------------------------------------------------------------------------
@pytest.mark.slow
def test_tiers_walk_the_models_cheapest_first_and_name_where_they_stopped(tiny_model_dir: Path) -> None:
    """Three tiers on two real (tiny, random) generators: threshold 0 keeps every answer at the first tier;
    a threshold no score reaches escalates through the middle tier to the last, which only answers; the calls
    of every visited tier are counted under its own name."""
    import asyncio

    from routers.engines import Engines, GeneratorConfig, build_generator

    router = AutomixRouter({"method": "Threshold", "num_samples": 2, "verifier_max_tokens": 3,
                            "answer_max_tokens": 4}, VOTES_LLM_DATA)
    router.fit(votes_dataset(60))
    engine = GeneratorConfig(model=str(tiny_model_dir))
    engines = Engines(models={"cheap": build_generator(engine), "mid": build_generator(engine)})
    router.with_tiers(["cheap", "mid", "top"])
    queries = ["What is 12 + 30?", "Name a prime above 10."]

    kept = asyncio.run(router.aroute_many(queries, engines, 0.0))
    for decision in kept:
        assert decision.app_model == "cheap" and decision.model_name == "cheap" and not decision.use_large
        assert decision.answer is not None and [s["model"] for s in decision.extra["tiers"]] == ["cheap"]
        assert [(u.role, u.purpose) for u in decision.usage] == [("cheap", "answer"), ("cheap", "verification")]

    escalated = asyncio.run(router.aroute_many(queries, engines, 1.0 + 1e-9))
    for decision in escalated:
        assert decision.app_model == "top" and decision.use_large and decision.answer is None
        assert [(s["model"], s["kept"]) for s in decision.extra["tiers"]] == [("cheap", False), ("mid", False)]
        assert [u.role for u in decision.usage] == ["cheap", "cheap", "mid", "mid"]
        assert decision.reason.startswith("cheap: ") and "; mid: " in decision.reason
        assert decision.reason.endswith("the last tier, top, answers")

    with pytest.raises(ConfigError, match="at least two distinct"):
        router.with_tiers(["cheap", "cheap"])
    with pytest.raises(ConfigError, match="'nowhere' model engine"):
        asyncio.run(router.with_tiers(["cheap", "nowhere", "top"]).aroute_many(queries, Engines(
            models={"cheap": engines.models["cheap"]}), 1.0 + 1e-9))
