"""LoRA supervised fine-tuning of the causal-LM router model, in plain torch.

The loss is next-token cross-entropy on the answer tokens only (the best model's name + EOS); prompt
tokens are masked out, so the model learns to *choose* a name, not to reproduce queries.

Distributed: when ``torch.distributed`` is already initialised (Ray Train's ``TorchTrainer`` does this
for every worker) the model is wrapped in ``DistributedDataParallel``, each worker reads its shard via
``DistributedSampler``, and only rank 0 writes checkpoints and adapters. Without a process group the
same loop runs single-process.

Checkpoints are safetensors + JSON only (adapter weights, AdamW moments, loop position), so resuming
can never execute code from disk. Each checkpoint carries a *fingerprint* of what was trained (the settings
that change the weights, the examples, the world size): a checkpoint of another run is never resumed, so a
rerun with new data or settings can never hand back the old adapter.

Where checkpoints live is the caller's business: ``config.checkpoint_dir`` is a local directory for
single-process runs; a distributed job (``train_jobs.causal_lm``) passes ``resume_from`` (the checkpoint
Ray Train handed every worker) and a ``report`` callback that persists each checkpoint, so no rank ever
depends on another rank's local disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from routers.causal_lm.labels import SFTExample
from routers.engines import model_identity, resolve_model_path
from routers.errors import ArtifactError
from routers.progress import log, progress_bar
from routers.safe_io import assert_no_unsafe_weights
from routers.strict import StrictModel

IGNORE_INDEX = -100
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"

logger = logging.getLogger(__name__)

# Settings that only say how long to train or where: a checkpoint written under other values is still a
# valid starting point (raising max_steps continues the same run), so they stay out of the fingerprint.
NOT_FINGERPRINTED = frozenset(
    {"max_steps", "num_epochs", "device", "num_threads", "checkpoint_dir", "checkpoint_every"}
)


class StaleCheckpointError(ArtifactError):
    """A checkpoint was written by a run with other data or settings; resuming it would train the wrong model."""


class CausalLMHyperparams(StrictModel):
    """The LoRA fine-tuning settings, defined once: the router config's (``CausalLMConfig``, a YAML's
    ``hparam``) and the training run's (``CausalLMTrainConfig``) are these very fields, so the two can never
    accept different values."""

    base_model: str = "models/smollm2-135m-instruct"
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = Field(default=2e-4, gt=0.0)
    num_epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=4, ge=1, description="per-worker micro-batch")
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=16, description="prompt + answer tokens; long prompts lose their start")
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; caps num_epochs")
    warmup_steps: int = Field(default=0, ge=0)
    lr_schedule: Literal["linear", "constant"] = Field(
        default="linear", description="after warmup: linear decay to 0 at the last step, or constant"
    )
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads while training")


class CausalLMTrainConfig(CausalLMHyperparams):
    """Everything one training run needs; the same object is sent to every Ray Train worker."""

    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = Field(default=None, description="resumable checkpoints are written here")
    checkpoint_every: int = Field(default=0, ge=0, description="optimizer steps between checkpoints; 0 = end only")

    @classmethod
    def from_router_config(cls, config: CausalLMHyperparams, **run_settings: Any) -> CausalLMTrainConfig:
        """The run of a router config: its hyperparameters as they are, plus the run's own settings
        (``seed``, ``checkpoint_dir``, ...) and overrides, validated."""
        return cls.model_validate({**config.model_dump(include=set(CausalLMHyperparams.model_fields)), **run_settings})


@dataclass
class TrainResult:
    losses: list[float]
    steps: int
    samples_per_s: float
    resumed_from_step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


StepCallback = Callable[[dict[str, float]], None]
# Called on every rank once per optimizer step and once at the end, in step with the other ranks (so it
# may be a collective such as ``ray.train.report``). The directory is a complete checkpoint on rank 0
# every ``checkpoint_every`` steps and at the end, else None; it is deleted when the call returns.
ReportCallback = Callable[[dict[str, float], Path | None], None]


# --- fingerprints ----------------------------------------------------------------------------------
def stable_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def training_fingerprint(config: CausalLMTrainConfig, examples: Sequence[SFTExample], world_size: int = 1) -> str:
    """Hash of everything that decides the trained weights: settings, base model, examples (in order), workers."""
    settings = config.model_dump(exclude=set(NOT_FINGERPRINTED))
    settings["base_model"] = model_identity(resolve_model_path(config.base_model))
    data = [[example.prompt, example.completion] for example in examples]
    return stable_hash({"settings": settings, "examples": data, "world_size": world_size})


# --- process group ---------------------------------------------------------------------------------
def distributed_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return distributed_info()[0] == 0


def training_device(device: str) -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        # Ray Train sets CUDA_VISIBLE_DEVICES per worker, so the local device is index 0 of what we see.
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- tokenisation ----------------------------------------------------------------------------------
def load_tokenizer(base_model: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(base_model))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_example(tokenizer: Any, example: SFTExample, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels of prompt + completion + EOS, with the prompt masked out of the loss.

    Prompt and completion are tokenised separately, exactly as at inference (the prompt alone is fed to
    the model and the name is generated or scored after it), so training sees the same token boundary.
    Too-long prompts are cut from the left: the ``Best LLM:`` cue right before the answer must survive.
    """
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(example.completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    room = max_length - len(answer_ids)
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room for the prompt of answer {example.completion!r}")
    prompt_ids = prompt_ids[-room:]
    return {
        "input_ids": prompt_ids + answer_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
    }


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(item["input_ids"]) for item in batch)
    input_ids, labels, mask = [], [], []
    for item in batch:
        pad = width - len(item["input_ids"])
        input_ids.append(item["input_ids"] + [pad_id] * pad)
        labels.append(item["labels"] + [IGNORE_INDEX] * pad)
        mask.append([1] * len(item["input_ids"]) + [0] * pad)
    return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over answer tokens (labels != IGNORE_INDEX), shifted for next-token prediction."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


# --- model -----------------------------------------------------------------------------------------
def load_base_model(base_model: str, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(base_model)
    assert_no_unsafe_weights(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).to(device)


def lora_model(base: torch.nn.Module, config: CausalLMTrainConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
    )
    return get_peft_model(base, lora)


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unwrap(model)).items()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def save_adapter(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write the LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``); rank 0 only."""
    directory = Path(directory)
    if not is_main_process():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    peft_model = unwrap(model)
    peft_model.peft_config["default"].save_pretrained(str(directory))
    save_file(adapter_state(peft_model), str(directory / ADAPTER_WEIGHTS))
    return directory


def load_adapter_weights(model: torch.nn.Module, directory: Path) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(unwrap(model), load_file(str(directory / ADAPTER_WEIGHTS)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ArtifactError(f"{directory}: adapter has weights the model does not: {unexpected[:3]}")


# --- checkpoints -----------------------------------------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state flattened to named tensors: ``<param index>.<exp_avg|exp_avg_sq|step>``."""
    tensors: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(float(value))
            tensors[f"{index}.{key}"] = tensor.detach().cpu().contiguous()
    return tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    restored: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        restored.setdefault(int(index), {})[key] = tensor
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)


def write_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, position: dict[str, Any]
) -> Path:
    """Adapter + optimizer + loop position (with the fingerprint) into ``directory``; rank 0 only."""
    save_adapter(model, directory)
    save_file(optimizer_tensors(optimizer), str(directory / OPTIMIZER_FILE))
    (directory / TRAINER_STATE).write_text(json.dumps(position, indent=2))
    return directory


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, position: dict[str, Any]
) -> None:
    """A local checkpoint, written to a temp dir then swapped in (never half-written)."""
    if not is_main_process():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=directory.parent))
    write_checkpoint(staging, model, optimizer, position)
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)


def read_checkpoint_position(directory: Path) -> dict[str, Any] | None:
    state_file = directory / TRAINER_STATE
    if not state_file.exists():
        return None
    return json.loads(state_file.read_text())


def checkpoint_matches(directory: str | Path, fingerprint: str) -> bool:
    """Whether ``directory`` is a checkpoint of the run ``fingerprint`` names (jobs use this before resuming)."""
    position = read_checkpoint_position(Path(directory))
    return position is not None and position.get("fingerprint") == fingerprint


def set_aside(directory: Path) -> Path:
    """Rename a stale checkpoint out of the way (kept, not deleted: it may be the only copy of a shipped run)."""
    target = directory.with_name(f"{directory.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name}-{suffix}")
    directory.rename(target)
    logger.warning("checkpoint %s is from another run (data or settings changed); moved to %s", directory, target)
    log(f"causal-LM: stale checkpoint {directory} moved aside to {target}; training from scratch")
    return target


def resume_source(config: CausalLMTrainConfig, fingerprint: str, resume_from: str | Path | None) -> Path | None:
    """The checkpoint to resume, or None to start fresh.

    ``resume_from`` is an explicit request (a job hands every rank the same checkpoint), so a mismatch is
    an error: the job should have set it aside. A stale ``checkpoint_dir`` is local scratch this run is
    about to overwrite, so it is moved aside and training starts from scratch.
    """
    if resume_from is not None:
        source = Path(resume_from)
        position = read_checkpoint_position(source)
        if position is None:
            raise ArtifactError(f"{source}: not a causal-LM checkpoint (no {TRAINER_STATE})")
        if position.get("fingerprint") != fingerprint:
            raise StaleCheckpointError(f"{source}: checkpoint of another run (its fingerprint "
                                       f"{str(position.get('fingerprint'))[:12]} != {fingerprint[:12]}); "
                                       "the data or training settings changed, start from scratch")
        return source
    if not config.checkpoint_dir:
        return None
    local = Path(config.checkpoint_dir)
    position = read_checkpoint_position(local)
    if position is None:
        return None
    if position.get("fingerprint") == fingerprint:
        return local
    _barrier()  # every rank has read the old state before rank 0 renames it
    if is_main_process():
        set_aside(local)
    return None


def _barrier() -> None:
    if distributed_info()[1] > 1:
        dist.barrier()


# --- the loop --------------------------------------------------------------------------------------
def _learning_rate(step: int, config: CausalLMTrainConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear decay matters with small batches: at a constant rate the last few batches' label mix sets
    the model's prior over names; annealing averages over the whole run instead.
    """
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    remaining = max(total_steps - step, 1)
    return config.learning_rate * remaining / max(total_steps - config.warmup_steps, 1)


def _batches_per_epoch(n_examples: int, config: CausalLMTrainConfig, world: int) -> int:
    return math.ceil(math.ceil(n_examples / world) / config.batch_size)


def total_optimizer_steps(n_examples: int, config: CausalLMTrainConfig, world: int = 1) -> int:
    per_epoch = math.ceil(_batches_per_epoch(n_examples, config, world) / config.gradient_accumulation_steps)
    total = per_epoch * config.num_epochs
    return min(total, config.max_steps) if config.max_steps else total


def _loader(encoded: list[dict[str, list[int]]], config: CausalLMTrainConfig, pad_id: int, epoch: int) -> DataLoader:
    rank, world = distributed_info()
    if world > 1:
        sampler: Any = DistributedSampler(encoded, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(config.seed + epoch)
        sampler = RandomSampler(encoded, generator=generator)
    return DataLoader(
        encoded, batch_size=config.batch_size, sampler=sampler, collate_fn=lambda b: collate(b, pad_id)
    )


@dataclass
class _Checkpointing:
    """Where this run's checkpoints go: a local directory, the caller's ``report`` callback, or both."""

    config: CausalLMTrainConfig
    fingerprint: str
    local: Path | None
    report: ReportCallback | None

    def position(self, step: int, losses: list[float]) -> dict[str, Any]:
        return {"step": step, "losses": list(losses), "fingerprint": self.fingerprint}

    def due(self, step: int, total_steps: int) -> bool:
        # The last step is left to ``finish``, which always checkpoints: no duplicate of the same state.
        every = self.config.checkpoint_every
        return bool(every) and step % every == 0 and step < total_steps

    def step_done(self, metrics: dict[str, float], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  position: dict[str, Any], due: bool) -> None:
        if due and self.local is not None:
            save_checkpoint(self.local, model, optimizer, position)
        if self.report is not None:
            _report(self.report, metrics, model, optimizer, position if due else None)

    def finish(self, metrics: dict[str, float], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               position: dict[str, Any]) -> None:
        if self.local is not None:
            save_checkpoint(self.local, model, optimizer, position)
        if self.report is not None:
            _report(self.report, metrics, model, optimizer, position)


def _report(report: ReportCallback, metrics: dict[str, float], model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, position: dict[str, Any] | None) -> None:
    """One ``report`` call on every rank; rank 0 attaches a checkpoint when ``position`` is given."""
    if position is None or not is_main_process():
        report(metrics, None)
        return
    with tempfile.TemporaryDirectory(prefix="causal-lm-ckpt-") as staging:
        report(metrics, write_checkpoint(Path(staging), model, optimizer, position))


def _restore(source: Path | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    """Load a checkpoint's adapter and optimizer; (optimizer steps done, their losses)."""
    if source is None:
        return 0, []
    position = read_checkpoint_position(source) or {}
    load_adapter_weights(model, source)
    restore_optimizer(optimizer, load_file(str(source / OPTIMIZER_FILE)))
    return int(position["step"]), [float(x) for x in position["losses"]]


def train_causal_lm(
    config: CausalLMTrainConfig,
    examples: Sequence[SFTExample],
    on_step: StepCallback | None = None,
    adapter_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    report: ReportCallback | None = None,
) -> TrainResult:
    """LoRA-finetune ``config.base_model`` on ``examples``.

    Resumes from ``resume_from`` (must be a checkpoint of this very run: same fingerprint) or else from
    ``config.checkpoint_dir`` when that holds a checkpoint of this run (a stale one is moved aside).
    ``on_step`` receives ``{"step", "loss", "learning_rate", "epoch"}`` after every optimizer step;
    ``report`` (see ``ReportCallback``) gets the same metrics plus the checkpoints, so a distributed job
    can persist them. The final adapter is written to ``adapter_dir`` (rank 0) when given.
    """
    if not examples:
        raise ValueError("no training examples")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    rank, world = distributed_info()
    device = training_device(config.device)
    tokenizer = load_tokenizer(config.base_model)
    encoded = [encode_example(tokenizer, example, config.max_length) for example in examples]
    model = lora_model(load_base_model(config.base_model, device), config)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    fingerprint = training_fingerprint(config, examples, world)
    step, losses = _restore(resume_source(config, fingerprint, resume_from), model, optimizer)
    checkpoints = _Checkpointing(config, fingerprint, Path(config.checkpoint_dir) if config.checkpoint_dir else None,
                                 report)
    resumed_from = step
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    total_steps = total_optimizer_steps(len(encoded), config, world)
    accum = config.gradient_accumulation_steps
    per_epoch_steps = math.ceil(_batches_per_epoch(len(encoded), config, world) / accum)
    bar = progress_bar("causal-LM LoRA", total=total_steps, unit="step") if rank == 0 else None
    if bar is not None:
        bar.update(min(step, total_steps))
    samples, started = 0, time.perf_counter()
    while step < total_steps:
        epoch, steps_into_epoch = divmod(step, per_epoch_steps)
        batches = list(_loader(encoded, config, tokenizer.pad_token_id, epoch))
        # Resume mid-epoch: the epoch's order is a function of (seed, epoch), so skipping is exact.
        groups = [batches[i : i + accum] for i in range(0, len(batches), accum)][steps_into_epoch:]
        for group in groups:
            if step >= total_steps:
                break
            step_loss, step_samples = _accumulate(model, group, device)
            samples += step_samples
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
            for group_params in optimizer.param_groups:
                group_params["lr"] = _learning_rate(step, config, total_steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(_mean_over_workers(step_loss, device))
            metrics = {"step": float(step), "loss": losses[-1],
                       "learning_rate": _learning_rate(step - 1, config, total_steps), "epoch": float(epoch)}
            if on_step is not None:
                on_step(metrics)
            checkpoints.step_done(metrics, model, optimizer, checkpoints.position(step, losses),
                                  checkpoints.due(step, total_steps))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    elapsed = max(time.perf_counter() - started, 1e-9)
    result = TrainResult(losses=losses, steps=step, samples_per_s=samples * world / elapsed,
                         resumed_from_step=resumed_from)
    checkpoints.finish(_final_metrics(result), model, optimizer, checkpoints.position(step, losses))
    if adapter_dir is not None:
        save_adapter(model, adapter_dir)
    _barrier()
    return result


def _accumulate(
    model: torch.nn.Module, group: Sequence[dict[str, torch.Tensor]], device: torch.device
) -> tuple[float, int]:
    """Forward/backward over one optimizer step's micro-batches; (mean loss, samples seen)."""
    step_loss, samples = 0.0, 0
    for group_index, batch in enumerate(group):
        batch = {k: v.to(device) for k, v in batch.items()}
        no_sync = isinstance(model, DistributedDataParallel) and group_index < len(group) - 1
        # Only the last micro-batch of a step all-reduces gradients across workers.
        context = model.no_sync() if no_sync else nullcontext()
        with context:
            loss = answer_loss(model, batch)
            (loss / len(group)).backward()
        samples += int(batch["input_ids"].shape[0])
        step_loss += float(loss.detach()) / len(group)
    return step_loss, samples


def _final_metrics(result: TrainResult) -> dict[str, float]:
    metrics = {"step": float(result.steps), "steps": float(result.steps), "samples_per_s": result.samples_per_s,
               "resumed_from_step": float(result.resumed_from_step), "done": 1.0}
    if result.losses:
        metrics.update(loss=result.losses[-1], first_loss=result.losses[0], final_loss=result.losses[-1])
    return metrics


def _mean_over_workers(value: float, device: torch.device) -> float:
    _, world = distributed_info()
    if world == 1:
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / world


# --- evaluation & merging --------------------------------------------------------------------------
@torch.inference_mode()
def evaluate_answer_loss(
    model: torch.nn.Module, tokenizer: Any, examples: Sequence[SFTExample], max_length: int, batch_size: int = 8
) -> float:
    """Mean answer-token loss of ``model`` on ``examples`` (for before/after training reports)."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, example, max_length) for example in examples]
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, tokenizer.pad_token_id).items()}
        total += float(answer_loss(model, batch)) * len(chunk)
        count += len(chunk)
    return total / max(count, 1)


def merge_lora(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold the adapter into the base weights: a plain HF safetensors model dir (with tokenizer).

    The result loads in ``TransformersGenerator`` and vLLM with no peft involved. Written to a temp dir
    and renamed into place, so a concurrent reader never sees a half-written model.
    """
    from peft import PeftModel

    base_path, adapter_path, out = resolve_model_path(str(base_dir)), Path(adapter_dir), Path(out_dir)
    if not (adapter_path / ADAPTER_WEIGHTS).exists():
        raise ArtifactError(f"{adapter_path} has no {ADAPTER_WEIGHTS}")
    base = load_base_model(base_path, torch.device("cpu"))
    model = PeftModel.from_pretrained(base, str(adapter_path), use_safetensors=True)
    merged = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    merged.save_pretrained(str(staging), safe_serialization=True)
    load_tokenizer(base_path).save_pretrained(str(staging))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
