"""bench/gpu_smoke.py's own plumbing, on this CPU: argument parsing, the table, failure reporting, and the dry run
that builds every stage's deployment and engine configs (vLLM's included) without starting anything. The GPU run
itself needs a GPU and never runs in CI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import require_vllm

ROOT = Path(__file__).resolve().parents[1]


def load_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "bench" / "gpu_smoke.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke() -> ModuleType:
    return load_smoke()


def test_arguments_default_to_every_stage_and_refuse_unknown_ones(smoke: ModuleType) -> None:
    args = smoke.parse_args([])
    assert args.stages == ["a", "b", "c", "d"] and not args.dry_run and args.budget_s < 480   # under 8 minutes
    assert smoke.parse_args(["--dry-run", "--stages", "c,a"]).stages == ["c", "a"]
    with pytest.raises(SystemExit):
        smoke.parse_args(["--stages", "a,e"])


def test_a_failing_stage_is_a_row_of_the_table_and_the_exit_status(smoke: ModuleType, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def broken(ctx: Any) -> dict[str, Any]:
        raise RuntimeError("no CUDA device\nsecond line")

    monkeypatch.setattr(smoke, "STAGE_FUNCTIONS", {**smoke.STAGE_FUNCTIONS, "a": broken, "b": lambda ctx: {"x": 1}})
    monkeypatch.setattr(smoke, "missing_inputs", list)
    out = tmp_path / "smoke.json"
    assert smoke.main(["--dry-run", "--stages", "a,b", "--out", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["stage", "status", "seconds", "figures"]
    assert "FAIL RuntimeError: no CUDA device" in lines[1] and "second line" not in lines[1]
    assert lines[2].split()[:2] == ["b", "dry-ok"] and lines[2].endswith('{"x": 1}')
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and [s["stage"] for s in report["stages"]] == ["a", "b"]


def test_stages_past_the_time_budget_are_skipped(smoke: ModuleType) -> None:
    ctx = smoke.Context(dry=True, port=0, deadline=0.0)
    result = smoke.run_stage("a", ctx)
    assert result.status.startswith("skipped") and result.figures == {}


def test_missing_local_models_stop_the_run_before_anything_starts(smoke: ModuleType,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "missing_inputs", lambda: ["models/smollm2-135m-instruct/config.json"])
    assert smoke.main(["--dry-run"]) == 2


@pytest.mark.slow
def test_the_dry_run_builds_every_stage(smoke: ModuleType, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Every stage's deployments, LLMConfig, engine arguments and vLLM engine config build on this CPU."""
    if smoke.missing_inputs():
        pytest.skip(f"run `bash scripts/setup.sh` first: {smoke.missing_inputs()}")
    require_vllm()
    out = tmp_path / "smoke.json"
    assert smoke.main(["--dry-run", "--out", str(out)]) == 0, capsys.readouterr().out
    stages = {s["stage"]: s for s in json.loads(out.read_text())["stages"]}
    assert [s["status"] for s in stages.values()] == ["dry-ok"] * 4
    assert stages["a"]["figures"]["executor"] == "ray"   # the Ray executor, as the TP=2 layout runs it
    assert stages["a"]["figures"]["bundles"] == [{"CPU": 1}, {"GPU": 1}]
    assert all(stages[s]["figures"]["vllm_config"] == "tp=1" for s in "abc")
    assert stages["d"]["figures"]["vllm_engine"]["backend"] == "vllm"
