"""The persister: idempotent replay, late and out-of-order entries, dead letters."""

from __future__ import annotations

import msgspec
import pytest

from intake.schemas import PaymentIn
from intake.service import CatalogService, OrderService
from persistence.database import connect
from persistence.writer import decode_entries, decode_entry, write_events
from reservation.keys import PERSISTER_GROUP
from reservation.records import order_record_decoder
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.support import add_sku, assert_ledger_matches, count_rows, order_in, setup_region


@pytest.fixture
async def stocked(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 10})


async def all_entries(store: RedisStore) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(entry_id.decode(), fields) for entry_id, fields in await store.client.xrange(store.keys.stream)]


async def test_replaying_every_event_twice_and_in_reverse_changes_nothing(
    stocked: None, orders: OrderService, store: RedisStore, database: str
) -> None:
    _, first = await orders.place(order_in("c1", {"s1": 2}), "k1")
    await orders.pay(first.order_id, PaymentIn(payment_id="p1", amount=500, method="card"))
    _, second = await orders.place(order_in("c2", {"s1": 1}), "k2")
    await orders.cancel(second.order_id, "customer")
    events = [event for entry_id, fields in await all_entries(store) for event in decode_entries(0, entry_id, fields)]
    connection = await connect(database)
    try:
        await write_events(connection, list(reversed(events)))  # newest first: guards must hold
        await write_events(connection, events)
        await write_events(connection, events[3:5])
        rows = {row["order_id"]: (row["status"], row["version"]) for row in await connection.fetch(
            "SELECT order_id, status, version FROM orders")}  # fmt: skip
        feed = await connection.fetchval("SELECT count(*) FROM events")
    finally:
        await connection.close()
    assert rows == {first.order_id: ("paid", 2), second.order_id: ("cancelled", 2)}
    assert feed == len(events)
    await assert_ledger_matches(store, database, ["s1"])


ORPHANS = """
SELECT (SELECT count(*) FROM order_items LEFT JOIN orders USING (order_id) WHERE orders.order_id IS NULL)
     + (SELECT count(*) FROM shipments LEFT JOIN orders USING (order_id) WHERE orders.order_id IS NULL)
"""


async def test_items_and_shipments_are_never_written_without_their_order(
    stocked: None, orders: OrderService, store: RedisStore, database: str
) -> None:
    """The writer's guarantee that replaced the foreign keys (migration 0011): every batch that
    writes an order's items and shipments upserts the order's row in the same transaction."""
    placed = [(await orders.place(order_in(f"c{number}", {"s1": 1}), f"k{number}"))[1] for number in range(3)]
    await orders.pay(placed[0].order_id, PaymentIn(payment_id="p1", amount=250, method="card"))
    await orders.cancel(placed[1].order_id, "customer")
    events = [event for entry_id, fields in await all_entries(store) for event in decode_entries(0, entry_id, fields)]
    order_events = [event for event in events if event.order is not None]
    connection = await connect(database)
    try:
        for event in reversed(order_events):  # one batch each, newest first: a late order_created last
            await write_events(connection, [event])
            assert await connection.fetchval(ORPHANS) == 0
        items = await connection.fetchval("SELECT count(*) FROM order_items")
        shipments = await connection.fetchval("SELECT count(*) FROM shipments")
    finally:
        await connection.close()
    assert (items, shipments) == (3, 3)


async def test_an_entry_that_can_never_be_applied_becomes_a_dead_letter_and_the_rest_go_through(
    stocked: None, orders: OrderService, store: RedisStore, database: str, settings: Settings
) -> None:
    await orders.place(order_in("c1", {"s1": 1}), "k1")
    await store.client.xadd(store.keys.stream, {"k": "order_shipped_v9", "d": b"\x90", "t": "1"})
    _, good = await orders.place(order_in("c2", {"s1": 1}), "k2")
    document = msgspec.structs.replace(
        order_record_decoder.decode(msgspec.msgpack.encode(good)), status="teleported", version=99
    )
    bad_fields = {"k": "order_paid", "o": msgspec.msgpack.encode(document), "m": b"\x90", "t": "2"}
    await store.client.xadd(store.keys.stream, bad_fields)  # Postgres refuses it: status CHECK
    _, last = await orders.place(order_in("c3", {"s1": 1}), "k3")
    await drain(store, settings, database)
    assert await count_rows(database, "SELECT count(*) FROM orders") == 3
    assert await count_rows(database, "SELECT count(*) FROM orders WHERE status = 'teleported'") == 0
    assert await count_rows(database, "SELECT count(*) FROM dead_letters") == 2
    assert (
        await count_rows(
            database,
            "SELECT count(*) FROM dead_letters WHERE kind = 'order_shipped_v9' AND error LIKE 'AssertionError%'",
        )
        == 1
    )
    assert await store.stream_backlog(PERSISTER_GROUP) == 0
    assert await count_rows(database, "SELECT count(*) FROM orders WHERE order_id = $1", last.order_id) == 1


async def test_the_event_feed_keeps_each_events_payload_beside_its_row(
    stocked: None, orders: OrderService, store: RedisStore, database: str
) -> None:
    """Payloads travel to Postgres apart from the rows (a text array beside the rows' document):
    each row must get its own event's payload, and the text must survive as JSON."""
    _, first = await orders.place(order_in("c1", {"s1": 2}), "k1")
    _, second = await orders.place(order_in("c2", {"s1": 1}), 'k"2\\ {x}')  # JSON's escapes, in a key
    await orders.cancel(second.order_id, "customer")
    events = [event for entry_id, fields in await all_entries(store) for event in decode_entries(0, entry_id, fields)]
    connection = await connect(database)
    try:
        await write_events(connection, events)
        rows = await connection.fetch(
            "SELECT kind, order_id, payload::text AS payload, stream_ms, stream_seq FROM events "
            "WHERE order_id IS NOT NULL ORDER BY stream_ms, stream_seq"
        )
    finally:
        await connection.close()
    feed = [(row["kind"], row["order_id"], msgspec.json.decode(row["payload"])) for row in rows]
    assert [(kind, order_id) for kind, order_id, _ in feed] == [
        ("order_created", first.order_id), ("order_created", second.order_id), ("order_cancelled", second.order_id)
    ]  # fmt: skip
    for kind, order_id, payload in feed:
        assert payload["order"]["order_id"] == order_id
        assert payload["order"]["status"] == ("cancelled" if kind == "order_cancelled" else "pending_payment")
    assert feed[0][2]["order"]["customer_id"] == "c1"
    assert [(m["sku"], m["kind"], m["qty"], m["reserved_delta"]) for m in feed[0][2]["movements"]] == [
        ("s1", "reserve", 2, 2)
    ]
    assert feed[2][2]["order"]["idempotency_key"] == 'k"2\\ {x}'


async def test_cancellations_carry_no_movements_and_the_persister_derives_them_from_the_lines(
    catalog: CatalogService, orders: OrderService, store: RedisStore, database: str, settings: Settings
) -> None:
    """cancel.lua sends no movements (the lines are the releases); a paid order's units go back from
    committed, a pending one's from reserved, whichever warehouses the order was split across."""
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 2, "w2": 2})
    await add_sku(catalog, "s2", price=100, stock={"w1": 5})
    _, pending = await orders.place(order_in("c1", {"s1": 3, "s2": 1}, allow_split=True), "k1")
    _, paid = await orders.place(order_in("c2", {"s1": 1}), "k2")
    await orders.pay(paid.order_id, PaymentIn(payment_id="p1", amount=250, method="card"))
    await orders.cancel(pending.order_id, "customer")
    await orders.cancel(paid.order_id, "merchant")
    cancellations = [fields for _, fields in await all_entries(store) if fields[b"k"] == b"order_cancelled"]
    assert len(cancellations) == 2 and all(b"m" not in fields for fields in cancellations)
    await drain(store, settings, database)
    connection = await connect(database)
    try:
        rows = await connection.fetch(
            "SELECT order_id, sku, warehouse_id, qty, available_delta, reserved_delta, committed_delta, on_hand_delta "
            "FROM stock_movements WHERE kind = 'release' ORDER BY order_id, sku, warehouse_id"
        )
    finally:
        await connection.close()
    released = {(row["order_id"], row["sku"], row["warehouse_id"]): tuple(row)[3:] for row in rows}
    assert released == {
        (pending.order_id, "s1", "w1"): (2, 2, -2, 0, 0),
        (pending.order_id, "s1", "w2"): (1, 1, -1, 0, 0),
        (pending.order_id, "s2", "w1"): (1, 1, -1, 0, 0),
        (paid.order_id, "s1", "w2"): (1, 1, 0, -1, 0),
    }
    await assert_ledger_matches(store, database, ["s1", "s2"])


async def test_a_cancellation_written_with_its_movements_by_an_earlier_build_keeps_them(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    """Entries already in the stream when the persister is upgraded carry an m field: it wins over
    what the document would give (here a release from committed, of an order with no payment id)."""
    _, order = await orders.place(order_in("c1", {"s1": 2}), "k1")
    cancelled = msgspec.structs.replace(order_record_decoder.decode(msgspec.msgpack.encode(order)), status="cancelled")
    sent = [("s1", "w1", "release", 2, 2, 0, -2, 0)]
    fields = {b"k": b"order_cancelled", b"o": msgspec.msgpack.encode(cancelled), b"m": msgspec.msgpack.encode(sent),
              b"t": b"5"}  # fmt: skip
    event = decode_entry(0, "7-0", fields)
    assert [tuple(msgspec.structs.astuple(movement)) for movement in event.movements] == sent


async def test_an_order_created_entry_without_t_occurred_when_its_document_was_updated(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    """reserve.lua leaves t out of order_created (it is the document's updated_ms); an entry of an
    older build, which carries t, is still read by it."""
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    [(entry_id, fields)] = [entry for entry in await all_entries(store) if entry[1][b"k"] == b"order_created"]
    assert b"t" not in fields
    event = decode_entry(0, entry_id, fields)
    assert event.occurred_ms == order.updated_ms == order.created_ms
    older = decode_entry(0, entry_id, {**fields, b"t": b"1234"})
    assert older.occurred_ms == 1234
