"""The ``ttc serve`` application: OpenAI's endpoints with ttc's strategies behind them.

``create_app(config)`` builds an ``aiohttp.web.Application`` (aiohttp is already ttc's HTTP
library: one dependency, and its server costs little CPU a request). Endpoints:

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI's request and response
  (``n``, ``stop``, ``max_tokens`` / ``max_completion_tokens``, ``seed``, ``stream``), the
  strategy chosen by the model name, the ``ttc`` field or a profile (``ttc.server.routing``);
  each response's ``ttc`` object says what the request cost in every call it made.
- ``GET /v1/models``: the configured models and profiles.
- ``GET /health`` (alive), ``GET /ready`` (the keys' database answers and the server is not
  shutting down), ``GET /metrics`` (Prometheus).

Every request gets an id (the client's ``X-Request-Id``, or a new one), echoed in the response
and in each JSON log line; keys and prompts are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

from ttc.config import TTCConfig
from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError
from ttc.runtime.budget import Charge
from ttc.runtime.context import RunContext, run_scope
from ttc.runtime.model import Model
from ttc.server.keys import Hold, KeyBudgetExceeded, KeyInfo, KeyStore, hash_key
from ttc.server.metrics import Metrics
from ttc.server.protocol import (
    APIError,
    Choice,
    Job,
    chat_body,
    completion_body,
    decode,
    error_body,
    finish_reason,
    parse_job,
    ttc_body,
    usage_body,
)
from ttc.server.routing import Plan, UnknownModel, plan_request
from ttc.types import Message, Result, SamplingParams, Usage

__all__ = ["STATE", "ServerState", "create_app"]

log = logging.getLogger("ttc.server")

_RID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Seconds a known key is served from memory before the ledger is asked again.
KEY_CACHE_SECONDS = 5.0
#: Seconds between tries of a request waiting for its key's reservations in flight (those
#: of other server processes sharing the ledger; this process's wake it at once).
RESERVE_POLL = 0.05
#: Seconds between progress comments of a streamed response.
PROGRESS_EVERY = 0.25


@dataclass
class ServerState:
    """What the handlers share: the configuration, the keys' ledger, built models, metrics."""

    config: TTCConfig
    store: KeyStore | None
    metrics: Metrics
    models: dict[str, Model] = field(default_factory=dict)
    owned: set[str] = field(default_factory=set)
    draining: bool = False
    #: Notified at each settlement: a request refused only because of reservations in
    #: flight waits for them instead.
    settled: asyncio.Condition = field(default_factory=asyncio.Condition)
    #: Known keys by their hash: (expiry on the monotonic clock, key).
    keys: dict[str, tuple[float, KeyInfo]] = field(default_factory=dict)

    def model(self, name: str) -> Model:
        """The model ``name``, built once (configured models are built at startup)."""
        found = self.models.get(name)
        if found is None:
            if name in self.config.models:
                # Entries a fallback or router names are the server's models of those names
                # (one budget each), built here if not yet.
                before = set(self.models)
                found = self.config.build_model(name, built=self.models)
                self.owned.update(set(self.models) - before)
            else:
                from ttc.adapters.registry import resolve_model

                found = resolve_model(name)
            self.models[name] = found
            self.owned.add(name)
        return found


STATE: web.AppKey[ServerState] = web.AppKey("ttc_state", ServerState)
#: The request's id, and the fields of its log line.
RID: web.RequestKey[str] = web.RequestKey("ttc_request_id", str)
LOG: web.RequestKey[dict[str, Any]] = web.RequestKey("ttc_log", dict[str, Any])


def create_app(
    config: TTCConfig,
    *,
    store: KeyStore | None = None,
    models: Mapping[str, Model] | None = None,
) -> web.Application:
    """The server for ``config``. ``store`` is the keys' ledger (required unless
    ``server.auth`` is off); ``models`` supplies ready models by configured name (not closed
    at shutdown); the others are built from the configuration now, so a bad entry (a missing
    key variable) fails at startup, not at the first request."""
    if config.server.auth and store is None:
        raise ConfigError("server.auth is on: the server needs the keys' database (store=)")
    state = ServerState(config=config, store=store, metrics=Metrics(), models=dict(models or {}))
    for name in config.models:
        if name not in state.models:
            state.model(name)
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[_middleware])
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model:.+}", _get_model)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_close)
    return app


# --------------------------------------------------------------------------------------------
# Middleware: request ids, errors in OpenAI's shape, metrics and one log line a request


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    given = request.headers.get("X-Request-Id", "")
    rid = given if _RID.match(given) else uuid.uuid4().hex
    request[RID] = rid
    request[LOG] = {}
    started = time.perf_counter()
    endpoint = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    state.metrics.in_flight.inc()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except APIError as exc:
        response = exc.response()
        request[LOG]["error"] = exc.message
    except web.HTTPRequestEntityTooLarge:
        limit = state.config.server.max_body_bytes
        response = APIError(
            413, f"The request body is over the limit of {limit} bytes", code="request_too_large"
        ).response()
    except web.HTTPException as exc:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        response = web.json_response(
            error_body(f"{request.method} {request.path}: {exc.reason}", kind), status=exc.status
        )
    except asyncio.CancelledError:
        request[LOG]["error"] = "cancelled (client gone or server stopping)"
        _log_request(request, 499, started)
        state.metrics.in_flight.dec()
        raise
    except Exception as exc:
        log.exception("unhandled error", extra={"request_id": rid})
        response = APIError(
            500, f"Internal server error ({type(exc).__name__})", type="server_error"
        ).response()
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    state.metrics.in_flight.dec()
    state.metrics.requests.labels(endpoint, str(response.status)).inc()
    state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    _log_request(request, response.status, started)
    return response


def _log_request(request: web.Request, status: int, started: float) -> None:
    if request.path in ("/health", "/ready", "/metrics"):
        return
    fields: dict[str, Any] = {
        "request_id": request[RID],
        "method": request.method,
        "path": request.path,
        "status": status,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
    extra: dict[str, Any] = request[LOG]
    fields.update(extra)
    log.info("request", extra={"fields": fields})


# --------------------------------------------------------------------------------------------
# Small endpoints


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        return web.json_response({"status": "shutting down"}, status=503)
    if state.store is not None:
        try:
            await state.store.check()
        except Exception as exc:
            return web.json_response(
                {"status": "keys database unreachable", "error": type(exc).__name__}, status=503
            )
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE].metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def _model_object(name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": "ttc"}
    if extra:
        body["ttc"] = extra
    return body


async def _list_models(request: web.Request) -> web.Response:
    """The configured models and profiles (never a model's provider name or URL)."""
    await _authenticate(request)
    config = request.app[STATE].config
    data = [_model_object(name) for name in config.models] + [
        _model_object(name, {"profile": True, "strategy": p.strategy, "n": p.n})
        for name, p in config.profiles.items()
    ]
    return web.json_response({"object": "list", "data": data})


async def _get_model(request: web.Request) -> web.Response:
    """One model: a configured model, a profile, or any name of the grammar that resolves."""
    await _authenticate(request)
    name = request.match_info["model"]
    try:
        plan = plan_request(request.app[STATE].config, name, None)
    except ConfigError:
        raise APIError(
            404, f"The model {name!r} does not exist", code="model_not_found", param="model"
        ) from None
    extra = {"strategy": plan.label, "n": plan.spec.n if plan.spec is not None else 1}
    return web.json_response(_model_object(name, extra))


async def _drain(app: web.Application) -> None:
    app[STATE].draining = True


async def _close(app: web.Application) -> None:
    state = app[STATE]
    for name in state.owned:
        with contextlib.suppress(Exception):
            await state.models[name].aclose()
    if state.store is not None:
        await state.store.close()


# --------------------------------------------------------------------------------------------
# Generation


async def _lookup(state: ServerState, secret: str) -> KeyInfo | None:
    """The key, from a cache of known keys kept ``KEY_CACHE_SECONDS`` (a revocation takes
    effect within that time); unknown keys are looked up every time (a new key works at once)."""
    digest = hash_key(secret)
    now = time.monotonic()
    cached = state.keys.get(digest)
    if cached is not None and cached[0] > now:
        return cached[1]
    assert state.store is not None
    key = await state.store.lookup(secret)
    if key is None:
        state.keys.pop(digest, None)
    else:
        if len(state.keys) > 100_000:
            state.keys.clear()
        state.keys[digest] = (now + KEY_CACHE_SECONDS, key)
    return key


async def _authenticate(request: web.Request) -> KeyInfo | None:
    state = request.app[STATE]
    if not state.config.server.auth:
        return None
    assert state.store is not None
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise APIError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
    key = await _lookup(state, secret.strip())
    if key is None:
        raise APIError(401, "Incorrect API key provided", code="invalid_api_key")
    request[LOG]["key"] = key.name
    return key


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generation(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generation(request, chat=False)


async def _generation(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    if state.draining:
        raise APIError(503, "The server is shutting down", type="server_error")
    key = await _authenticate(request)
    length = request.content_length
    if length is not None and length > state.config.server.max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(
            max_size=state.config.server.max_body_bytes, actual_size=length
        )
    job = parse_job(decode(await request.read()), chat=chat, max_n=state.config.server.max_n)
    try:
        plan = plan_request(state.config, job.model, job.ttc)
    except UnknownModel as exc:
        raise APIError(404, str(exc), code="model_not_found", param="model") from None
    except ConfigError as exc:
        raise APIError(400, str(exc), param="ttc" if job.ttc else "model") from None
    if plan.spec is not None and plan.spec.n > state.config.server.max_strategy_n:
        raise APIError(
            400,
            f"n of the strategy ({plan.spec.n}) is over this server's limit "
            f"({state.config.server.max_strategy_n})",
            param="ttc.n",
        )
    try:
        model = state.model(plan.model)
        params = _params(state, plan, model, job)
    except ConfigError as exc:
        raise APIError(400, str(exc)) from None
    request[LOG].update(model=job.model, strategy=plan.label)
    hold = await _reserve(state, key, _worst_case(job, plan, model, params))
    if job.stream:
        return await _stream(request, state, job, plan, model, params, hold)
    with run_scope(hold.budget() if hold is not None else None) as scope:
        try:
            choices = await _execute(state, job, plan, model, params, scope, hold)
        except APIError as exc:
            exc.spent = _spent(scope)
            raise
        finally:
            await _settle(state, request, scope, hold, plan)
    usage = scope.usage.snapshot()
    extension = _extension(request, job, plan, choices, scope, usage)
    build = chat_body if chat else completion_body
    return web.json_response(build(request[RID], job.model, choices, usage, extension))


def _spent(scope: RunContext) -> dict[str, Any]:
    """What a failed request's calls cost, for its error body (the key is charged for it)."""
    usage = scope.usage.snapshot()
    return {"usage": usage_body(usage), "cost_usd": usage.cost_usd, "requests": usage.requests}


def _params(state: ServerState, plan: Plan, model: Model, job: Job) -> SamplingParams:
    base = state.config.params(plan.profile, model) if plan.profile is not None else model.params
    try:
        return SamplingParams.model_validate({**base.model_dump(), **job.sampling})
    except ConfigError as exc:
        raise APIError(400, str(exc)) from None


def _worst_case(job: Job, plan: Plan, model: Model, params: SamplingParams) -> Charge | None:
    """The most the request can cost, where it is known before it runs: a plain call or a
    strategy that only samples (``n`` samples a choice, each at most the prompt, counted as
    one token a UTF-8 byte as the runtime's reservations count it, plus ``max_tokens``).
    ``None`` for searches and model-based scorers, whose calls depend on what comes back."""
    spec = plan.spec
    if spec is not None and (
        spec.info.search or spec.prm not in (None, "arithmetic") or spec.name == "compute-optimal"
    ):
        return None
    samples = job.n * (spec.n if spec is not None else 1)
    prompt = completion = 0
    for p in job.prompts:
        text = p if isinstance(p, str) else "".join(m.content for m in p)
        # The runtime's own bound: the chat template's tokens per message, and a margin.
        extra = 32 if isinstance(p, str) else 8 * len(p) + 32
        prompt += samples * (len(text.encode()) + extra)
        completion += samples * params.max_tokens
    usd = model.price.cost(prompt, completion) if model.price is not None else float("inf")
    return Charge(tokens=prompt + completion, usd=usd, requests=1)


async def _reserve(state: ServerState, key: KeyInfo | None, worst: Charge | None) -> Hold | None:
    """Reserve from the key what the request may spend: its worst case where known, at most
    ``server.request_tokens`` / ``request_usd`` (a search gets that much)."""
    if key is None:
        return None
    assert state.store is not None
    server = state.config.server
    caps = Charge(tokens=server.request_tokens, usd=server.request_usd)
    if worst is not None:
        caps = Charge(tokens=min(caps.tokens, worst.tokens), usd=min(caps.usd, worst.usd))
    deadline = time.monotonic() + server.request_timeout
    while True:
        try:
            return await state.store.reserve(key, caps)
        except KeyBudgetExceeded as exc:
            left = deadline - time.monotonic()
            if not exc.pending or left <= 0:
                raise APIError(
                    429, str(exc), type="insufficient_quota", code="insufficient_quota"
                ) from None
        # Requests in flight hold part of the limit: wait for a settlement (this process
        # wakes us at once; another process's is seen at the next poll) and try again.
        with anyio.move_on_after(min(RESERVE_POLL, left)):
            async with state.settled:
                await state.settled.wait()


async def _settle(
    state: ServerState, request: web.Request, scope: RunContext, hold: Hold | None, plan: Plan
) -> None:
    """Charge the key what the request's calls cost (shielded: a cancelled request settles
    too) and count it in the metrics."""
    usage = scope.usage.snapshot()
    metrics = state.metrics
    metrics.tokens.labels("prompt").inc(usage.prompt_tokens)
    metrics.tokens.labels("completion").inc(usage.completion_tokens)
    metrics.cost.inc(usage.cost_usd)
    metrics.upstream.inc(usage.requests)
    metrics.strategies.labels(plan.label).inc()
    request[LOG].update(
        tokens=usage.total_tokens, cost_usd=usage.cost_usd, upstream_requests=usage.requests
    )
    if hold is None or state.store is None:
        return
    # A request that sent nothing upstream (refused by a budget, bad in a way found late)
    # costs the key nothing, not even one of its requests.
    actual = Charge(
        tokens=usage.total_tokens, usd=usage.cost_usd, requests=1 if usage.requests else 0
    )
    if usage.undelivered_requests:
        # Calls whose outcome is unknown (cancelled in flight, timed out) may have been
        # billed: like ttc's budgets, the key keeps their worst case, the reservation.
        reserved = hold.reserved
        actual = Charge(max(actual.tokens, reserved.tokens), max(actual.usd, reserved.usd), 1)
    with anyio.CancelScope(shield=True):
        try:
            spent = await state.store.settle(hold, actual)
        finally:
            async with state.settled:
                state.settled.notify_all()
    for limit, left in state.store.remaining(hold.key, spent).items():
        metrics.remaining.labels(hold.key.name, limit).set(left)


async def _execute(
    state: ServerState,
    job: Job,
    plan: Plan,
    model: Model,
    params: SamplingParams,
    scope: RunContext,
    hold: Hold | None,
) -> list[Choice]:
    """Every choice of the request, inside ``scope`` (the key's reservation as its budget):
    one plain call of ``n`` samples a prompt, or ``n`` runs of the strategy a prompt."""
    timeout = state.config.server.request_timeout
    try:
        with anyio.fail_after(timeout):
            if plan.spec is None:
                return await _plain(job, model, params)
            return await _strategy_runs(state, job, plan, model, params)
    except TimeoutError:
        raise APIError(
            504,
            f"The request took longer than the server's limit of {timeout:g} s",
            type="timeout",
            code="timeout",
        ) from None
    except BudgetExceeded as exc:
        raise _budget_error(exc, hold) from None
    except GenerationError as exc:
        raise APIError(502, f"The model failed: {exc}", type="upstream_error") from None
    except ProviderError as exc:
        raise APIError(502, f"The model failed: {exc}", type="upstream_error") from None
    except ConfigError as exc:
        raise APIError(400, str(exc)) from None


def _budget_error(exc: BudgetExceeded, hold: Hold | None) -> APIError:
    whose = "the API key's" if exc.scope == "run" and hold is not None else f"the {exc.scope}"
    return APIError(
        429,
        f"The budget ran out before any answer ({whose} budget: {exc})",
        type="insufficient_quota",
        code="insufficient_quota",
    )


async def _plain(job: Job, model: Model, params: SamplingParams) -> list[Choice]:
    per_prompt = await _gather([model.generate(p, params, job.n) for p in job.prompts])
    return [
        Choice(c.text, finish_reason(c.finish_reason))
        for completions in per_prompt
        for c in completions
    ]


async def _strategy_runs(
    state: ServerState, job: Job, plan: Plan, model: Model, params: SamplingParams
) -> list[Choice]:
    from ttc.strategies.registry import BuildContext, build_strategy

    assert plan.spec is not None
    strategy = build_strategy(
        plan.spec, model, BuildContext(params=params, extra={"budget": plan.budget})
    )
    prompts = [_search_question(p) if plan.spec.info.search else p for p in job.prompts]
    results: list[Result] = await _gather(
        [strategy.run(prompt) for prompt in prompts for _ in range(job.n)]
    )
    choices = []
    for result in results:
        best = result.best or (result.candidates[0] if result.candidates else None)
        if best is not None:
            choices.append(Choice(best.text, finish_reason(best.finish_reason), result))
    if choices:
        # Runs that the budget stopped before any answer are left out: the others' answers
        # were paid for (``ttc.runs`` marks the runs a budget stopped).
        return choices
    result = results[0]
    if result.stopped_by == "budget":
        stop = result.budget_stop
        raise APIError(
            429,
            "The budget ran out before any answer"
            + (f" ({stop.scope} budget, {stop.limit})" if stop is not None else ""),
            type="insufficient_quota",
            code="insufficient_quota",
        )
    detail = "; ".join(result.errors) or "no candidate"
    raise APIError(502, f"The strategy produced no answer: {detail}", type="upstream_error")


def _search_question(prompt: str | tuple[Message, ...]) -> str:
    """A step-wise search continues a text solution, so a chat becomes its question: the
    system messages, then the one user message; a conversation with turns is refused."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.role != "system"]
    if len(users) != 1 or users[0].role != "user":
        raise APIError(
            400,
            "a step-wise search strategy answers one question: send system messages and one "
            "user message",
            param="messages",
        )
    return "\n\n".join(m.content for m in prompt)


async def _gather(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await ``calls`` concurrently (in the caller's context: its run scope), in order."""
    if len(calls) == 1:
        return [await calls[0]]
    out: list[Any] = [None] * len(calls)

    async def one(i: int, call: Awaitable[Any]) -> None:
        out[i] = await call

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    return out


def _extension(
    request: web.Request,
    job: Job,
    plan: Plan,
    choices: list[Choice],
    scope: RunContext,
    usage: Usage,
) -> dict[str, Any]:
    return ttc_body(
        choices,
        usage,
        scope.trace or [],
        plan.label,
        request[RID],
        candidates=bool(job.ttc.get("candidates")),
        tree=bool(job.ttc.get("tree")),
    )


# --------------------------------------------------------------------------------------------
# Streaming


async def _stream(
    request: web.Request,
    state: ServerState,
    job: Job,
    plan: Plan,
    model: Model,
    params: SamplingParams,
    hold: Hold | None,
) -> web.StreamResponse:
    """Server-sent events as OpenAI clients read them: progress as SSE comments (which
    clients ignore) while samples arrive, then the answer as content chunks, a chunk with
    ``finish_reason``, one with ``usage`` (and the ``ttc`` extension), and ``[DONE]``."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-Id": request[RID],
        }
    )
    await response.prepare(request)
    with run_scope(hold.budget() if hold is not None else None) as scope:
        task = asyncio.ensure_future(_execute(state, job, plan, model, params, scope, hold))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=PROGRESS_EVERY)
                if not task.done():
                    await response.write(_progress(scope))
            try:
                try:
                    choices = task.result()
                except APIError:
                    raise
                except Exception as failure:  # the headers are sent: report it as an event
                    log.exception("unhandled error", extra={"request_id": request[RID]})
                    raise APIError(
                        500,
                        f"Internal server error ({type(failure).__name__})",
                        type="server_error",
                    ) from None
            except APIError as exc:
                exc.spent = _spent(scope)
                await response.write(_event(exc.body()))
                await response.write(b"data: [DONE]\n\n")
                request[LOG]["error"] = exc.message
                return response
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await _settle(state, request, scope, hold, plan)
    usage = scope.usage.snapshot()
    base = {
        "id": f"{'chatcmpl' if job.chat else 'cmpl'}-{request[RID]}",
        "object": "chat.completion.chunk" if job.chat else "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "system_fingerprint": None,
    }
    for events in _chunks(base, job.chat, choices):
        await response.write(events)
    if job.include_usage:
        extension = _extension(request, job, plan, choices, scope, usage)
        await response.write(
            _event({**base, "choices": [], "usage": usage_body(usage), "ttc": extension})
        )
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _progress(scope: RunContext) -> bytes:
    counter = scope.usage
    data = {
        "requests": counter.requests,
        "tokens": counter.prompt_tokens + counter.completion_tokens,
        "cost_usd": round(counter.cost_usd, 8),
    }
    return f": progress {json.dumps(data)}\n\n".encode()


def _event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _pieces(text: str, size: int = 16) -> list[str]:
    words = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _chunks(base: dict[str, Any], chat: bool, choices: list[Choice]) -> list[bytes]:
    out: list[bytes] = []
    for i, choice in enumerate(choices):
        if chat:
            out.append(
                _event(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
            for piece in _pieces(choice.text):
                out.append(
                    _event(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": i,
                                    "delta": {"content": piece},
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                )
            out.append(
                _event(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {},
                                "logprobs": None,
                                "finish_reason": choice.finish_reason,
                            }
                        ],
                    }
                )
            )
        else:
            for piece in _pieces(choice.text):
                out.append(
                    _event(
                        {
                            **base,
                            "choices": [
                                {"index": i, "text": piece, "logprobs": None, "finish_reason": None}
                            ],
                        }
                    )
                )
            out.append(
                _event(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "text": "",
                                "logprobs": None,
                                "finish_reason": choice.finish_reason,
                            }
                        ],
                    }
                )
            )
    return out
