"""Models that wrap other models: ``Fallback`` (the next provider when one fails) and ``Router``
(one fan-out's samples spread over several providers).

The seam is ``Model.generate``: a wrapper hands each inner model a ``generate`` call of its own,
so every request still goes through that model's runtime (its budget, rate limits, retries,
concurrency limit, cache) and is metered there, once. A wrapper sends and meters nothing itself:
nothing is billed twice, and each provider's usage stays on that provider (``usage_by_model``).
Wrappers nest (a ``Router`` over ``Fallback`` pairs, say).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ClassVar, Literal, TypeVar, get_args

import anyio

from ttc.errors import (
    BudgetExceeded,
    ConfigError,
    GenerationError,
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from ttc.runtime.budget import Ledger
from ttc.runtime.model import Capabilities, Model, OnCompletions, RawResponse
from ttc.types import (
    Completion,
    GenerateRequest,
    Prompt,
    SamplingParams,
    Usage,
    as_request_prompt,
)
from ttc.validation import check_float

logger = logging.getLogger("ttc.fallback")

_T = TypeVar("_T")

FailureKind = Literal["rate_limit", "server_error", "timeout", "connection", "budget", "error"]
"""Failures a wrapper moves on from: ``rate_limit`` (429), ``server_error`` (5xx and broken
bodies), ``timeout``, ``connection`` (refused, reset, unreachable), ``budget`` (the provider's own
budget is spent; a run's budget always stops the run), ``error`` (any provider error, wrong keys
and unknown models included)."""

FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
"""Every ``FailureKind``."""
DEFAULT_ON: tuple[FailureKind, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "budget",
)
"""What a wrapper moves on from unless told otherwise: everything but ``"error"`` (a wrong key
or model name is a mistake to fix, not an outage to route around)."""

_KIND_ERRORS: dict[str, tuple[type[ProviderError], ...]] = {
    "rate_limit": (RateLimitError,),
    "server_error": (ServerError, MalformedResponseError),
    "timeout": (ProviderTimeoutError,),
    "connection": (ProviderConnectionError,),
    "error": (ProviderError,),
}


def _check_on(on: Iterable[str] | str) -> frozenset[str]:
    kinds = (on,) if isinstance(on, str) else tuple(on)
    for kind in kinds:
        if kind not in FAILURE_KINDS:
            raise ConfigError(f"on: unknown failure kind {kind!r}; choose from {FAILURE_KINDS}")
    return frozenset(kinds)


def _check_models(models: Sequence[Model], what: str) -> tuple[Model, ...]:
    if len(models) == 1 and isinstance(models[0], (list, tuple)):
        models = tuple(models[0])
    if not models:
        raise ConfigError(f"models: {what} needs at least one model")
    for i, model in enumerate(models):
        if not isinstance(model, Model):
            raise ConfigError(
                f"models[{i}]: a ttc Model is required (e.g. ttc.adapters.Groq), "
                f"got {type(model).__name__}"
            )
    if len({id(m) for m in models}) != len(models):
        raise ConfigError(f"models: the same model object is given twice to {what}")
    return tuple(models)


def _combined(models: Sequence[Model]) -> Capabilities:
    """What every model can do: a request the wrapper accepts, each inner model accepts.
    Continuing the final message needs request fields a wrapper cannot add: off."""
    caps = [m.capabilities for m in models]
    stops = [c.max_stop for c in caps if c.max_stop is not None]
    return Capabilities(
        native_n=all(c.native_n for c in caps),
        max_n=min(c.max_n for c in caps),
        logprobs=all(c.logprobs for c in caps),
        max_top_logprobs=min(c.max_top_logprobs for c in caps),
        max_stop=min(stops) if stops else None,
        chat=all(c.chat for c in caps),
        completions=all(c.completions for c in caps),
        continue_final_message=False,
        prompt_logprobs=all(c.prompt_logprobs for c in caps),
        max_temperature=min(c.max_temperature for c in caps),
    )


def _with_seed_offset(
    params: SamplingParams | None, model: Model, offset: int
) -> SamplingParams | None:
    """``params`` whose seed is moved past the samples other providers already drew, so a
    seeded fan-out over two servers of one model does not draw the same samples twice."""
    use = params if params is not None else model.params
    if use.seed is None or offset == 0:
        return params
    return use.model_copy(update={"seed": use.seed + offset})


class ModelGroup(Model):
    """A model made of other models (the base of ``Fallback`` and ``Router``).

    Capabilities are what every inner model can do; ``params`` default to the first model's;
    ``usage`` adds up the inner models' usage and ``usage_by_model()`` reports it per provider.
    """

    provider: ClassVar[str] = "group"

    def __init__(
        self,
        models: Sequence[Model],
        *,
        on: Iterable[FailureKind] | FailureKind = DEFAULT_ON,
        label: str | None = None,
    ) -> None:
        self.models: tuple[Model, ...] = _check_models(models, type(self).__name__)
        self.on: frozenset[str] = _check_on(on)
        label = label or ", ".join(m.name for m in self.models)
        super().__init__(
            label,
            params=self.models[0].params,
            capabilities=_combined(self.models),
            max_concurrency=max(m.max_concurrency for m in self.models),
        )
        # A step search sends raw text only if every model takes it as raw text.
        chat = any(
            getattr(m, "endpoint", None) == "chat" or not m.capabilities.completions
            for m in self.models
        )
        self.endpoint: str | None = "chat" if chat else None

    @property
    def name(self) -> str:
        """``fallback(groq/..., cerebras/...)``: the kind of wrapper and its models."""
        return f"{type(self).__name__.lower()}({self.model})"

    @property
    def usage(self) -> Usage:
        """What the inner models spent, added up (a wrapper spends nothing of its own)."""
        total = Usage()
        for model in self.models:
            total = total + model.usage
        return total

    def usage_by_model(self) -> dict[str, Usage]:
        """Each inner model's usage under its name (``provider/model``; ``#2``... when two
        share one)."""
        out: dict[str, Usage] = {}
        for model in self.models:
            key, k = model.name, 1
            while key in out:
                k += 1
                key = f"{model.name}#{k}"
            out[key] = model.usage
        return out

    def __repr__(self) -> str:
        inner = ", ".join(repr(m) for m in self.models)
        return f"{type(self).__name__}({inner})"

    async def aclose(self) -> None:
        """Close every inner model."""
        for model in self.models:
            await model.aclose()

    async def _send(self, request: GenerateRequest) -> RawResponse:
        raise TypeError(f"{type(self).__name__} sends through its inner models' generate")

    async def metered(
        self,
        send: Callable[[], Awaitable[tuple[_T, int | None]]],
        *,
        prompt_bound: int,
        kind: str = "score",
    ) -> _T:
        """Refused: a metered request is bound to one server (``send`` calls it), so it must
        be metered by that server's model, not a wrapper."""
        raise ConfigError(
            f"{self.name}: a request that generates nothing (a PRM on a server) is bound to "
            "one server; pass that server's model instead of a wrapper"
        )

    # ------------------------------------------------------------------ shared helpers

    def _check_call(self, prompt: Prompt, params: SamplingParams | None, n: int) -> None:
        """Refuse at once what some inner model cannot do (before any is paid)."""
        self._check_request(
            GenerateRequest(prompt=as_request_prompt(prompt), params=params or self.params, n=n)
        )

    def _falls_over(self, error: BaseException, model: Model) -> bool:
        """Whether ``error`` from ``model`` lets the next model take over."""
        if isinstance(error, GenerationError):
            error = error.cause
        if isinstance(error, BudgetExceeded):
            return (
                "budget" in self.on
                and error.ledger is not None
                and any(error.ledger is lg for lg in _own_ledgers(model))
            )
        if not isinstance(error, ProviderError):
            return False
        return any(isinstance(error, _KIND_ERRORS[k]) for k in self.on if k != "budget")


def _own_ledgers(model: Model) -> list[Ledger]:
    """The ledgers of ``model``'s own budgets (for a wrapper, its inner models')."""
    if isinstance(model, ModelGroup):
        return [lg for m in model.models for lg in _own_ledgers(m)]
    return [model.ledger] if model.ledger is not None else []


def _give_up(error: BaseException, collected: list[Completion], wanted: int) -> BaseException:
    """The error a wrapper raises in the end, in ``Model.generate``'s shapes: the budget error
    or a ``GenerationError`` carrying every sample delivered (from any provider), or the
    provider's own typed error when nothing arrived."""
    if isinstance(error, BudgetExceeded):
        error.completions = list(collected)
        return error
    cause = error.cause if isinstance(error, GenerationError) else error
    if not collected:
        return cause
    return GenerationError(cause, collected, wanted)


class Fallback(ModelGroup):
    """The first model that can answer: ``Fallback(groq, cerebras, openai)``.

    A call goes to the first model; if it fails with one of the ``on`` kinds after that model's
    own retries, the samples still missing go to the next, and so on (samples that did arrive
    are kept: paid for). Each model keeps its own budget, rate limits and retry policy: give
    the primary ``retry=RetryPolicy(max_attempts=1)`` to move on at its first 429 rather than
    after its retries. A model that failed is tried after the others for ``cooldown`` seconds
    (still tried when all are cooling down).

    Args:
        models: the models, in order of preference.
        on: the failures that move on to the next model (``FailureKind``); others raise.
        cooldown: seconds a failed model goes to the back of the line.
    """

    provider: ClassVar[str] = "fallback"

    def __init__(
        self,
        *models: Model,
        on: Iterable[FailureKind] | FailureKind = DEFAULT_ON,
        cooldown: float = 10.0,
        label: str | None = None,
    ) -> None:
        super().__init__(models, on=on, label=label)
        self.cooldown: float = check_float("cooldown", cooldown, ge=0)
        self._failed_at: dict[int, float] = {}
        #: How many times a call moved on from each model (by position).
        self.fallbacks: list[int] = [0] * len(self.models)

    def _order(self) -> list[int]:
        now = time.monotonic()
        cooling = {
            i for i, t in self._failed_at.items() if self.cooldown and now - t < self.cooldown
        }
        fresh = [i for i in range(len(self.models)) if i not in cooling]
        return fresh + sorted(cooling, key=lambda i: self._failed_at[i])

    async def generate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        n: int = 1,
        *,
        on_completions: OnCompletions | None = None,
    ) -> list[Completion]:
        """``n`` samples from the first model that can give them (see the class)."""
        self._check_call(prompt, params, n)
        collected: list[Completion] = []

        def deliver(batch: list[Completion]) -> Awaitable[None] | None:
            collected.extend(batch)
            return on_completions(batch) if on_completions is not None else None

        error: BaseException | None = None
        for i in self._order():
            model = self.models[i]
            want = n - len(collected)
            try:
                await model.generate(
                    prompt,
                    _with_seed_offset(params, model, len(collected)),
                    want,
                    on_completions=deliver,
                )
            except (ProviderError, GenerationError, BudgetExceeded) as exc:
                if not self._falls_over(exc, model):
                    raise _give_up(exc, collected, n) from None
                error = exc
                self._failed_at[i] = time.monotonic()
                self.fallbacks[i] += 1
                logger.info(
                    "%s failed (%s); %d of %d samples go to the next model",
                    model.name,
                    exc,
                    n - len(collected),
                    n,
                )
                continue
            self._failed_at.pop(i, None)
            return collected
        assert error is not None
        raise _give_up(error, collected, n)


RouteBy = Literal["weight", "rate_limit"]
"""How a ``Router`` deals samples: by its weights alone, or by weight times the requests each
model's rate limiter would let through now."""


class Router(ModelGroup):
    """Spreads the samples of each call over several models: best-of-64 on two providers
    finishes sooner than on either.

    Samples are dealt by smooth weighted round-robin, so the counts follow the weights within
    one call and across many small calls. With ``by="rate_limit"`` a model's weight is also
    scaled by how many requests its rate limiter would let through now (a model that is
    paused gets none while another has room). A model that fails with one of the ``on``
    kinds (after its own retries) is left out for the rest of the call and its missing
    samples go to the others.

    Args:
        models: the models.
        weights: one positive number each (default: equal). For a fan-out to finish soonest,
            make them proportional to each model's throughput (concurrency / latency).
        by: ``"weight"`` or ``"rate_limit"``.
        on: the failures after which the others take over a model's samples.
    """

    provider: ClassVar[str] = "router"

    def __init__(
        self,
        models: Sequence[Model],
        *,
        weights: Sequence[float] | None = None,
        by: RouteBy = "weight",
        on: Iterable[FailureKind] | FailureKind = DEFAULT_ON,
        label: str | None = None,
    ) -> None:
        super().__init__(models, on=on, label=label)
        if weights is None:
            weights = [1.0] * len(self.models)
        if len(weights) != len(self.models):
            raise ConfigError(f"weights: {len(weights)} weights for {len(self.models)} models")
        self.weights: tuple[float, ...] = tuple(
            check_float(f"weights[{i}]", w, gt=0) for i, w in enumerate(weights)
        )
        if by not in get_args(RouteBy):
            raise ConfigError(f"by must be 'weight' or 'rate_limit', got {by!r}")
        self.by: RouteBy = by
        self._current = [0.0] * len(self.models)
        #: Samples dealt to each model so far (by position).
        self.dealt: list[int] = [0] * len(self.models)

    def _weights(self, live: list[int], params: SamplingParams | None, n: int) -> list[float]:
        if self.by == "weight":
            return [self.weights[i] for i in live]
        out = []
        for i in live:
            model = self.models[i]
            tokens = (params or model.params).max_tokens
            room = min(model.rate_limiter.headroom(tokens), float(n))
            out.append(self.weights[i] * room)
        if not any(w > 0 for w in out) or any(math.isnan(w) for w in out):
            return [self.weights[i] for i in live]  # all must wait: deal by weight
        return out

    def _deal(self, live: list[int], n: int, params: SamplingParams | None) -> dict[int, int]:
        """``n`` samples over the ``live`` models (smooth weighted round-robin)."""
        weights = self._weights(live, params, n)
        total = sum(weights)
        counts: dict[int, int] = {}
        for _ in range(n):
            best = -1
            for i, w in zip(live, weights):
                if w <= 0:
                    continue
                self._current[i] += w
                if best < 0 or self._current[i] > self._current[best]:
                    best = i
            self._current[best] -= total
            counts[best] = counts.get(best, 0) + 1
        return counts

    async def generate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        n: int = 1,
        *,
        on_completions: OnCompletions | None = None,
    ) -> list[Completion]:
        """``n`` samples, dealt over the models (see the class)."""
        self._check_call(prompt, params, n)
        collected: list[Completion] = []

        def deliver(batch: list[Completion]) -> Awaitable[None] | None:
            collected.extend(batch)
            return on_completions(batch) if on_completions is not None else None

        out: set[int] = set()
        stop: list[BaseException] = []  # failures the others cannot make up for
        moved: list[BaseException] = []
        drawn = 0  # samples asked for so far: the seed offset of the next share

        async def share(i: int, k: int, offset: int) -> None:
            model = self.models[i]
            try:
                await model.generate(
                    prompt, _with_seed_offset(params, model, offset), k, on_completions=deliver
                )
            except (ProviderError, GenerationError, BudgetExceeded) as exc:
                if self._falls_over(exc, model):
                    out.add(i)
                    moved.append(exc)
                    logger.info(
                        "%s failed (%s); the other models take its samples", model.name, exc
                    )
                else:
                    stop.append(exc)

        while len(collected) < n and not stop:
            live = [i for i in range(len(self.models)) if i not in out]
            if not live:
                break
            counts = self._deal(live, n - len(collected), params)
            async with anyio.create_task_group() as tg:
                for i, k in counts.items():
                    self.dealt[i] += k
                    tg.start_soon(share, i, k, drawn)
                    drawn += k
        if stop:
            budget = next((e for e in stop if isinstance(e, BudgetExceeded)), None)
            raise _give_up(budget or stop[0], collected, n)
        if len(collected) < n:
            raise _give_up(moved[-1], collected, n)
        return collected
