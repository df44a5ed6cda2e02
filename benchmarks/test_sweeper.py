"""The sweeper against real Redis: one sweep_once releasing a full batch of expired holds."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.support import order_requests, reserve, run
from reservation.outcomes import ReserveCode
from reservation.store import RedisStore
from reservation.sweeper import sweep_once
from rushgate.settings import Settings
from tests.conftest import ManualClock

HOLD_TTL_MS = 1000
RESERVE_CALL_ORDERS = 100


def test_sweep_once_releases_a_batch_of_expired_holds(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    store: RedisStore,
    hot_sku: str,
    clock: ManualClock,
    settings: Settings,
) -> None:
    """One sweep_once (ZRANGEBYSCORE, MGET, cancel.lua) releasing sweeper_batch_size_max (500) expired holds."""
    batch_size_max = settings.sweeper_batch_size_max
    numbers = itertools.count()
    benchmark.extra_info["holds_per_sweep"] = batch_size_max

    async def create_due_holds() -> None:
        for start in range(0, batch_size_max, RESERVE_CALL_ORDERS):
            count = min(RESERVE_CALL_ORDERS, batch_size_max - start)
            requests = order_requests(hot_sku, clock(), numbers, count, hold_ttl_ms=HOLD_TTL_MS)
            results = await reserve(store, requests, clock())
            assert {result.code for result in results} == {ReserveCode.ACCEPTED}
        clock.advance(HOLD_TTL_MS)

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        run(loop, create_due_holds())
        return (), {}

    def sweep() -> int:
        return run(loop, sweep_once(store, now_ms=clock(), batch_size_max=batch_size_max))

    released = benchmark.pedantic(sweep, setup=setup, rounds=40, warmup_rounds=2)

    assert released == batch_size_max
    assert run(loop, store.expiry_backlog()) == 0
