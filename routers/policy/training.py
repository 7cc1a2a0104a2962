"""Two-stage training of the policy router with TRL: SFT (learn the task and format), then DPO (prefer the
right policy over the most tempting wrong one), both through one LoRA adapter.

DPO continues training the SFT adapter; its reference model is the SFT model itself (base + SFT adapter,
merged and frozen), as in the usual SFT -> DPO recipe. QLoRA (4-bit base via bitsandbytes) is used only
when asked for and CUDA is present. Inside Ray Train's ``TorchTrainer`` the HF Trainer picks up the
process group Ray initialised (DDP); only rank 0 writes the adapter.

The adapter is saved as safetensors (``adapter_model.safetensors`` + ``adapter_config.json``); the served
model is base + adapter merged by ``routers.causal_lm.training.merge_lora``.

Checkpoints and resuming. The HF Trainer's own checkpoints pickle the optimizer, scheduler, RNG state and
training arguments (``torch.save``), so its ``save_strategy`` stays "no"; a callback writes checkpoints
instead, every ``save_steps`` optimizer steps and at the end of each stage, in safetensors + JSON only:

    policy_state.json   stage fingerprints, which stages are done, the loss curves so far
    trainer/            the stage in progress: adapter, HF trainer_state.json, optimizer.safetensors,
                        scheduler.json (HF's ``resume_from_checkpoint`` reads the first two; the callback
                        restores the optimizer and schedule)
    sft_adapter/        the finished SFT adapter (DPO's starting point and reference model)
    adapter/            the final adapter, once every stage is done

Each checkpoint goes to the caller's ``report`` callback (a Ray Train job persists it); ``resume_from``
passes one back. A rerun skips a finished SFT stage whose fingerprint (settings + SFT data) matches,
continues an interrupted stage from its step, and restarts DPO from the saved SFT adapter when only the
DPO settings or data changed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from routers.causal_lm.training import (
    StaleCheckpointError,
    distributed_info,
    stable_hash,
)
from routers.engines import model_identity, resolve_model_path
from routers.errors import ArtifactError, ConfigError
from routers.progress import log
from routers.safe_io import copy_checkpoint_files
from routers.strict import StrictModel

# Called on every rank at every logged step and at stage ends, in step with the other ranks (it may be a
# collective such as ``ray.train.report``); the directory is a complete checkpoint on rank 0 when one is
# due, else None, and is deleted when the call returns.
Report = Callable[[dict[str, float], Path | None], None]

STATE_FILE = "policy_state.json"
TRAINER_SUBDIR = "trainer"
SFT_ADAPTER_SUBDIR = "sft_adapter"
FINAL_ADAPTER_SUBDIR = "adapter"
OPTIMIZER_FILE = "optimizer.safetensors"
SCHEDULER_FILE = "scheduler.json"
HF_TRAINER_STATE = "trainer_state.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

# Settings that change nothing in the weights stay out of the fingerprints; DPO's own settings only
# invalidate the DPO stage (a finished SFT adapter is still good).
NOT_FINGERPRINTED = frozenset({"num_threads", "logging_steps", "save_steps"})
DPO_ONLY = frozenset({"dpo_epochs", "dpo_max_steps", "dpo_learning_rate", "dpo_beta"})


class PolicyHyperparams(StrictModel):
    """The SFT + DPO settings, defined once: the router config's (``PolicyRouterConfig``, a YAML's ``hparam``)
    and the training run's (``PolicyTrainConfig``) are these very fields, so the two can never accept
    different values."""

    base_model: str = "models/gemma-3-270m"
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    use_qlora: bool = Field(default=False, description="4-bit base (bitsandbytes); needs CUDA")
    sft_epochs: float = Field(default=3.0, gt=0)
    dpo_epochs: float = Field(default=1.0, gt=0)
    sft_max_steps: int | None = Field(default=None, ge=1)
    dpo_max_steps: int | None = Field(default=None, ge=1)
    sft_learning_rate: float = Field(default=2e-4, gt=0)
    dpo_learning_rate: float = Field(default=5e-5, gt=0)
    dpo_beta: float = Field(default=0.1, gt=0)
    batch_size: int = Field(default=4, ge=1)
    max_length: int = Field(default=256, ge=32, description="prompt + label tokens")
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads while training")


class PolicyTrainConfig(PolicyHyperparams):
    """Everything one training run needs; the same object is sent to every Ray Train worker."""

    gradient_accumulation_steps: int = Field(default=1, ge=1)
    seed: int = 0
    logging_steps: int = Field(default=1, ge=1)
    save_steps: int = Field(default=0, ge=0, description="optimizer steps between checkpoints; 0 = stage ends only")

    @classmethod
    def from_router_config(cls, config: PolicyHyperparams, **run_settings: Any) -> PolicyTrainConfig:
        """The run of a router config: its hyperparameters as they are, plus the run's own settings
        (``seed``, ``save_steps``, ...) and overrides, validated."""
        return cls.model_validate({**config.model_dump(include=set(PolicyHyperparams.model_fields)), **run_settings})


@dataclass
class PolicyTrainResult:
    sft_losses: list[float] = field(default_factory=list)
    dpo_losses: list[float] = field(default_factory=list)
    dpo_reward_accuracy: list[float] = field(default_factory=list)
    sft_seconds: float = 0.0
    dpo_seconds: float = 0.0
    sft_samples_per_s: float = 0.0
    dpo_samples_per_s: float = 0.0
    sft_resumed_from_step: int = 0
    dpo_resumed_from_step: int = 0
    sft_skipped: bool = False
    dpo_skipped: bool = False

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"sft_seconds": self.sft_seconds, "dpo_seconds": self.dpo_seconds,
                                 "sft_samples_per_s": self.sft_samples_per_s,
                                 "dpo_samples_per_s": self.dpo_samples_per_s,
                                 "sft_resumed_from_step": float(self.sft_resumed_from_step),
                                 "dpo_resumed_from_step": float(self.dpo_resumed_from_step),
                                 "sft_skipped": float(self.sft_skipped), "dpo_skipped": float(self.dpo_skipped)}
        if self.sft_losses:
            out.update(sft_first_loss=self.sft_losses[0], sft_final_loss=self.sft_losses[-1],
                       sft_steps=len(self.sft_losses))
        if self.dpo_losses:
            out.update(dpo_first_loss=self.dpo_losses[0], dpo_final_loss=self.dpo_losses[-1],
                       dpo_steps=len(self.dpo_losses))
        if self.dpo_reward_accuracy:
            out["dpo_final_reward_accuracy"] = self.dpo_reward_accuracy[-1]
        return out


def _load_base(path: str, use_qlora: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from routers.safe_io import assert_no_unsafe_weights

    assert_no_unsafe_weights(path)
    kwargs: dict[str, Any] = {"use_safetensors": True}
    if use_qlora:
        if not torch.cuda.is_available():
            raise ConfigError("use_qlora needs a CUDA GPU (bitsandbytes 4-bit)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    else:
        kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if use_qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stage_fingerprints(config: PolicyTrainConfig, sft: Sequence[dict[str, str]], dpo: Sequence[dict[str, str]],
                       world_size: int = 1) -> dict[str, str]:
    """One hash per stage: SFT's covers the base model, shared settings, SFT data and workers; DPO's
    covers SFT's plus the DPO settings and pairs (DPO starts from the SFT adapter)."""
    settings = config.model_dump(exclude=set(NOT_FINGERPRINTED))
    settings["base_model"] = model_identity(resolve_model_path(config.base_model))
    shared = {k: v for k, v in settings.items() if k not in DPO_ONLY}
    sft_hash = stable_hash({"settings": shared, "sft": list(sft), "world_size": world_size})
    dpo_hash = stable_hash({"sft": sft_hash, "settings": {k: settings[k] for k in sorted(DPO_ONLY)}, "dpo": list(dpo)})
    return {"sft": sft_hash, "dpo": dpo_hash}


@dataclass
class _ResumePlan:
    """What a checkpoint lets this run skip or continue."""

    source: Path | None = None
    sft_done: bool = False
    dpo_done: bool = False
    sft_trainer: Path | None = None
    dpo_trainer: Path | None = None
    result: PolicyTrainResult = field(default_factory=PolicyTrainResult)


def read_policy_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def checkpoint_sft_matches(directory: str | Path, fingerprints: dict[str, str]) -> bool:
    """Whether a checkpoint's SFT stage is this run's (a job moves other runs' checkpoints aside)."""
    state = read_policy_state(directory)
    return state is not None and state.get("fingerprints", {}).get("sft") == fingerprints["sft"]


def plan_resume(directory: str | Path, fingerprints: dict[str, str]) -> _ResumePlan:
    source = Path(directory)
    state = read_policy_state(source)
    if state is None:
        raise ArtifactError(f"{source}: not a policy-router checkpoint (no {STATE_FILE})")
    saved = state.get("fingerprints", {})
    if saved.get("sft") != fingerprints["sft"]:
        raise StaleCheckpointError(f"{source}: checkpoint of another run (the SFT data or settings changed); "
                                   "start from scratch")
    result = PolicyTrainResult(**state.get("result", {}))
    plan = _ResumePlan(source=source, sft_done=bool(state.get("sft_done")), result=result)
    in_progress = source / TRAINER_SUBDIR if (source / TRAINER_SUBDIR).exists() else None
    if not plan.sft_done:
        plan.sft_trainer = in_progress
        return plan
    if saved.get("dpo") != fingerprints["dpo"]:
        # Same SFT, other DPO settings or pairs: keep the SFT adapter, redo DPO from its start.
        log(f"{source}: DPO data or settings changed; reusing the finished SFT adapter and redoing DPO")
        plan.result = PolicyTrainResult(**{k: v for k, v in asdict(result).items() if k.startswith("sft_")})
        return plan
    plan.dpo_done = bool(state.get("dpo_done"))
    plan.dpo_trainer = None if plan.dpo_done else in_progress
    return plan


@dataclass
class _Run:
    """This call's progress, and the checkpoints it hands to ``report``."""

    fingerprints: dict[str, str]
    result: PolicyTrainResult
    report: Report | None
    scratch: Path
    is_main: bool
    sft_done: bool = False
    dpo_done: bool = False
    sft_adapter: Path | None = None
    final_adapter: Path | None = None

    def state(self) -> dict[str, Any]:
        return {"fingerprints": self.fingerprints, "sft_done": self.sft_done, "dpo_done": self.dpo_done,
                "result": asdict(self.result)}

    def emit(self, metrics: dict[str, float], checkpoint: bool,
             trainer_snapshot: Callable[[Path], None] | None = None) -> None:
        """One ``report`` call on every rank; rank 0 attaches a complete checkpoint when ``checkpoint``."""
        if self.report is None:
            return
        if not checkpoint or not self.is_main:
            self.report(metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="policy-ckpt-", dir=self.scratch) as staging:
            directory = Path(staging)
            if trainer_snapshot is not None:
                trainer_snapshot(directory / TRAINER_SUBDIR)
            if self.sft_adapter is not None:
                shutil.copytree(self.sft_adapter, directory / SFT_ADAPTER_SUBDIR)
            if self.final_adapter is not None:
                shutil.copytree(self.final_adapter, directory / FINAL_ADAPTER_SUBDIR)
            (directory / STATE_FILE).write_text(json.dumps(self.state(), indent=2))
            self.report(metrics, directory)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # a 0-d tensor / numpy scalar
        return value.item()
    return value


def _save_trainer_snapshot(directory: Path, model: Any, optimizer: Any, scheduler: Any, state: Any) -> None:
    """The stage in progress, resumable by HF (adapter + trainer_state.json) plus optimizer and schedule."""
    from safetensors.torch import save_file

    from routers.causal_lm.training import optimizer_tensors

    save_adapter(model, directory)
    state.save_to_json(str(directory / HF_TRAINER_STATE))
    save_file(optimizer_tensors(optimizer), str(directory / OPTIMIZER_FILE))
    schedule = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    (directory / SCHEDULER_FILE).write_text(json.dumps(_json_safe(schedule)))


def _restore_optimizer_and_schedule(directory: Path, optimizer: Any, scheduler: Any) -> None:
    """HF resumes the weights and step; without its pickled optimizer.pt the moments and schedule come from here."""
    from safetensors.torch import load_file

    from routers.causal_lm.training import restore_optimizer

    restore_optimizer(optimizer, load_file(str(directory / OPTIMIZER_FILE)))
    current = scheduler.state_dict()
    current.update(json.loads((directory / SCHEDULER_FILE).read_text()))
    scheduler.load_state_dict(current)
    # The next step runs at the rate the schedule had reached, not at the rate of step 0.
    for group, rate in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = rate


def _stage_callback(stage: str, run: _Run, save_steps: int, resume_dir: Path | None) -> Any:
    """A TrainerCallback: losses into the result, every logged step to ``report``, checkpoints every
    ``save_steps`` (forcing a log on those steps so each checkpoint rides on one report call)."""
    from transformers import TrainerCallback

    losses = run.result.sft_losses if stage == "sft" else run.result.dpo_losses

    class StageCallback(TrainerCallback):
        save_due = False

        def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                           lr_scheduler: Any = None, **kw: Any) -> None:
            if resume_dir is not None:
                _restore_optimizer_and_schedule(resume_dir, optimizer, lr_scheduler)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            # The stage's last step is checkpointed at the stage end, with the stage marked done.
            if save_steps and state.global_step % save_steps == 0 and state.global_step < state.max_steps:
                self.save_due = True
                control.should_log = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   model: Any = None, optimizer: Any = None, lr_scheduler: Any = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            losses.append(float(logs["loss"]))
            if stage == "dpo" and "rewards/accuracies" in logs:
                run.result.dpo_reward_accuracy.append(float(logs["rewards/accuracies"]))
            metrics = {f"{stage}/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            metrics[f"{stage}/step"] = float(state.global_step)
            save, self.save_due = self.save_due, False
            snapshot = (lambda d: _save_trainer_snapshot(d, model, optimizer, lr_scheduler, state)) if save else None
            run.emit(metrics, checkpoint=save, trainer_snapshot=snapshot)

    return StageCallback()


def _common_args(config: PolicyTrainConfig, output_dir: Path, stage: str) -> dict[str, Any]:
    import torch

    return {
        "output_dir": str(output_dir / f"{stage}_trainer"),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "logging_steps": config.logging_steps,
        "save_strategy": "no",
        "report_to": [],
        "seed": config.seed,
        "bf16": torch.cuda.is_available(),
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": False,
        "remove_unused_columns": True,
        "dataloader_num_workers": 0,
    }


def train_policy_router(config: PolicyTrainConfig, sft: Sequence[dict[str, str]], dpo: Sequence[dict[str, str]],
                        output_dir: str | Path, report: Report | None = None,
                        resume_from: str | Path | None = None) -> PolicyTrainResult:
    """SFT then DPO; writes the final adapter to ``output_dir/adapter`` (rank 0). Returns the loss curves.

    ``report`` receives every logged step's metrics and the checkpoints (see ``Report``); ``resume_from``
    is such a checkpoint of this run (same SFT fingerprint), from which finished stages are skipped and an
    interrupted one continues.
    """
    if not sft:
        raise ConfigError("the policy router needs SFT examples")
    import torch

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rank, world = distributed_info()
    fingerprints = stage_fingerprints(config, sft, dpo, world)
    plan = plan_resume(resume_from, fingerprints) if resume_from is not None else _ResumePlan()
    run = _Run(fingerprints, plan.result, report, output_dir, is_main=rank == 0)
    run.result.sft_skipped, run.result.dpo_skipped = plan.sft_done, plan.dpo_done
    final = output_dir / FINAL_ADAPTER_SUBDIR
    if plan.source is not None and plan.sft_done and (plan.dpo_done or not dpo):
        # Everything was done by the run that wrote the checkpoint: hand its adapter back.
        run.sft_done = run.dpo_done = True
        if run.is_main:
            copy_checkpoint_files(plan.source / FINAL_ADAPTER_SUBDIR, ADAPTER_FILES, final)
    else:
        model = _train_stages(config, sft, dpo, plan, run)
        if run.is_main:
            save_adapter(model, final)
    run.final_adapter = final if run.is_main else None
    run.emit({"done": 1.0, **run.result.summary()}, checkpoint=True)
    return run.result


def _train_stages(config: PolicyTrainConfig, sft: Sequence[dict[str, str]], dpo: Sequence[dict[str, str]],
                  plan: _ResumePlan, run: _Run) -> Any:
    """The stages the plan leaves to do; returns the trained peft model."""
    from peft import LoraConfig, get_peft_model

    base_path = resolve_model_path(config.base_model)
    tokenizer = _tokenizer(base_path)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(_load_base(base_path, config.use_qlora), lora)
    if plan.sft_done:
        from routers.causal_lm.training import load_adapter_weights

        assert plan.source is not None
        load_adapter_weights(model, plan.source / SFT_ADAPTER_SUBDIR)
    else:
        model = _run_sft(config, model, sft, tokenizer, run, plan.sft_trainer)
    run.sft_done = True
    if run.is_main:
        run.sft_adapter = run.scratch / "sft_adapter"
        if plan.sft_done:
            copy_checkpoint_files(plan.source / SFT_ADAPTER_SUBDIR, ADAPTER_FILES, run.sft_adapter)  # type: ignore[operator]
        else:
            save_adapter(model, run.sft_adapter)
    if dpo:
        if not plan.sft_done:
            run.emit({"sft/done": 1.0}, checkpoint=True)  # a crash during DPO keeps the finished SFT
        model = _run_dpo(config, model, dpo, tokenizer, run, plan.dpo_trainer)
    run.dpo_done = True  # trained now, or nothing to do
    return model


def _run_sft(config: PolicyTrainConfig, model: Any, sft: Sequence[dict[str, str]], tokenizer: Any, run: _Run,
             resume_dir: Path | None) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**_common_args(config, run.scratch, "sft"), num_train_epochs=config.sft_epochs,
                     max_steps=config.sft_max_steps or -1, learning_rate=config.sft_learning_rate,
                     max_length=config.max_length, completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(list(sft)), processing_class=tokenizer,
                         callbacks=[_stage_callback("sft", run, config.save_steps, resume_dir)])
    seconds, samples_per_s, resumed = _train(trainer, resume_dir)
    run.result.sft_seconds += seconds
    run.result.sft_samples_per_s = samples_per_s
    run.result.sft_resumed_from_step = resumed
    return trainer.model


def _run_dpo(config: PolicyTrainConfig, model: Any, dpo: Sequence[dict[str, str]], tokenizer: Any, run: _Run,
             resume_dir: Path | None) -> Any:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    reference = _frozen_copy_of(model)  # the finished SFT policy, whether trained now or loaded
    args = DPOConfig(**_common_args(config, run.scratch, "dpo"), num_train_epochs=config.dpo_epochs,
                     max_steps=config.dpo_max_steps or -1, learning_rate=config.dpo_learning_rate,
                     beta=config.dpo_beta, max_length=config.max_length)
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(list(dpo)),
                         processing_class=tokenizer,
                         callbacks=[_stage_callback("dpo", run, config.save_steps, resume_dir)])
    seconds, samples_per_s, resumed = _train(trainer, resume_dir)
    run.result.dpo_seconds += seconds
    run.result.dpo_samples_per_s = samples_per_s
    run.result.dpo_resumed_from_step = resumed
    return trainer.model


def _train(trainer: Any, resume_dir: Path | None) -> tuple[float, float, int]:
    """(seconds, samples/s, step resumed from) of one stage."""
    resumed = 0
    if resume_dir is not None:
        resumed = int(json.loads((resume_dir / HF_TRAINER_STATE).read_text())["global_step"])
    started = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir is not None else None)
    return time.perf_counter() - started, float(out.metrics.get("train_samples_per_second", 0.0)), resumed


def _frozen_copy_of(peft_model: Any) -> Any:
    """The SFT policy as DPO's reference: base + adapter merged into a separate, frozen model."""
    import copy

    reference = copy.deepcopy(peft_model).merge_and_unload()
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def save_adapter(model: Any, directory: Path) -> Path:
    """The LoRA adapter in safetensors (peft's ``adapter_model.safetensors`` + ``adapter_config.json``)."""
    directory.mkdir(parents=True, exist_ok=True)
    unwrapped = getattr(model, "module", model)
    unwrapped.save_pretrained(str(directory), safe_serialization=True)
    stray = [p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    if stray:
        raise RuntimeError(f"unsafe files written next to the adapter: {stray}")
    return directory
