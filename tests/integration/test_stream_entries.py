"""One stream entry per reserve or cancel call: a call that accepts (cancels) several orders appends
one orders_created (orders_cancelled) entry holding their documents; the backlog bound and the
backlog gauge count its events, not entries; the persister writes one event per order (numbered
by stream_index), takes the entry's events off the count once, and keeps every batch within
persister_batch_size_max events."""

from __future__ import annotations

import msgspec
import pytest

from intake.service import CatalogService, OrderService
from persistence.database import connect
from persistence.writer import decode_entries, extra_events, orders_decoder, write_events
from reservation.keys import PERSISTER_GROUP
from reservation.outcomes import CancelCode, ReserveCode
from reservation.store import STREAM_EXTRA_EVENTS, RedisStore, ReserveResult
from rushgate.settings import Settings
from rushgate.workers import Persister
from tests.support import add_sku, assert_ledger_matches, count_rows, order_in, setup_region

NOW_MS = 1_900_000_000_000


@pytest.fixture
async def stocked(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 40})
    await add_sku(catalog, "scarce", price=900, stock={"w1": 1})


def requests(orders: OrderService, numbers: range, items: dict[str, int] | None = None) -> list[object]:
    return [orders.to_request(order_in(f"c{n}", items or {"s1": 1}), f"k{n}", NOW_MS) for n in numbers]


async def reserve(store: RedisStore, batch: list[object], stream_length_max: int = 10_000) -> list[ReserveResult]:
    return await store.reserve(batch, now_ms=NOW_MS, stream_length_max=stream_length_max, idempotency_ttl_ms=60_000)  # type: ignore[arg-type]


async def entries_after(store: RedisStore, count_before: int) -> list[tuple[str, dict[bytes, bytes]]]:
    raw = await store.client.xrange(store.keys.stream)
    return [(entry_id.decode(), fields) for entry_id, fields in raw[count_before:]]


async def extra_field(store: RedisStore) -> bytes | None:
    value: bytes | None = await store.client.hget(store.keys.metrics, STREAM_EXTRA_EVENTS)
    return value


async def drain(store: RedisStore, database: str, persister: Persister) -> list[int]:
    """Run the persister until the group has acknowledged everything; the events of each step."""
    await store.ensure_group(PERSISTER_GROUP)
    connection = await connect(database)
    written = []
    try:
        while await store.stream_backlog(PERSISTER_GROUP):
            written.append(await persister.step(connection))
    finally:
        await connection.close()
    return written


async def test_a_call_appends_one_entry_with_its_accepted_orders_in_order(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    """20 accepted orders (a msgpack array 16 header), one sold out, one replayed: one entry, the
    accepted documents as stored, in the call's order; the backlog counts 20 events for it."""
    before = await store.stream_length()
    backlog_before = await store.stream_backlog(PERSISTER_GROUP)
    batch = [*requests(orders, range(10)), *requests(orders, range(100, 101), {"scarce": 2}),
             *requests(orders, range(10, 20)), *requests(orders, range(0, 1))]  # fmt: skip
    results = await reserve(store, batch)
    codes = [result.code for result in results]
    assert codes == [ReserveCode.ACCEPTED] * 10 + [ReserveCode.SOLD_OUT] + [ReserveCode.ACCEPTED] * 10 + [
        ReserveCode.REPLAYED
    ]
    [(_, fields)] = await entries_after(store, before)
    assert fields[b"k"] == b"orders_created"
    documents = orders_decoder.decode(fields[b"o"])
    accepted = [result.order for result in results if result.code is ReserveCode.ACCEPTED]
    assert documents == accepted
    stored = [await store.client.get(store.keys.order(order.order_id)) for order in documents]
    assert fields[b"o"] == b"\xdc\x00\x14" + b"".join(stored)  # the stored documents' bytes, in an array 16
    assert extra_events(fields) == 19
    assert await extra_field(store) == b"19"
    assert await store.stream_backlog(PERSISTER_GROUP) == backlog_before + 20


async def test_a_call_that_accepts_one_order_appends_an_order_created_entry(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    before = await store.stream_length()
    results = await reserve(store, [*requests(orders, range(1)), *requests(orders, range(1, 2), {"scarce": 5})])
    assert [result.code for result in results] == [ReserveCode.ACCEPTED, ReserveCode.SOLD_OUT]
    [(_, fields)] = await entries_after(store, before)
    assert fields[b"k"] == b"order_created"
    assert fields[b"o"] == await store.client.get(store.keys.order(results[0].order.order_id))  # type: ignore[union-attr]
    assert extra_events(fields) == 0
    assert await extra_field(store) is None


async def test_the_backlog_bound_counts_the_events_of_an_entry_not_the_entry(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    """Counting entries, the second call would see one entry more and accept all three."""
    before = await store.stream_length()
    first = await reserve(store, requests(orders, range(4)), stream_length_max=before + 5)
    assert {result.code for result in first} == {ReserveCode.ACCEPTED}
    second = await reserve(store, requests(orders, range(4, 7)), stream_length_max=before + 5)
    assert [result.code for result in second] == [ReserveCode.ACCEPTED, ReserveCode.BACKLOG_FULL,
                                                  ReserveCode.BACKLOG_FULL]  # fmt: skip


async def test_acknowledging_takes_an_entrys_events_off_once(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    await store.ensure_group(PERSISTER_GROUP)
    await reserve(store, requests(orders, range(5)))
    await reserve(store, requests(orders, range(5, 8)))
    assert await extra_field(store) == b"6"
    delivered = await store.read_group(PERSISTER_GROUP, "p", count=100, block_ms=None)
    multi = {entry.entry_id: extra_events(entry.fields) for entry in delivered if extra_events(entry.fields)}
    assert sorted(multi.values()) == [2, 4]
    first_id = next(entry_id for entry_id, extra in multi.items() if extra == 4)
    await store.acknowledge(PERSISTER_GROUP, [first_id], {first_id: 4})
    assert await extra_field(store) == b"2"
    await store.acknowledge(PERSISTER_GROUP, [first_id], {first_id: 4})  # again, as after a crash: nothing
    assert await extra_field(store) == b"2"
    await store.acknowledge(PERSISTER_GROUP, [entry.entry_id for entry in delivered], multi)
    assert await extra_field(store) is None  # at zero the field goes
    assert await store.stream_backlog(PERSISTER_GROUP) == 0


async def test_a_count_left_over_from_a_removed_stream_is_cleared_by_the_next_call(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    """A stream deleted by hand leaves the count behind; an empty stream holds no events, so the next
    call clears it rather than refuse orders for a backlog that is not there."""
    await reserve(store, requests(orders, range(3)))
    await store.client.delete(store.keys.stream)
    results = await reserve(store, requests(orders, range(3, 4)), stream_length_max=2)
    assert [result.code for result in results] == [ReserveCode.ACCEPTED]
    assert await extra_field(store) is None
    assert await store.stream_length() == 1


async def test_the_persister_writes_an_event_per_order_and_a_replay_changes_nothing(
    stocked: None, orders: OrderService, store: RedisStore, database: str, settings: Settings
) -> None:
    before = await store.stream_length()
    results = await reserve(store, requests(orders, range(12)))
    [(entry_id, _)] = await entries_after(store, before)
    await drain(store, database, Persister(store, settings, name="p"))
    connection = await connect(database)
    try:
        milliseconds, sequence = (int(part) for part in entry_id.split("-"))
        rows = await connection.fetch(
            "SELECT stream_index, order_id, kind FROM events WHERE stream_ms = $1 AND stream_seq = $2"
            " ORDER BY stream_index",
            milliseconds, sequence,
        )  # fmt: skip
        assert [(row["stream_index"], row["order_id"], row["kind"]) for row in rows] == [
            (index, result.order.order_id, "order_created")  # type: ignore[union-attr]
            for index, result in enumerate(results)
        ]
        movements = await connection.fetch(
            "SELECT stream_index, position, order_id, kind, qty FROM stock_movements"
            " WHERE stream_ms = $1 AND stream_seq = $2 ORDER BY stream_index",
            milliseconds, sequence,
        )  # fmt: skip
        assert [tuple(row) for row in movements] == [
            (index, 0, result.order.order_id, "reserve", 1)  # type: ignore[union-attr]
            for index, result in enumerate(results)
        ]
        counts = (
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM stock_movements),"
            " (SELECT count(*) FROM orders)"
        )
        written = tuple(await connection.fetchrow(counts))
        raw = await store.client.xrange(store.keys.stream)
        events = [event for raw_id, fields in raw for event in decode_entries(0, raw_id.decode(), fields)]
        await write_events(connection, events)  # the whole stream again
        assert tuple(await connection.fetchrow(counts)) == written
    finally:
        await connection.close()
    assert await extra_field(store) is None
    assert await count_rows(database, "SELECT count(*) FROM orders") == 12
    await assert_ledger_matches(store, database, ["s1", "scarce"])


async def test_batches_stay_within_their_size_in_events(
    stocked: None, orders: OrderService, store: RedisStore, database: str, settings: Settings
) -> None:
    """Entries of 5 events and batches of at most 8: a read is split between entries, never within one,
    and the next read asks for fewer entries."""
    for first in range(0, 30, 5):
        await reserve(store, requests(orders, range(first, first + 5)))
    await store.ensure_group(PERSISTER_GROUP)
    total = await store.stream_backlog(PERSISTER_GROUP)
    persister = Persister(store, msgspec.structs.replace(settings, persister_batch_size_max=8), name="p")
    written = await drain(store, database, persister)
    assert sum(written) == total
    assert 0 < max(written) <= 8
    assert persister._read_count == 1  # 8 events at 5 an entry: one entry a read
    assert await count_rows(database, "SELECT count(*) FROM orders") == 30


async def test_an_undecodable_entry_of_several_orders_is_a_dead_letter_and_its_count_goes(
    stocked: None, store: RedisStore, database: str, settings: Settings
) -> None:
    await store.client.xadd(store.keys.stream, {b"k": b"orders_created", b"o": b"\x93\x01\x02\x03"})
    await store.client.hincrby(store.keys.metrics, STREAM_EXTRA_EVENTS, 2)  # as reserve.lua would
    await drain(store, database, Persister(store, settings, name="p"))
    assert await count_rows(database, "SELECT count(*) FROM dead_letters WHERE kind = 'orders_created'") == 1
    assert await extra_field(store) is None


@pytest.mark.parametrize(
    ("packed", "expected"),
    [
        (b"\x92\x01\x02", 1),
        (b"\xdc\x00\x14" + b"\x01" * 20, 19),
        (b"\xdd\x00\x01\x00\x00", 65535),
        (b"\x91\x01", 0),
        (b"", 0),
        (b"\xa3abc", 0),
    ],
    ids=["fixarray", "array16", "array32", "one", "empty", "not-an-array"],
)
def test_extra_events_reads_the_array_header(packed: bytes, expected: int) -> None:
    assert extra_events({b"k": b"orders_created", b"o": packed}) == expected
    assert extra_events({b"k": b"order_created", b"o": packed}) == 0


async def test_a_call_of_more_orders_than_an_entry_holds_appends_several_entries(
    catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    """At most 1000 orders an entry (lua/lib/stream_entries.lua; reserve.lua's backlog check relies
    on): 1001 accepted orders are an entry of 1000 and one of one."""
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 1001})
    before = await store.stream_length()
    results = await reserve(store, requests(orders, range(1001)))
    assert {result.code for result in results} == {ReserveCode.ACCEPTED}
    [(_, many), (_, one)] = await entries_after(store, before)
    assert (many[b"k"], extra_events(many), one[b"k"]) == (b"orders_created", 999, b"order_created")
    assert (
        [order.order_id for order in orders_decoder.decode(many[b"o"])]
        == [
            result.order.order_id  # type: ignore[union-attr]
            for result in results[:1000]
        ]
    )
    assert await extra_field(store) == b"999"


async def test_a_sweep_appends_one_orders_cancelled_entry_and_the_persister_releases_each_order(
    stocked: None, orders: OrderService, store: RedisStore, database: str, settings: Settings
) -> None:
    """Expiring 6 holds (one already cancelled by its customer, alone: an order_cancelled entry)
    appends one orders_cancelled entry of the other 5, with its time; Postgres gets an
    order_cancelled event and release movements per order, and the ledger still matches."""
    held = [result.order for result in await reserve(store, requests(orders, range(6)))]
    assert all(order is not None for order in held)
    [alone] = await store.cancel([held[0]], reason="customer", now_ms=NOW_MS + 1, due_only=False)  # type: ignore[list-item]
    assert alone.code is CancelCode.CANCELLED
    before = await store.stream_length()
    late_ms = held[1].expires_ms + 5  # type: ignore[union-attr]
    codes = await store.expire(held, now_ms=late_ms)  # type: ignore[arg-type]
    assert codes == [CancelCode.ALREADY_CANCELLED] + [CancelCode.CANCELLED] * 5
    [(entry_id, fields)] = await entries_after(store, before)
    assert (fields[b"k"], fields[b"t"], extra_events(fields)) == (b"orders_cancelled", str(late_ms).encode(), 4)
    stored = [await store.client.get(store.keys.order(order.order_id)) for order in held[1:]]  # type: ignore[union-attr]
    assert fields[b"o"] == b"\x95" + b"".join(stored)
    events = decode_entries(0, entry_id, fields)
    assert [(event.kind, event.stream_index, event.occurred_ms) for event in events] == [
        ("order_cancelled", index, late_ms) for index in range(5)
    ]
    assert await extra_field(store) == b"9"  # 5 from the reserve call's entry of 6, 4 from this one
    await drain(store, database, Persister(store, settings, name="p"))
    assert await extra_field(store) is None
    releases = "SELECT count(*) FROM stock_movements WHERE kind = 'release'"
    assert await count_rows(database, releases) == 6
    assert await count_rows(database, "SELECT count(*) FROM orders WHERE status = 'cancelled'") == 6
    await assert_ledger_matches(store, database, ["s1", "scarce"])
