"""A Hugging Face causal LM in this process (``Transformers``), from a local folder.

For what vLLM does not cover: any architecture transformers knows, bitsandbytes 8-bit and 4-bit
weights, and transformers' speculative decoding (a draft ``assistant_model`` or prompt lookup,
which drafts by copying from the prompt: much faster on copy-heavy text, with the same greedy
output; see the performance page). It is not a serving engine: one request runs at a time.

How it maps onto the runtime:

- the model loads on the first request (or ``await model.start()``) in a worker thread, and
  every generation runs in a worker thread too, so the event loop never blocks; requests are
  serialized (an async lock per event loop, a thread lock across loops);
- native ``n``: one ``generate`` call with ``num_return_sequences=n`` shares the prompt's
  prefill. Speculative decoding in transformers takes a batch of one, so with it the ``n``
  samples are drawn one after another; greedy decoding (temperature 0) is computed once and
  repeated, since all ``n`` samples would be the same;
- stop strings end generation early (``stop_strings``) and are cut from the text; usage counts
  come from the tokenizer; logprobs come from the model's raw logits (before temperature);
- cancelling a request stops ``generate`` at its next token (a stopping criterion watches a
  flag), and the call returns once the thread has let go of the model;
- ``torch.set_num_threads(num_threads)`` is applied at load (one thread by default: on a small
  shared machine more threads slow generation down). It is process-wide.

Models are never downloaded (``local_files_only=True``). bitsandbytes quantization needs a CUDA
GPU: on a machine without one the configuration is checked and refused with ``ConfigError``.
Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import anyio.to_thread

from ttc.adapters.chat_template import chat_prompt_text
from ttc.errors import (
    ConfigError,
    ContextLengthError,
    MissingDependencyError,
    ProviderError,
    ProviderTimeoutError,
)
from ttc.hf_local import Dtype, check_settings, model_folder, require_hf, torch_device
from ttc.runtime.loader import EngineLoader
from ttc.runtime.model import Capabilities, Model, RawResponse
from ttc.runtime.pricing import Price
from ttc.types import (
    Completion,
    FinishReason,
    GenerateRequest,
    Message,
    SamplingParams,
    TokenLogprob,
)
from ttc.validation import check_int

__all__ = ["Quantization", "Transformers", "bitsandbytes_config"]

logger = logging.getLogger("ttc.hf")

Quantization = Literal["8bit", "4bit"]


def bitsandbytes_config(quantization: Quantization, compute_dtype: str = "bfloat16") -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``"8bit"`` (LLM.int8) or ``"4bit"`` (NF4 with
    double quantization, computing in ``compute_dtype``: the QLoRA recipe)."""
    if quantization not in ("8bit", "4bit"):
        raise ConfigError(f"quantization must be '8bit' or '4bit', got {quantization!r}")
    require_hf("bitsandbytes quantization")
    import torch
    from transformers import BitsAndBytesConfig

    make: Any = BitsAndBytesConfig  # untyped in transformers
    if quantization == "8bit":
        return make(load_in_8bit=True)
    return make(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    assistant: Any
    device: Any
    eos_ids: tuple[int, ...]
    pad_id: int


class Transformers(Model):
    """A transformers causal LM from a local folder, in this process.

    Args:
        model_dir: the model folder (``config.json``, weights, tokenizer).
        name: the model name in usage and traces (default: the folder's name).
        dtype: weights' dtype; ``"auto"`` follows the checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA where available.
        quantization: ``"8bit"`` or ``"4bit"`` through bitsandbytes (needs a CUDA GPU and the
            ``bitsandbytes`` package).
        assistant_model: a smaller model folder with the same tokenizer that drafts tokens for
            this one (assisted generation).
        prompt_lookup_num_tokens: draft this many tokens by copying from the prompt (prompt
            lookup decoding); exclusive with ``assistant_model``.
        num_threads: ``torch.set_num_threads`` at load (process-wide); ``None`` leaves torch's.
        **runtime: budget, max_concurrency, rpm, tpm, retry, price (default free), params,
            timeout (default 600 s, loading excluded).
    """

    provider: ClassVar[str] = "transformers"
    default_price: ClassVar[Price | None] = Price.free()

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        dtype: Dtype = "auto",
        device: str | None = None,
        quantization: Quantization | None = None,
        assistant_model: str | Path | None = None,
        prompt_lookup_num_tokens: int | None = None,
        num_threads: int | None = 1,
        **runtime: Any,
    ) -> None:
        require_hf("The in-process transformers model")
        folder = model_folder(model_dir, "model_dir")
        check_settings(dtype, num_threads)
        check_int("prompt_lookup_num_tokens", prompt_lookup_num_tokens, ge=1, optional=True)
        if assistant_model is not None and prompt_lookup_num_tokens is not None:
            raise ConfigError(
                "assistant_model and prompt_lookup_num_tokens are two ways of drafting tokens; "
                "pick one"
            )
        assistant = (
            model_folder(assistant_model, "assistant_model")
            if assistant_model is not None
            else None
        )
        if quantization is not None:
            self._check_quantization(quantization, device)
        runtime.setdefault("timeout", 600.0)
        runtime.setdefault(
            "capabilities",
            Capabilities(
                native_n=True,
                max_n=64,
                logprobs=True,
                max_top_logprobs=20,
                chat=True,
                completions=True,
                continue_final_message=True,
                prompt_logprobs=True,
            ),
        )
        super().__init__(name or folder.name, **runtime)
        self.model_dir = folder
        self.dtype: Dtype = dtype
        self.device = device
        self.quantization: Quantization | None = quantization
        self.assistant_model = assistant
        self.prompt_lookup_num_tokens = prompt_lookup_num_tokens
        self.num_threads = num_threads
        self._engine = EngineLoader[_Loaded](name=str(self.model_dir))

    def __repr__(self) -> str:
        return f"Transformers({str(self.model_dir)!r})"

    @staticmethod
    def _check_quantization(quantization: str, device: str | None) -> None:
        """bitsandbytes' 8-bit and 4-bit kernels need CUDA: refuse early and say so."""
        if quantization not in ("8bit", "4bit"):
            raise ConfigError(f"quantization must be '8bit' or '4bit', got {quantization!r}")
        if device is not None and not device.startswith("cuda"):
            raise ConfigError(
                f"quantization={quantization!r} runs bitsandbytes' CUDA kernels; device "
                f"{device!r} cannot run it (use device='cuda' or drop quantization)"
            )
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes' 8-bit and 4-bit "
                "kernels); this machine has none. Drop quantization, or use a smaller dtype "
                "such as dtype='bfloat16'"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MissingDependencyError("bitsandbytes", "hf", "bitsandbytes quantization")

    # ------------------------------------------------------------------ loading

    async def start(self) -> None:
        """Load the model now rather than on the first request."""
        await self._engine.aget(self._load_now)

    def load(self) -> Transformers:
        """``start`` for synchronous code (scripts, test fixtures); returns the model."""
        self._engine.get(self._load_now)
        return self

    @property
    def load_seconds(self) -> float | None:
        """How long loading took (``None`` until loaded)."""
        return self._engine.seconds

    @property
    def _loaded(self) -> _Loaded | None:
        return self._engine.value

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (``None`` until loaded): count tokens, render templates."""
        loaded = self._engine.value
        return loaded.tokenizer if loaded is not None else None

    def load_kwargs(self) -> dict[str, Any]:
        """The ``from_pretrained`` keyword arguments for the main model."""
        import torch

        kwargs: dict[str, Any] = {"local_files_only": True}
        kwargs["dtype"] = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        if self.quantization is not None:
            compute = self.dtype if self.dtype in ("bfloat16", "float16") else "bfloat16"
            kwargs["quantization_config"] = bitsandbytes_config(self.quantization, compute)
            kwargs["device_map"] = self.device or "auto"
        return kwargs

    def _load_now(self) -> _Loaded:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = torch_device(self.device, self.num_threads)
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(
                str(self.model_dir), local_files_only=True
            )
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(self.model_dir), **self.load_kwargs()
            )
            assistant: Any = None
            if self.assistant_model is not None:
                assistant = AutoModelForCausalLM.from_pretrained(
                    str(self.assistant_model),
                    local_files_only=True,
                    dtype=model.dtype,
                )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model_dir: transformers cannot load the model: {exc}") from exc
        if self.quantization is None:
            model.to(device)
        if assistant is not None:
            assistant.to(device)
            assistant.eval()
        model.eval()
        eos = model.generation_config.eos_token_id
        eos_ids = ((eos,) if isinstance(eos, int) else tuple(eos or ())) or _as_ids(
            tokenizer.eos_token_id
        )
        pad = tokenizer.pad_token_id
        pad_id = pad if isinstance(pad, int) else (eos_ids[0] if eos_ids else 0)
        return _Loaded(model, tokenizer, assistant, device, eos_ids, pad_id)

    async def aclose(self) -> None:
        """Drop the model (a later request loads it again)."""
        await super().aclose()
        self.close()

    def close(self) -> None:
        """Drop the model, for synchronous code; waits for a generation in progress."""
        self._engine.close()

    # ------------------------------------------------------------------ requests

    def _async_lock(self) -> anyio.Lock:
        resources = self._loop_resources()
        lock: anyio.Lock | None = resources.get("lock")
        if lock is None:
            lock = resources["lock"] = anyio.Lock()
        return lock

    async def _send(self, request: GenerateRequest) -> RawResponse:
        await self._engine.aget(self._load_now)
        cancel = threading.Event()
        done = threading.Event()

        def work() -> RawResponse:
            try:
                with self._engine.run_lock:
                    return self._generate(request, cancel)
            except RuntimeError as exc:  # torch's errors: out of memory, a bad tensor shape...
                raise ProviderError(
                    f"{type(exc).__name__}: {exc}", provider=self.provider, model=self.model
                ) from exc
            finally:
                done.set()

        async with self._async_lock():
            try:
                with anyio.fail_after(self.timeout):
                    return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            except BaseException as exc:
                if not done.is_set():
                    # cancelled or timed out: stop generate at its next token and wait for the
                    # thread to let go of the model before the next request may use it
                    cancel.set()
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(done.wait)
                if isinstance(exc, TimeoutError):
                    raise ProviderTimeoutError(
                        f"no answer within {self.timeout:g} s",
                        provider=self.provider,
                        model=self.model,
                    ) from exc
                raise

    def _prompt_ids(self, loaded: _Loaded, prompt: str | tuple[Message, ...]) -> list[int]:
        tokenizer = loaded.tokenizer
        if isinstance(prompt, str):
            ids: list[int] = tokenizer(prompt)["input_ids"]
            return ids
        text = chat_prompt_text(tokenizer, prompt, self.model_dir.name)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _generate(self, request: GenerateRequest, cancel: threading.Event) -> RawResponse:
        """One request, in a worker thread, holding the run lock."""
        import torch

        loaded = self._engine.get(self._load_now)
        p = request.params
        prompt_ids = self._prompt_ids(loaded, request.prompt)
        limit = getattr(loaded.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and len(prompt_ids) + p.max_tokens > limit:
            raise ContextLengthError(
                f"prompt ({len(prompt_ids)} tokens) plus max_tokens ({p.max_tokens}) exceeds the "
                f"model's {limit} positions",
                provider=self.provider,
                model=self.model,
            )
        input_ids = torch.tensor([prompt_ids], device=loaded.device)
        greedy = p.temperature == 0
        speculative = loaded.assistant is not None or self.prompt_lookup_num_tokens is not None
        # one generate call for all samples where transformers allows it
        if greedy:
            calls, per_call = 1, 1
        elif speculative:
            calls, per_call = request.n, 1
        else:
            calls, per_call = 1, request.n
        with torch.inference_mode():
            if p.seed is not None:
                torch.manual_seed(p.seed)
            rows: list[_Row] = []
            for _ in range(calls):
                if cancel.is_set():
                    break
                rows.extend(self._generate_rows(loaded, input_ids, p, per_call, cancel))
            prompt_logprobs = (
                _prompt_logprobs(loaded, input_ids, p.prompt_logprobs)
                if p.prompt_logprobs is not None
                else None
            )
        if greedy and rows:
            rows = rows * request.n
        completions = [
            Completion(
                text=row.text,
                finish_reason=row.finish,
                completion_tokens=row.tokens,
                logprobs=row.logprobs,
                prompt_logprobs=prompt_logprobs,
                model=self.model,
            )
            for row in rows
        ]
        return RawResponse(
            completions=completions,
            prompt_tokens=len(prompt_ids),
            completion_tokens=sum(row.tokens for row in rows),
        )

    def _generate_rows(
        self,
        loaded: _Loaded,
        input_ids: Any,
        p: SamplingParams,
        n: int,
        cancel: threading.Event,
    ) -> list[_Row]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        def cancelled(self: object, ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=ids.device)

        # a StoppingCriteria that ends generate at the next token once the request is cancelled
        # (built with type() so type checkers need not see transformers' classes)
        criterion = type("Cancelled", (StoppingCriteria,), {"__call__": cancelled})()

        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": p.max_tokens,
            "num_return_sequences": n,
            "pad_token_id": loaded.pad_id,
            "eos_token_id": list(loaded.eos_ids) or None,
            "stopping_criteria": StoppingCriteriaList([criterion]),
            "return_dict_in_generate": True,
            "output_logits": p.logprobs,
        }
        if p.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=0)
        if p.stop:
            kwargs.update(stop_strings=list(p.stop), tokenizer=loaded.tokenizer)
        if loaded.assistant is not None:
            kwargs["assistant_model"] = loaded.assistant
        elif self.prompt_lookup_num_tokens is not None:
            kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup_num_tokens
        out = loaded.model.generate(**kwargs)
        generated = out.sequences[:, input_ids.shape[1] :].tolist()
        logits = out.logits if p.logprobs else None
        return [_row(loaded, ids, i, logits, p, cancel.is_set()) for i, ids in enumerate(generated)]


@dataclass
class _Row:
    text: str
    finish: FinishReason
    tokens: int
    logprobs: tuple[TokenLogprob, ...] | None


def _as_ids(value: object) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else ()


def _row(
    loaded: _Loaded,
    ids: list[int],
    index: int,
    logits: Sequence[Any] | None,
    p: SamplingParams,
    cancelled: bool,
) -> _Row:
    """One generated sequence: cut at the end of sequence and at stop strings, counted, with
    logprobs where asked."""
    tokenizer = loaded.tokenizer
    length = len(ids)
    finish: FinishReason = "length"
    eos_at = next((i for i, t in enumerate(ids) if t in loaded.eos_ids), None)
    if eos_at is not None:
        length, finish = eos_at + 1, "stop"  # the end-of-sequence token counts, as in vLLM
    else:
        # rows that stopped early (a stop string) are padded to the batch's length
        while length and ids[length - 1] == loaded.pad_id:
            length -= 1
    kept = ids[: eos_at if eos_at is not None else length]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cut = min((i for s in p.stop if (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        text, finish = text[:cut], "stop"
    elif cancelled and finish == "length" and length < p.max_tokens:
        finish = "cancelled"
    logprobs = (
        _sample_logprobs(loaded, ids[:length], logits, index, p.top_logprobs or 0)
        if logits is not None
        else None
    )
    return _Row(text=text, finish=finish, tokens=length, logprobs=logprobs)


def _decode_one(tokenizer: Any) -> Callable[[int], str]:
    def decode(token_id: int) -> str:
        text: str = tokenizer.decode([token_id])
        return text

    return decode


def _sample_logprobs(
    loaded: _Loaded, ids: list[int], logits: Sequence[Any], row: int, k: int
) -> tuple[TokenLogprob, ...]:
    """Log-softmax of the raw logits (the model's distribution, before temperature and top-p)
    at each generated position."""
    import torch

    decode = _decode_one(loaded.tokenizer)
    out = []
    for step, token_id in enumerate(ids[: len(logits)]):
        logprobs = torch.log_softmax(logits[step][row].float(), dim=-1)
        top: tuple[tuple[str, float], ...] = ()
        if k:
            values, indices = torch.topk(logprobs, k)
            top = tuple(
                (decode(int(i)), float(v)) for v, i in zip(values.tolist(), indices.tolist())
            )
        out.append(
            TokenLogprob.model_construct(
                token=decode(token_id), logprob=float(logprobs[token_id]), top=top
            )
        )
    return tuple(out)


def _prompt_logprobs(loaded: _Loaded, input_ids: Any, k: int) -> tuple[TokenLogprob, ...]:
    """One forward pass over the prompt: each token's logprob given the tokens before it (the
    first has none: NaN), aligned with the prompt's tokens."""
    import torch

    decode = _decode_one(loaded.tokenizer)
    logits = loaded.model(input_ids=input_ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    ids = input_ids[0].tolist()
    out = [TokenLogprob.model_construct(token=decode(ids[0]), logprob=math.nan, top=())]
    for pos in range(1, len(ids)):
        row = logprobs[pos - 1]
        top: tuple[tuple[str, float], ...] = ()
        if k:
            values, indices = torch.topk(row, k)
            top = tuple(
                (decode(int(i)), float(v)) for v, i in zip(values.tolist(), indices.tolist())
            )
        out.append(
            TokenLogprob.model_construct(
                token=decode(ids[pos]), logprob=float(row[ids[pos]]), top=top
            )
        )
    return tuple(out)
