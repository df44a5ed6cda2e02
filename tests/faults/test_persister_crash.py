"""A persister killed mid-batch loses nothing and doubles nothing once another takes over."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from intake.service import CatalogService, OrderService
from persistence.database import connect
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore
from tests.conftest import Services
from tests.processes import eventually, running, service_environment, stop
from tests.support import add_sku, assert_ledger_matches, count_rows, order_in, setup_region

ORDERS = 3000
BATCH = 50

pytestmark = pytest.mark.slow


async def test_sigkill_of_the_persister_mid_batch_then_a_new_one_writes_every_order_exactly_once(
    services: Services,
    store: RedisStore,
    database: str,
    catalog: CatalogService,
    orders: OrderService,
    tmp_path: Path,
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", stock={"w1": ORDERS})
    now_ms = orders.clock()
    # Calls of 10 orders: 300 stream entries of 10 events (orders_created), 60 batches of 50 events.
    for first in range(0, ORDERS, 10):
        requests = [orders.to_request(order_in(f"c{n}", {"s1": 1}), f"k{n}", now_ms) for n in range(first, first + 10)]
        await store.reserve(requests, now_ms=now_ms, stream_length_max=100_000, idempotency_ttl_ms=60_000)
    await store.ensure_group(PERSISTER_GROUP)
    environ = service_environment(
        services,
        RUSHGATE_PERSISTER_BATCH_SIZE_MAX=str(BATCH),
        RUSHGATE_PERSISTER_CLAIM_IDLE_MS="300",
    )

    with running(["persister"], environ, tmp_path / "first.log") as first:

        async def frozen_mid_batch() -> bool:
            """Freeze the persister; keep it frozen only if it holds an unacknowledged batch."""
            first.send_signal(signal.SIGSTOP)
            written = await count_rows(database, "SELECT count(*) FROM orders")
            pending = (await store.client.xpending(store.keys.stream, PERSISTER_GROUP))["pending"]
            if 0 < written < ORDERS and pending > 0:
                return True
            first.send_signal(signal.SIGCONT)
            return False

        await eventually(frozen_mid_batch, "the first persister to hold an unacknowledged batch")
        stop(first, signal.SIGKILL)
    left_pending = (await store.client.xpending(store.keys.stream, PERSISTER_GROUP))["pending"]
    written_before = await count_rows(database, "SELECT count(*) FROM orders")
    assert written_before < ORDERS

    with running(["persister"], environ, tmp_path / "second.log") as second:

        async def all_written() -> bool:
            return await count_rows(database, "SELECT count(*) FROM orders") == ORDERS

        await eventually(all_written, "the second persister to write every order")
        # RUSHGATE_PERSISTER_NICE (default 10): the API and the sweeper come first when CPU is short.
        assert psutil.Process(second.pid).nice() == min(os.nice(0) + 10, 19)

        async def nothing_pending() -> bool:
            return await store.stream_backlog(PERSISTER_GROUP) == 0

        await eventually(nothing_pending, "the group to have acknowledged every entry")

    assert left_pending > 0, "the kill must leave entries pending for the test to mean anything"
    connection = await connect(database)
    try:
        events = await connection.fetchval("SELECT count(*) FROM events WHERE kind = 'order_created'")
        distinct_orders = await connection.fetchval("SELECT count(DISTINCT order_id) FROM order_items")
        reserve_movements = await connection.fetchval("SELECT count(*) FROM stock_movements WHERE kind = 'reserve'")
    finally:
        await connection.close()
    assert (events, distinct_orders, reserve_movements) == (ORDERS, ORDERS, ORDERS)
    await assert_ledger_matches(store, database, ["s1"])
