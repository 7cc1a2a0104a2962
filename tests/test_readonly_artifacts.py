"""A router artifact on a read-only volume still serves: its merged model goes to the cache directory.

The RayService mounts the RayJobs' ``runs/`` volume read-only; the policy router's artifact lives there and its
merged model (base + LoRA adapter) is built on first use. A read-only mount raises ``OSError(EROFS)``, which is
not a ``PermissionError``: ``ensure_merged_from`` once caught only the latter, so the replica crashed.

The read-only directory is a real read-only bind mount where this process may mount (root with
CAP_SYS_ADMIN, as in CI). Elsewhere the copy is chmodded read-only, which stops a non-root user (a
PermissionError) but not root, so the lock opening is also made to raise EROFS the way a read-only mount does.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import routers.causal_lm.router as causal_router
from routers.causal_lm.router import MERGE_SOURCE_FILE, CausalLMRouter, ensure_merged
from routers.errors import ArtifactError
from routers.policy.router import PolicyRouter

ROOT = Path(__file__).resolve().parents[1]


def copy_artifact(name: str, destination: Path) -> Path:
    """A shipped artifact as it leaves training: without the merged model a previous run left beside it."""
    return Path(shutil.copytree(ROOT / "artifacts" / name, destination,
                                ignore=shutil.ignore_patterns("merged", ".merged.lock")))


def try_read_only_mount(source: Path, mountpoint: Path) -> bool:
    """Bind-mount ``source`` read-only at ``mountpoint``; False where this process may not mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    mountpoint.mkdir(parents=True)
    bind = subprocess.run(["mount", "--bind", str(source), str(mountpoint)], capture_output=True, check=False)
    if bind.returncode != 0:
        return False
    remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(mountpoint)], capture_output=True, check=False)
    if remount.returncode != 0:
        subprocess.run(["umount", str(mountpoint)], check=False)
        return False
    return True


def chmod_read_only(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(a read-only directory to copy artifacts into through ``source``, ``source``) and the merge cache in
    tmp_path. Files are copied into ``source`` first; the read-only view shows them."""
    source, view = tmp_path / "runs-volume", tmp_path / "runs"
    source.mkdir()
    monkeypatch.setenv("LLMROUTER_CACHE", str(tmp_path / "cache"))
    mounted = try_read_only_mount(source, view)
    if not mounted:
        view = source
        real_open = causal_router._open_lock_file

        def open_like_a_read_only_mount(target: Path) -> IO[str]:  # root ignores chmod: fail as the mount would
            if view in target.parents:
                raise OSError(errno.EROFS, "Read-only file system", str(target.parent))
            return real_open(target)

        monkeypatch.setattr(causal_router, "_open_lock_file", open_like_a_read_only_mount)
    try:
        yield view, source
    finally:
        if mounted:
            subprocess.run(["umount", str(view)], check=False)


def fake_merge(base_model: str, adapter_dir: Path, out: Path) -> Path:
    """Stands in for merge_lora in the fast tests: writes a model directory's config.json."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{}")
    return out


def place(name: str, read_only: tuple[Path, Path]) -> Path:
    """Copy artifact ``name`` onto the volume and make it read-only; its path in the read-only view."""
    view, source = read_only
    chmod_read_only(copy_artifact(name, source / name))
    return view / name


def test_a_read_only_causal_artifact_merges_into_the_cache(read_only: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(causal_router, "merge_lora", fake_merge)
    artifact = place("causallm_router", read_only)
    with pytest.raises(OSError) as refused:   # the directory really refuses writes (or the lock as root)
        causal_router._open_lock_file(artifact / "merged")
    assert refused.value.errno in causal_router.UNWRITABLE_ERRNOS
    merged = ensure_merged(artifact)
    assert merged.is_relative_to(tmp_path / "cache") and (merged / MERGE_SOURCE_FILE).exists()
    assert not (artifact / "merged").exists()
    # the next replica finds the cached merge and merges nothing
    monkeypatch.setattr(causal_router, "merge_lora", lambda *a: pytest.fail("merged twice"))
    assert ensure_merged(artifact) == merged


def test_a_read_only_policy_artifact_loads_with_its_model_from_the_cache(
        read_only: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(causal_router, "merge_lora", fake_merge)
    router = PolicyRouter.load(place("policy_router", read_only))
    engine = router.default_engine_config("router")
    assert engine is not None and Path(engine.model).is_relative_to(tmp_path / "cache")


def test_errors_other_than_unwritable_are_not_swallowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    artifact = copy_artifact("causallm_router", tmp_path / "artifact")
    monkeypatch.setenv("LLMROUTER_CACHE", str(tmp_path / "cache"))

    def disk_full(target: Path) -> IO[str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(causal_router, "_open_lock_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ensure_merged(artifact)

    def read_only_everywhere(target: Path) -> IO[str]:
        raise OSError(errno.EROFS, "Read-only file system", str(target.parent))

    monkeypatch.setattr(causal_router, "_open_lock_file", read_only_everywhere)
    with pytest.raises(ArtifactError, match=r"artifact or the cache directory.*Read-only.*Read-only"):
        ensure_merged(artifact)


@pytest.mark.slow
def test_a_read_only_causal_artifact_routes_with_the_real_merge(read_only: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    """The real merge (SmolLM2-135M + the shipped adapter) lands in the cache and the router routes with it."""
    if not (ROOT / "models" / "smollm2-135m-instruct" / "config.json").exists():
        pytest.skip("models/smollm2-135m-instruct is not there; run `bash scripts/setup.sh`")
    router = CausalLMRouter.load(place("causallm_router", read_only))
    engine = router.default_engine_config("router")
    assert engine is not None and Path(engine.model).is_relative_to(tmp_path / "cache")
    result = router.route_single("What is the capital of France?")
    assert result["model_name"] in (router.pair.small, router.pair.large)
    assert 0.0 <= result["router_score"] <= 1.0
