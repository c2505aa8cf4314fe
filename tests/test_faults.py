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
