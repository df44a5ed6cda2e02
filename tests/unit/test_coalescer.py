"""The coalescer's bounds and isolation, with a scripted batch call (pure logic, no Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from reservation.coalescer import Coalescer


class ScriptedCall:
    """Records each batch; each call waits until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: Exception | None = None

    async def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [f"result-of-{item}" for item in items]


async def turn() -> None:
    """Let every ready callback of the event loop run once."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_concurrent_items_share_one_call_and_each_gets_its_own_result() -> None:
    call = ScriptedCall()
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=2, wait_us_max=1000)
    items = [f"customer-{number}" for number in range(50)]
    results = await asyncio.gather(*(coalescer.submit(item) for item in items))
    assert results == [f"result-of-{item}" for item in items]
    assert call.batches == [items]


async def test_no_call_carries_more_than_the_batch_size_bound() -> None:
    call = ScriptedCall()
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=8, wait_us_max=1000)
    items = [str(number) for number in range(300)]
    results = await asyncio.gather(*(coalescer.submit(item) for item in items))
    assert results == [f"result-of-{item}" for item in items]
    assert [len(batch) for batch in call.batches] == [128, 128, 44]
    assert [item for batch in call.batches for item in batch] == items


async def test_a_lone_request_on_an_idle_worker_is_sent_on_the_next_loop_turn() -> None:
    call = ScriptedCall()
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=1, wait_us_max=50_000)
    lone = asyncio.create_task(coalescer.submit("alone"))
    await turn()
    assert call.batches == [["alone"]]
    assert await lone == "result-of-alone"


async def test_a_request_waiting_behind_a_busy_call_is_sent_within_the_wait_bound() -> None:
    call = ScriptedCall()
    call.release.clear()  # the first call hangs, as a slow Redis would
    wait_us_max = 3000
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=1, wait_us_max=wait_us_max)
    first = asyncio.create_task(coalescer.submit("first"))
    await turn()
    second = asyncio.create_task(coalescer.submit("second"))
    await turn()
    checked_at = asyncio.get_running_loop().time()
    assert call.batches == [["first"]]  # waits: one call in flight is the bound
    timer = coalescer._timer
    assert timer is not None and isinstance(timer, asyncio.TimerHandle)
    assert timer.when() <= checked_at + wait_us_max / 1_000_000

    async def second_sent() -> None:
        while len(call.batches) < 2:
            await asyncio.sleep(0.0005)

    await asyncio.wait_for(second_sent(), 5)
    assert call.batches == [["first"], ["second"]]  # sent although the first call still hangs
    call.release.set()
    assert (await first, await second) == ("result-of-first", "result-of-second")


async def test_requests_waiting_for_a_busy_call_leave_together_when_it_returns() -> None:
    call = ScriptedCall()
    call.release.clear()
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=1, wait_us_max=60_000_000)
    first = asyncio.create_task(coalescer.submit("first"))
    await turn()
    later = [asyncio.create_task(coalescer.submit(f"later-{number}")) for number in range(5)]
    await turn()
    call.release.set()
    await asyncio.gather(first, *later)
    assert call.batches == [["first"], [f"later-{number}" for number in range(5)]]


async def test_a_failed_call_fails_every_request_in_it_and_the_next_call_works() -> None:
    call = ScriptedCall()
    call.fail_with = ConnectionError("redis went away")
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=1, wait_us_max=1000)
    outcomes = await asyncio.gather(coalescer.submit("a"), coalescer.submit("b"), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError, ConnectionError]
    call.fail_with = None
    assert await coalescer.submit("c") == "result-of-c"


async def test_a_request_whose_client_left_does_not_disturb_the_others() -> None:
    call = ScriptedCall()
    call.release.clear()
    coalescer: Coalescer[str, str] = Coalescer(call, batch_size_max=128, calls_in_flight_max=1, wait_us_max=1000)
    gone = asyncio.create_task(coalescer.submit("gone"))
    stays = asyncio.create_task(coalescer.submit("stays"))
    await turn()
    gone.cancel()
    call.release.set()
    assert await stays == "result-of-stays"
    with pytest.raises(asyncio.CancelledError):
        await gone
