"""Order intake rules against a real Redis, through the service layer."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from intake.problems import ProblemError
from intake.service import CatalogService, OrderService
from reservation.outcomes import ReserveCode
from reservation.store import RedisStore
from tests.support import add_sku, assert_stock_invariants, order_in, setup_region


@pytest.fixture
async def region(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])


async def problem_of(orders: OrderService, *arguments: object) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        await orders.place(*arguments)  # type: ignore[arg-type]
    return caught.value


async def test_whole_line_goes_to_the_first_warehouse_in_dispatch_order_that_can_hold_it(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "s1", stock={"w1": 2, "w2": 5})
    created, order = await orders.place(order_in("c1", {"s1": 3}), "k1")
    assert created
    assert [(line.warehouse_id, line.qty) for line in order.lines] == [("w2", 3)]
    levels = await store.stock_levels("s1")
    assert (levels["w1"].available, levels["w2"].available, levels["w2"].reserved) == (2, 2, 3)


async def test_a_line_is_split_across_warehouses_only_when_the_order_allows_it(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "s1", stock={"w1": 2, "w2": 2})
    refused = await problem_of(orders, order_in("c1", {"s1": 3}), "k1")
    assert (refused.status, refused.kind, refused.extensions["sku"]) == (409, "sold-out", "s1")
    _, order = await orders.place(order_in("c1", {"s1": 3}, allow_split=True), "k2")
    assert [(line.warehouse_id, line.qty) for line in order.lines] == [("w1", 2), ("w2", 1)]
    assert [shipment.warehouse_id for shipment in order.shipments()] == ["w1", "w2"]
    await assert_stock_invariants(store, ["s1"])


async def test_an_order_is_held_all_or_nothing_and_the_refusal_names_the_short_sku(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "plenty", stock={"w1": 100})
    await add_sku(catalog, "scarce", stock={"w1": 1})
    refused = await problem_of(orders, order_in("c1", {"plenty": 5, "scarce": 2}), "k1")
    assert refused.extensions["sku"] == "scarce"
    assert (await store.stock_levels("plenty"))["w1"].available == 100
    assert (await store.stock_levels("scarce"))["w1"].available == 1


async def test_shipments_are_grouped_per_merchant_and_warehouse_with_a_price_snapshot(
    region: None, catalog: CatalogService, orders: OrderService
) -> None:
    await add_sku(catalog, "a", price=250, merchant_id="m1", stock={"w1": 5})
    await add_sku(catalog, "b", price=100, merchant_id="m1", stock={"w1": 5})
    await add_sku(catalog, "c", price=999, merchant_id="m2", stock={"w1": 5})
    _, order = await orders.place(order_in("c1", {"a": 2, "b": 1, "c": 1}), "k1")
    assert order.total == 2 * 250 + 100 + 999
    shipments = order.shipments()
    assert [(s.merchant_id, s.items) for s in shipments] == [("m1", (("a", 2), ("b", 1))), ("m2", (("c", 1),))]
    await add_sku(catalog, "a", price=1, merchant_id="m1")
    assert (await orders.get(order.order_id)).total == order.total


async def test_the_per_customer_limit_counts_live_and_paid_orders_and_not_cancelled_ones(
    region: None, catalog: CatalogService, orders: OrderService
) -> None:
    await add_sku(catalog, "hot", per_customer_limit=3, stock={"w1": 100})
    _, first = await orders.place(order_in("c1", {"hot": 2}), "k1")
    refused = await problem_of(orders, order_in("c1", {"hot": 2}), "k2")
    assert (refused.kind, refused.extensions["sku"]) == ("purchase-limit", "hot")
    _, other_customer = await orders.place(order_in("c2", {"hot": 3}), "k3")
    assert other_customer.status == "pending_payment"
    await orders.cancel(first.order_id, "customer")
    _, again = await orders.place(order_in("c1", {"hot": 3}), "k4")
    assert again.status == "pending_payment"


async def test_safety_stock_is_never_sold(region: None, catalog: CatalogService, orders: OrderService) -> None:
    await add_sku(catalog, "s1", safety_stock=2, stock={"w1": 3})
    await orders.place(order_in("c1", {"s1": 1}), "k1")
    refused = await problem_of(orders, order_in("c2", {"s1": 1}), "k2")
    assert refused.kind == "sold-out"


async def test_replaying_a_key_returns_the_original_order_and_changes_nothing(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "s1", stock={"w1": 10})
    created, order = await orders.place(order_in("c1", {"s1": 2}), "key-1")
    events_before = await store.stream_length()
    replayed_created, replayed = await orders.place(order_in("c1", {"s1": 2}), "key-1")
    assert (created, replayed_created) == (True, False)
    assert replayed == order
    assert (await store.stock_levels("s1"))["w1"].reserved == 2
    assert await store.stream_length() == events_before


async def test_a_key_reused_with_another_body_is_refused_and_changes_nothing(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "s1", stock={"w1": 10})
    _, order = await orders.place(order_in("c1", {"s1": 2}), "key-1")
    refused = await problem_of(orders, order_in("c1", {"s1": 3}), "key-1")
    assert (refused.status, refused.kind, refused.extensions["order_id"]) == (
        422,
        "idempotency-key-reused",
        order.order_id,
    )
    assert (await store.stock_levels("s1"))["w1"].reserved == 2


async def test_one_batch_call_decides_each_order_independently(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "s1", stock={"w1": 3})
    now_ms = 1_900_000_000_000
    requests = [orders.to_request(order_in(f"c{n}", {"s1": 1}), f"batch-{n}", now_ms) for n in range(5)]
    retried = replace(requests[0], order_id="another-id")  # a gateway retry inside the same batch
    blocked_region = replace(requests[1], idempotency_key="batch-x", region="nowhere")
    batch = [requests[0], retried, blocked_region, *requests[1:]]
    results = await store.reserve(batch, now_ms=now_ms, stream_length_max=10_000, idempotency_ttl_ms=60_000)
    codes = [result.code for result in results]
    assert codes == [
        ReserveCode.ACCEPTED,
        ReserveCode.REPLAYED,
        ReserveCode.UNKNOWN_REGION,
        ReserveCode.ACCEPTED,
        ReserveCode.ACCEPTED,
        ReserveCode.SOLD_OUT,
        ReserveCode.SOLD_OUT,
    ]
    assert results[1].order == results[0].order
    assert [result.order.customer_id for result in results if result.code is ReserveCode.ACCEPTED] == [
        "c0",
        "c1",
        "c2",
    ]
    levels = await assert_stock_invariants(store, ["s1"])
    assert levels[("s1", "w1")].reserved == 3


async def test_an_earlier_builds_idempotency_record_is_converted_and_still_replays(
    region: None, catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await add_sku(catalog, "s1", stock={"w1": 10})
    _, order = await orders.place(order_in("c1", {"s1": 2}), "old-key")
    new_key = store.keys.idempotency("old-key")
    document = await store.client.get(new_key)
    await store.client.delete(new_key, f"{store.keys.tag}:layout:idem2")
    legacy_key = f"{store.keys.tag}:idem:old-key"  # how builds before idem2 kept it: a hash
    await store.client.hset(legacy_key, mapping={"order_id": order.order_id, "fingerprint": "f", "document": document})
    await store.client.pexpire(legacy_key, 50_000)

    assert await store.convert_legacy_idempotency_records() == 1
    assert not await store.client.exists(legacy_key)
    assert 0 < await store.client.pttl(new_key) <= 50_000
    created, replayed = await orders.place(order_in("c1", {"s1": 2}), "old-key")
    assert (created, replayed) == (False, order)
    assert (await store.stock_levels("s1"))["w1"].reserved == 2
    assert await store.convert_legacy_idempotency_records() == 0  # the finished scan is remembered
