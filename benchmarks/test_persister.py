"""The persister's Postgres side: decoding stream entries and one write_events of 1000 events, by
COPY (what the persister does with a batch that large) and by the statement alone."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.support import order_requests, reserve, run
from persistence.writer import Event, decode_entries, write_events
from reservation.outcomes import ReserveCode
from reservation.store import RedisStore, StreamEntry
from tests.conftest import TABLES, ManualClock

EVENTS = 1000
RESERVE_CALL_ORDERS = 100


@pytest.fixture
def order_created_entries(
    loop: asyncio.AbstractEventLoop, store: RedisStore, hot_sku: str, clock: ManualClock
) -> list[StreamEntry]:
    """1000 orders as reserve.lua appended them to the stream: 10 orders_created entries of 100."""
    numbers = itertools.count()

    async def create() -> list[StreamEntry]:
        for _ in range(EVENTS // RESERVE_CALL_ORDERS):
            results = await reserve(store, order_requests(hot_sku, clock(), numbers, RESERVE_CALL_ORDERS), clock())
            assert {result.code for result in results} == {ReserveCode.ACCEPTED}
        raw = await store.client.xrange(store.keys.stream)
        entries = [StreamEntry(entry_id.decode(), fields) for entry_id, fields in raw]
        return [entry for entry in entries if entry.fields[b"k"] == b"orders_created"]

    entries = run(loop, create())
    assert len(entries) == EVENTS // RESERVE_CALL_ORDERS
    return entries


def test_decode_1000_stream_entries(
    benchmark: BenchmarkFixture, store: RedisStore, order_created_entries: list[StreamEntry]
) -> None:
    """decode_entries() of 10 orders_created stream entries of 100 orders each (documents and movements)."""
    partition = store.keys.partition

    def decode_all() -> list[Event]:
        return [
            event
            for entry in order_created_entries
            for event in decode_entries(partition, entry.entry_id, entry.fields)
        ]

    events = benchmark(decode_all)

    assert len(events) == EVENTS


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "statement"])
def test_write_events_batch_of_1000(
    copy: bool,
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    store: RedisStore,
    order_created_entries: list[StreamEntry],
    postgres_connection: asyncpg.Connection,
) -> None:
    """write_events() of 1000 decoded order_created events: one transaction into emptied tables."""
    partition = store.keys.partition
    events = [
        event for entry in order_created_entries for event in decode_entries(partition, entry.entry_id, entry.fields)
    ]

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        run(loop, postgres_connection.execute(f"TRUNCATE {TABLES}"))
        return (), {}

    def write() -> None:
        run(loop, write_events(postgres_connection, events, copy=copy))

    benchmark.pedantic(write, setup=setup, rounds=20, warmup_rounds=1)

    rows = run(loop, postgres_connection.fetchval("SELECT count(*) FROM orders"))
    assert rows == EVENTS
