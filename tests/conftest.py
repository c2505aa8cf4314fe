"""Shared fixtures: the anyio backend and a loopback fake provider."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

# Tests never reach the internet: litellm must read its bundled price map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def openai_server() -> AsyncIterator[object]:
    from ttc.testing import FakeProvider

    async with FakeProvider("openai", api_key="sk-test-secret") as server:
        yield server
