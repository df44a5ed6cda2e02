"""Shipments, logistics tracks, receipt and the lifecycle timers, against real Redis and Postgres.

Time is an explicit clock: automatic confirmation and the after-sales window are tested by
moving it, and the sweeper runs the same bounded scripts as in production.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from intake.lifecycle_service import LifecycleService
from intake.problems import ProblemError
from intake.schemas import PaymentIn, ShipIn, TrackEventIn
from intake.service import CatalogService, OrderService
from persistence.database import connect
from reservation.records import OrderRecord
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import DAY_MS, Settings
from rushgate.workers import Sweeper
from tests.conftest import ManualClock, Services, make_settings
from tests.processes import run_command
from tests.support import add_sku, assert_ledger_matches, assert_stock_invariants, order_in, setup_region

SKUS = ["s1", "s2"]


@pytest.fixture
async def stocked(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 5, "w2": 5})
    await add_sku(catalog, "s2", price=300, merchant_id="m2", stock={"w1": 5})


@pytest.fixture
def lifecycle(store: RedisStore, settings: Settings, clock: ManualClock) -> LifecycleService:
    return LifecycleService(store, settings, clock)


async def paid_order(
    orders: OrderService, items: dict[str, int], key: str, *, allow_split: bool = False
) -> OrderRecord:
    _, order = await orders.place(order_in("c1", items, allow_split=allow_split), key)
    return await orders.pay(order.order_id, PaymentIn(payment_id=f"p-{key}", amount=order.total, method="card"))


def ship_in(number: str = "TRK1") -> ShipIn:
    return ShipIn(carrier="DHL", tracking_number=number)


async def ship_all(lifecycle: LifecycleService, order: OrderRecord) -> OrderRecord:
    for shipment in order.shipments():
        order = await lifecycle.ship(order.order_id, shipment.shipment_id, ship_in())
    return order


async def levels(store: RedisStore, sku: str, warehouse_id: str) -> tuple[int, int, int, int]:
    level = (await store.stock_levels(sku))[warehouse_id]
    return (level.available, level.reserved, level.committed, level.on_hand)


async def test_each_shipment_ships_on_its_own_and_the_order_is_shipped_when_all_are(
    stocked: None, orders: OrderService, lifecycle: LifecycleService, store: RedisStore, clock: ManualClock
) -> None:
    order = await paid_order(orders, {"s1": 7, "s2": 2}, "k1", allow_split=True)
    first, second, third = order.shipments()  # s1 from w1 and w2 (merchant m1), s2 from w1 (merchant m2)
    assert (await levels(store, "s1", "w1")) == (0, 0, 5, 5)

    after_first = await lifecycle.ship(order.order_id, first.shipment_id, ship_in())
    assert after_first.status == "paid"
    assert (await levels(store, "s1", "w1")) == (0, 0, 0, 0)
    assert (await levels(store, "s1", "w2")) == (3, 0, 2, 5)
    await lifecycle.ship(order.order_id, second.shipment_id, ship_in())
    clock.advance(1000)
    shipped = await lifecycle.ship(order.order_id, third.shipment_id, ship_in("TRK3"))

    assert shipped.status == "shipped"
    assert shipped.shipped_ms == clock.now_ms
    assert shipped.confirm_due_ms == clock.now_ms + 7 * DAY_MS
    assert [state.shipment_id for state in shipped.shipment_states] == [s.shipment_id for s in order.shipments()]
    assert (await levels(store, "s1", "w2")) == (3, 0, 0, 3)
    assert (await levels(store, "s2", "w1")) == (3, 0, 0, 3)
    await assert_stock_invariants(store, SKUS)


async def test_shipping_a_shipment_again_changes_nothing(
    stocked: None, orders: OrderService, lifecycle: LifecycleService, store: RedisStore
) -> None:
    order = await paid_order(orders, {"s1": 2}, "k1")
    shipped = await ship_all(lifecycle, order)
    events = await store.stream_length()

    again = await lifecycle.ship(order.order_id, order.shipments()[0].shipment_id, ship_in("OTHER"))

    assert again == shipped
    assert await store.stream_length() == events
    assert (await levels(store, "s1", "w1")) == (3, 0, 0, 3)


async def test_an_unpaid_order_cannot_ship_and_the_problem_names_its_status(
    stocked: None, orders: OrderService, lifecycle: LifecycleService, store: RedisStore
) -> None:
    _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
    with pytest.raises(ProblemError) as caught:
        await lifecycle.ship(order.order_id, order.shipments()[0].shipment_id, ship_in())
    assert (caught.value.status, caught.value.kind) == (409, "invalid-transition")
    assert caught.value.extensions["current_status"] == "pending_payment"
    assert "pending_payment cannot ship" in str(caught.value.detail)
    assert (await levels(store, "s1", "w1")) == (4, 1, 0, 5)

    with pytest.raises(ProblemError) as unknown:
        await lifecycle.ship(order.order_id, f"{order.order_id}-9", ship_in())
    assert unknown.value.status == 404


async def test_once_a_shipment_left_the_order_can_no_longer_be_cancelled(
    stocked: None, orders: OrderService, lifecycle: LifecycleService, store: RedisStore
) -> None:
    order = await paid_order(orders, {"s1": 1, "s2": 1}, "k1")
    await lifecycle.ship(order.order_id, order.shipments()[0].shipment_id, ship_in())
    with pytest.raises(ProblemError) as partly:
        await orders.cancel(order.order_id, "merchant")
    assert (partly.value.status, partly.value.extensions["current_status"]) == (409, "paid")

    await lifecycle.ship(order.order_id, order.shipments()[1].shipment_id, ship_in())
    with pytest.raises(ProblemError) as shipped:
        await orders.cancel(order.order_id, "customer")
    assert shipped.value.extensions["current_status"] == "shipped"
    assert shipped.value.detail == "an order that is shipped cannot cancel"
    await assert_stock_invariants(store, SKUS)


def event(status: str, location: str, hour: int) -> TrackEventIn:
    return TrackEventIn(status=status, location=location, occurred_at=datetime(2030, 1, 1, hour, tzinfo=UTC))


async def test_logistics_events_form_the_track_of_their_shipment_and_an_exception_shows_on_the_order(
    stocked: None, orders: OrderService, lifecycle: LifecycleService
) -> None:
    order = await ship_all(lifecycle, await paid_order(orders, {"s1": 1, "s2": 1}, "k1"))
    first, second = (shipment.shipment_id for shipment in order.shipments())

    await lifecycle.track(order.order_id, first, event("in_transit", "Leipzig", 8))
    await lifecycle.track(order.order_id, second, event("in_transit", "Berlin", 9))
    tracked = await lifecycle.track(order.order_id, second, event("delayed", "Berlin", 10))
    replayed = await lifecycle.track(order.order_id, second, event("delayed", "Berlin", 10))

    assert replayed == tracked
    assert [(e.status, e.location) for e in tracked.shipped(first).track] == [("in_transit", "Leipzig")]  # type: ignore[union-attr]
    assert [e.status for e in tracked.shipped(second).track] == ["in_transit", "delayed"]  # type: ignore[union-attr]
    assert tracked.logistics_exceptions() == {second: "delayed"}
    delivered = await lifecycle.track(order.order_id, second, event("delivered", "Berlin", 12))
    assert delivered.logistics_exceptions() == {}


async def test_an_unshipped_shipment_takes_no_logistics_event(
    stocked: None, orders: OrderService, lifecycle: LifecycleService
) -> None:
    order = await paid_order(orders, {"s1": 1}, "k1")
    with pytest.raises(ProblemError) as caught:
        await lifecycle.track(order.order_id, order.shipments()[0].shipment_id, event("in_transit", "Berlin", 8))
    assert (caught.value.status, caught.value.extensions["current_status"]) == (409, "paid")


async def test_a_track_holds_at_most_the_configured_number_of_events(
    stocked: None, orders: OrderService, store: RedisStore, services: Services, clock: ManualClock
) -> None:
    small = LifecycleService(store, make_settings(services, RUSHGATE_TRACK_LENGTH_MAX="2"), clock)
    order = await ship_all(small, await paid_order(orders, {"s1": 1}, "k1"))
    shipment_id = order.shipments()[0].shipment_id
    await small.track(order.order_id, shipment_id, event("in_transit", "A", 1))
    await small.track(order.order_id, shipment_id, event("in_transit", "B", 2))
    with pytest.raises(ProblemError) as caught:
        await small.track(order.order_id, shipment_id, event("in_transit", "C", 3))
    assert (caught.value.status, caught.value.kind) == (409, "track-full")


async def test_the_customer_confirms_receipt_and_the_after_sales_window_opens(
    stocked: None, orders: OrderService, lifecycle: LifecycleService, clock: ManualClock
) -> None:
    order = await paid_order(orders, {"s1": 1}, "k1")
    with pytest.raises(ProblemError) as early:
        await lifecycle.confirm_receipt(order.order_id)
    assert early.value.extensions["current_status"] == "paid"
    await ship_all(lifecycle, order)
    clock.advance(DAY_MS)

    completed = await lifecycle.confirm_receipt(order.order_id)
    again = await lifecycle.confirm_receipt(order.order_id)

    assert (completed.status, completed.completion, completed.completed_ms) == ("completed", "customer", clock.now_ms)
    assert completed.after_sales_until_ms == clock.now_ms + 15 * DAY_MS
    assert again == completed


async def test_the_sweeper_confirms_receipt_after_the_delay_then_closes_the_after_sales_window(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    store: RedisStore,
    settings: Settings,
    clock: ManualClock,
) -> None:
    shipped = await ship_all(lifecycle, await paid_order(orders, {"s1": 1}, "k1"))
    confirmed_by_customer = await ship_all(lifecycle, await paid_order(orders, {"s1": 1}, "k2"))
    sweeper = Sweeper(store, settings, clock)

    clock.advance(7 * DAY_MS - 1)
    await lifecycle.confirm_receipt(confirmed_by_customer.order_id)
    assert await sweeper.run_once() == 0
    assert (await orders.get(shipped.order_id)).status == "shipped"
    clock.advance(1)
    assert await sweeper.run_once() == 1
    completed = await orders.get(shipped.order_id)
    assert (completed.status, completed.completion) == ("completed", "auto")
    assert completed.after_sales_until_ms == clock.now_ms + 15 * DAY_MS

    clock.advance(15 * DAY_MS - 1)
    assert await sweeper.run_once() == 1  # the customer-confirmed order's window, opened 1 ms earlier
    assert not (await orders.get(shipped.order_id)).after_sales_closed
    clock.advance(1)
    assert await sweeper.run_once() == 1
    closed = await orders.get(shipped.order_id)
    assert (closed.status, closed.after_sales_closed) == ("completed", True)
    assert await sweeper.run_once() == 0


async def test_the_lifecycle_reaches_postgres_and_the_ledger_still_sums_to_the_counters(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    store: RedisStore,
    settings: Settings,
    database: str,
    clock: ManualClock,
) -> None:
    order = await ship_all(lifecycle, await paid_order(orders, {"s1": 2, "s2": 1}, "k1"))
    await paid_order(orders, {"s1": 1}, "k2")  # paid, not shipped: committed stock stays
    shipment_id = order.shipments()[1].shipment_id
    await lifecycle.track(order.order_id, shipment_id, event("lost", "Hub", 8))
    clock.advance(7 * DAY_MS)
    await Sweeper(store, settings, clock).run_once()

    await drain(store, settings, database)

    await assert_ledger_matches(store, database, SKUS)
    connection = await connect(database)
    try:
        row = await connection.fetchrow("SELECT * FROM orders WHERE order_id = $1", order.order_id)
        shipments = await connection.fetch(
            "SELECT shipment_id, status, carrier FROM shipments WHERE order_id = $1 ORDER BY shipment_id",
            order.order_id,
        )
        track = await connection.fetch(
            "SELECT status, location FROM shipment_events WHERE shipment_id = $1", shipment_id
        )
        ship_movements = await connection.fetchval("SELECT count(*) FROM stock_movements WHERE kind = 'ship'")
    finally:
        await connection.close()
    current = await orders.get(order.order_id)
    assert (row["status"], row["completion"], row["version"]) == ("completed", "auto", current.version)
    assert row["logistics_exceptions"] == f'{{"{shipment_id}": "lost"}}'
    assert [(r["status"], r["carrier"]) for r in shipments] == [("shipped", "DHL"), ("shipped", "DHL")]
    assert [(r["status"], r["location"]) for r in track] == [("lost", "Hub")]
    assert ship_movements == 2


async def test_recover_rebuilds_shipments_tracks_and_both_timers_from_postgres(
    services: Services,
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    store: RedisStore,
    settings: Settings,
    database: str,
    clock: ManualClock,
) -> None:
    shipped = await ship_all(lifecycle, await paid_order(orders, {"s1": 1, "s2": 1}, "k1"))
    await lifecycle.track(shipped.order_id, shipped.shipments()[0].shipment_id, event("in_transit", "Hub", 8))
    completed = await ship_all(lifecycle, await paid_order(orders, {"s1": 1}, "k2"))
    await lifecycle.confirm_receipt(completed.order_id)
    partly = await paid_order(orders, {"s1": 1, "s2": 1}, "k3")
    await lifecycle.ship(partly.order_id, partly.shipments()[0].shipment_id, ship_in())
    order_ids = [shipped.order_id, completed.order_id, partly.order_id]
    before = await store.get_orders(order_ids)
    await drain(store, settings, database)

    await store.client.flushdb()
    result = run_command(services, "recover")
    assert result.returncode == 0, result.stdout + result.stderr
    await store.load_scripts()

    assert await store.get_orders(order_ids) == before
    clock.advance(15 * DAY_MS)
    assert await Sweeper(store, settings, clock).run_once() == 1  # shipped -> completed; the window closes
    assert (await orders.get(shipped.order_id)).status == "completed"
    assert (await orders.get(completed.order_id)).after_sales_closed
    second = await lifecycle.ship(partly.order_id, partly.shipments()[1].shipment_id, ship_in())
    assert second.status == "shipped"
    reconciled = run_command(services, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


async def test_a_shipment_shipped_from_several_places_at_once_leaves_the_stock_once(
    stocked: None, orders: OrderService, lifecycle: LifecycleService, store: RedisStore
) -> None:
    order = await paid_order(orders, {"s1": 3}, "k1")
    shipment_id = order.shipments()[0].shipment_id

    shipped = await asyncio.gather(*(lifecycle.ship(order.order_id, shipment_id, ship_in(f"T{n}")) for n in range(5)))

    assert {result.status for result in shipped} == {"shipped"}
    assert len({result.shipment_states[0].tracking_number for result in shipped}) == 1
    assert await levels(store, "s1", "w1") == (2, 0, 0, 2)
    await assert_stock_invariants(store, SKUS)
