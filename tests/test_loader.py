"""The local engines' one loader: a load happens once however many first requests arrive
together, off the event loop; ``close`` waits for the request in progress, releases the engine,
and the next use loads it again."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from ttc.runtime.loader import EngineLoader

pytestmark = pytest.mark.anyio


async def test_concurrent_first_uses_load_once_and_close_releases() -> None:
    loads: list[int] = []
    released: list[int] = []

    def load() -> int:
        time.sleep(0.05)  # long enough for every caller to arrive while it runs
        loads.append(len(loads))
        return len(loads)

    loader = EngineLoader[int](name="test engine", release=released.append)
    got: list[int] = []

    async def use() -> None:
        got.append(await loader.aget(load))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(use)
    assert got == [1] * 8 and loads == [0]
    assert loader.seconds is not None and loader.seconds >= 0.05
    loader.close()
    assert released == [1] and loader.value is None
    assert loader.get(load) == 2  # loaded again on the next use


def test_close_waits_for_the_request_in_progress() -> None:
    loader = EngineLoader[str](name="test engine")
    loader.get(lambda: "engine")
    events: list[str] = []
    holding = threading.Event()

    def request() -> None:
        with loader.run_lock:
            holding.set()
            time.sleep(0.05)
            events.append("request done")

    worker = threading.Thread(target=request)
    worker.start()
    holding.wait()
    loader.close()
    events.append("closed")
    worker.join()
    assert events == ["request done", "closed"]
