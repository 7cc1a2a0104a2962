"""Where a job's paths point: LLMROUTER_HOME, config files, model directories, Ray's working-dir copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routers.errors import ConfigError, EngineError
from routers.paths import config_file, resolve_model_path, resolve_path
from tests.job_helpers import MINILM, write_yaml
from train_jobs import hybrid
from train_jobs.common import ray_working_dir_copy, require_home_outside_ray_copy, router_error_in


def in_ray_working_dir_copy(monkeypatch: pytest.MonkeyPatch, copy: Path) -> None:
    """The environment Ray gives the driver of a job submitted with ``--working-dir``."""
    monkeypatch.chdir(copy)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip", "env_vars": {}}, "metadata": {}}))


def test_relative_paths_resolve_against_llmrouter_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    assert resolve_path("runs/hybrid") == tmp_path / "runs/hybrid"
    assert resolve_path("/abs/path") == Path("/abs/path")


def test_a_missing_local_model_names_the_key_and_the_directory_looked_at(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        resolve_model_path("models/all-minilm-l6-v2", "engines.embedder.model")
    message = str(caught.value)
    assert message.startswith("engines.embedder.model: model directory 'models/all-minilm-l6-v2' does not exist")
    assert str(tmp_path / "models/all-minilm-l6-v2") in message and f"LLMROUTER_HOME={tmp_path}" in message
    assert resolve_model_path("google/gemma-2b") == "google/gemma-2b"  # a hub id is fetched where it runs
    (tmp_path / "models/all-minilm-l6-v2").mkdir(parents=True)
    assert resolve_model_path("models/all-minilm-l6-v2") == str((tmp_path / "models/all-minilm-l6-v2").resolve())


def test_an_engine_built_on_a_missing_model_is_an_engine_error_with_the_path(tmp_path: Path) -> None:
    from routers.engines import EmbedderConfig, build_embedder

    with pytest.raises(EngineError, match=f"cannot load model: model directory .* \\(looked at {tmp_path}/gone"):
        build_embedder(EmbedderConfig(model=str(tmp_path / "gone")))


def test_config_files_come_from_the_working_directory_then_llmrouter_home(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy, home = tmp_path / "copy", tmp_path / "home"
    write_yaml(copy / "configs/a.yaml", {})
    write_yaml(home / "configs/a.yaml", {})
    write_yaml(home / "configs/only_home.yaml", {})
    monkeypatch.chdir(copy)
    monkeypatch.setenv("LLMROUTER_HOME", str(home))
    assert config_file("configs/a.yaml") == Path("configs/a.yaml")  # what was submitted
    assert config_file("configs/only_home.yaml") == home / "configs/only_home.yaml"


def test_outside_a_ray_job_nothing_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("LLMROUTER_HOME", raising=False)
    assert ray_working_dir_copy() is None
    require_home_outside_ray_copy()
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))  # submitted, no upload
    assert ray_working_dir_copy() is None


def test_a_job_in_rays_copy_needs_llmrouter_home_outside_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = tmp_path / "_ray_pkg_0123"
    copy.mkdir()
    in_ray_working_dir_copy(monkeypatch, copy)
    assert ray_working_dir_copy() == copy
    monkeypatch.delenv("LLMROUTER_HOME", raising=False)
    with pytest.raises(ConfigError, match="Ray's temporary copy of the uploaded working directory .*LLMROUTER_HOME"):
        require_home_outside_ray_copy()
    monkeypatch.setenv("LLMROUTER_HOME", ".")  # the copy itself
    with pytest.raises(ConfigError, match="export LLMROUTER_HOME=\\$PWD"):
        require_home_outside_ray_copy()
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path / "checkout"))
    require_home_outside_ray_copy()


def test_a_job_started_in_rays_copy_without_a_home_exits_2_before_reading_anything(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    in_ray_working_dir_copy(monkeypatch, tmp_path)
    monkeypatch.delenv("LLMROUTER_HOME", raising=False)
    assert hybrid.main(["--config", "configs/train/hybrid.yaml", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_jobs.hybrid: error: this job runs in Ray's temporary copy") and "Traceback" not in err


def tiny_data_dir(path: Path) -> Path:
    """A data directory with a two-query ``mmlu_train.jsonl`` and its ``llm_candidates.json`` (made up)."""
    path.mkdir(parents=True, exist_ok=True)
    models = ("small-llm", "large-llm")
    (path / "llm_candidates.json").write_text(json.dumps({m: {"size": "1B", "input_price": 1.0, "output_price": 1.0}
                                                          for m in models}))
    (path / "mmlu_train.jsonl").write_text("".join(
        json.dumps({"task_name": "mmlu/x", "query": q, "model_name": m, "performance": 1.0}) + "\n"
        for q in ("first question", "second question") for m in models))
    return path


def test_a_hybrid_job_with_a_missing_embedder_fails_before_ray_starts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMROUTER_DATA", str(tiny_data_dir(tmp_path / "data")))
    router = write_yaml(tmp_path / "router.yaml", {
        "router": "hybrid_llm",
        "data_path": {"routing_data_train": "${LLMROUTER_DATA}/mmlu_train.jsonl",
                      "llm_data": "${LLMROUTER_DATA}/llm_candidates.json"},
        "model_path": {"save_model_path": str(tmp_path / "artifact")},
        "engines": {"embedder": {"model": f"models/{MINILM.name}"}},
    })
    job = write_yaml(tmp_path / "job.yaml", {"router_config": str(router), "output_dir": str(tmp_path / "run")})
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    assert hybrid.main(["--config", str(job), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"engines.embedder.model: model directory 'models/{MINILM.name}' does not exist" in err
    assert str(tmp_path / "models" / MINILM.name) in err
    assert not (tmp_path / "run/embedding_cache").exists()


# --- ${LLMROUTER_DATA}: the data directory, not under LLMROUTER_HOME ----------------------------------------
def test_the_data_placeholder_names_the_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMROUTER_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    assert resolve_path("${LLMROUTER_DATA}/mmlu_train.jsonl") == tmp_path / "data/mmlu_train.jsonl"
    assert resolve_path("${LLMROUTER_DATA}/multimodel/llmrouter/train.json") == \
        tmp_path / "data/multimodel/llmrouter/train.json"
    assert resolve_path("${LLMROUTER_DATA}") == tmp_path / "data"
    assert resolve_path("data/x.jsonl") == tmp_path / "home/data/x.jsonl"  # no placeholder: LLMROUTER_HOME
    for misplaced in ("runs/${LLMROUTER_DATA}/x.jsonl", "${LLMROUTER_DATA}x.jsonl"):
        with pytest.raises(ConfigError, match=r"can only start a path"):
            resolve_path(misplaced)


def test_unset_the_placeholder_falls_back_to_shared_data_beside_the_checkout_then_says_how_to_get_data(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from routers.data import location

    monkeypatch.delenv("LLMROUTER_DATA", raising=False)
    monkeypatch.setattr(location, "repo_root", lambda: tmp_path / "checkout")
    monkeypatch.setattr(location, "USER_DATA_DIR", tmp_path / "no-cache")
    with pytest.raises(ConfigError, match=r"no routing-data directory .*`llmrouter data get NAME`"):
        resolve_path("${LLMROUTER_DATA}/mmlu_train.jsonl")
    (tmp_path / "checkout").mkdir()
    (tmp_path / "shared/data").mkdir(parents=True)
    assert resolve_path("${LLMROUTER_DATA}/mmlu_train.jsonl") == tmp_path / "shared/data/mmlu_train.jsonl"


def test_the_placeholder_is_resolved_in_this_checkout_without_llmrouter_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a clone with ../shared/data beside it (CI, the development machines) reads with nothing set."""
    from routers.data.location import SHARED_DATA_RELATIVE_TO_REPO, repo_root

    shared = (repo_root() / SHARED_DATA_RELATIVE_TO_REPO).resolve()
    if not shared.is_dir():
        pytest.skip(f"no {shared} beside this checkout")
    monkeypatch.delenv("LLMROUTER_DATA", raising=False)
    assert resolve_path("${LLMROUTER_DATA}/llm_candidates.json") == shared / "llm_candidates.json"


def test_a_job_whose_data_directory_lacks_the_file_names_it_and_the_command_that_gets_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LLMROUTER_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("LLMROUTER_HOME", str(tmp_path))
    assert hybrid.main(["--config", "configs/train/hybrid.yaml", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train_jobs.hybrid: error: {tmp_path / 'empty'}/") and "file does not exist" in err
    assert "`llmrouter data get routellm --from DIR`" in err and "Traceback" not in err


def test_router_errors_raised_inside_ray_tasks_are_found_behind_rays_wrappers() -> None:
    from ray.exceptions import RayTaskError

    cause = ConfigError("engines.small.model: model directory 'models/x' does not exist")
    wrapped = RayTaskError("sample", "Traceback (most recent call last): ...", cause)
    assert router_error_in(wrapped) is cause
    try:
        try:
            raise cause
        except ConfigError as exc:
            raise RuntimeError("actor died") from exc
    except RuntimeError as outer:
        assert router_error_in(outer) is cause
    assert router_error_in(ValueError("not ours")) is None
