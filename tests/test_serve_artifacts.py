"""The Serve app refuses, at build time, a Hybrid artifact paired with an embedder it was not trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from routers.engines import EmbedderConfig
from routers.errors import ConfigError
from serve_app.config import check_embedder_matches, parse_app_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_HYBRID = ROOT / "artifacts" / "hybrid_llm"


def cpu_app_args() -> dict[str, Any]:
    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    for spec in args["models"].values():  # existing dirs, so only the embedder check can fail
        spec["engine"]["model"] = str(ROOT)
    return args


def trained_embedder() -> dict[str, Any]:
    return json.loads((SHIPPED_HYBRID / "router.json").read_text())["state"]["embedder"]


def test_the_shipped_cpu_app_pairs_the_hybrid_artifact_with_its_own_embedder() -> None:
    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    served = EmbedderConfig.model_validate(args["embedder"]["engine"])
    check_embedder_matches("hybrid", SHIPPED_HYBRID, served)  # no error
    trained = trained_embedder()
    assert Path(served.model).name == Path(trained["model"]).name
    assert served.max_length == trained["max_length"]


def test_a_longformer_embedder_in_front_of_a_minilm_mlp_fails_at_build_time() -> None:
    args = cpu_app_args()
    args["embedder"]["engine"] = {"model": "allenai/longformer-base-4096", "max_length": 4096}
    with pytest.raises(ConfigError, match=r"trained on 'all-minilm-l6-v2' embeddings.*train_jobs\.hybrid"):
        parse_app_config(args).resolved()


def test_a_different_pooling_fails_and_names_the_key() -> None:
    served = EmbedderConfig.model_validate({**trained_embedder(), "pooling": "cls"})
    with pytest.raises(ConfigError, match="pooling 'cls' but the MLP was trained with 'mean'"):
        check_embedder_matches("hybrid", SHIPPED_HYBRID, served)


def test_only_max_length_differing_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    served = EmbedderConfig.model_validate({**trained_embedder(), "max_length": 128})
    check_embedder_matches("hybrid", SHIPPED_HYBRID, served)
    assert "max_length 128 differs" in caplog.text


def test_an_unreadable_manifest_is_a_config_error(tmp_path: Path) -> None:
    artifact = tmp_path / "hybrid"
    shutil.copytree(SHIPPED_HYBRID, artifact)
    (artifact / "router.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        check_embedder_matches("hybrid", artifact, EmbedderConfig.model_validate(trained_embedder()))
