"""The ``llmrouter`` command on the shipped real routing data (no models needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from routers import cli
from routers.errors import EngineError

REQUIRED_KEYS = {"router", "n_test", "auc", "apgr", "cpt_50", "cpt_80", "cpt_95", "large_share", "quality", "cost"}


def evaluate_args(routers: str, train: Path, test: Path, llm_data: Path, *extra: str) -> list[str]:
    return ["evaluate", "--router", routers, "--train", str(train), "--test", str(test),
            "--llm-data", str(llm_data), "--quiet", *extra]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_evaluate_baselines_json(capsys, mmlu_train_path: Path, mmlu_test_path: Path, llm_data_path: Path) -> None:
    code = cli.main(evaluate_args("random,oracle,smallest,largest", mmlu_train_path, mmlu_test_path,
                                  llm_data_path, "--json"))
    assert code == 0
    reports = {r["router"]: r for r in json_lines(capsys.readouterr().out)}
    assert set(reports) == {"random", "oracle", "smallest_llm", "largest_llm"}
    for report in reports.values():
        assert REQUIRED_KEYS <= set(report) and {"quality_at_budget", "budget", "budget_fraction"} <= set(report)
        assert report["n_test"] > 2000 and report["budget_fraction"] == 0.5
        assert report["budget"] == pytest.approx(0.5 * reports["largest_llm"]["cost_large"])
    assert reports["random"]["apgr"] == pytest.approx(0.5, abs=0.05)
    assert reports["oracle"]["apgr"] > 1.0
    assert reports["smallest_llm"]["large_share"] == 0.0 and reports["largest_llm"]["large_share"] == 1.0
    assert reports["smallest_llm"]["cost"] < reports["random"]["cost"] < reports["largest_llm"]["cost"]
    assert reports["largest_llm"]["quality"] > reports["smallest_llm"]["quality"]
    # Half the always-large bill buys the oracle its best quality, and random less than that.
    assert reports["oracle"]["quality_at_budget"] == pytest.approx(reports["oracle"]["quality_oracle"])
    assert reports["random"]["quality_at_budget"] < reports["oracle"]["quality_at_budget"]


def test_evaluate_budget_option(capsys, gsm8k_train_path: Path, gsm8k_test_path: Path, llm_data_path: Path) -> None:
    assert cli.main(evaluate_args("oracle,largest", gsm8k_train_path, gsm8k_test_path, llm_data_path,
                                  "--json", "--budget", "1.0")) == 0
    reports = {r["router"]: r for r in json_lines(capsys.readouterr().out)}
    assert reports["largest_llm"]["budget_fraction"] == 1.0
    largest, oracle = reports["largest_llm"], reports["oracle"]
    # A constant score has two curve points (all small, all large); the whole large bill buys the better one.
    assert largest["quality_at_budget"] == pytest.approx(max(largest["quality_small"], largest["quality_large"]))
    assert oracle["quality_at_budget"] == pytest.approx(oracle["quality_oracle"])
    with pytest.raises(SystemExit):
        cli.main(evaluate_args("oracle", gsm8k_train_path, gsm8k_test_path, llm_data_path, "--budget", "2"))


def test_evaluate_table_plot_and_calibration(capsys, tmp_path: Path, gsm8k_train_path: Path,
                                             gsm8k_test_path: Path, llm_data_path: Path) -> None:
    plot = tmp_path / "curves.png"
    code = cli.main(evaluate_args("random,oracle", gsm8k_train_path, gsm8k_test_path, llm_data_path,
                                  "--plot", str(plot), "--target-large-share", "0.3"))
    assert code == 0
    out = capsys.readouterr().out
    assert "APGR" in out and "random" in out and "small alone" in out and "Q@budget" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_verbose_prints_load_summaries(capsys, gsm8k_train_path: Path, gsm8k_test_path: Path) -> None:
    assert cli.main(["evaluate", "--router", "smallest", "--train", str(gsm8k_train_path),
                     "--test", str(gsm8k_test_path), "--verbose", "--json"]) == 0
    captured = capsys.readouterr()
    assert "duplicate (query, model) lines skipped" in captured.out + captured.err
    assert "queries have outcomes for all of" in captured.err  # per-split coverage for the router's pair


def test_errors_exit_2_with_a_message(capsys, tmp_path: Path, gsm8k_test_path: Path) -> None:
    assert cli.main(["evaluate", "--router", "nope", "--train", str(gsm8k_test_path),
                     "--test", str(gsm8k_test_path)]) == 2
    assert "llmrouter: error: unknown router 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "model_name": "m"}\n')
    assert cli.main(["evaluate", "--router", "random", "--train", str(bad), "--test", str(bad)]) == 2
    assert f"{bad}:1: field 'performance'" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["setup-models", "--only", "no-such-model", "--models-dir", str(tmp_path)]) == 2
    assert "unknown local model" in capsys.readouterr().err


def test_infer_route_only_with_a_baseline(capsys, tmp_path: Path, llm_data_path: Path) -> None:
    config = tmp_path / "largest.yaml"
    config.write_text(f"router: largest\ndata_path:\n  llm_data: {llm_data_path}\n")
    assert cli.main(["infer", "--config", str(config), "--query", "What is 2+2?", "--route-only", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_name"] == "gpt-4-1106-preview" and result["cost"] > 0


def test_infer_a_two_model_router_by_an_n_model_rule(capsys, tmp_path: Path, llm_data_path: Path) -> None:
    config = tmp_path / "random.yaml"
    config.write_text(f"router: random\ndata_path:\n  llm_data: {llm_data_path}\n")
    base = ["infer", "--config", str(config), "--query", "What is 2+2?", "--route-only", "--quiet"]
    picks = {}
    for rule in ("budget=1e-12", "budget=1", "0", "1.5", "cost=0"):
        assert cli.main([*base, "--rule", rule]) == 0
        result = json.loads(capsys.readouterr().out)
        large = result["candidates"][1]["model"]
        assert result["rule"] == rule and result["candidates"][1]["quality"] == 1.0
        picks[rule] = "large" if result["model_name"] == large else "small"
    # no call fits 1e-12 USD: the cheaper; 1 USD fits the large model, which predicts the higher quality; a
    # threshold of 0 keeps every score small, 1.5 none; cost=0: quality only, so the reference (large) model
    assert picks == {"budget=1e-12": "small", "budget=1": "large", "0": "small", "1.5": "large", "cost=0": "large"}
    assert cli.main([*base, "--rule", "cheap=1"]) == 2
    assert "expected one of cost=L" in capsys.readouterr().err


def test_installed_console_script(mmlu_test_path: Path, llm_data_path: Path) -> None:
    script = shutil.which("llmrouter", path=str(Path(sys.executable).parent)) or shutil.which("llmrouter")
    if script is None:
        pytest.skip("the llmrouter console script is not installed (pip install -e .)")
    completed = subprocess.run(
        [script, *evaluate_args("random,oracle", mmlu_test_path, mmlu_test_path, llm_data_path, "--json")],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert completed.returncode == 0, completed.stderr
    assert [r["router"] for r in json_lines(completed.stdout)] == ["random", "oracle"]
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    for verb in ("train", "infer", "evaluate", "setup-models"):
        assert verb in help_text


@pytest.mark.slow
def test_setup_models_is_a_no_op_when_built(models_dir: Path) -> None:
    from routers.engines.local_models import LOCAL_MODELS, is_built

    for model in LOCAL_MODELS.values():
        try:
            built = is_built(models_dir / model.name, model)
        except EngineError as exc:  # the PyPI package is not installed in this environment
            pytest.skip(f"{model.package} not installed: {exc}")
        assert built, f"{model.name} is stale or missing; llmrouter setup-models would rebuild it"


@pytest.mark.slow
def test_reference_scores_adds_the_training_score_quantiles_to_an_old_artifact(
        tmp_path: Path, llm_data_path: Path, models_dir: Path) -> None:
    """An artifact without quantiles (fit before routers stored them) gets the ones a fresh fit would store."""
    from routers.automix.stored_votes import read_verifier_votes, text_sha256

    votes = Path(__file__).resolve().parents[1] / "artifacts" / "automix" / "verifier_votes.jsonl"
    voted = {query for query, _ in read_verifier_votes(votes)}
    train = tmp_path / "gsm8k_voted.jsonl"  # the training queries the shipped votes cover
    with (llm_data_path.parent / "gsm8k_train.jsonl").open() as lines:
        train.write_text("".join(line for line in lines if text_sha256(json.loads(line)["query"]) in voted))
    artifact = tmp_path / "automix"
    config = tmp_path / "automix.yaml"
    config.write_text(yaml.safe_dump({
        "router": "automix",
        "data_path": {"routing_data_train": str(train), "llm_data": str(llm_data_path)},
        "model_path": {"save_model_path": str(artifact), "load_model_path": str(artifact)},
        "hparam": {"routing_method": "Threshold", "num_samples": 4, "num_bins": 5, "verifier_votes": str(votes)},
        # the saved votes make sampling unnecessary; the small model is only loaded
        "engines": {"small": {"model": str(models_dir / "smollm2-135m-instruct")}},
    }))
    assert cli.main(["train", "--config", str(config), "--quiet"]) == 0
    manifest = json.loads((artifact / "router.json").read_text())
    from_fit = manifest.pop("reference_scores")
    (artifact / "router.json").write_text(json.dumps(manifest))  # as an artifact from before quantiles
    assert cli.main(["reference-scores", "--config", str(config), "--quiet"]) == 0
    added = json.loads((artifact / "router.json").read_text())["reference_scores"]
    assert added["count"] == from_fit["count"] == 96
    assert np.allclose(added["quantiles"], from_fit["quantiles"])
