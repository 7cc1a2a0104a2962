"""Two-stage training of the policy router with TRL: SFT (learn the task and format), then DPO (prefer the
right policy over the most tempting wrong one), both through one LoRA adapter.

DPO continues training the SFT adapter; its reference model is the SFT model itself (base + SFT adapter,
merged and frozen), as in the usual SFT -> DPO recipe. QLoRA (4-bit base via bitsandbytes) is used only
when asked for and CUDA is present. Inside Ray Train's ``TorchTrainer`` the HF Trainer picks up the
process group Ray initialised (DDP); only rank 0 writes the adapter.

The adapter is saved as safetensors (``adapter_model.safetensors`` + ``adapter_config.json``); the served
model is base + adapter merged by ``routers.causal_lm.training.merge_lora``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from routers.engines import resolve_model_path
from routers.errors import ConfigError

Report = Callable[[dict[str, float]], None]


class PolicyTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

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
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=32)
    seed: int = 0
    num_threads: int | None = Field(default=None, ge=1)
    logging_steps: int = Field(default=1, ge=1)


@dataclass
class PolicyTrainResult:
    sft_losses: list[float] = field(default_factory=list)
    dpo_losses: list[float] = field(default_factory=list)
    dpo_reward_accuracy: list[float] = field(default_factory=list)
    sft_seconds: float = 0.0
    dpo_seconds: float = 0.0
    sft_samples_per_s: float = 0.0
    dpo_samples_per_s: float = 0.0

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"sft_seconds": self.sft_seconds, "dpo_seconds": self.dpo_seconds,
                                 "sft_samples_per_s": self.sft_samples_per_s, "dpo_samples_per_s": self.dpo_samples_per_s}
        if self.sft_losses:
            out.update(sft_first_loss=self.sft_losses[0], sft_final_loss=self.sft_losses[-1], sft_steps=len(self.sft_losses))
        if self.dpo_losses:
            out.update(dpo_first_loss=self.dpo_losses[0], dpo_final_loss=self.dpo_losses[-1], dpo_steps=len(self.dpo_losses))
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


class _Collect:
    """A TrainerCallback that keeps the logged losses and forwards them to ``report`` (Ray Train)."""

    def __init__(self, stage: str, losses: list[float], accuracy: list[float] | None, report: Report | None) -> None:
        from transformers import TrainerCallback

        outer = self

        class Callback(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
                if not logs or "loss" not in logs:
                    return
                losses.append(float(logs["loss"]))
                if accuracy is not None and "rewards/accuracies" in logs:
                    accuracy.append(float(logs["rewards/accuracies"]))
                if outer.report is not None:
                    outer.report({f"{stage}/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                                 | {f"{stage}/step": float(state.global_step)})

        self.report = report
        self.callback = Callback()


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
                        output_dir: str | Path, report: Report | None = None) -> PolicyTrainResult:
    """SFT then DPO; writes the final adapter to ``output_dir/adapter`` (rank 0). Returns the loss curves."""
    if not sft:
        raise ConfigError("the policy router needs SFT examples")
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    output_dir = Path(output_dir)
    base_path = resolve_model_path(config.base_model)
    tokenizer = _tokenizer(base_path)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(_load_base(base_path, config.use_qlora), lora)
    result = PolicyTrainResult()

    sft_args = SFTConfig(**_common_args(config, output_dir, "sft"), num_train_epochs=config.sft_epochs,
                         max_steps=config.sft_max_steps or -1, learning_rate=config.sft_learning_rate,
                         max_length=config.max_length, completion_only_loss=True, packing=False)
    collect = _Collect("sft", result.sft_losses, None, report)
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=Dataset.from_list(list(sft)),
                         processing_class=tokenizer, callbacks=[collect.callback])
    started = time.perf_counter()
    out = trainer.train()
    result.sft_seconds = time.perf_counter() - started
    result.sft_samples_per_s = float(out.metrics.get("train_samples_per_second", 0.0))
    model = trainer.model

    if dpo and (config.dpo_max_steps is None or config.dpo_max_steps > 0):
        reference = _frozen_copy_of(model)
        dpo_args = DPOConfig(**_common_args(config, output_dir, "dpo"), num_train_epochs=config.dpo_epochs,
                             max_steps=config.dpo_max_steps or -1, learning_rate=config.dpo_learning_rate,
                             beta=config.dpo_beta, max_length=config.max_length)
        collect = _Collect("dpo", result.dpo_losses, result.dpo_reward_accuracy, report)
        trainer = DPOTrainer(model=model, ref_model=reference, args=dpo_args, train_dataset=Dataset.from_list(list(dpo)),
                             processing_class=tokenizer, callbacks=[collect.callback])
        started = time.perf_counter()
        out = trainer.train()
        result.dpo_seconds = time.perf_counter() - started
        result.dpo_samples_per_s = float(out.metrics.get("train_samples_per_second", 0.0))
        model = trainer.model

    if trainer.is_world_process_zero():
        save_adapter(model, output_dir / "adapter")
    return result


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
