"""Causal-LM router: a LoRA-finetuned small LM that writes the name of the best model for a query."""

from routers.causal_lm.labels import ROUTER_PROMPT, SFTExample, best_llm, best_llm_labels, router_prompt
from routers.causal_lm.parsing import ParseResult, parse_llm_name
from routers.causal_lm.router import CausalLMConfig, CausalLMRouter, ensure_merged
from routers.causal_lm.training import (
    CausalLMTrainConfig,
    TrainResult,
    merge_lora,
    save_adapter,
    train_causal_lm,
)

__all__ = [
    "ROUTER_PROMPT",
    "CausalLMConfig",
    "CausalLMRouter",
    "CausalLMTrainConfig",
    "ParseResult",
    "SFTExample",
    "TrainResult",
    "best_llm",
    "best_llm_labels",
    "ensure_merged",
    "merge_lora",
    "parse_llm_name",
    "router_prompt",
    "save_adapter",
    "train_causal_lm",
]
