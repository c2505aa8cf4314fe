"""The remote-ledger hook of the budget runtime, in one process: a ledger whose limits "another
process" keeps is reserved after the local checks, settled after the request, and undone when
its reservation fails or is cancelled; and the evaluation's ledger, shared by questions."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from ttc import Budget, RepeatedSample
from ttc.adapters import FunctionModel
from ttc.errors import BudgetExceeded
from ttc.eval.solver import EvalLedger
from ttc.runtime.budget import Charge, Ledger, Reservation, reserve, reserve_when_affordable
from ttc.runtime.context import run_scope
from ttc.types import GenerateRequest, Usage

pytestmark = pytest.mark.anyio


class InProcessRemote(Ledger):
    """A remote ledger whose "other process" is a plain ledger here, reached after a yield."""

    remote = True

    def __init__(self, budget: Budget) -> None:
        super().__init__(Budget(), "remote-view")
        self.server = EvalLedger(budget, scope="cluster")
        self.live: dict[int, Reservation] = {}
        self.acquired = 0
        self.released: list[Charge] = []

    async def acquire(self, charge: Charge) -> object:
        await anyio.lowlevel.checkpoint()  # a message to the other process
        reservation = await reserve_when_affordable([self.server], charge)
        self.acquired += 1
        self.live[id(reservation)] = reservation
        return id(reservation)

    def release(self, handle: object, actual: Charge) -> None:
        assert isinstance(handle, int)
        self.released.append(actual)
        self.live.pop(handle).settle(actual)


async def test_requests_reserve_and_settle_in_the_remote_ledger() -> None:
    async def reply(request: GenerateRequest, i: int) -> str:
        await anyio.sleep(0.01)
        return "one two three"

    model = FunctionModel(reply, native_n=False)
    remote = InProcessRemote(Budget(requests=5))
    with run_scope(remote):
        result = await RepeatedSample(model, n=8, params=None).run("q")
    # Five requests fit the cluster's limit; the other three were refused there.
    assert len(result.candidates) == 5 and result.stopped_by == "budget"
    assert remote.acquired == 5 and len(remote.released) == 5
    assert remote.server.spent_requests == 5 and remote.server.outstanding == 0
    assert remote.server.exhausted is not None
    assert "cluster budget: requests limit 5" in result.errors[0]
    # The local view was undone for the refused requests and settled for the others.
    assert remote.outstanding == 0 and remote.reserved_tokens == 0
    assert remote.spent_requests == 5


async def test_a_failed_or_cancelled_remote_reservation_undoes_the_local_ones() -> None:
    local = Ledger(Budget(tokens=100), "local")

    class Refusing(Ledger):
        remote = True

        async def acquire(self, charge: Charge) -> object:
            await anyio.sleep(10)
            raise AssertionError("cancelled before")

        def release(self, handle: object, actual: Charge) -> None:
            raise AssertionError("never acquired")

    refusing = Refusing(Budget(), "remote")
    with anyio.move_on_after(0.05):
        await reserve_when_affordable([local, refusing], Charge(tokens=60))
    assert local.outstanding == 0 and local.reserved_tokens == 0 and local.spent_tokens == 0

    class Full(Ledger):
        remote = True

        async def acquire(self, charge: Charge) -> object:
            raise BudgetExceeded("usd", 1.0, 1.0, 0.5, "cluster")

    with pytest.raises(BudgetExceeded, match="cluster budget"):
        await reserve_when_affordable([local, Full(Budget(), "remote")], Charge(tokens=60))
    assert local.outstanding == 0 and local.reserved_tokens == 0
    # A plain ledger's reservation is untouched by the hook.
    reservation = await reserve_when_affordable([local], Charge(tokens=60))
    assert reservation.remote == () and local.reserved_tokens == 60


def test_eval_ledger_starts_from_what_stored_questions_cost() -> None:
    ledger = EvalLedger(
        Budget(tokens=100, usd=1.0, requests=10),
        Usage(prompt_tokens=30, completion_tokens=40, requests=9, cost_usd=0.5),
    )
    assert (ledger.spent_tokens, ledger.spent_usd, ledger.spent_requests) == (70, 0.5, 9)
    first = reserve([ledger], Charge(tokens=20, requests=1))
    assert ledger.exhausted is None
    with pytest.raises(BudgetExceeded):
        reserve([ledger], Charge(tokens=20, requests=0))
    assert ledger.exhausted is None  # another reservation may still settle for less
    first.settle(Charge(tokens=25, requests=1))
    with pytest.raises(BudgetExceeded, match="eval budget: tokens limit 100"):
        reserve([ledger], Charge(tokens=6))
    assert ledger.exhausted is not None and ledger.exhausted.limit == "tokens"
