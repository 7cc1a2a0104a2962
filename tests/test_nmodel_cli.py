"""``llmrouter evaluate`` on N-model data: ``--multimodel`` files, ``--pool`` (slow: the real pools), and the
errors that keep the two-model and N-model paths apart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from routers import cli
from routers.data.location import find_data_dir
from routers.data.multimodel import MultiModelDataset
from tests.nmodel_synthetic import clusters

N_MODEL_KEYS = {"quality", "cost", "best_single_model", "best_single_quality", "best_single_cost", "oracle_quality",
                "aiq", "quality_at_best_single_cost"}


def write_routerbench_csv(data: MultiModelDataset, path: Path) -> Path:
    """``data`` in RouterBench's wide CSV form (correctness, response and cost columns per model)."""
    header = ["sample_id", "prompt", "eval_name", *data.models, *(f"{m}|model_response" for m in data.models),
              *(f"{m}|total_cost" for m in data.models), "oracle_model_to_route_to"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, query in enumerate(data.queries):
            writer.writerow([data.ids[i], repr([query]), data.task_names[i], *data.quality[i].tolist(),
                             *(repr(["answer"]) for _ in data.models), *data.cost[i].tolist(), data.models[0]])
    return path


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_evaluate_multimodel_files_prints_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_routerbench_csv(clusters(30, seed=1)[0], tmp_path / "train.csv")
    test = write_routerbench_csv(clusters(20, seed=2)[0], tmp_path / "test.csv")
    plot = tmp_path / "curves.png"
    code = cli.main(["evaluate", "--multimodel", "--train", str(train), "--test", str(test), "--quiet", "--json",
                     "--router", "nmodel_single,nmodel_random,nmodel_oracle", "--bootstrap", "30",
                     "--plot", str(plot)])
    assert code == 0 and plot.stat().st_size > 0
    reports = {r["router"]: r for r in json_lines(capsys.readouterr().out)}
    assert set(reports) == {"nmodel_single", "nmodel_random", "nmodel_oracle"}
    for report in reports.values():
        assert N_MODEL_KEYS <= set(report)
        assert report["best_single_model"] == "dear" and report["n_queries"] == 60
    oracle = reports["nmodel_oracle"]
    assert oracle["quality"] == pytest.approx(oracle["oracle_quality"])
    assert reports["nmodel_single"]["quality"] == pytest.approx(reports["nmodel_single"]["best_single_quality"])
    assert oracle["intervals"]["aiq"]["low"] <= oracle["aiq"] <= oracle["intervals"]["aiq"]["high"]
    code = cli.main(["evaluate", "--multimodel", "--train", str(train), "--test", str(test), "--quiet",
                     "--router", "nmodel_single,nmodel_oracle", "--bootstrap", "0"])
    assert code == 0 and "best single model dear" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--router", "nmodel_knn", "--train", "a.jsonl", "--test", "b.jsonl"], "N-model router(s); evaluate them"),
    (["--pool", "llmrouter", "--router", "knn"], "two-model router(s); on N-model data use"),
    (["--pool", "llmrouter", "--router", "nmodel_knn", "--leave-domains-out", "3"], "--leave-domains-out: two-model"),
    (["--pool", "llmrouter", "--router", "nmodel_knn", "--train", "a.csv"], "--pool reads a published pool"),
    (["--multimodel", "--router", "nmodel_knn", "--train", "a.csv"], "--multimodel needs --train and --test"),
])
def test_the_two_paths_reject_each_others_routers_and_options(argv: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["evaluate", "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_pool_name_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--pool", "nope", "--router", "nmodel_knn"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(find_data_dir() is None, reason="no routing-data directory (LLMROUTER_DATA)")
def test_evaluate_on_the_real_pools(capsys: pytest.CaptureFixture[str]) -> None:
    """Both published pools through the CLI: the kNN router and the baselines (embeds ~8k queries once,
    minutes on a CPU; the cache makes re-runs fast)."""
    for pool, best in (("llmrouter", "llama-3.1-nemotron-51b-instruct"), ("routerbench", "gpt-4-1106-preview")):
        code = cli.main(["evaluate", "--pool", pool, "--router", "nmodel_knn,nmodel_single,nmodel_oracle",
                         "--json", "--quiet", "--bootstrap", "50"])
        assert code == 0
        reports = {r["router"]: r for r in json_lines(capsys.readouterr().out)}
        knn, oracle = reports["nmodel_knn"], reports["nmodel_oracle"]
        assert knn["best_single_model"] == best
        assert knn["aiq"] > knn["single_models_aiq"]
        assert knn["quality_at_best_single_cost"] >= knn["best_single_quality"] - 0.01
        assert oracle["quality"] == pytest.approx(oracle["oracle_quality"]) and np.isfinite(oracle["aiq"])


def test_train_saves_an_n_model_router_and_infer_routes_with_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    train = write_routerbench_csv(clusters(30, seed=1)[0], tmp_path / "train.csv")
    out = tmp_path / "single"
    assert cli.main(["train", "--multimodel", "--train", str(train), "--router", "nmodel_single", "--out", str(out),
                     "--params", '{"default_rule": "quality=0.9"}', "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["saved_to"] == str(out)
    assert cli.main(["infer", "--artifact", str(out), "--query", "easy query", "--rule", "budget=0.0005",
                     "--quiet"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model_name"] == "cheap" and decision["rule"] == "budget=0.0005"
    assert [c["model"] for c in decision["candidates"]] == ["cheap", "mid", "dear"]


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--router", "knn"], "give --config"),
    (["train", "--multimodel", "--router", "nmodel_knn"], "needs --router NAME and --out DIR"),
    (["train", "--multimodel", "--router", "nmodel_knn", "--out", "x", "--params", "{"], "--params is not valid JSON"),
    (["infer", "--query", "q"], "give --config"),
])
def test_train_and_infer_say_which_path_needs_what(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err
