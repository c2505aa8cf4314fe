"""Best-of-16 on 200 questions through injected faults: every question completes, no paid-for
candidate is lost, and our accounting equals what the provider counted."""

from __future__ import annotations

import anyio
import pytest

from ttc import BestOfN, SamplingParams
from ttc.adapters import Groq, OpenAI
from ttc.runtime.retry import RetryPolicy
from ttc.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

FAULTS = Faults(
    server_error=0.20,
    rate_limit=0.10,
    timeout=0.05,
    malformed=0.02,
    retry_after=0.01,
    timeout_delay=4.0,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flavor", "preset", "faults"),
    [
        ("groq", Groq, FAULTS),  # no native n: 16 requests a question
        ("openai", OpenAI, Faults(**{**FAULTS.__dict__, "fewer_choices": 0.05})),
    ],
)
async def test_200_best_of_16_under_faults(flavor: str, preset: type, faults: Faults) -> None:
    async with FakeProvider(flavor, api_key="k", faults=faults, seed=11) as server:  # type: ignore[arg-type]
        model = preset(
            "llama-3.1-8b-instant",
            base_url=server.base_url,
            api_key="k",
            # Generous: on a loaded machine a normal reply that arrives after the client gave
            # up is billed by the server but not seen by the client.
            timeout=3.0,
            max_concurrency=128,
            # Timeouts drawn at random (not a server that never answers): retried as often.
            retry=RetryPolicy(
                max_attempts=15, max_timeouts=15, initial_backoff=0.01, max_backoff=0.1
            ),
        )
        strategy = BestOfN(model, n=16, params=SamplingParams(max_tokens=32))
        results = []

        async def one(i: int) -> None:
            results.append(await strategy.run(f"What is {i} + {i + 3}?"))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        await model.aclose()

        stats = server.stats
        assert len(results) == 200
        assert all(len(r.candidates) == 16 and r.stopped_by is None for r in results)
        assert all(r.answer is not None for r in results)
        injected = sum(
            stats.faults[k] for k in ("server_error", "rate_limit", "timeout", "malformed")
        )
        assert injected > 0.25 * stats.requests  # the faults really happened (37% drawn)
        # Every request, token and choice the provider counted is in our accounts.
        usage = model.usage
        assert usage.requests == stats.requests
        assert usage.prompt_tokens == stats.billed_prompt_tokens
        assert usage.completion_tokens == stats.billed_completion_tokens
        assert sum(len(r.candidates) for r in results) == stats.choices == 3200
        assert sum(r.usage.requests for r in results) == stats.requests


async def test_undelivered_requests_are_reported_on_the_result() -> None:
    """Timeouts and broken bodies: the provider may bill them, nothing arrived. Usage counts
    no tokens for them, budgets keep their worst case, and ``usage.undelivered_requests``
    says how many there were."""
    from ttc import Budget

    faults = Faults(timeout=0.2, malformed=0.2, timeout_delay=2.0)
    async with FakeProvider("groq", api_key="k", faults=faults, seed=5) as server:
        model = Groq(
            "llama-3.1-8b-instant",
            base_url=server.base_url,
            api_key="k",
            timeout=0.3,
            retry=RetryPolicy(max_attempts=20, initial_backoff=0.01, max_backoff=0.02),
            budget=Budget(tokens=100_000),
        )
        result = await BestOfN(model, n=12, params=SamplingParams(max_tokens=32)).run("2 * 3?")
        await model.aclose()
    lost = server.stats.faults["timeout"] + server.stats.faults["malformed"]
    assert lost > 0 and len(result.candidates) == 12
    assert result.usage.undelivered_requests == lost == model.usage.undelivered_requests
    assert (
        sum(1 for e in result.trace if e.error and "Malformed" in e.error)
        == (server.stats.faults["malformed"])
    )
    # The budget kept each lost request's worst case (prompt bound + 32 tokens) on top of
    # what was delivered.
    assert model.ledger is not None
    assert model.ledger.spent_tokens >= result.usage.total_tokens + lost * 32


@pytest.mark.parametrize("fault", ["extra choices", "past max_tokens"])
async def test_an_out_of_spec_response_stops_the_run_sending_to_that_model(fault: str) -> None:
    """A provider that returns more choices than n, or bills past max_tokens, can push spend
    past a limit once; the run then sends that model nothing more (an error stop that keeps
    what was paid for) instead of spending on."""
    from ttc import Budget, RepeatedSample
    from ttc.adapters import FunctionModel
    from ttc.runtime.model import RawResponse
    from ttc.types import Completion, GenerateRequest

    class OutOfSpec(FunctionModel):
        async def _send(self, request: GenerateRequest) -> RawResponse:
            raw = await super()._send(request)
            if fault == "extra choices":
                raw.completions = raw.completions * 3
                raw.completion_tokens = 3 * (raw.completion_tokens or 0)
            else:
                raw.completion_tokens = 10 * request.params.max_tokens
            return raw

    def reply(request: GenerateRequest, index: int) -> Completion:
        return Completion(text="The answer is 7", finish_reason="stop", completion_tokens=4)

    model = OutOfSpec(reply, native_n=False, max_concurrency=1, budget=Budget(tokens=10_000))
    result = await RepeatedSample(model, n=8, params=SamplingParams(max_tokens=16)).run("q")
    assert result.usage.requests == 1 == model.usage.requests
    assert result.stopped_by == "error"
    assert len(result.candidates) == 1  # the paid answer is kept, the extras are not used
    assert any("no more requests go to it in this run" in e for e in result.errors)
    # A later run may try again (and is stopped again at the first out-of-spec answer).
    again = await RepeatedSample(model, n=2).run("q")
    assert again.usage.requests == 1


async def test_llamacpp_parallel_usage_counting_one_choice_is_counted_per_choice() -> None:
    """llama.cpp's C++ server with --parallel answers n choices in one request but reports
    the completion tokens of one: budgets and usage count every choice instead."""
    from ttc import Budget
    from ttc.adapters import LlamaCppServer, OpenAICompatible
    from ttc.runtime.model import Capabilities

    async with FakeProvider("llamacpp", parallel=True) as server:
        caps = Capabilities(native_n=True, max_n=16)
        preset = LlamaCppServer(
            "gemma", base_url=server.base_url, capabilities=caps, budget=Budget(tokens=100_000)
        )
        # With logprobs each choice's tokens are known exactly.
        exact = await preset.generate("What is 17 * 23?", SamplingParams(logprobs=True), n=16)
        assert len(exact) == 16 and server.stats.requests == 1
        assert preset.usage.completion_tokens == server.stats.billed_completion_tokens
        # Without them, an upper bound per choice (its bytes, at most max_tokens): never less
        # than what was generated.
        generated = server.stats.billed_completion_tokens
        await preset.generate("What is 17 * 23?", SamplingParams(max_tokens=64), n=16)
        generated = server.stats.billed_completion_tokens - generated
        counted = preset.usage.completion_tokens - exact_tokens(exact)
        assert generated <= counted <= 16 * 64
        assert preset.ledger is not None
        assert preset.ledger.spent_tokens == preset.usage.total_tokens
        await preset.aclose()
        # A generic client notices too: fewer completion tokens than non-empty choices.
        generic = OpenAICompatible("gemma", base_url=server.base_url, capabilities=caps)
        before = server.stats.billed_completion_tokens
        await generic.generate("What is 17 * 23?", n=16)
        assert generic.usage.completion_tokens >= server.stats.billed_completion_tokens - before
        await generic.aclose()


def exact_tokens(completions: list[object]) -> int:
    return sum(len(c.logprobs or ()) for c in completions)  # type: ignore[attr-defined]
