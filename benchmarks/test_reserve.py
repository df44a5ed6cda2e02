"""RedisStore.reserve against real Redis: one order per call, and one call carrying 100 orders."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.support import order_requests, reserve, run
from reservation.outcomes import ReserveCode
from reservation.store import OrderRequest, RedisStore, ReserveResult
from tests.conftest import ManualClock

BATCH_ORDERS = 100

Arguments = tuple[tuple[list[OrderRequest]], dict[str, Any]]


def test_reserve_one_order_per_call(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, store: RedisStore, hot_sku: str, clock: ManualClock
) -> None:
    """One RedisStore.reserve call holding one single-line order (EVALSHA round trip plus client cost)."""
    numbers = itertools.count()

    def setup() -> Arguments:
        return (order_requests(hot_sku, clock(), numbers, 1),), {}

    def call(requests: list[OrderRequest]) -> list[ReserveResult]:
        return run(loop, reserve(store, requests, clock()))

    results = benchmark.pedantic(call, setup=setup, rounds=2000, warmup_rounds=50)

    assert [result.code for result in results] == [ReserveCode.ACCEPTED]


def test_reserve_batch_of_100_orders(
    benchmark: BenchmarkFixture, loop: asyncio.AbstractEventLoop, store: RedisStore, hot_sku: str, clock: ManualClock
) -> None:
    """One RedisStore.reserve call carrying 100 single-line orders (divide by 100 for the cost per order)."""
    numbers = itertools.count()
    benchmark.extra_info["orders_per_call"] = BATCH_ORDERS

    def setup() -> Arguments:
        return (order_requests(hot_sku, clock(), numbers, BATCH_ORDERS),), {}

    def call(requests: list[OrderRequest]) -> list[ReserveResult]:
        return run(loop, reserve(store, requests, clock()))

    results = benchmark.pedantic(call, setup=setup, rounds=200, warmup_rounds=5)

    assert {result.code for result in results} == {ReserveCode.ACCEPTED}
