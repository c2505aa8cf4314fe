"""A model whose replies come from a Python function: for tests, examples and prototyping.

It runs through the same runtime as every provider (budgets, retries, fan-out, usage), so a
test of a strategy written against it tests the real bookkeeping. Tokens are counted as
whitespace-separated words. Raise a ``ttc.errors.ProviderError`` from the function to inject
faults.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from ttc.runtime.model import Capabilities, Model, RawResponse
from ttc.runtime.pricing import Price
from ttc.types import Completion, FinishReason, GenerateRequest

Reply = Callable[[GenerateRequest, int], "str | Completion | Awaitable[str | Completion]"]


def count_words(text: str) -> int:
    return len(text.split())


def prompt_text(request: GenerateRequest) -> str:
    """The prompt as one string (chat messages joined by newlines)."""
    if isinstance(request.prompt, str):
        return request.prompt
    return "\n".join(m.content for m in request.prompt)


class FunctionModel(Model):
    """Replies with ``fn(request, sample_index)``: a string or a ``Completion``, sync or async.

    ``sample_index`` counts every sample this model has produced, so a function can script a
    sequence of replies. Stop strings and ``max_tokens`` (in words) are applied to strings.
    """

    provider: ClassVar[str] = "function"
    default_price: ClassVar[Price | None] = Price.free()
    volatile_attributes: ClassVar[frozenset[str]] = frozenset({"samples"})

    def __init__(
        self, fn: Reply, *, model: str = "function", native_n: bool = True, **runtime: Any
    ) -> None:
        runtime.setdefault("capabilities", Capabilities(native_n=native_n, max_n=1024))
        super().__init__(model, **runtime)
        self.fn = fn
        self.samples = 0

    async def _send(self, request: GenerateRequest) -> RawResponse:
        completions = []
        for _ in range(request.n):
            index = self.samples
            self.samples += 1
            out = self.fn(request, index)
            if inspect.isawaitable(out):
                out = await out
            if isinstance(out, str):
                out = self._shape(out, request)
            completions.append(out)
        completion_tokens = sum(
            c.completion_tokens if c.completion_tokens is not None else count_words(c.text)
            for c in completions
        )
        return RawResponse(
            completions=completions,
            prompt_tokens=count_words(prompt_text(request)),
            completion_tokens=completion_tokens,
        )

    def _shape(self, text: str, request: GenerateRequest) -> Completion:
        finish: FinishReason = "stop"
        cut = min((i for s in request.params.stop if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        words = text.split()
        if len(words) > request.params.max_tokens:
            words = words[: request.params.max_tokens]
            text = " ".join(words)
            finish = "length"
        return Completion(
            text=text, finish_reason=finish, completion_tokens=len(words), model=self.model
        )
