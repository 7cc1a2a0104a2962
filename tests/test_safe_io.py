"""Artifacts are JSON + safetensors only: pickle-based files are never loaded, so never executed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routers.base import RouteDecision, Router
from routers.baselines import SmallestLLMRouter
from routers.data import RoutingDataset
from routers.errors import ArtifactError
from routers.safe_io import assert_no_unsafe_weights, load_arrays, save_arrays


class _CreatesFile:
    """Unpickling this calls open(marker, 'w'): a harmless stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_CreatesFile(marker))


def test_the_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    control = tmp_path / "control-marker"
    pickle.loads(malicious_pickle(control)).close()
    assert control.exists()


class TensorRouter(Router):
    """A minimal router whose learned state is one safetensors file, named in router.json."""

    name = "tensor_test"

    def fit(self, train: RoutingDataset) -> dict[str, Any]:
        self.resolve_pair(train)
        self.weights = np.arange(4, dtype=np.float32)
        self.fitted = True
        return {}

    def dataset_scores(self, data: RoutingDataset) -> np.ndarray:
        return np.zeros(len(data))

    async def aroute_many(self, queries: Any, engines: Any, thresholds: Any = None) -> list[RouteDecision]:
        return [self.decide(query, 0.0) for query in queries]

    def state(self) -> dict[str, Any]:
        return {"weights_file": "weights.safetensors"}

    def save_tensors(self, directory: Path) -> None:
        save_arrays(directory / "weights.safetensors", {"w": self.weights})

    def load_state(self, state: dict[str, Any], directory: Path) -> None:
        self.weights = load_arrays(directory / state["weights_file"])["w"]


@pytest.fixture
def saved_tensor_router(random_routing_dataset, tmp_path: Path) -> Path:
    router = TensorRouter()
    router.fit(random_routing_dataset)
    return router.save(tmp_path / "artifact")


def test_round_trip_reads_safetensors(saved_tensor_router: Path) -> None:
    assert TensorRouter.load(saved_tensor_router).weights.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("evil_name", ["weights.bin", "weights.pkl", "weights.pt", "weights.npy"])
def test_artifact_pointing_at_a_pickle_is_refused_without_running_it(
    saved_tensor_router: Path, tmp_path: Path, evil_name: str
) -> None:
    marker = tmp_path / "pwned"
    (saved_tensor_router / evil_name).write_bytes(malicious_pickle(marker))
    manifest = saved_tensor_router / "router.json"
    payload = json.loads(manifest.read_text())
    payload["state"]["weights_file"] = evil_name
    manifest.write_text(json.dumps(payload))
    with pytest.raises(ArtifactError, match="refusing to load"):
        TensorRouter.load(saved_tensor_router)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_rejected(saved_tensor_router: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (saved_tensor_router / "weights.safetensors").write_bytes(malicious_pickle(marker))
    with pytest.raises(ArtifactError, match="not a valid safetensors"):
        TensorRouter.load(saved_tensor_router)
    assert not marker.exists()


def test_extra_pickle_files_in_an_artifact_are_never_read(random_routing_dataset, tmp_path: Path) -> None:
    router = SmallestLLMRouter()
    router.fit(random_routing_dataset)
    directory = router.save(tmp_path / "artifact")
    marker = tmp_path / "pwned"
    for name in ("router.pkl", "model.bin", "state.pt", "data.joblib"):
        (directory / name).write_bytes(malicious_pickle(marker))
    loaded = SmallestLLMRouter.load(directory)
    assert loaded.route_single("q")["model_name"] == "small-llm"
    assert not marker.exists()


def test_model_directories_with_pickle_weights_are_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(ArtifactError, match="pickle-based weight files"):
        assert_no_unsafe_weights(tmp_path)
    assert not marker.exists()


def test_save_and_load_guards(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="only written as .safetensors"):
        save_arrays(tmp_path / "w.npy", {"w": np.zeros(2)})
    with pytest.raises(ArtifactError, match="does not exist"):
        load_arrays(tmp_path / "absent.safetensors")
    with pytest.raises(ArtifactError, match="expected a .safetensors"):
        load_arrays(tmp_path / "w.txt")
    path = save_arrays(tmp_path / "sub" / "w.safetensors", {"w": np.eye(2, dtype=np.float32)[:, :1]})
    assert load_arrays(path)["w"].tolist() == [[1.0], [0.0]]


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no router.json"):
        SmallestLLMRouter.load(tmp_path)
    (tmp_path / "router.json").write_text("{oops")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        SmallestLLMRouter.load(tmp_path)
    (tmp_path / "router.json").write_text(json.dumps({"router": "largest_llm", "config": {}, "format_version": 1}))
    with pytest.raises(ArtifactError, match="holds a 'largest_llm' router"):
        SmallestLLMRouter.load(tmp_path)
