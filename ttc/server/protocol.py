"""OpenAI's wire format on the server side: request checks, error objects, response bodies.

Requests are checked field by field, and every problem is an ``APIError`` that becomes
OpenAI's error object (``{"error": {"message", "type", "param", "code"}}``) with the status
OpenAI uses: 400 bad input, 401 key, 404 unknown model, 413 body too large, 429 over budget,
502 upstream failure, 503 not ready, 504 timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ttc.types import Message, Result

__all__ = ["APIError", "Job", "chat_body", "completion_body", "error_body", "parse_job"]

MAX_STOPS = 4
_IGNORED = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "frequency_penalty",
        "presence_penalty",
        "parallel_tool_calls",
        "stream_options",
        "modalities",
        "reasoning_effort",
    }
)
_UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logit_bias", "audio")


class APIError(Exception):
    """An error answered in OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        #: What the request's calls cost before it failed (its ``ttc`` field), if any.
        self.spent: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        body = error_body(self.message, self.type, self.code, self.param)
        if self.spent is not None and self.spent["requests"]:
            body["ttc"] = self.spent
        return body

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=headers)


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class Job:
    """A checked request: its prompts, sampling settings and what the response should hold."""

    chat: bool
    model: str
    prompts: list[str | tuple[Message, ...]]
    n: int
    stream: bool
    include_usage: bool
    sampling: dict[str, Any] = field(default_factory=dict)
    ttc: dict[str, Any] = field(default_factory=dict)


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object")
    return body


def _int(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise bad(f"{key} must be an integer of at least {lo}, got {value!r}", key)
    if hi is not None and value > hi:
        raise bad(f"{key} must be at most {hi}, got {value}", key)
    return value


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise bad(f"{key} must be a number from {lo:g} to {hi:g}, got {value!r}", key)
    return float(value)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad(f"{where}[{i}]: only text parts are supported", where)
            text = part.get("text")
            if not isinstance(text, str):
                raise bad(f"{where}[{i}].text must be a string", where)
            parts.append(text)
        return "".join(parts)
    raise bad(f"{where} must be a string or a list of text parts", where)


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise bad("messages must be a non-empty list of messages", "messages")
    out = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object with role and content", where)
        role = item.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise bad(
                f"{where}.role must be system, developer, user or assistant, got {role!r}",
                f"{where}.role",
            )
        out.append(Message(role=role, content=_content(item.get("content"), f"{where}.content")))
    return tuple(out)


def _prompts(value: Any) -> list[str | tuple[Message, ...]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return list(value)
    raise bad("prompt must be a string or a non-empty list of strings", "prompt")


def parse_job(body: Mapping[str, Any], *, chat: bool, max_n: int) -> Job:
    """Check an OpenAI request body; ``APIError`` (400) naming the first bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad("model is required: a configured model, a profile or <strategy>/<model>", "model")
    for key in _UNSUPPORTED:
        if body.get(key) is not None:
            raise bad(f"{key} is not supported by ttc serve", key, "unsupported_parameter")
    if body.get("logprobs") or body.get("echo") or body.get("suffix"):
        key = next(k for k in ("logprobs", "echo", "suffix") if body.get(k))
        raise bad(f"{key} is not supported by ttc serve", key, "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise bad("response_format: only {'type': 'text'} is supported", "response_format")
    prompts: list[str | tuple[Message, ...]]
    prompts = [_messages(body.get("messages"))] if chat else _prompts(body.get("prompt"))
    n = _int(body, "n", 1, max_n) or 1
    if len(prompts) * n > max_n:
        raise bad(f"prompts x n must be at most {max_n}, got {len(prompts) * n}", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad(f"stream must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    sampling: dict[str, Any] = {}
    limit = _int(body, "max_completion_tokens", 1) if chat else None
    limit = limit if limit is not None else _int(body, "max_tokens", 1)
    if limit is not None:
        sampling["max_tokens"] = limit
    for key, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 1e-9, 1.0)):
        value = _number(body, key, lo, hi)
        if value is not None:
            sampling[key] = value
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise bad(f"seed must be an integer, got {seed!r}", "seed")
        sampling["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > MAX_STOPS
            or not all(isinstance(s, str) and s for s in stops)
        ):
            raise bad(f"stop must be a string or a list of up to {MAX_STOPS} strings", "stop")
        sampling["stop"] = tuple(stops)
    ttc = body.get("ttc") or {}
    if not isinstance(ttc, dict):
        raise bad("ttc must be an object", "ttc")
    return Job(
        chat=chat,
        model=model.strip(),
        prompts=prompts,
        n=n,
        stream=stream,
        include_usage=bool(options.get("include_usage", True)),
        sampling=sampling,
        ttc=dict(ttc),
    )


def finish_reason(value: str) -> str:
    return value if value in ("stop", "length", "content_filter") else "stop"


@dataclass
class Choice:
    """One choice of a response: its text, why it ended, and the run that chose it."""

    text: str
    finish_reason: str
    result: Result | None = None


def usage_body(result_usage: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": result_usage.prompt_tokens,
        "completion_tokens": result_usage.completion_tokens,
        "total_tokens": result_usage.total_tokens,
    }


def ttc_body(
    choices: Sequence[Choice],
    usage: Any,
    trace: Sequence[Any],
    strategy: str,
    request_id: str,
    *,
    candidates: bool,
    tree: bool,
) -> dict[str, Any]:
    """The ``ttc`` extension of a response: what the request cost in every call, and each
    choice's run (answer, votes, why it stopped; candidates and tree when asked for)."""
    runs: list[dict[str, Any]] = []
    for choice in choices:
        result = choice.result
        if result is None:
            runs.append({})
            continue
        run: dict[str, Any] = {
            "answer": result.answer,
            "stopped_by": result.stopped_by,
            "votes": result.votes,
            "score": result.best.score if result.best is not None else None,
            "errors": result.errors,
        }
        if candidates:
            run["candidates"] = [c.model_dump(mode="json") for c in result.candidates]
        if tree:
            run["tree"] = result.tree
        runs.append(run)
    return {
        "request_id": request_id,
        "strategy": strategy,
        "cost_usd": usage.cost_usd,
        "requests": usage.requests,
        "unpriced_models": sorted(usage.unpriced_models),
        "by_model": {
            name: {
                "prompt_tokens": own.prompt_tokens,
                "completion_tokens": own.completion_tokens,
                "requests": own.requests,
                "cost_usd": own.cost_usd,
            }
            for name, own in usage.by_model.items()
        },
        "calls": [event.model_dump(mode="json") for event in trace],
        "runs": runs,
    }


def chat_body(
    request_id: str, model: str, choices: Sequence[Choice], usage: Any, extension: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text, "refusal": None},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage_body(usage),
        "ttc": extension,
    }


def completion_body(
    request_id: str, model: str, choices: Sequence[Choice], usage: Any, extension: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
            for i, c in enumerate(choices)
        ],
        "usage": usage_body(usage),
        "ttc": extension,
    }
