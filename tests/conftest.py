"""Shared fixtures: the anyio backend and a loopback fake provider."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

# Tests never reach the internet: litellm must read its bundled price map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# Property tests check behaviour, not speed: on a loaded 2-core CI machine one slow draw (a
# collection, another process) must not fail them, so hypothesis' timing checks are off.
settings.register_profile("ttc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ttc")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def openai_server() -> AsyncIterator[object]:
    from ttc.testing import FakeProvider

    async with FakeProvider("openai", api_key="sk-test-secret") as server:
        yield server
