"""The persister's COPY path: the same rows as the statement path, and a batch meeting rows
already written (a replay, a late order_created) falls back to the idempotent statement."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from intake.lifecycle_service import AfterSalesService, LifecycleService
from intake.schemas import CaseIn, CaseItemIn, PaymentIn, ShipIn, StockSetIn, TrackEventIn
from intake.service import CatalogService, OrderService, Placed
from persistence.database import connect
from persistence.writer import (
    COPY_EVENTS_MIN,
    PERMANENT_ERRORS,
    Event,
    _ready_for_copy,
    decode_entries,
    decode_entry,
    prepare_batch,
    write_events,
)
from reservation.records import order_record_decoder
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.conftest import TABLES, ManualClock
from tests.support import add_sku, assert_ledger_matches, count_rows, order_in, setup_region

SNAPSHOTS = {
    "events": "SELECT partition, stream_ms, stream_seq, kind, order_id, occurred_at, payload::text FROM events",
    "orders": "SELECT * FROM orders",
    "order_items": "SELECT * FROM order_items",
    "shipments": "SELECT * FROM shipments",
    "shipment_events": "SELECT * FROM shipment_events",
    "stock_movements": "SELECT * FROM stock_movements",
    "after_sales_cases": "SELECT * FROM after_sales_cases",
    "refunds": "SELECT * FROM refunds",
    "skus": "SELECT * FROM skus",
    "warehouses": "SELECT * FROM warehouses",
    "audit_log": "SELECT partition, stream_ms, stream_seq, occurred_at, actor, action, target_type, target_id,"
    " warehouse_ids, request_id, reason, before, after FROM audit_log",
}
"""Every row a batch writes, without the columns Postgres fills in (persisted_at, audit ids)."""


async def snapshot(connection: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: sorted(tuple(row) for row in await connection.fetch(query)) for table, query in SNAPSHOTS.items()}


@pytest.fixture
async def history(
    catalog: CatalogService, orders: OrderService, store: RedisStore, settings: Settings, clock: ManualClock
) -> list[Event]:
    """Events of every kind a batch of order events can hold: configuration with audit, orders
    created (one split over two warehouses), paid, shipped and tracked, cancelled, a refund case,
    and a stock change, as decoded from the stream."""
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 3, "w2": 3})
    await add_sku(catalog, "s2", price=300, stock={"w1": 9})
    lifecycle = LifecycleService(store, settings, clock)
    after_sales = AfterSalesService(store, clock)
    placed = [(await orders.place(order_in(f"c{number}", {"s2": 1}), f"k{number}"))[1] for number in range(4)]
    _, split = await orders.place(order_in("c9", {"s1": 4, "s2": 1}, allow_split=True), "k9")
    paid = await orders.pay(placed[0].order_id, PaymentIn(payment_id="p0", amount=300, method="card"))
    shipment_id = paid.shipments()[0].shipment_id
    await lifecycle.ship(paid.order_id, shipment_id, ShipIn(carrier="DHL", tracking_number="T1"))
    at = datetime.fromtimestamp(clock() / 1000, UTC)
    await lifecycle.track(
        paid.order_id, shipment_id, TrackEventIn(status="in_transit", location="Leipzig", occurred_at=at)
    )
    await orders.cancel(placed[1].order_id, "customer")
    refunded = await orders.pay(placed[2].order_id, PaymentIn(payment_id="p2", amount=300, method="card"))
    await after_sales.open(
        refunded.order_id, CaseIn(kind="refund_only", items=[CaseItemIn(sku="s2", qty=1)], reason="changed my mind")
    )
    await orders.pay(split.order_id, PaymentIn(payment_id="p9", amount=split.total, method="card"))
    await catalog.set_stock("s2", "w1", StockSetIn(on_hand=20))
    raw = await store.client.xrange(store.keys.stream)
    return [event for entry_id, fields in raw for event in decode_entries(0, entry_id.decode(), fields)]


async def written(connection: asyncpg.Connection, batches: list[list[Event]], copy: bool | None) -> dict[str, Any]:
    await connection.execute(f"TRUNCATE {TABLES}")
    for batch in batches:
        await write_events(connection, batch, copy=copy)
    return await snapshot(connection)


async def test_copy_writes_what_the_statement_writes(history: list[Event], database: str) -> None:
    connection = await connect(database)
    try:
        by_statement = await written(connection, [history], copy=False)
        by_copy = await written(connection, [history], copy=True)
        # Orders created in the first batch and changed in the second: the second's order rows
        # are upserts, beside the COPY of its events and movements.
        halves = [history[: len(history) // 2], history[len(history) // 2 :]]
        by_copy_in_two = await written(connection, halves, copy=True)
    finally:
        await connection.close()
    counts = {table: len(rows) for table, rows in by_statement.items()}
    assert counts["events"] == len(history)
    assert (counts["orders"], counts["order_items"], counts["shipments"], counts["shipment_events"]) == (5, 7, 6, 1)
    assert (counts["after_sales_cases"], counts["refunds"], counts["skus"], counts["warehouses"]) == (1, 1, 2, 2)
    assert counts["stock_movements"] > 0 and counts["audit_log"] > 0
    assert by_copy == by_statement
    assert by_copy_in_two == by_statement


async def test_a_copy_batch_meeting_rows_already_written_is_written_again_by_upsert(
    history: list[Event], database: str, store: RedisStore
) -> None:
    """Replays (a batch written before a crash, written again) and late entries (an order's
    order_created after its later events): COPY fails on a key, the statement keeps what is there."""
    order_events = [event for event in history if event.order is not None]
    connection = await connect(database)
    try:
        expected = await written(connection, [history], copy=False)
        replayed = await written(connection, [history, history, history[3:9]], copy=True)
        late = await written(connection, [list(reversed(history)), history], copy=True)
        one_by_one = await written(connection, [[event] for event in reversed(order_events)] + [history], copy=True)
    finally:
        await connection.close()
    assert replayed == expected
    assert late == expected
    assert one_by_one == expected
    await assert_ledger_matches(store, database, ["s1", "s2"])


async def test_a_copy_batch_postgres_refuses_writes_nothing(
    catalog: CatalogService, orders: OrderService, store: RedisStore, database: str
) -> None:
    """A refusal inside COPY is the same permanent error as in the statement (the persister then
    finds the entry one at a time), and the transaction leaves no row of the batch behind."""
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 10})
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    raw = await store.client.xrange(store.keys.stream)
    events = [event for entry_id, fields in raw for event in decode_entries(0, entry_id.decode(), fields)]
    teleported = msgspec.structs.replace(
        order_record_decoder.decode(msgspec.msgpack.encode(order)), status="teleported"
    )
    fields = {b"k": b"order_created", b"o": msgspec.msgpack.encode(teleported), b"t": b"5"}
    bad = decode_entry(0, "9999999999999-0", fields)
    connection = await connect(database)
    try:
        await connection.execute(f"TRUNCATE {TABLES}")
        with pytest.raises(PERMANENT_ERRORS):
            await write_events(connection, [*events[:-1], bad], copy=True)
        assert await connection.fetchval("SELECT count(*) FROM events") == 0
        assert await connection.fetchval("SELECT count(*) FROM orders") == 0
    finally:
        await connection.close()


async def test_the_persister_copies_large_batches_and_the_ledger_still_matches(
    catalog: CatalogService, orders: OrderService, store: RedisStore, database: str, settings: Settings
) -> None:
    """Through the persister: a batch of more than COPY_EVENTS_MIN events takes the COPY path."""
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 1000})
    requests = [(f"k{number}", order_in(f"c{number}", {"s1": 1})) for number in range(COPY_EVENTS_MIN + 6)]
    placed = await orders.place_batch(requests)
    created = [outcome.order for outcome in placed if isinstance(outcome, Placed)]
    assert len(created) == len(requests)
    for order in created[:5]:
        await orders.cancel(order.order_id, "customer")
    raw = await store.client.xrange(store.keys.stream)
    events = [event for entry_id, fields in raw for event in decode_entries(0, entry_id.decode(), fields)]
    assert prepare_batch(events).copy is not None
    assert prepare_batch(events[: COPY_EVENTS_MIN - 1]).copy is None
    await drain(store, settings, database)
    assert await count_rows(database, "SELECT count(*) FROM orders") == len(requests)
    assert await count_rows(database, "SELECT count(*) FROM orders WHERE status = 'cancelled'") == 5
    assert await count_rows(database, "SELECT count(*) FROM events") == len(events)
    await assert_ledger_matches(store, database, ["s1"])


async def test_a_connection_readied_for_copy_reads_and_takes_moments_as_before(database: str) -> None:
    """COPY's rows carry epoch milliseconds, so the writer gives the connection its own timestamptz
    codec: it must read every value as asyncpg does, and still take datetimes as parameters."""
    moments = "SELECT 'infinity'::timestamptz, '-infinity'::timestamptz, '2026-12-01 01:02:03.456789+00'::timestamptz"
    plain, readied = await connect(database), await connect(database)
    try:
        await _ready_for_copy(readied)
        assert tuple(await readied.fetchrow(moments)) == tuple(await plain.fetchrow(moments))
        at = datetime(2026, 12, 1, 1, 2, 3, 456000, tzinfo=UTC)
        assert await readied.fetchval("SELECT $1::timestamptz", at) == at
        assert await readied.fetchval("SELECT $1::timestamptz", 1_796_086_923_456) == at
    finally:
        await plain.close()
        await readied.close()
