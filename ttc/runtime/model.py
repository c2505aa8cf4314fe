"""``Model``: an adapter's wire calls wrapped in the runtime, written once for every provider.

An adapter implements ``_send`` (one request on the wire, nothing else) and declares its
``Capabilities``. ``Model.generate`` adds, in this order for every request: the capability
checks, fan-out where the provider has no native ``n``, the concurrency limit, the rate limit,
the budget reservation, the deadline, the retries, the settlement, the check that as many
choices came back as were asked for (refilling the gap), usage, cost and the trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import sys
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import anyio
from pydantic import ConfigDict, Field

from ttc.errors import (
    BudgetExceeded,
    ConfigError,
    GenerationError,
    ProviderError,
)
from ttc.runtime.budget import (
    Budget,
    Charge,
    Ledger,
    deadline_seconds,
)
from ttc.runtime.cache import ResponseCache
from ttc.runtime.concurrency import ConcurrencyLimit
from ttc.runtime.context import UsageCounter, current_run
from ttc.runtime.meter import MeteredRequest, deadline_passed
from ttc.runtime.pricing import Price, lookup_price
from ttc.runtime.ratelimit import RateLimiter, RateLimitInfo
from ttc.runtime.retry import RetryPolicy
from ttc.types import (
    Completion,
    GenerateRequest,
    Message,
    Prompt,
    Samples,
    SamplingParams,
    Usage,
    as_request_prompt,
)
from ttc.validation import Float, Int, Settings, check_float, check_instance, check_int

logger = logging.getLogger("ttc.model")

_T = TypeVar("_T")
_A = TypeVar("_A")


@dataclass(frozen=True)
class _Metered(Generic[_T]):
    """A metered request (``Model.metered``): how to send it and its worst case."""

    send: Callable[[], Awaitable[tuple[_T, int | None]]]
    prompt_bound: int
    kind: str


# Model attributes that never change an answer (or are secret): left out of the cache key.
_NOT_IN_CACHE_IDENTITY = frozenset(
    {
        "api_key",
        "headers",
        "max_concurrency",
        "timeout",
        "retry",
        "params",
        "budget",
        "ledger",
        "price",
        "rate_limiter",
        "cache",
        "capabilities",
        "load_seconds",
        "n_threads",
        "num_threads",
        "verbose",
    }
)

OnCompletions = Callable[[list[Completion]], Awaitable[None] | None]
OnSamples = Callable[[Samples], Awaitable[None] | None]

_NO_DEADLINE = contextlib.nullcontext()


class Capabilities(Settings):
    """What a provider or engine can do; the runtime works around what it cannot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    native_n: bool = Field(True, description="Honours n > 1 in one request (shared prefill).")
    max_n: Int = Field(128, ge=1, description="Largest n one request may ask for.")
    logprobs: bool = True
    max_top_logprobs: Int = Field(20, ge=0)
    max_stop: Int | None = Field(None, ge=0, description="Most stop strings one request may carry.")
    chat: bool = True
    completions: bool = True
    continue_final_message: bool = False
    prompt_logprobs: bool = False
    max_temperature: Float = Field(2.0, ge=0)


class RawResponse:
    """What one wire request returned, before the runtime's bookkeeping (one per request:
    slots, no ``__dict__``).

    An adapter gives its samples as ``completions`` or, for samples it has parsed into columns
    (``ttc.types.Samples``), as ``samples``: then no ``Completion`` is built unless someone
    reads ``completions``."""

    __slots__ = ("completion_tokens", "prompt_tokens", "rate_limits", "samples")

    def __init__(
        self,
        completions: list[Completion] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        rate_limits: RateLimitInfo | None = None,
        *,
        samples: Samples | None = None,
    ) -> None:
        if (completions is None) == (samples is None):
            raise TypeError("RawResponse takes completions or samples (one of them)")
        self.samples = samples if samples is not None else Samples.of(completions or [])
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.rate_limits = rate_limits

    @property
    def completions(self) -> list[Completion]:
        """The samples as ``Completion`` objects (built when first read)."""
        return self.samples.completions()

    @completions.setter
    def completions(self, completions: list[Completion]) -> None:
        self.samples = Samples.of(completions)

    def __repr__(self) -> str:
        return (
            f"RawResponse({self.samples!r}, prompt_tokens={self.prompt_tokens}, "
            f"completion_tokens={self.completion_tokens})"
        )


class _LoopState:
    """Per-event-loop runtime state: asyncio primitives and HTTP sessions belong to one loop,
    and ``run_sync`` may drive the same model from several loops over its life.

    The hot path avoids anyio's primitives, which cost several times more CPU a request, and
    client CPU per request is a speed target (see ``benchmarks/overhead.py``)."""

    __slots__ = ("limiter", "resources")

    def __init__(self, max_concurrency: int) -> None:
        self.limiter = ConcurrencyLimit(max_concurrency)
        self.resources: dict[str, Any] = {}


class Model(ABC):
    """A model behind the ttc runtime. Subclasses are the adapters (``ttc.adapters``).

    Args:
        model: the provider's model name.
        budget: hard limits for everything sent through this model, across all runs.
        max_concurrency: requests in flight at once.
        rpm: requests per minute (default: no limit).
        tpm: tokens per minute; when not given, learned from the provider's ``x-ratelimit-*``
            headers where it sends them.
        retry: the retry policy (default: 8 attempts, exponential backoff with jitter).
        price: USD per token; default from the price table. ``None`` and unknown there means
            unpriced: usage is reported under ``Usage.unpriced_models`` and a USD limit refuses.
        params: default sampling parameters for strategies that use this model.
        timeout: seconds one request may take.
        capabilities: what the provider can do (default: the adapter's
            ``default_capabilities()``); the runtime works around what it cannot.
        cache: a ``ResponseCache`` (``MemoryCache()``, ``SQLiteCache(path)``): repeated greedy
            or seeded requests are answered from it, without a request or a charge.
    """

    provider: ClassVar[str] = "model"
    #: Price used when the table has none, e.g. ``Price.free()`` for engines you run yourself.
    default_price: ClassVar[Price | None] = None
    #: Public attributes that change as the model works (counters) and so say nothing about
    #: its answers: left out of the response cache's key.
    volatile_attributes: ClassVar[frozenset[str]] = frozenset()
    #: The provider's usage counts the completion tokens of one choice only when it answers
    #: ``n > 1`` in one request (llama.cpp's server with parallel slots): the runtime then
    #: counts every choice itself (see ``_count_choices``).
    usage_counts_one_choice: ClassVar[bool] = False

    def __init__(
        self,
        model: str,
        *,
        budget: Budget | None = None,
        max_concurrency: int = 64,
        rpm: int | None = None,
        tpm: int | None = None,
        retry: RetryPolicy | None = None,
        price: Price | None = None,
        params: SamplingParams | None = None,
        timeout: float = 120.0,
        capabilities: Capabilities | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model: a model name is required, got {model!r}")
        self.model = model
        self.max_concurrency: int = check_int("max_concurrency", max_concurrency, ge=1)
        self.timeout: float = check_float("timeout", timeout, gt=0)
        rpm = check_float("rpm", rpm, gt=0, optional=True)
        tpm = check_float("tpm", tpm, gt=0, optional=True)
        for name, value, cls, example in (
            ("budget", budget, Budget, "Budget(usd=1.0)"),
            ("retry", retry, RetryPolicy, "RetryPolicy(max_attempts=3)"),
            ("price", price, Price, "Price.per_million(0.15, 0.60)"),
            ("params", params, SamplingParams, "SamplingParams(temperature=0.7)"),
            ("capabilities", capabilities, Capabilities, "Capabilities(native_n=False)"),
        ):
            check_instance(name, value, cls, example, optional=True)
        self.retry = retry or RetryPolicy()
        self.params = params or SamplingParams()
        self.capabilities = capabilities or self.default_capabilities()
        self.budget = budget
        self.ledger = Ledger(budget, f"{self.provider}/{model}") if budget else None
        self.price = price or lookup_price(model, self.provider) or self.default_price
        if self.price is None and self.ledger is not None:
            self._check_priced((self.ledger,))  # known now: refuse at once, not at a request
        self.rate_limiter = RateLimiter(rpm, tpm)
        if cache is not None and not isinstance(cache, ResponseCache):
            raise ConfigError(
                "cache must be a ttc ResponseCache (MemoryCache() or SQLiteCache(path)), "
                f"got {type(cache).__name__}"
            )
        self.cache = cache
        self._usage = UsageCounter()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        # The loop used last and its state: the lookup every request makes, without building
        # a weak reference each time.
        self._last_loop: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None
        self._prompt_tokens_seen: OrderedDict[object, int] = OrderedDict()
        self._warned_short = False
        self._warned_usage = False
        # Dropped without ``aclose()`` (or alive at exit): release the sessions silently.
        weakref.finalize(self, _release_loops, self._loops, type(self)._release_loop_resources)

    # ------------------------------------------------------------------ adapter interface

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        """The capabilities an instance gets unless ``capabilities=`` is passed."""
        return Capabilities()

    @abstractmethod
    async def _send(self, request: GenerateRequest) -> RawResponse:
        """Send one request (``n`` at most ``max_n``; 1 without native ``n``). Raise the typed
        ``ProviderError`` subclasses from ``ttc.errors``; never retry here."""

    async def _close_loop_resources(self, resources: dict[str, Any]) -> None:
        """Close what ``_loop_resources`` holds for the current loop (HTTP sessions...)."""
        return None

    @staticmethod
    def _release_loop_resources(resources: dict[str, Any]) -> None:
        """Release ``resources`` without awaiting (and without warnings): the model was
        garbage-collected, or the interpreter exits, and nobody closed them."""
        return None

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        """``provider/model``, as usage, traces and errors report it."""
        return f"{self.provider}/{self.model}"

    @property
    def usage(self) -> Usage:
        """Everything this model has spent since it was created."""
        return self._usage.snapshot()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    async def generate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        n: int = 1,
        *,
        on_completions: OnCompletions | None = None,
    ) -> list[Completion]:
        """Draw ``n`` samples of ``prompt``.

        Requests go out concurrently (one per chunk of ``max_n`` with native ``n``, else one
        per sample). ``on_completions`` is called with each batch as it arrives, so a caller
        can stop early by cancelling. If some samples fail for good, ``GenerationError`` (or
        ``BudgetExceeded``) is raised carrying the samples that did arrive.
        """
        collected: list[Completion] = []

        def on_samples(batch: Samples) -> Awaitable[None] | None:
            completions = batch.completions()
            collected.extend(completions)
            return on_completions(completions) if on_completions is not None else None

        await self._generate_samples(prompt, params, n, on_samples)
        return collected

    async def generate_samples(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        n: int = 1,
        *,
        on_samples: OnSamples,
    ) -> None:
        """``generate``, handing each response's samples to ``on_samples`` as they arrive,
        as ``ttc.types.Samples``: a caller that wants candidates makes them from the parsed
        columns (``Samples.candidates``) and no ``Completion`` objects are built. The errors
        are ``generate``'s, with the same samples."""
        if getattr(self.generate, "__func__", None) is not Model.generate:
            # A model that draws its own way (a subclass's or a patched ``generate``).
            await self.generate(
                prompt, params, n, on_completions=lambda got: on_samples(Samples.of(got))
            )
        else:
            await self._generate_samples(prompt, params, n, on_samples)

    async def _generate_samples(
        self, prompt: Prompt, params: SamplingParams | None, n: int, on_samples: OnSamples
    ) -> None:
        request = GenerateRequest(
            prompt=as_request_prompt(prompt), params=params or self.params, n=n
        )
        self._check_request(request)
        sizes = self._chunk_sizes(n)
        collected: list[Samples] = []
        failures: list[BaseException] = []

        chunks = self._chunk_requests(request, sizes)
        if len(chunks) == 1:
            await self._generate_chunk(chunks[0], on_samples, collected, failures, 0)
        else:
            firsts = [0] * len(sizes)
            for i in range(1, len(sizes)):
                firsts[i] = firsts[i - 1] + sizes[i - 1]
            await _all_chunks(
                [
                    self._generate_chunk(chunk, on_samples, collected, failures, first)
                    for chunk, first in zip(chunks, firsts)
                ]
            )
        if failures:
            delivered = [c for batch in collected for c in batch.completions()]
            raise self._partial_failure(failures, delivered, n)

    async def aclose(self) -> None:
        """Release connections held for the current event loop (an in-process engine also
        shuts its engine down)."""
        await self._release_this_loop()

    async def _release_this_loop(self) -> None:
        """Release what this model holds for the running loop only (its HTTP sessions): what
        a loop's end does, which must not stop an in-process engine that serves every loop."""
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if self._last_loop is not None and self._last_loop[0] is loop:
            self._last_loop = None
        if state is not None:
            await self._close_loop_resources(state.resources)

    async def __aenter__(self) -> Model:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ internals

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        last = self._last_loop
        if last is not None and last[0] is loop:
            return last[1]
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.max_concurrency)
            _register_on_loop(loop, self)
        self._last_loop = (loop, state)
        return state

    def _loop_resources(self) -> dict[str, Any]:
        return self._loop_state().resources

    def _check_request(self, request: GenerateRequest) -> None:
        caps, p = self.capabilities, request.params
        if p.logprobs and not caps.logprobs:
            raise ConfigError(f"logprobs: {self.name} does not return log probabilities")
        if p.prompt_logprobs is not None and not caps.prompt_logprobs:
            raise ConfigError(f"prompt_logprobs: {self.name} does not return prompt logprobs")
        if p.top_logprobs and p.top_logprobs > caps.max_top_logprobs:
            raise ConfigError(
                f"top_logprobs: {self.name} returns at most {caps.max_top_logprobs} alternatives"
            )
        if p.temperature > caps.max_temperature:
            raise ConfigError(
                f"temperature: {self.name} accepts at most {caps.max_temperature}, "
                f"got {p.temperature}"
            )
        if isinstance(request.prompt, str):
            if not caps.completions and not caps.chat:
                raise ConfigError(f"{self.name} has no text or chat endpoint")
        elif not caps.chat:
            raise ConfigError(f"prompt: {self.name} takes raw text, not chat messages")

    def _wire_stops(self, stops: tuple[str, ...]) -> tuple[str, ...]:
        """The stop strings a request carries: as many as the provider takes (an adapter
        applies them all to the text, see ``max_stop`` and ``cut_at_stops``)."""
        limit = self.capabilities.max_stop
        return stops if limit is None else stops[:limit]

    def _chunk_sizes(self, n: int) -> list[int]:
        if not self.capabilities.native_n:
            return [1] * n
        step = self.capabilities.max_n
        return [min(step, n - i) for i in range(0, n, step)]

    @staticmethod
    def _chunk_requests(request: GenerateRequest, sizes: list[int]) -> list[GenerateRequest]:
        """One request per chunk. With a seed, each chunk gets ``seed + index of its first
        sample``: the same seed on every fanned-out request would make a deterministic
        engine return the same sample n times."""
        seed = request.params.seed
        if seed is None or len(sizes) == 1:
            copies = {size: request.model_copy(update={"n": size}) for size in set(sizes)}
            return [copies[size] for size in sizes]
        chunks, offset = [], 0
        for size in sizes:
            params = request.params.model_copy(update={"seed": seed + offset})
            chunks.append(request.model_copy(update={"n": size, "params": params}))
            offset += size
        return chunks

    def _partial_failure(
        self, failures: Sequence[BaseException], collected: list[Completion], wanted: int
    ) -> BaseException:
        budget = next((f for f in failures if isinstance(f, BudgetExceeded)), None)
        if budget is not None:
            budget.completions = list(collected)
            return budget
        cause = failures[-1]
        if isinstance(cause, GenerationError):
            cause = cause.cause
        if not collected:
            return cause  # nothing was paid for: the typed provider error says it best
        return GenerationError(cause, collected, wanted)

    async def _generate_chunk(
        self,
        request: GenerateRequest,
        on_samples: OnSamples,
        collected: list[Samples],
        failures: list[BaseException],
        first_sample: int,
    ) -> None:
        """Get ``request.n`` samples into ``collected``, and a failure for good into
        ``failures``; ``first_sample`` is the index of the chunk's first sample in the call. If
        the provider returns fewer samples, ask again for the rest (by fan-out, since a
        provider that drops choices once tends to keep dropping them).

        A run's ``seconds`` budget bounds all of it, the waits between attempts (backoff,
        ``retry-after``, a rate-limit pause, a full concurrency limit) included, not only the
        requests on the wire.

        The first attempt is awaited here rather than through ``_retrying``: one coroutine
        frame less on every request, whose client CPU is a speed target."""
        ledgers = self._ledgers()
        deadline = deadline_seconds(ledgers) if ledgers else None
        scope = anyio.move_on_after(deadline) if deadline is not None else None
        try:
            with scope if scope is not None else _NO_DEADLINE:
                try:
                    if self.cache is not None:
                        got = await self._cached(request, first_sample)
                    else:
                        try:
                            got = await self._attempt(request, 1)
                        except ProviderError as exc:
                            got = await self._retry_after(exc, self._attempt, request)
                except BudgetExceeded as exc:
                    if request.n == 1 or exc.limit not in ("tokens", "completion_tokens", "usd"):
                        raise
                    # The whole chunk's worst case does not fit: smaller chunks may.
                    await self._split(request, on_samples, collected, failures, first_sample)
                    return
                size = request.n
                delivered = self._deliver(got.head(size), on_samples, collected)
                if delivered is not None:
                    await delivered
                if len(got) < size:
                    await self._refill(request, len(got), on_samples, collected)
            if scope is not None and scope.cancelled_caught:
                failures.append(deadline_passed(ledgers))
        except (ProviderError, BudgetExceeded, GenerationError) as exc:
            failures.append(exc)

    async def _split(
        self,
        request: GenerateRequest,
        on_samples: OnSamples,
        collected: list[Samples],
        failures: list[BaseException],
        first_sample: int,
    ) -> None:
        """Ask for ``request``'s samples in two halves (each halved again while its worst case
        does not fit a token or USD budget, down to one sample a request): with a tight
        budget, ``n=16`` at 512 tokens each reserves more than the limit, while the samples
        themselves would fit. The second half waits for the first to settle if both together
        do not fit."""
        first = (request.n + 1) // 2
        sizes = [first, request.n - first]
        logger.debug("%s: n=%d does not fit the budget; asking for %s", self.name, request.n, sizes)
        halves = self._chunk_requests(request, sizes)
        await _all_chunks(
            [
                self._generate_chunk(half, on_samples, collected, failures, first_sample + at)
                for half, at in zip(halves, (0, first))
            ]
        )

    async def _refill(
        self,
        request: GenerateRequest,
        got: int,
        on_samples: OnSamples,
        collected: list[Samples],
    ) -> None:
        """Ask for the samples a response lacked (it had ``got`` of them), one request each."""
        size = request.n
        missing = size - got
        if not self._warned_short:
            self._warned_short = True
            logger.warning(
                "%s returned %d of %d choices; asking again for the rest",
                self.name,
                got,
                size,
            )
        failures: list[BaseException] = []

        async def refill(k: int) -> None:
            seed = request.params.seed
            params = request.params
            if seed is not None:  # samples this chunk did not get: the next seeds in line
                params = params.model_copy(update={"seed": seed + got + k})
            single = request.model_copy(update={"n": 1, "params": params})
            for _ in range(self.retry.max_attempts):
                try:
                    more = await self._retrying(self._attempt, single)
                except (ProviderError, BudgetExceeded) as exc:
                    failures.append(exc)
                    return
                if len(more):
                    delivered = self._deliver(more.head(1), on_samples, collected)
                    if delivered is not None:
                        await delivered
                    return
            failures.append(
                ProviderError("returned no choices", provider=self.provider, model=self.model)
            )

        async with anyio.create_task_group() as tg:
            for k in range(missing):
                tg.start_soon(refill, k)
        if failures:
            budget = next((f for f in failures if isinstance(f, BudgetExceeded)), None)
            raise budget if budget is not None else GenerationError(failures[-1], [], size)

    @staticmethod
    def _deliver(
        samples: Samples, on_samples: OnSamples, collected: list[Samples]
    ) -> Awaitable[None] | None:
        """Add ``samples`` to ``collected`` and hand them to ``on_samples``; what that returns,
        if anything, is for the caller to await (a plain call where it is sync)."""
        if not len(samples):
            return None
        collected.append(samples)
        return on_samples(samples)

    async def _retrying(self, attempt: Callable[[_A, int], Awaitable[_T]], arg: _A) -> _T:
        """``attempt(arg, 1)``, then the later attempts the retry policy allows. The first
        attempt skips the retry loop: most requests succeed at once, and the client's CPU per
        request is a speed target."""
        try:
            return await attempt(arg, 1)
        except ProviderError as exc:
            first = exc
        return await self._retry_after(first, attempt, arg)

    async def _retry_after(
        self, first: ProviderError, attempt: Callable[[_A, int], Awaitable[_T]], arg: _A
    ) -> _T:
        """The attempts after a first one that failed with ``first``, as the policy allows
        (logged on ``ttc.retry``); the error raised in the end names the attempts made."""
        return await self.retry.retry_after(first, attempt, arg, self.name)

    async def _cached(self, request: GenerateRequest, first_sample: int) -> Samples:
        """``request`` answered from the cache, or sent and (when complete) stored there."""
        cache = self.cache
        assert cache is not None
        key = cache.key(self._cache_identity(), request, first_sample)
        if key is None:
            return await self._retrying(self._attempt, request)
        hit = cache.lookup(key)
        if hit is not None:
            return Samples.of(hit)
        got = await self._retrying(self._attempt, request)
        if len(got) >= request.n:
            cache.put(key, got.head(request.n).completions())
        return got

    async def metered(
        self,
        send: Callable[[], Awaitable[tuple[_T, int | None]]],
        *,
        prompt_bound: int,
        kind: str = "score",
    ) -> _T:
        """Run a request that generates nothing (a PRM served on this model's server, say)
        under this model's runtime: its retries, concurrency and rate limits, budgets, usage and
        trace, as the model's own requests are.

        ``send`` makes one attempt and returns its result with the prompt tokens the provider
        reported (``None``: unknown, ``prompt_bound`` is charged). Budgets reserve
        ``prompt_bound`` tokens and one request first, so no limit is passed. A run's
        ``seconds`` budget bounds the retries' waits too."""
        metered = _Metered(send, prompt_bound, kind)
        ledgers = self._ledgers()
        deadline = deadline_seconds(ledgers) if ledgers else None
        if deadline is None:
            return await self._retrying(self._metered_attempt, metered)
        with anyio.move_on_after(deadline):
            return await self._retrying(self._metered_attempt, metered)
        raise deadline_passed(ledgers)

    async def _metered_attempt(self, metered: _Metered[_T], attempt: int) -> _T:
        bound = metered.prompt_bound
        usd = self.price.cost(bound, 0) if self.price is not None else 0.0
        worst = Charge(tokens=bound, usd=usd, requests=1)
        async with MeteredRequest(self, worst, attempt, 1, metered.kind) as metering:
            result, reported = await metered.send()
            metering.delivered(reported if reported is not None else bound)
        return result

    def _check_priced(self, ledgers: tuple[Ledger, ...]) -> None:
        """Refuse to spend against a USD limit on a model whose price nobody knows."""
        if any(lg.budget.usd is not None for lg in ledgers):
            raise ConfigError(
                f"price: no price is known for {self.name}, so a USD budget cannot be "
                "enforced; pass price=Price.per_million(input, output) to the model, call "
                "ttc.register_price(...), or drop the usd limit"
                + (
                    ""
                    if importlib.util.find_spec("litellm")
                    else " (pip install 'ttc-sdk[litellm]' brings litellm's price table)"
                )
            )

    def _cache_identity(self) -> str:
        """What, besides the request, decides this model's answers: its class, its name and
        its settings (server, endpoint, extra request fields, template, weights, dtype...).
        Runtime settings that do not change an answer are left out, and so are credentials."""
        settings = {
            name: value
            for name, value in vars(self).items()
            if not name.startswith("_")
            and name not in _NOT_IN_CACHE_IDENTITY
            and name not in self.volatile_attributes
            and isinstance(value, (str, int, float, bool, type(None), Path, dict, list, tuple))
        }
        text = json.dumps(settings, sort_keys=True, default=str)
        return f"{type(self).__name__} {self.name} {text}"

    def _ledgers(self) -> tuple[Ledger, ...]:
        run = current_run()
        own = (self.ledger,) if self.ledger is not None else ()
        return own + run.ledgers if run is not None else own

    def _prompt_key(self, request: GenerateRequest) -> object:
        return request.prompt

    def _prompt_token_bound(self, request: GenerateRequest) -> int:
        """An upper bound on prompt tokens: the exact count once the provider has reported it
        for this prompt, else the UTF-8 byte count (a byte-level tokenizer never makes more
        tokens than bytes) plus room for the chat template."""
        key = self._prompt_key(request)
        seen = self._prompt_tokens_seen.get(key)
        if seen is not None:
            return seen
        prompt = request.prompt
        if isinstance(prompt, str):
            return len(prompt.encode()) + 16
        return sum(len(m.content.encode()) + 8 for m in prompt) + 16

    def _remember_prompt_tokens(self, request: GenerateRequest, tokens: int) -> None:
        key = self._prompt_key(request)
        cache = self._prompt_tokens_seen
        if key not in cache:
            cache[key] = tokens
            if len(cache) > 4096:
                cache.popitem(last=False)

    def _worst_case(self, request: GenerateRequest, prompt_bound: int) -> Charge:
        out = request.params.max_tokens * request.n
        usd = self.price.cost(prompt_bound, out) if self.price is not None else 0.0
        return Charge(prompt_bound + out, usd, 1, out)

    async def _attempt(self, request: GenerateRequest, attempt: int) -> Samples:
        """One request on the wire, metered (``ttc.runtime.meter``)."""
        async with MeteredRequest(self, None, attempt, request.n, request=request) as metering:
            raw = await self._send(request)
            prompt_tokens = raw.prompt_tokens
            if prompt_tokens is not None:
                self._remember_prompt_tokens(request, prompt_tokens)
            else:
                prompt_tokens = self._prompt_token_bound(request)
            completion_tokens = self._completion_tokens(request, raw)
            samples = raw.samples
            choices = len(samples)
            metering.delivered(prompt_tokens, completion_tokens, choices, raw.rate_limits)
            if choices > request.n or completion_tokens > request.params.max_tokens * request.n:
                self._mark_out_of_spec(request, choices, completion_tokens)
        return samples

    def _refuse_out_of_spec(self, out_of_spec: dict[str, str]) -> None:
        what = out_of_spec.get(self.name)
        if what is not None:
            raise ProviderError(
                f"{what}; no more requests go to it in this run, so it cannot keep spending "
                "past the budget",
                provider=self.provider,
                model=self.model,
            )

    @staticmethod
    def _count_choices(completions: list[Completion], max_tokens: int) -> int:
        """Completion tokens of ``completions`` counted by the runtime, for a provider whose
        figure cannot be right: each choice's own count where known (or its logprobs), else
        ``max_tokens`` for a choice cut at the limit, else its UTF-8 bytes (no byte-level
        tokenizer makes more tokens than bytes), at most ``max_tokens``."""
        total = 0
        for c in completions:
            if c.completion_tokens is not None:
                total += c.completion_tokens
            elif c.logprobs is not None:
                total += len(c.logprobs)
            elif c.finish_reason == "length":
                total += max_tokens
            else:
                total += min(max_tokens, len(c.text.encode()))
        return total

    def _completion_tokens(self, request: GenerateRequest, raw: RawResponse) -> int:
        """What the response's choices cost: the provider's figure, unless it cannot be right
        (fewer tokens than the choices' own counts, or than one a non-empty choice, or a
        provider known to count one choice of n), then the runtime's own count."""
        samples = raw.samples
        reported = raw.completion_tokens
        if reported is None:
            per = samples.token_counts()
            if all(t is not None for t in per):
                return sum(t for t in per if t is not None)
            return request.params.max_tokens * max(len(samples), 1)
        if len(samples) > 1:
            floor = 0  # a loop, not sum() over a generator: it runs once per sample
            for tokens, text in zip(samples.token_counts(), samples.texts()):
                floor += tokens if tokens is not None else (1 if text else 0)
            if self.usage_counts_one_choice or reported < floor:
                completions = samples.completions()
                counted = self._count_choices(completions, request.params.max_tokens)
                if counted > reported:
                    if not self._warned_usage:
                        self._warned_usage = True
                        logger.warning(
                            "%s reported %d completion tokens for %d choices; counting the "
                            "choices instead (%d)",
                            self.name,
                            reported,
                            len(completions),
                            counted,
                        )
                    return counted
        return reported

    @staticmethod
    def _out_of_spec(request: GenerateRequest, choices: int, completion_tokens: int) -> str | None:
        """What a response did that the request did not allow, if anything."""
        if choices > request.n:
            return f"returned {choices} choices for n={request.n}"
        cap = request.params.max_tokens * request.n
        if completion_tokens > cap:
            return (
                f"billed {completion_tokens} completion tokens, past max_tokens="
                f"{request.params.max_tokens} x n={request.n}"
            )
        return None

    def _mark_out_of_spec(
        self, request: GenerateRequest, choices: int, completion_tokens: int
    ) -> None:
        """A response did what its request did not allow: warn, and send nothing more to this
        model in the run (see ``_refuse_out_of_spec``)."""
        name = self.name
        what = self._out_of_spec(request, choices, completion_tokens)
        logger.warning("%s %s: out of spec", name, what)
        run = current_run()
        if run is not None:
            run.mark_out_of_spec(name, f"{name} {what}")


async def _all_chunks(coros: list[Awaitable[None]]) -> None:
    """Run ``coros`` as tasks and return only once every one has finished, as a task group
    would, but cheaper. A chunk keeps its provider failures in ``failures``; a cancellation
    (an early stop) or any other error (a bug in ``on_completions``, say) cancels the other
    chunks and waits until each has settled its request, so a run is final when it returns
    (``gather`` returns as soon as one task ends cancelled, leaving the others to settle
    later)."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        pending = [task for task in tasks if not task.done()]
        while pending:
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:  # cancelled again (anyio repeats it): keep waiting
                for task in pending:
                    task.cancel()
            pending = [task for task in pending if not task.done()]
        raise


# Models that hold resources (sessions, connections) on each event loop, so that a loop that
# ends (``run_sync`` runs each call on a fresh one) can release them first.
_models_on_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[Model]] = (
    weakref.WeakKeyDictionary()
)


# One parked async generator per loop: asyncio.run (anyio.run, pytest's loops) closes every
# async generator still alive on its loop (``shutdown_asyncgens``) before closing the loop, so
# this one's ``finally`` closes the models' sessions while the loop can still await.
_loop_end_hooks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object] = (
    weakref.WeakKeyDictionary()
)


def _register_on_loop(loop: asyncio.AbstractEventLoop, model: Model) -> None:
    _models_on_loop.setdefault(loop, weakref.WeakSet()).add(model)
    if loop in _loop_end_hooks or sys.get_asyncgen_hooks().firstiter is None:
        return  # hooked already, or a loop that finalizes no generators: the finalizer's job

    async def at_loop_end() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await close_models_on_this_loop()

    hook = at_loop_end()
    step = hook.asend(None)  # registers it with the running loop (its firstiter hook)
    with contextlib.suppress(StopIteration):
        step.send(None)  # runs to the ``yield`` without awaiting anything
    _loop_end_hooks[loop] = hook


def _release_loops(
    loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState],
    release: Callable[[dict[str, Any]], None],
) -> None:
    for state in list(loops.values()):
        release(state.resources)
    loops.clear()


async def close_models_on_this_loop() -> None:
    """Release every model's resources held for the running loop (before it is closed)."""
    models = _models_on_loop.pop(asyncio.get_running_loop(), None)
    for model in list(models or ()):
        await model._release_this_loop()


def user_message(prompt: str | tuple[Message, ...]) -> tuple[Message, ...]:
    """Chat messages for a prompt: raw text becomes one user message."""
    if isinstance(prompt, str):
        return (Message(role="user", content=prompt),)
    return prompt


def cut_at_stops(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` cut at the first of ``stops`` it contains, and whether it was: how an adapter
    applies the stop strings its provider could not take (it accepts only so many, see
    ``Capabilities.max_stop``)."""
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
