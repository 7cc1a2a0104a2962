"""Resumable training in the library (no Ray): fingerprints, reported checkpoints, stage skipping.

The Ray jobs hand these same checkpoints to Ray Train (``tests/test_train_jobs.py``); here a ``report``
callback stands in for ``ray.train.report`` by copying each checkpoint somewhere safe, as Ray's storage would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from routers.causal_lm.labels import SFTExample, router_prompt
from tests.conftest import LARGE_NAME
from tests.synthetic_data import POLICY_LARGE, POLICY_SMALL, policy_dataset
from tests.tiny_models import TINY_EXAMPLES, tiny_train_config

pytestmark = pytest.mark.slow

Report = Callable[[dict[str, float], Path | None], None]


def keeping_checkpoints(store: Path, calls: list[tuple[dict[str, float], Path | None]]) -> Report:
    """A report callback that records every call and copies each checkpoint to ``store/<n>``."""

    def report(metrics: dict[str, float], directory: Path | None) -> None:
        kept = None
        if directory is not None:
            kept = store / str(len(calls))
            shutil.copytree(directory, kept)
        calls.append((dict(metrics), kept))

    return report


# --- causal LM ---------------------------------------------------------------------------------------
def test_causal_lm_reports_every_step_and_resumes_a_reported_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    from routers.causal_lm.training import train_causal_lm

    calls: list[tuple[dict[str, float], Path | None]] = []
    config = tiny_train_config(tiny_model_dir, max_steps=3, checkpoint_every=2, lr_schedule="constant")
    first = train_causal_lm(config, TINY_EXAMPLES, report=keeping_checkpoints(tmp_path, calls))
    # One call per step plus the final one; checkpoints at step 2 and at the end (step 3), not twice.
    assert [m["step"] for m, _ in calls] == [1.0, 2.0, 3.0, 3.0]
    assert [c is not None for _, c in calls] == [False, True, False, True]
    assert [m["loss"] for m, _ in calls[:3]] == first.losses and calls[-1][0]["done"] == 1.0
    final = calls[-1][1]
    assert final is not None and json.loads((final / "trainer_state.json").read_text())["step"] == 3
    resumed = train_causal_lm(config.model_copy(update={"max_steps": 5}), TINY_EXAMPLES, resume_from=final)
    assert (resumed.resumed_from_step, resumed.steps, resumed.losses[:3]) == (3, 5, first.losses)


def test_causal_lm_never_resumes_a_checkpoint_of_other_data_or_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    from routers.causal_lm.training import StaleCheckpointError, read_checkpoint_position, train_causal_lm

    local = tmp_path / "ckpt"
    config = tiny_train_config(tiny_model_dir, max_steps=2, checkpoint_dir=str(local))
    first = train_causal_lm(config, TINY_EXAMPLES)
    old_fingerprint = read_checkpoint_position(local)["fingerprint"]  # type: ignore[index]
    # New data, same settings: the finished checkpoint is moved aside (kept) and training starts over.
    new_data = [*TINY_EXAMPLES[:-1], SFTExample(router_prompt("a brand new hard proof!"), LARGE_NAME)]
    second = train_causal_lm(config, new_data)
    assert (second.resumed_from_step, second.steps) == (0, 2)
    stale = [p for p in tmp_path.iterdir() if p.name.startswith("ckpt.stale-")]
    assert len(stale) == 1 and read_checkpoint_position(stale[0])["fingerprint"] == old_fingerprint  # type: ignore[index]
    assert read_checkpoint_position(local)["fingerprint"] != old_fingerprint  # type: ignore[index]
    # New settings: same story; an explicit resume_from of another run is refused outright.
    third = train_causal_lm(config.model_copy(update={"learning_rate": 1e-3}), new_data)
    assert third.resumed_from_step == 0 and len([p for p in tmp_path.iterdir() if ".stale-" in p.name]) == 2
    with pytest.raises(StaleCheckpointError, match="another run"):
        train_causal_lm(config, TINY_EXAMPLES, resume_from=local)
    # Only run length changed: that is the same run, continued.
    longer = train_causal_lm(config.model_copy(update={"max_steps": 3, "learning_rate": 1e-3}), new_data)
    assert (longer.resumed_from_step, longer.steps) == (2, 3)
    assert first.steps == 2


# --- policy router -----------------------------------------------------------------------------------
class Crash(Exception):
    """Stands in for a killed worker."""


def policy_data() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    from routers.policy.datasets import dpo_pairs, oracle_records_from_routing, sft_examples

    records = oracle_records_from_routing(policy_dataset(), POLICY_SMALL, POLICY_LARGE)[:12]
    return sft_examples(records), dpo_pairs(records)


def test_policy_training_resumes_an_interrupted_stage_and_skips_finished_ones(tiny_gemma: Path, tmp_path: Path) -> None:
    from routers.causal_lm.training import StaleCheckpointError
    from routers.policy.training import PolicyTrainConfig, read_policy_state, train_policy_router

    sft, dpo = policy_data()
    config = PolicyTrainConfig(base_model=str(tiny_gemma), sft_max_steps=4, dpo_max_steps=2, batch_size=4,
                               sft_learning_rate=5e-3, dpo_learning_rate=1e-3, max_length=160, lora_r=4, lora_alpha=8,
                               lora_dropout=0.0, save_steps=2)
    calls: list[tuple[dict[str, float], Path | None]] = []
    keep = keeping_checkpoints(tmp_path / "kept", calls)

    def crash_in_step_3(metrics: dict[str, float], directory: Path | None) -> None:
        keep(metrics, directory)
        if metrics.get("sft/step") == 3.0:
            raise Crash

    with pytest.raises(Crash):
        train_policy_router(config, sft, dpo, tmp_path / "run1", report=crash_in_step_3)
    interrupted = next(c for _, c in reversed(calls) if c is not None)
    assert read_policy_state(interrupted)["sft_done"] is False  # type: ignore[index]
    assert json.loads((interrupted / "trainer/trainer_state.json").read_text())["global_step"] == 2
    assert not [p for p in interrupted.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]

    calls.clear()
    resumed = train_policy_router(config, sft, dpo, tmp_path / "run2", report=keep, resume_from=interrupted)
    assert resumed.sft_resumed_from_step == 2 and len(resumed.sft_losses) == 4 and len(resumed.dpo_losses) == 2
    straight = train_policy_router(config, sft, dpo, tmp_path / "straight")
    # The optimizer moments and the schedule came back too: steps 3-4 match an uninterrupted run.
    assert resumed.sft_losses == pytest.approx(straight.sft_losses, rel=1e-3)
    final = calls[-1][1]
    assert final is not None and read_policy_state(final)["dpo_done"] is True  # type: ignore[index]

    again = train_policy_router(config, sft, dpo, tmp_path / "run3", resume_from=final)
    assert again.sft_skipped and again.dpo_skipped and again.sft_losses == resumed.sft_losses
    assert (tmp_path / "run3/adapter/adapter_model.safetensors").read_bytes() == \
        (final / "adapter/adapter_model.safetensors").read_bytes()

    # Only DPO changed: the finished SFT adapter is reused, DPO runs again from it.
    redo = train_policy_router(config.model_copy(update={"dpo_beta": 0.2}), sft, dpo, tmp_path / "run4",
                               resume_from=final)
    assert redo.sft_skipped and not redo.dpo_skipped and len(redo.dpo_losses) == 2
    with pytest.raises(StaleCheckpointError, match="SFT"):
        train_policy_router(config.model_copy(update={"sft_learning_rate": 1e-3}), sft, dpo, tmp_path / "run5",
                            resume_from=final)
