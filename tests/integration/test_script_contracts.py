"""Script contracts: malformed calls are refused before the first write (a failed script keeps its writes)."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from intake.service import CatalogService, OrderService
from reservation.store import AttemptLimits, RedisStore, ResponseError, _pack_reserve_orders
from tests.support import add_sku, order_in, setup_region

NOW_MS = 1_900_000_000_000


@pytest.fixture
async def stocked(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", per_customer_limit=3, stock={"w1": 5})


async def reserve(store: RedisStore, requests: list[object]) -> object:
    return await store.reserve(requests, now_ms=NOW_MS, stream_length_max=10_000, idempotency_ttl_ms=60_000)  # type: ignore[arg-type]


async def assert_nothing_written(store: RedisStore, events_before: int) -> None:
    assert (await store.stock_levels("s1"))["w1"].available == 5
    assert await store.stream_length() == events_before
    assert await store.client.keys("*order:*") == []


async def test_repeated_sku_lines_are_refused_whole(stocked: None, orders: OrderService, store: RedisStore) -> None:
    good = orders.to_request(order_in("c1", {"s1": 1}), "k1", NOW_MS)
    repeated = replace(orders.to_request(order_in("c2", {"s1": 3}), "k2", NOW_MS), items=(("s1", 3), ("s1", 3)))
    events_before = await store.stream_length()
    with pytest.raises(ResponseError, match="repeated line"):
        await reserve(store, [good, repeated])
    await assert_nothing_written(store, events_before)


@pytest.mark.parametrize("qty", [0, -1, 1.5, float("inf")])
async def test_a_bad_quantity_in_a_later_order_leaves_the_earlier_ones_unwritten(
    stocked: None, orders: OrderService, store: RedisStore, qty: float
) -> None:
    good = orders.to_request(order_in("c1", {"s1": 1}), "k1", NOW_MS)
    bad = replace(orders.to_request(order_in("c2", {"s1": 1}), "k2", NOW_MS), items=(("s1", qty),))  # type: ignore[arg-type]
    events_before = await store.stream_length()
    with pytest.raises(ResponseError, match="malformed"):
        await reserve(store, [good, bad])
    await assert_nothing_written(store, events_before)


async def test_one_order_named_twice_in_a_cancel_batch_is_refused(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 2}), "k1")
    with pytest.raises(ResponseError, match="repeated order"):
        await store.cancel([order, order], reason="customer", now_ms=NOW_MS, due_only=False)
    level = (await store.stock_levels("s1"))["w1"]
    assert (level.available, level.reserved) == (3, 2)


@pytest.mark.parametrize("key", ["key-1", "k" * 300], ids=["short", "past-str8"])
async def test_an_accepted_orders_document_is_what_cmsgpack_packs_for_it(
    catalog: CatalogService, orders: OrderService, store: RedisStore, key: str
) -> None:
    """The caller packs the document's fields 1-7 and 11-21, the script 8-10: the bytes stored
    (order, idempotency record, stream entry) are those cmsgpack makes of the whole table, so
    every other script reads and re-packs them as before. A key longer than the API allows makes
    the caller's piece longer than 255 bytes (a msgpack str 16)."""
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 1, "w2": 5})
    await add_sku(catalog, "s2", price=300, stock={"w1": 5})
    request = orders.to_request(order_in("c1", {"s1": 3, "s2": 1}, allow_split=True), key, NOW_MS)
    [result] = await reserve(store, [request])  # type: ignore[misc]
    order = result.order
    assert order is not None
    assert (order.idempotency_key, order.fingerprint, order.version) == (key, request.fingerprint, 1)
    assert (order.created_ms, order.updated_ms, order.status) == (NOW_MS, NOW_MS, "pending_payment")
    stored = await store.client.get(store.keys.order(order.order_id))
    record = await store.client.get(store.keys.idempotency(key))
    entries = await store.client.xrange(store.keys.stream)
    [(_, fields)] = [entry for entry in entries if entry[1][b"k"] == b"order_created"]
    assert stored == record == fields[b"o"]
    repacked = await store.client.eval("return cmsgpack.pack(cmsgpack.unpack(ARGV[1]))", 0, stored)
    assert repacked == stored


async def test_a_document_of_many_pieces_is_what_cmsgpack_packs_for_it(
    catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    """The script packs the lines piece by piece without making tables: a line split over two
    warehouses and more than 15 pieces (a msgpack array 16 header) give cmsgpack's bytes too."""
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "split", price=700, stock={"w1": 2, "w2": 2})
    items = {"split": 3}
    for number in range(16):
        await add_sku(catalog, f"s{number}", price=100 + number, stock={"w2": 1})
        items[f"s{number}"] = 1
    request = orders.to_request(order_in("c1", items, allow_split=True), "many", NOW_MS)
    [result] = await reserve(store, [request])  # type: ignore[misc]
    order = result.order
    assert order is not None
    pieces = [(line.sku, line.warehouse_id, line.qty) for line in order.lines]
    assert len(pieces) == 18
    assert pieces[:2] == [("split", "w1", 2), ("split", "w2", 1)]
    assert order.total == 700 * 3 + sum(100 + number for number in range(16))
    stored = await store.client.get(store.keys.order(order.order_id))
    repacked = await store.client.eval("return cmsgpack.pack(cmsgpack.unpack(ARGV[1]))", 0, stored)
    assert repacked == stored


@pytest.mark.parametrize(
    "limits",
    [AttemptLimits(attempts_max=5), AttemptLimits(abnormal_attempts_max=5), AttemptLimits(client_attempts_max=5)],
    ids=["customer", "abnormal", "client"],
)
async def test_an_order_without_the_rate_key_a_limit_needs_is_refused(
    stocked: None, orders: OrderService, store: RedisStore, limits: AttemptLimits
) -> None:
    """The caller leaves a rate key out (index 0) only while the limits that use it are off."""
    request = orders.to_request(order_in("c1", {"s1": 1}), "k1", NOW_MS)
    keys, packed = _pack_reserve_orders(store.keys, [request], NOW_MS, AttemptLimits())  # no rate keys
    args = [NOW_MS, 10_000, 60_000, limits.attempts_max, limits.window_ms, limits.abnormal_attempts_max,
            limits.cooldown_ms, limits.client_attempts_max, packed]  # fmt: skip
    events_before = await store.stream_length()
    with pytest.raises(ResponseError, match="malformed order 1"):
        await store._call("reserve", keys, args)
    await assert_nothing_written(store, events_before)
    keys, packed = _pack_reserve_orders(store.keys, [request], NOW_MS, limits)
    [code, _] = await store._call("reserve", keys, [*args[:-1], packed])
    assert code == 1
