"""Each train_jobs entrypoint on tiny real data and models, on a local Ray cluster (2 CPU workers)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import vllm_available
from tests.job_helpers import MINILM, SMOLLM, data_file, save_tiny_router_lm, tiny_routing_files, write_yaml
from tests.synthetic_data import POLICY_LARGE as LARGE
from tests.synthetic_data import POLICY_SMALL as SMALL
from tests.synthetic_data import policy_dataset as dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def router_yaml(tmp_path: Path, router: str, train: str, test: str | None, hparam: dict[str, Any],
                engines: dict[str, Any] | None = None) -> Path:
    payload: dict[str, Any] = {
        "router": router,
        "data_path": {"routing_data_train": train, "llm_data": str(data_file("llm_candidates.json"))},
        "model_path": {"save_model_path": str(tmp_path / "artifact"), "load_model_path": str(tmp_path / "artifact")},
        "hparam": hparam,
    }
    if test:
        payload["data_path"]["routing_data_test"] = test
    if engines:
        payload["engines"] = engines
    return write_yaml(tmp_path / f"{router}.yaml", payload)


def require(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"run `bash scripts/setup.sh` first; missing {missing}")


def test_hybrid_job_embeds_with_ray_data_and_writes_a_servable_artifact(tmp_path: Path, ray_cluster: None) -> None:
    require(MINILM)
    from routers.domain_prior.router import DomainPriorRouter
    from routers.hybrid.router import HybridLLMRouter
    from train_jobs.hybrid import main

    train, test = tiny_routing_files(tmp_path, "mmlu_train.jsonl", 160, 60)
    router_cfg = router_yaml(tmp_path, "hybrid_llm", train, test, {"hidden_layer_sizes": [16], "max_iter": 100},
                             {"embedder": {"model": str(MINILM)}})
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(router_cfg), "output_dir": str(tmp_path / "run"),
                                             "ray": {"num_workers": 2, "batch_size": 32}})
    assert main(["--config", str(job), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["n_train"] == 160 and {"hybrid_llm", "random", "oracle"} <= set(metrics["test"])
    assert (tmp_path / "run/curves.png").stat().st_size > 1000
    loaded = HybridLLMRouter.load(tmp_path / "artifact")
    assert loaded.mlp is not None and loaded.mlp.input_dim == 384
    assert metrics["embedding"]["embedded"] == metrics["embedding"]["texts"] > 0
    # A rerun (here another embedding router: the domain prior) finds every query in the embedding cache:
    # nothing is embedded again.
    other = router_yaml(tmp_path, "domain_prior", train, test, {"min_topic_queries": 20},
                        {"embedder": {"model": str(MINILM)}})
    other_job = write_yaml(tmp_path / "job_domain_prior.yaml", {
        "router_config": str(other), "output_dir": str(tmp_path / "run"), "ray": {"num_workers": 2, "batch_size": 32}})
    assert main(["--config", str(other_job), "--quiet"]) == 0
    rerun = json.loads((tmp_path / "run/metrics.json").read_text())
    assert rerun["embedding"]["embedded"] == 0 and rerun["embedding"]["cached"] == metrics["embedding"]["texts"]
    assert rerun["router"] == "domain_prior" and {"domain_prior", "random", "oracle"} <= set(rerun["test"])
    assert DomainPriorRouter.load(tmp_path / "artifact").require_weights().embedding_dim == 384


def test_automix_job_samples_on_two_actors_and_refits_from_saved_samples(tmp_path: Path, ray_cluster: None) -> None:
    require(SMOLLM)
    from routers.automix.router import AutomixRouter
    from train_jobs.automix import main

    train, _ = tiny_routing_files(tmp_path, "gsm8k_train.jsonl", 4, 0)
    hparam = {"routing_method": "Threshold", "num_samples": 2, "verifier_max_tokens": 3, "sampling_batch_size": 2}
    router_cfg = router_yaml(tmp_path, "automix", train, None, hparam, {"small": {"model": str(SMOLLM)}})
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(router_cfg), "output_dir": str(tmp_path / "run"),
                                             "ray": {"num_workers": 2}})
    assert main(["--config", str(job), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["sampling"]["workers"] == 2 and metrics["sampling"]["queries"] == 4
    samples = tmp_path / "run/verification_samples.jsonl"
    votes = [json.loads(line).get("verifier_votes") for line in samples.read_text().splitlines()]
    assert sum(v is not None and len(v) == 2 for v in votes) == 4
    assert AutomixRouter.load(tmp_path / "artifact").fitted
    # A crash after the first query: its lines, then half a line. The rerun samples only the other three.
    lines = samples.read_text().splitlines()
    first_query = json.loads(lines[0])["query"]
    kept = [line for line in lines if json.loads(line)["query"] == first_query]
    samples.write_text("\n".join(kept) + "\n" + lines[-1][:20])
    assert main(["--config", str(job), "--quiet"]) == 0
    sampling = json.loads((tmp_path / "run/metrics.json").read_text())["sampling"]
    assert (sampling["already_sampled"], sampling["queries"]) == (1, 3)
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(records) == len(lines) and {r["query"] for r in records} == {json.loads(x)["query"] for x in lines}
    assert [r for r in records if r["query"] == first_query] == [json.loads(line) for line in kept]
    # refit from the saved samples: no small model needed any more
    refit_cfg = router_yaml(tmp_path, "automix", str(samples), None,
                            {**hparam, "routing_method": "POMDP", "num_bins": 3})
    job2 = write_yaml(tmp_path / "job2.yaml", {"router_config": str(refit_cfg), "output_dir": str(tmp_path / "run2")})
    assert main(["--config", str(job2), "--quiet"]) == 0
    assert "sampling" not in json.loads((tmp_path / "run2/metrics.json").read_text())


def test_causal_lm_job_trains_with_two_ddp_workers_resumes_from_ray_checkpoints_and_serves(
        tmp_path: Path, ray_cluster: None) -> None:
    require(SMOLLM)
    from routers.causal_lm.router import CausalLMRouter
    from routers.engines import build_generator
    from train_jobs.causal_lm import main

    base = save_tiny_router_lm(tmp_path / "tiny-llama")
    train, test = tiny_routing_files(tmp_path, "mmlu_train.jsonl", 48, 8)
    hparam = {"base_model": str(base), "learning_rate": 0.01, "batch_size": 4, "max_length": 48, "max_steps": 4,
              "num_epochs": 4, "lora_r": 4, "lora_alpha": 8, "max_new_tokens": 8, "balance_labels": False,
              "lr_schedule": "constant"}
    router_yaml(tmp_path, "causallm_router", train, test, hparam)
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(tmp_path / "causallm_router.yaml"),
                                             "output_dir": str(tmp_path / "run"), "checkpoint_every": 2,
                                             "eval_queries": 4, "ray": {"num_workers": 2}})
    # A run stopped at 4 steps, then the same job asked for 8: it continues from Ray Train's checkpoint.
    assert main(["--config", str(job), "--quiet"]) == 0
    first = json.loads((tmp_path / "run/metrics.json").read_text())
    assert first["ray_train"]["steps"] == 4 and len(first["ray_train"]["loss_per_step"]) == 4
    router_yaml(tmp_path, "causallm_router", train, test, {**hparam, "max_steps": 8})
    assert main(["--config", str(job), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    ray_train = metrics["ray_train"]
    assert metrics["workers"] == 2 and metrics["train"]["steps"] == 8 and metrics["train"]["resumed_from_step"] == 4
    # Ray Train's result: the loss of every step (the first 4 from the first run), the last checkpoint's metrics.
    assert len(ray_train["loss_per_step"]) == 8
    assert ray_train["loss_per_step"][:4] == first["ray_train"]["loss_per_step"]
    assert ray_train["metrics"]["step"] == 8 and ray_train["metrics"]["loss"] == ray_train["loss_per_step"][-1]
    assert metrics["train"]["final_loss"] < metrics["train"]["first_loss"]
    assert ray_train["checkpoint"].startswith(str(tmp_path / "run/ray_results/causal_lm/"))
    assert not (tmp_path / "run/checkpoint").exists()  # nothing on one node's local disk
    router = CausalLMRouter.load(tmp_path / "artifact")
    reference = router.reference_scores()  # stored for target-share routing (router-causal:share=0.3)
    assert reference is not None and router.reference_count == 48
    assert np.all(np.diff(np.asarray(reference)) >= 0) and 0.0 <= float(reference[0]) <= float(reference[-1]) <= 1.0
    hf_config = router.default_engine_config("router")
    router.bind_engines(generators={"router": build_generator(hf_config)})
    result = router.route_single("What is 2 + 2?")
    assert result["model_name"] in router.llm_data
    assert_vllm_serves_the_artifact(router, hf_config, ["What is 2 + 2?", "Name the largest planet."])

    # Data or settings changed: the job's check finds the latest checkpoint stale and moves the run aside,
    # so the next fit starts from scratch (the library test covers the fresh start itself).
    from routers.causal_lm.training import checkpoint_matches
    from train_jobs.common import latest_ray_checkpoint, set_aside_stale_run

    storage = str(tmp_path / "run/ray_results")
    with latest_ray_checkpoint(f"{storage}/causal_lm").as_directory() as latest:
        fingerprint = json.loads((Path(latest) / "trainer_state.json").read_text())["fingerprint"]
    assert set_aside_stale_run(storage, "causal_lm", lambda d: checkpoint_matches(d, fingerprint)) is None
    moved = set_aside_stale_run(storage, "causal_lm", lambda d: checkpoint_matches(d, "other data"))
    assert moved is not None and ".stale-" in moved and latest_ray_checkpoint(moved) is not None
    assert latest_ray_checkpoint(f"{storage}/causal_lm") is None


def assert_vllm_serves_the_artifact(router: Any, hf_config: Any, queries: list[str]) -> None:
    """Train -> serve: vLLM loads the job's merged safetensors as they are and decides as transformers does."""
    if not vllm_available():
        return
    from routers.engines import build_generator

    hf = router.router_generator()
    prompts = [router.router_prompt(q) for q in queries]
    names = router.candidate_continuations()
    want_scores = [hf.sequence_logprobs(p, names) for p in prompts]
    want_text = [r.text for r in hf.generate(prompts, router.router_params())]
    vllm = build_generator(hf_config.model_copy(update={
        "backend": "vllm", "device": "cpu", "dtype": "float32", "enforce_eager": True, "async_engine": False,
        "max_model_len": 256, "kv_cache_memory_gb": 0.125}))
    try:
        assert vllm.model_name == hf_config.model and Path(hf_config.model, "model.safetensors").exists()
        got_scores = vllm.batch_sequence_logprobs(prompts, names)
        for got, want in zip(got_scores, want_scores, strict=True):
            assert got == pytest.approx(want, abs=0.05, rel=0.01)
        assert [r.text for r in vllm.generate(prompts, router.router_params())] == want_text
    finally:
        vllm.shutdown()


def test_policy_job_runs_sft_then_dpo_on_two_ddp_workers_and_serves(
        tmp_path: Path, ray_cluster: None, tiny_gemma: Path) -> None:
    from routers.policy.datasets import oracle_records_from_routing
    from routers.policy.matrix import PolicyLabel
    from routers.policy.router import PolicyRouter
    from train_jobs.policy import main

    # The policy tests' short queries as an oracle dataset (train_jobs.oracle's output format).
    oracle = tmp_path / "oracle.jsonl"
    oracle.write_text("".join(r.model_dump_json() + "\n" for r in oracle_records_from_routing(dataset(), SMALL, LARGE)))
    train, _ = tiny_routing_files(tmp_path, "mmlu_train.jsonl", 4, 0)  # only names the model pair
    hparam = {"base_model": str(tiny_gemma), "sft_max_steps": 6, "dpo_max_steps": 2, "batch_size": 4,
              "sft_learning_rate": 5e-3, "dpo_learning_rate": 1e-3, "max_length": 160, "lora_r": 4, "lora_alpha": 8,
              "eval_fraction": 0.2}
    router_cfg = router_yaml(tmp_path, "policy_router", train, None, hparam)
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(router_cfg), "output_dir": str(tmp_path / "run"),
                                             "oracle_data": str(oracle), "save_steps": 3, "eval_queries": 4,
                                             "ray": {"num_workers": 2, "cpus_per_worker": 1}})
    assert main(["--config", str(job), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    trained, ray_train = metrics["train"], metrics["ray_train"]
    assert metrics["workers"] == 2 and (trained["sft_steps"], trained["dpo_steps"]) == (6, 2)
    assert trained["sft_final_loss"] < trained["sft_first_loss"]
    # Per-step losses came through ray.train.report into Ray Train's result.
    assert len(ray_train["sft_losses"]) == 6 and len(ray_train["dpo_losses"]) == 2
    assert ray_train["checkpoint"].startswith(str(tmp_path / "run/ray_results/policy/"))
    loaded = PolicyRouter.load(tmp_path / "artifact")
    result = loaded.route_single("What is 2 + 2?")
    assert result["policy"] in {p.value for p in PolicyLabel} and result["model_name"] in loaded.llm_data


def bad_line_file(tmp_path: Path, name: str, good: dict[str, Any], bad: str) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(good) + "\n" + bad + "\n")
    return path


def test_jobs_fail_loudly_on_bad_config_and_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every job stops with exit code 2 and the file and line at fault, before any model or Ray starts."""
    from train_jobs import automix, causal_lm, hybrid, oracle, policy

    bad = write_yaml(tmp_path / "bad.yaml", {"router_config": "x.yaml", "output_dir": str(tmp_path), "nope": 1})
    assert hybrid.main(["--config", str(bad)]) == 2
    assert "nope" in capsys.readouterr().err
    routing_line = {"query": "q", "model_name": "m", "performance": 1}
    broken = str(bad_line_file(tmp_path, "broken.jsonl", routing_line, "{not json}"))
    cases: list[tuple[Any, dict[str, Any], str]] = []
    for job, router in ((hybrid, "hybrid_llm"), (automix, "automix"), (causal_lm, "causallm_router"),
                        (policy, "policy_router")):
        router_cfg = router_yaml(tmp_path, router, broken, None, {})
        cases.append((job, {"router_config": str(router_cfg)}, "broken.jsonl:2"))
    oracle_line = {"query": "q", "medium_outcome": "correct", "large_outcome": "correct", "policy": "Standard_Query"}
    bad_oracle = bad_line_file(tmp_path, "oracle.jsonl", oracle_line, json.dumps({**oracle_line, "policy": "Maybe"}))
    cases.append((policy, {"router_config": str(router_yaml(tmp_path, "policy_router", broken, None, {})),
                           "oracle_data": str(bad_oracle)}, "oracle.jsonl:2"))
    benchmark = bad_line_file(tmp_path, "bench.jsonl", {"query": "1+1?", "ground_truth": "2"}, "[1, 2]")
    cases.append((oracle, {"benchmark": str(benchmark), "medium": {"model": "m"}, "large": {"model": "l"}},
                  "bench.jsonl:2"))
    # A resumable AutoMix samples file corrupted before its last line (not a crash's cut-off tail).
    samples_dir = tmp_path / "automix-run"
    samples_dir.mkdir()
    train, _ = tiny_routing_files(samples_dir, "gsm8k_train.jsonl", 2, 0)
    (samples_dir / "verification_samples.jsonl").write_text(
        "{cut\n" + json.dumps({"query": "q", "model_name": "m"}) + "\n")
    automix_cfg = router_yaml(samples_dir, "automix", train, None, {}, {"small": {"model": str(SMOLLM)}})
    cases.append((automix, {"router_config": str(automix_cfg), "output_dir": str(samples_dir)},
                  "verification_samples.jsonl:1"))
    for index, (job, settings, where) in enumerate(cases):
        config = write_yaml(tmp_path / f"job{index}.yaml", {"output_dir": str(tmp_path / f"run{index}"), **settings})
        assert job.main(["--config", str(config), "--quiet"]) == 2, job.__name__
        err = capsys.readouterr().err
        assert where in err and "error" in err, (job.__name__, err)


def test_nmodel_job_fits_in_a_ray_task_reports_the_test_split_and_saves(tmp_path: Path, ray_cluster: None,
                                                                        tiny_model_dir: Path) -> None:
    """train_jobs.nmodel on LLMRouter's pool (a 300-query training subset): the kNN router and the causal-LM
    router (a tiny random Llama, a few LoRA steps) each fit in a Ray task, report the test split with AIQ
    and task-cluster intervals, and save an artifact that loads and routes."""
    require(MINILM)
    from routers.data.location import DATA_ENV, data_dir
    from routers.data.multimodel import LLMROUTER_DIR
    from routers.nmodel.causal import MultiModelCausalLMRouter
    from routers.nmodel.routers import MultiModelKNNRouter
    from train_jobs.nmodel import main

    if not os.environ.get(DATA_ENV) and not (data_dir() / LLMROUTER_DIR).is_dir():  # set (CI): it must be there
        pytest.skip("no LLMRouter pool: `llmrouter data get llmrouter`")
    jobs = {
        "nmodel_knn": {"cv_folds": 3},
        "nmodel_causal": {"base_model": str(tiny_model_dir), "max_steps": 4, "batch_size": 4, "max_length": 48,
                          "max_train_examples": 16, "calibration_queries": 20, "score_batch_size": 32},
    }
    for router, params in jobs.items():
        job = write_yaml(tmp_path / f"{router}.yaml", {
            "router": router, "pool": "llmrouter", "max_train_queries": 300, "params": params, "bootstrap": 50,
            "save_to": str(tmp_path / router), "output_dir": str(tmp_path / f"run_{router}"),
            "ray": {"cpus_per_worker": 1}})
        assert main(["--config", str(job), "--quiet"]) == 0
        metrics = json.loads((tmp_path / f"run_{router}/metrics.json").read_text())
        assert metrics["router"] == router and metrics["n_train"] == 300 and metrics["n_test"] == 381
        report = metrics["test"]
        assert 0.0 < report["aiq"] <= 1.0 and report["intervals"]["aiq"]["low"] <= report["aiq"]
        assert report["best_single_model"] in report["models"]
    knn = MultiModelKNNRouter.load(tmp_path / "nmodel_knn")
    causal = MultiModelCausalLMRouter.load(tmp_path / "nmodel_causal")
    assert len(knn.models) == len(causal.models) == 9
    assert np.isfinite(causal.predict_quality(["What is 2 + 2?"])).all()


def test_nmodel_job_refuses_a_two_model_router_and_a_missing_source(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from train_jobs.nmodel import main

    for payload, message in (({"router": "hybrid_llm", "pool": "llmrouter"}, "chooses between two models"),
                             ({"router": "nmodel_knn"}, "either pool")):
        job = write_yaml(tmp_path / "bad.yaml", {**payload, "save_to": str(tmp_path / "a"),
                                                 "output_dir": str(tmp_path / "run")})
        assert main(["--config", str(job)]) == 2
        assert message in capsys.readouterr().err
