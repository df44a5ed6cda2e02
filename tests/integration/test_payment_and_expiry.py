"""Payment, cancellation and hold expiry against a real Redis, with an explicit clock."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from intake.problems import ProblemError
from intake.schemas import BlockIn, PaymentIn, SkuIn
from intake.service import CatalogService, OrderService, from_ms
from reservation.outcomes import CancelCode
from reservation.records import OrderRecord
from reservation.store import RedisStore, ResponseError
from reservation.sweeper import sweep_once, sweep_until_clear
from rushgate.settings import Settings
from rushgate.workers import Sweeper
from tests.conftest import ManualClock
from tests.support import add_sku, assert_stock_invariants, order_in, setup_region


@pytest.fixture
async def one_unit(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 1})


def payment(payment_id: str, amount: int = 500) -> PaymentIn:
    return PaymentIn(payment_id=payment_id, amount=amount, method="card")


async def levels(store: RedisStore) -> tuple[int, int, int, int]:
    level = (await store.stock_levels("s1"))["w1"]
    return (level.available, level.reserved, level.committed, level.on_hand)


async def test_payment_turns_the_hold_into_committed_stock(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    paid = await orders.pay(order.order_id, payment("p1"))
    assert (paid.status, paid.payment_id, paid.paid_amount) == ("paid", "p1", 500)
    assert await levels(store) == (0, 0, 1, 1)
    assert await store.expiry_backlog() == 0


async def test_the_same_payment_twice_is_a_no_op(one_unit: None, orders: OrderService, store: RedisStore) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    first = await orders.pay(order.order_id, payment("p1"))
    events = await store.stream_length()
    second = await orders.pay(order.order_id, payment("p1"))
    assert second == first
    assert await store.stream_length() == events
    assert await levels(store) == (0, 0, 1, 1)


async def test_a_wrong_amount_or_a_second_payment_is_refused(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    with pytest.raises(ProblemError) as wrong_amount:
        await orders.pay(order.order_id, payment("p1", amount=499))
    assert wrong_amount.value.kind == "amount-mismatch"
    await orders.pay(order.order_id, payment("p1"))
    with pytest.raises(ProblemError) as second:
        await orders.pay(order.order_id, payment("p2"))
    assert second.value.kind == "already-paid"
    assert await levels(store) == (0, 0, 1, 1)


async def test_one_payment_id_never_pays_two_orders(catalog: CatalogService, orders: OrderService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 2})
    _, first = await orders.place(order_in("c1", {"s1": 1}), "k1")
    _, second = await orders.place(order_in("c2", {"s1": 1}), "k2")
    await orders.pay(first.order_id, payment("p1"))
    with pytest.raises(ProblemError) as reused:
        await orders.pay(second.order_id, payment("p1"))
    assert reused.value.kind == "payment-id-reused"
    assert (await orders.get(second.order_id)).status == "pending_payment"


async def test_an_unpaid_hold_is_released_by_the_sweeper_after_its_deadline_and_not_before(
    one_unit: None, orders: OrderService, store: RedisStore, settings: Settings, clock: ManualClock
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    deadline = order.expires_ms
    assert deadline == clock.now_ms + settings.flash_hold_ttl_ms
    assert await sweep_once(store, now_ms=deadline - 1, batch_size_max=100) == 0
    assert await levels(store) == (0, 1, 0, 1)
    assert await sweep_once(store, now_ms=deadline, batch_size_max=100) == 1
    expired = await orders.get(order.order_id)
    assert (expired.status, expired.cancel_reason) == ("cancelled", "payment_timeout")
    assert await levels(store) == (1, 0, 0, 1)
    assert await sweep_once(store, now_ms=deadline + 1000, batch_size_max=100) == 0


async def test_normal_orders_hold_for_the_normal_ttl(
    one_unit: None, orders: OrderService, settings: Settings, clock: ManualClock
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}, order_type="normal"), "k1")
    assert order.expires_ms - clock.now_ms == settings.normal_hold_ttl_ms


async def test_a_late_payment_takes_the_stock_again_when_it_is_still_there(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    await sweep_once(store, now_ms=order.expires_ms, batch_size_max=10)
    paid = await orders.pay(order.order_id, payment("p1"))
    assert (paid.status, paid.cancel_reason, paid.refund_status) == ("paid", "", "")
    assert await levels(store) == (0, 0, 1, 1)


async def test_a_late_payment_is_recorded_for_refund_when_the_stock_was_sold_again(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    await sweep_once(store, now_ms=order.expires_ms, batch_size_max=10)
    _, second_buyer = await orders.place(order_in("c2", {"s1": 1}), "k2")
    with pytest.raises(ProblemError) as late:
        await orders.pay(order.order_id, payment("p1"))
    assert late.value.kind == "refund-pending"
    refunded = await orders.get(order.order_id)
    assert (refunded.status, refunded.refund_status, refunded.refund_amount) == ("cancelled", "refund_pending", 500)
    assert (await orders.get(second_buyer.order_id)).status == "pending_payment"
    assert await levels(store) == (0, 1, 0, 1)
    with pytest.raises(ProblemError) as replayed:
        await orders.pay(order.order_id, payment("p1"))
    assert replayed.value.kind == "refund-pending"


async def test_cancelling_a_paid_order_releases_committed_stock_and_records_a_refund(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    await orders.pay(order.order_id, payment("p1"))
    cancelled = await orders.cancel(order.order_id, "merchant")
    assert (cancelled.status, cancelled.cancel_reason, cancelled.refund_status) == (
        "cancelled",
        "merchant",
        "refund_pending",
    )
    assert await levels(store) == (1, 0, 0, 1)


async def test_a_payment_racing_the_sweeper_either_pays_or_finds_the_order_expired_never_both(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    pay, sweep = await asyncio.gather(
        orders.pay(order.order_id, payment("p1")),
        sweep_once(store, now_ms=order.expires_ms, batch_size_max=10),
        return_exceptions=True,
    )
    final = await orders.get(order.order_id)
    assert final.status == "paid"  # stock was still there either way: paid in time or paid after expiry
    assert await levels(store) == (0, 0, 1, 1)
    assert sweep in (0, 1)
    assert not isinstance(pay, BaseException)


async def test_the_sweeper_releases_a_bounded_batch_per_run(
    catalog: CatalogService, orders: OrderService, store: RedisStore, clock: ManualClock
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", stock={"w1": 50})
    for number in range(25):
        await orders.place(order_in(f"c{number}", {"s1": 2}), f"k{number}")
    later = clock.now_ms + 10 * 86_400_000
    assert await sweep_once(store, now_ms=later, batch_size_max=10) == 10
    assert await store.expiry_backlog() == 15
    assert await sweep_until_clear(store, now_ms=later, batch_size_max=10) == 15
    level = (await assert_stock_invariants(store, ["s1"]))[("s1", "w1")]
    assert (level.available, level.reserved) == (50, 0)


async def test_only_the_sweeper_holding_the_lock_sweeps(
    one_unit: None, orders: OrderService, store: RedisStore, settings: Settings, clock: ManualClock
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    clock.advance(settings.flash_hold_ttl_ms)
    first, second = Sweeper(store, settings, clock), Sweeper(store, settings, clock)
    first.owner, second.owner = "sweeper-a", "sweeper-b"
    assert await first.run_once() == 1
    _, again = await orders.place(order_in("c2", {"s1": 1}), "k2")
    clock.advance(settings.flash_hold_ttl_ms)
    assert await second.run_once() is None
    assert (await orders.get(again.order_id)).status == "pending_payment"
    assert await first.run_once() == 1
    stop = asyncio.Event()
    stop.set()
    await first.run(stop)  # a clean stop hands the lock over
    assert await second.run_once() == 0
    assert (await orders.get(order.order_id)).cancel_reason == "payment_timeout"


@pytest.mark.parametrize("obstacle", ["safety-stock", "purchase-limit", "blocked", "sale-ended"])
async def test_a_late_payment_obeys_the_rules_a_new_reservation_would(
    catalog: CatalogService, orders: OrderService, store: RedisStore, clock: ManualClock, obstacle: str
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=500, per_customer_limit=1, stock={"w1": 3})
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    await sweep_once(store, now_ms=order.expires_ms, batch_size_max=10)
    clock.now_ms = order.expires_ms + 1
    if obstacle == "safety-stock":
        await add_sku(catalog, "s1", price=500, per_customer_limit=1, safety_stock=3)
    elif obstacle == "purchase-limit":
        await orders.place(order_in("c1", {"s1": 1}), "k2")  # the customer's one allowed unit, again
    elif obstacle == "blocked":
        await catalog.block("c1", BlockIn(reason="chargebacks"))
    else:
        sku = await catalog.get_sku("s1")
        ended = SkuIn(name=sku.name, merchant_id=sku.merchant_id, price=sku.price, currency=sku.currency,
                      per_customer_limit=1, sale_ends_at=from_ms(clock.now_ms))  # fmt: skip
        await catalog.put_sku("s1", ended)
    before = (await store.stock_levels("s1"))["w1"]
    with pytest.raises(ProblemError) as late:
        await orders.pay(order.order_id, payment("p1"))
    assert late.value.kind == "refund-pending"
    assert (await store.stock_levels("s1"))["w1"] == before


async def test_a_payment_id_replayed_with_another_amount_is_refused(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    await orders.pay(order.order_id, payment("p1"))
    with pytest.raises(ProblemError) as replayed:
        await orders.pay(order.order_id, payment("p1", amount=400))
    assert replayed.value.kind == "payment-id-reused"


async def test_expire_answers_only_codes_and_cancels_only_the_due_pending_orders(
    catalog: CatalogService, orders: OrderService, store: RedisStore, clock: ManualClock
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 10})
    _, due = await orders.place(order_in("c1", {"s1": 1}), "k1")
    _, paid = await orders.place(order_in("c2", {"s1": 1}), "k2")
    await orders.pay(paid.order_id, payment("p1"))
    _, cancelled = await orders.place(order_in("c3", {"s1": 1}), "k3")
    await orders.cancel(cancelled.order_id, "customer")
    clock.advance(1000)
    _, later = await orders.place(order_in("c4", {"s1": 1}), "k4")  # its deadline is a second after the others'

    codes = await store.expire([due, paid, cancelled, later], now_ms=due.expires_ms)

    assert codes == [CancelCode.CANCELLED, CancelCode.NOT_DUE, CancelCode.ALREADY_CANCELLED, CancelCode.NOT_DUE]
    expired = await orders.get(due.order_id)
    assert (expired.status, expired.cancel_reason) == ("cancelled", "payment_timeout")
    assert [(await orders.get(order.order_id)).status for order in (paid, cancelled, later)] == [
        "paid",
        "cancelled",
        "pending_payment",
    ]
    assert await levels(store) == (8, 1, 1, 10)


def cancel_keys(store: RedisStore, order: OrderRecord) -> list[str]:
    """KEYS of a cancel.lua call for one order of SKU s1, in the order the store's key table gives them."""
    return [store.keys.stream, store.keys.expiry, store.keys.sold_out, store.keys.metrics,
            store.keys.order(order.order_id), store.keys.customer_counters(order.customer_id),
            store.keys.stock("s1")]  # fmt: skip


async def assert_untouched(orders: OrderService, store: RedisStore, order_id: str) -> None:
    """The one-unit order is still held: nothing was written."""
    assert (await orders.get(order_id)).status == "pending_payment"
    assert await levels(store) == (0, 1, 0, 1)


async def test_cancel_refuses_an_unknown_reply_mode_before_any_write(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    keys = cancel_keys(store, order)
    packed = msgspec.msgpack.encode([4, 5, order.order_id, "payment_timeout", True, 1, "s1", 6])
    with pytest.raises(ResponseError, match="malformed header"):
        await store._call("cancel", keys, [order.expires_ms, "everything", packed])
    await assert_untouched(orders, store, order.order_id)


@pytest.mark.parametrize(
    ("orders_argument", "message"),
    [
        (b"\xc1", "msgpack array of orders"),  # not msgpack
        ([5, 6, "ORDER", "payment_timeout", True, 1, "s1", 8], "malformed sku in order 1"),  # no KEYS[8]
        ([4, 6, "ORDER", "payment_timeout", True, 1, "s1", 7], "malformed or repeated order 1"),  # a fixed key
        ([5, 6, "ORDER", "payment_timeout", True, 2, "s1", 7], "malformed or repeated order 1"),  # short
        ([5, 6, "ORDER", "payment_timeout", True, 1, "s1", 7] * 2, "malformed or repeated order 2"),
        ([5, 6, "ORDER", "payment_timeout", "1", 1, "s1", 7], "malformed or repeated order 1"),  # due_only
        ([5, 6, "ORDER", "payment_timeout", 1, 1, "s1", 7], "malformed or repeated order 1"),  # due_only
        ([5, 6, "ORDER", "payment_timeout", True, 0.5, "s1", 7], "malformed or repeated order 1"),
        ([5, 6, "ORDER", "fraud", True, 1, "s1", 7], "malformed or repeated order 1"),  # unknown reason
        (
            [5, 6, "ORDER", "customer", False, 1, "s1", 7, 5, 6, "OTHER", "customer", False, 1, "s1", 7],
            "malformed or repeated order 2",
        ),  # one order key under two ids: it would be released twice
        ([5, 6, "OTHER", "customer", False, 1, "s1", 7], "holds another order"),
    ],
)
async def test_cancel_refuses_malformed_orders_before_any_write(
    one_unit: None, orders: OrderService, store: RedisStore, orders_argument: bytes | list[object], message: str
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    keys = cancel_keys(store, order)
    if isinstance(orders_argument, list):
        names = {"ORDER": order.order_id, "OTHER": order.order_id + "x"}
        orders_argument = msgspec.msgpack.encode(
            [names.get(value, value) if isinstance(value, str) else value for value in orders_argument]
        )
    with pytest.raises(ResponseError, match=message):
        await store._call("cancel", keys, [order.expires_ms, "codes", orders_argument])
    await assert_untouched(orders, store, order.order_id)


async def test_a_payment_without_a_payment_id_is_refused_before_any_write(
    one_unit: None, orders: OrderService, store: RedisStore
) -> None:
    """The persister tells a paid order's cancellation from a pending one's by its payment id."""
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    with pytest.raises(ResponseError, match="malformed arguments"):
        await store.pay(order, payment_id="", amount=order.total, method="card", now_ms=order.created_ms)
    await assert_untouched(orders, store, order.order_id)
