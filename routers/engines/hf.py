"""transformers implementations of the engine interface (CPU by default, CUDA when asked)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from routers.engines.base import (
    Completion,
    Embedder,
    EmbedderConfig,
    GenerationResult,
    Generator,
    GeneratorConfig,
    SamplingParams,
    StopStringFilter,
    render_plain_chat,
    truncate_at_stop,
)
from routers.engines.batching import length_buckets
from routers.errors import ArtifactError, EngineError
from routers.safe_io import assert_no_unsafe_weights

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory on GPUs; on CPU float32 is the fast path for these small models.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def _apply_threads(num_threads: int | None) -> None:
    if num_threads:
        torch.set_num_threads(num_threads)


def _load_tokenizer(path: str) -> Any:
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers raises many types here; one clear message is what users need
        raise EngineError(f"cannot load tokenizer from {path!r}: {exc}") from exc


class _Cancel(StoppingCriteria):
    """Lets a streaming consumer stop generation early (a stop string was seen, or the client left)."""

    def __init__(self) -> None:
        self.cancelled = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device)


class _StopOnStrings(StoppingCriteria):
    """Ends each row once its new text contains a stop string; the text is cut at the stop afterwards.

    Used instead of ``generate(stop_strings=...)``: transformers builds a ``StopStringCriteria`` on every
    call, and its scan of the vocabulary (262k tokens for Gemma) costs ~3 s of pure Python per call, every
    call (its cache key is the vocabulary in ``get_vocab()`` order, which differs from call to call). Here a
    step costs one ``batch_decode`` of a short tail of the unfinished rows.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_len = prompt_len
        # Enough tokens to hold the longest stop string even when each character is several byte tokens,
        # and never starting at the stop's first token (some decoders drop a leading space there).
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 8
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        rows = (~self.done).nonzero().flatten().tolist()
        if rows and self.stops:
            start = max(self.prompt_len, input_ids.shape[1] - self.window)
            tails = self.tokenizer.batch_decode(input_ids[rows, start:].tolist(), skip_special_tokens=True)
            for row, text in zip(rows, tails, strict=True):
                if any(stop in text for stop in self.stops):
                    self.done[row] = True
        return self.done.to(input_ids.device)


class TransformersGenerator(Generator):
    def __init__(self, config: GeneratorConfig) -> None:
        _apply_threads(config.num_threads)
        self.config = config
        path = config.resolved_model()
        self.model_name = path
        self.device = pick_device(config.device)
        self.tokenizer = _load_tokenizer(path)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            assert_no_unsafe_weights(path)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=pick_dtype(config.dtype, self.device), use_safetensors=True
            ).to(self.device)
        except ArtifactError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot load causal LM from {path!r}: {exc}") from exc
        self.model.eval()
        self.prompt_format = config.resolved_prompt_format(bool(getattr(self.tokenizer, "chat_template", None)))
        # One forward pass at a time: torch already uses every core for one batch, and the
        # Serve batching layer above groups concurrent requests.
        self._lock = threading.Lock()

    # --- prompts -------------------------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if self.prompt_format == "chat":
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return render_plain_chat(messages)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            list(prompts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.config.max_input_tokens,
            add_special_tokens=self.prompt_format == "plain",
        )
        return {k: v.to(self.device) for k, v in encoded.items()}

    def _generate_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "num_return_sequences": params.n,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            # Greedy: clear sampling defaults some generation_config.json files carry.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    # --- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        params = self.with_default_stop(params)
        results: list[GenerationResult] = []
        size = self.config.max_batch_size
        for start in range(0, len(prompts), size):
            results.extend(self._generate_batch(prompts[start : start + size], params))
        return results

    def _generate_batch(self, prompts: Sequence[str], params: SamplingParams) -> list[GenerationResult]:
        encoded = self._encode(prompts)
        prompt_len = encoded["input_ids"].shape[1]
        stops = [_StopOnStrings(self.tokenizer, params.stop, prompt_len)] if params.stop else []
        with self._lock, torch.inference_mode():
            # seeded under the lock: another request's generate must not draw from this seed's stream
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self.model.generate(
                **encoded, **self._generate_kwargs(params), stopping_criteria=StoppingCriteriaList(stops)
            )
        new_tokens = output[:, prompt_len:]
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        eos_ids = self._eos_ids()
        results = []
        for i, _ in enumerate(prompts):
            completions = []
            for j in range(params.n):
                completions.append(self._completion(new_tokens[i * params.n + j], params, eos_ids))
            results.append(GenerationResult(prompt_tokens=int(prompt_lengths[i]), completions=completions))
        return results

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return {int(i) for i in ids if i is not None}

    def _completion(self, tokens: torch.Tensor, params: SamplingParams, eos_ids: set[int]) -> Completion:
        token_list = tokens.tolist()
        ended = False
        for index, token in enumerate(token_list):
            if token in eos_ids:
                token_list, ended = token_list[:index], True
                break
        text = self.tokenizer.decode(token_list, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        finish = "stop" if (ended or stopped) else "length"
        return Completion(text=text, finish_reason=finish, completion_tokens=len(token_list))

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        params = self.with_default_stop(params.model_copy(update={"n": 1}))
        encoded = self._encode([prompt])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = _Cancel()
        kwargs = self._generate_kwargs(params)  # stop strings: the StopStringFilter below, then cancel
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    if params.seed is not None:  # under the lock, as in _generate_batch
                        torch.manual_seed(params.seed)
                    self.model.generate(
                        **encoded, **kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([cancel])
                    )
            except BaseException as exc:  # noqa: BLE001 - surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stop_filter = StopStringFilter(params.stop)
        exhausted = False
        try:
            for delta in streamer:
                ready = stop_filter.push(delta)
                if ready:
                    yield ready
                if stop_filter.stopped:
                    break
            else:
                exhausted = True
            rest = stop_filter.flush()
            if rest:
                yield rest
        finally:
            cancel.cancelled = True
            if not exhausted:
                # Left early (stop string, or the client went away): let generate() see the cancel
                # flag and end the streamer, then consume its end marker so the thread can finish.
                for _ in streamer:
                    pass
            thread.join()
        if errors:
            raise EngineError(f"generation failed: {errors[0]}") from errors[0]

    def sequence_logprobs(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        return [float(v) for v in self.batch_sequence_logprobs([prompt], continuations)[0]]

    def batch_sequence_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """log P(continuation | prompt) summed over the continuation's tokens, for every prompt and
        continuation, in one forward pass (the prompt keeps its last ``max_input_tokens`` tokens)."""
        add_special = self.prompt_format == "plain"
        limit = self.config.max_input_tokens
        cont_ids = [self.tokenizer(c, add_special_tokens=False).input_ids for c in continuations]
        rows, spans = [], []
        for prompt in prompts:
            prompt_ids = self.tokenizer(prompt, add_special_tokens=add_special).input_ids[-limit:]
            for ids in cont_ids:
                rows.append(prompt_ids + ids)
                spans.append((len(prompt_ids), len(prompt_ids) + len(ids)))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        # Only the continuation positions need logits: projecting every position of every row onto the
        # vocabulary (262k entries for Gemma 3) costs more than the whole decoder and allocates
        # (rows, width, vocab) floats.
        rows_index = torch.tensor([i for i, (start, end) in enumerate(spans) for _ in range(start - 1, end - 1)],
                                  dtype=torch.long, device=self.device)
        positions = torch.tensor([p for start, end in spans for p in range(start - 1, end - 1)],
                                 dtype=torch.long, device=self.device)
        targets = input_ids[rows_index, positions + 1]
        with self._lock, torch.inference_mode():
            logits = position_logits(self.model, input_ids, mask, rows_index, positions)
        token_logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        totals = torch.zeros(len(rows), dtype=torch.float64)
        totals.index_add_(0, rows_index.cpu(), token_logprobs.double().cpu())
        return totals.numpy().reshape(len(prompts), len(continuations))


def position_logits(model: Any, input_ids: Any, mask: Any, rows_index: Any, positions: Any) -> Any:
    """Logits at the given (row, position) pairs only: decoder once, then the LM head on those hidden states
    (with the final logit soft-capping of models that have one, e.g. Gemma 2). Models without a separate
    decoder and head: the full forward pass, then the same positions."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        return model(input_ids=input_ids, attention_mask=mask).logits[rows_index, positions]
    hidden = decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    logits = head(hidden[rows_index, positions])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class TransformersEmbedder(Embedder):
    """Mean- or CLS-pooled encoder embeddings; Longformer gets global attention on its first token."""

    def __init__(self, config: EmbedderConfig) -> None:
        _apply_threads(config.num_threads)
        self.config = config
        path = config.resolved_model()
        self.model_name = path
        self.device = pick_device(config.device)
        self.tokenizer = _load_tokenizer(path)
        try:
            assert_no_unsafe_weights(path)
            self.model = AutoModel.from_pretrained(
                path, dtype=pick_dtype(config.dtype, self.device), use_safetensors=True
            ).to(self.device)
        except ArtifactError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot load embedding model from {path!r}: {exc}") from exc
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)
        self.is_longformer = self.model.config.model_type == "longformer"
        self._lock = threading.Lock()

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any, config: EmbedderConfig) -> TransformersEmbedder:
        """Wrap an already-built model (tests build a tiny random Longformer this way)."""
        self = cls.__new__(cls)
        self.config, self.model_name = config, config.model
        self.device = pick_device(config.device)
        self.tokenizer, self.model = tokenizer, model.to(self.device).eval()
        self.dim = int(model.config.hidden_size)
        self.is_longformer = model.config.model_type == "longformer"
        self._lock = threading.Lock()
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Batches of similar token length: padding (wasted compute) stays small inside each one.
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=True,
                                                       max_length=self.config.max_length)["input_ids"]]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for bucket in length_buckets(lengths, self.config.max_batch_size):
            out[bucket] = self._embed_batch([texts[i] for i in bucket])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.config.max_length
        )
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        if self.is_longformer and self.config.global_attention_first_token:
            global_mask = torch.zeros_like(encoded["input_ids"])
            global_mask[:, 0] = 1
            encoded["global_attention_mask"] = global_mask
        with self._lock, torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state.float()
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()
