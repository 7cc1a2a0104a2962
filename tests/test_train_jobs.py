"""Each train_jobs entrypoint on tiny real data and models, on a local Ray cluster (2 CPU workers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / "models/smollm2-135m-instruct"
MINILM = ROOT / "models/all-minilm-l6-v2"
DATA = ROOT / "data/routing"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def write_yaml(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path


def tiny_routing_files(tmp_path: Path, source: str, n_train: int, n_test: int) -> tuple[str, str]:
    """The first queries of a shipped routing file (both models' lines), as small train/test files."""
    import gzip

    lines = [line for line in gzip.open(DATA / source, "rt").read().split("\n") if line.strip()]
    by_query: dict[str, list[str]] = {}
    for line in lines:
        by_query.setdefault(json.loads(line)["query"], []).append(line)
    groups = [g for g in by_query.values() if len(g) == 2]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("\n".join(line for g in groups[:n_train] for line in g) + "\n")
    test.write_text("\n".join(line for g in groups[n_train:n_train + n_test] for line in g) + "\n")
    return str(train), str(test)


def router_yaml(tmp_path: Path, router: str, train: str, test: str | None, hparam: dict[str, Any],
                engines: dict[str, Any] | None = None) -> Path:
    payload: dict[str, Any] = {
        "router": router,
        "data_path": {"routing_data_train": train, "llm_data": str(DATA / "llm_candidates.json")},
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
    from routers.hybrid.router import HybridLLMRouter
    from train_jobs.hybrid import main

    train, test = tiny_routing_files(tmp_path, "mmlu_train.jsonl.gz", 160, 60)
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


def test_automix_job_samples_on_two_actors_and_refits_from_saved_samples(tmp_path: Path, ray_cluster: None) -> None:
    require(SMOLLM)
    from routers.automix.router import AutomixRouter
    from train_jobs.automix import main

    train, _ = tiny_routing_files(tmp_path, "gsm8k_train.jsonl.gz", 4, 0)
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
    # refit from the saved samples: no small model needed any more
    refit_cfg = router_yaml(tmp_path, "automix", str(samples), None, {**hparam, "routing_method": "POMDP", "num_bins": 3})
    job2 = write_yaml(tmp_path / "job2.yaml", {"router_config": str(refit_cfg), "output_dir": str(tmp_path / "run2")})
    assert main(["--config", str(job2), "--quiet"]) == 0
    assert "sampling" not in json.loads((tmp_path / "run2/metrics.json").read_text())


def test_causal_lm_job_trains_with_two_ddp_workers_and_serves(tmp_path: Path, ray_cluster: None) -> None:
    require(SMOLLM)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from routers.causal_lm.router import CausalLMRouter
    from routers.engines import build_generator
    from train_jobs.causal_lm import main

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM))
    base = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    train, test = tiny_routing_files(tmp_path, "mmlu_train.jsonl.gz", 48, 8)
    hparam = {"base_model": str(base), "learning_rate": 0.01, "batch_size": 4, "max_length": 48, "max_steps": 8,
              "num_epochs": 4, "lora_r": 4, "lora_alpha": 8, "max_new_tokens": 8, "balance_labels": False}
    router_cfg = router_yaml(tmp_path, "causallm_router", train, test, hparam)
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(router_cfg), "output_dir": str(tmp_path / "run"),
                                             "checkpoint_every": 4, "eval_queries": 8, "ray": {"num_workers": 2}})
    assert main(["--config", str(job), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["train"]["steps"] == 8
    assert metrics["train"]["final_loss"] < metrics["train"]["first_loss"]
    router = CausalLMRouter.load(tmp_path / "artifact")
    router.bind_engines(generators={"router": build_generator(router.default_engine_config("router"))})
    result = router.route_single("What is 2 + 2?")
    assert result["model_name"] in router.llm_data
    assert (tmp_path / "run/checkpoint/trainer_state.json").exists()


def test_jobs_fail_loudly_on_bad_config_and_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train_jobs.hybrid import main

    bad = write_yaml(tmp_path / "bad.yaml", {"router_config": "x.yaml", "output_dir": str(tmp_path), "nope": 1})
    assert main(["--config", str(bad)]) == 2
    assert "nope" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "q", "model_name": "m", "performance": 1}\n{not json}\n')
    router_cfg = router_yaml(tmp_path, "hybrid_llm", str(broken), None, {})
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(router_cfg), "output_dir": str(tmp_path / "run")})
    assert main(["--config", str(job)]) == 2
    err = capsys.readouterr().err
    assert "broken.jsonl:2" in err and "not valid JSON" in err
