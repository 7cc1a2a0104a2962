"""Tiny random language models saved to disk, for tests that train or load a model in seconds on a CPU.

The builders import torch/transformers when called, so importing this module (conftest does) stays cheap.
``tests/conftest.py`` wraps the slow ones in module-scoped fixtures (``tiny_model_dir``, ``tiny_gemma``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routers.causal_lm.labels import SFTExample, router_prompt
from tests.conftest import LARGE_NAME, ROOT, SMALL_NAME

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SMOLLM = ROOT / "models" / "smollm2-135m-instruct"


# --- a causal-LM router base: SmolLM2's tokenizer on a 2-layer random Llama --------------------------------
def save_tiny_causal_lm_base(directory: Path) -> Path:
    """A 2-layer random Llama with the real SmolLM2 tokenizer (needs ``models/`` set up).

    The wide init gives the tied embeddings enough norm that LoRA on q/v can move the logits at all.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_train_config(base: Path, **overrides: object) -> object:
    """LoRA settings that train ``base`` for a few steps in seconds; ``overrides`` replace any of them."""
    from routers.causal_lm.training import CausalLMTrainConfig

    settings = {"base_model": str(base), "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 2e-2,
                "batch_size": 4, "max_length": 48, "num_epochs": 50, "max_steps": 12, "seed": 0}
    settings.update(overrides)
    return CausalLMTrainConfig(**settings)


TINY_EXAMPLES = [
    SFTExample(router_prompt(f"easy question {i}?"), SMALL_NAME) for i in range(4)
] + [SFTExample(router_prompt(f"hard proof {i}!"), LARGE_NAME) for i in range(4)]


# --- the policy router's base: a 2-layer random Gemma 3 ---------------------------------------------------
def save_tiny_gemma(directory: Path) -> Path:
    """A 2-layer random Gemma 3 with a small BPE tokenizer trained on the router's own prompts (fast on CPU)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    from routers.policy.matrix import PolicyLabel
    from routers.policy.prompts import router_prompt as policy_prompt
    from routers.policy.prompts import target_text

    corpus = [policy_prompt(f"q{i}") for i in range(5)] + [
        target_text(label, "q", task) for label in PolicyLabel for task in ("gsm8k", "mmlu", None)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<pad>", "<eos>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                              sliding_window=64, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Gemma3ForCausalLM(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


# --- a generator with its own tokenizer (no downloads): a 2-layer random Llama ------------------------------
CORPUS = [
    "What is two plus two? The answer is four.",
    "The capital of France is Paris. Question: Answer: yes no maybe",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 ? ! . ,",
] * 20
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(chat: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few sentences: enough to round-trip any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   cls_token="<s>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_llama(directory: Path, chat: bool = True) -> Path:
    """A 2-layer random Llama (seeded) with ``tiny_tokenizer``; ``chat`` gives the tokenizer a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(chat)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    # A random model would often end at once; never sampling special tokens keeps its output non-empty.
    model.generation_config.suppress_tokens = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def full_forward_logprobs(generator: Any, prompt: str, continuations: Sequence[str]) -> list[float]:
    """The reference for ``TransformersGenerator.batch_sequence_logprobs``: every position through the LM
    head, one padded row per continuation, summed log-probabilities of the continuation's tokens."""
    import torch

    tokenizer = generator.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=generator.prompt_format == "plain").input_ids
    sequences = [prompt_ids + tokenizer(c, add_special_tokens=False).input_ids for c in continuations]
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    with torch.inference_mode():
        logits = generator.model(input_ids=input_ids, attention_mask=mask).logits.float()
    token_logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return [float(token_logprobs[row, len(prompt_ids) - 1 : len(seq) - 1].sum()) for row, seq in enumerate(sequences)]
