"""After-sales cases against real Redis and Postgres: refund only, return and refund, exchange."""

from __future__ import annotations

import asyncio

import pytest

from intake.lifecycle_service import AfterSalesService, LifecycleService
from intake.problems import ProblemError
from intake.schemas import CaseIn, CaseItemIn, PaymentIn, ReturnIn, ReviewIn, ShipIn, StockSetIn
from intake.service import CatalogService, OrderService
from persistence.database import connect
from reservation.records import OrderRecord
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import DAY_MS, Settings
from rushgate.workers import Sweeper
from tests.conftest import ManualClock, Services
from tests.processes import run_command
from tests.support import add_sku, assert_ledger_matches, assert_stock_invariants, order_in, setup_region

SKUS = ["s1", "s2"]


@pytest.fixture
async def stocked(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=500, stock={"w1": 5, "w2": 5})
    await add_sku(catalog, "s2", price=300, stock={"w1": 5})


@pytest.fixture
def lifecycle(store: RedisStore, settings: Settings, clock: ManualClock) -> LifecycleService:
    return LifecycleService(store, settings, clock)


@pytest.fixture
def after_sales(store: RedisStore, clock: ManualClock) -> AfterSalesService:
    return AfterSalesService(store, clock)


async def paid_order(orders: OrderService, items: dict[str, int], key: str) -> OrderRecord:
    _, order = await orders.place(order_in("c1", items), key)
    return await orders.pay(order.order_id, PaymentIn(payment_id=f"p-{key}", amount=order.total, method="card"))


async def shipped_order(
    orders: OrderService, lifecycle: LifecycleService, items: dict[str, int], key: str
) -> OrderRecord:
    order = await paid_order(orders, items, key)
    for shipment in order.shipments():
        order = await lifecycle.ship(order.order_id, shipment.shipment_id, ShipIn(carrier="DHL", tracking_number="T1"))
    return order


def case_in(kind: str, items: dict[str, int]) -> CaseIn:
    return CaseIn(
        kind=kind,  # type: ignore[arg-type]
        items=[CaseItemIn(sku=sku, qty=qty) for sku, qty in items.items()],
        reason="not as described",
    )


async def levels(store: RedisStore, sku: str, warehouse_id: str) -> tuple[int, int, int, int]:
    level = (await store.stock_levels(sku))[warehouse_id]
    return (level.available, level.reserved, level.committed, level.on_hand)


async def test_a_refund_before_shipment_is_approved_at_once_and_releases_the_stock(
    stocked: None, orders: OrderService, after_sales: AfterSalesService, store: RedisStore
) -> None:
    order = await paid_order(orders, {"s1": 2, "s2": 1}, "k1")
    with pytest.raises(ProblemError) as partial:
        await after_sales.open(order.order_id, case_in("refund_only", {"s1": 1}))
    assert partial.value.status == 422
    with pytest.raises(ProblemError) as exchange:
        await after_sales.open(order.order_id, case_in("exchange", {"s1": 1}))
    assert (exchange.value.status, exchange.value.extensions["current_status"]) == (409, "paid")

    case, cancelled = await after_sales.open(order.order_id, case_in("refund_only", {"s1": 2, "s2": 1}))

    assert (case.status, case.amount, case.refund_status) == ("awaiting_refund", 1300, "pending")
    assert (cancelled.status, cancelled.cancel_reason, cancelled.refund_status) == (
        "cancelled",
        "customer",
        "refund_pending",
    )
    assert await levels(store, "s1", "w1") == (5, 0, 0, 5)
    assert await store.hash_get(store.keys.customer_counters("c1"), "s1") == "0"
    refunded = await after_sales.refund(case.case_id)
    assert (refunded.status, refunded.refund_status) == ("succeeded", "succeeded")
    closed = await orders.get(order.order_id)
    assert (closed.status, closed.refunded_amount, closed.refund_status) == ("closed", 1300, "refunded")
    with pytest.raises(ProblemError) as again:
        await after_sales.refund(case.case_id)
    assert (again.value.status, again.value.extensions["current_status"]) == (409, "succeeded")


async def test_return_and_refund_restocks_the_returned_units_and_closes_the_order(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 2, "s2": 1}, "k1")
    case, in_case = await after_sales.open(order.order_id, case_in("return_refund", {"s1": 1}))
    assert (case.status, case.amount) == ("awaiting_review", 500)
    assert (in_case.status, in_case.previous_status) == ("after_sales", "shipped")
    with pytest.raises(ProblemError) as early:
        await after_sales.receive_return(case.case_id, ReturnIn(warehouse_id="w2"))
    assert early.value.extensions["current_status"] == "awaiting_review"

    approved = await after_sales.review(case.case_id, "approve", ReviewIn(note="ok"))
    assert approved.status == "awaiting_return"
    received = await after_sales.receive_return(case.case_id, ReturnIn(warehouse_id="w2"))
    assert (received.status, received.return_warehouse_id, received.refund_id) == (
        "awaiting_refund", "w2", f"{case.case_id}-refund",
    )  # fmt: skip
    assert await levels(store, "s1", "w2") == (6, 0, 0, 6)  # restocked where it arrived
    await after_sales.refund(case.case_id)

    closed = await orders.get(order.order_id)
    assert (closed.status, closed.refunded_amount) == ("closed", 500)
    await assert_stock_invariants(store, SKUS)


async def test_a_damaged_return_is_not_restocked(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s2": 2}, "k1")
    case, _ = await after_sales.open(order.order_id, case_in("return_refund", {"s2": 2}))
    await after_sales.review(case.case_id, "approve", ReviewIn())
    with pytest.raises(ProblemError) as unknown:
        await after_sales.receive_return(case.case_id, ReturnIn(warehouse_id="nowhere"))
    assert unknown.value.status == 422

    received = await after_sales.receive_return(case.case_id, ReturnIn(warehouse_id="w1", damaged=True))

    assert (received.status, received.damaged) == ("awaiting_refund", True)
    assert await levels(store, "s2", "w1") == (3, 0, 0, 3)


async def test_a_rejected_case_returns_the_order_to_its_previous_status_and_its_timer(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
    settings: Settings,
    clock: ManualClock,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 1}, "k1")
    case, _ = await after_sales.open(order.order_id, case_in("refund_only", {"s1": 1}))
    clock.advance(7 * DAY_MS)
    sweeper = Sweeper(store, settings, clock)
    assert await sweeper.run_once() == 0  # due, but the case is open: not confirmed
    with pytest.raises(ProblemError) as confirm:
        await lifecycle.confirm_receipt(order.order_id)
    assert confirm.value.extensions["current_status"] == "after_sales"

    rejected = await after_sales.review(case.case_id, "reject", ReviewIn(note="used"))

    assert (rejected.status, rejected.note) == ("rejected", "used")
    assert (await orders.get(order.order_id)).status == "shipped"
    assert await sweeper.run_once() == 1
    assert (await orders.get(order.order_id)).status == "completed"


async def test_an_exchange_takes_its_replacement_like_an_order_and_more_cases_follow(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 2, "s2": 1}, "k1")
    await lifecycle.confirm_receipt(order.order_id)
    exchange, _ = await after_sales.open(order.order_id, case_in("exchange", {"s1": 1}))
    assert exchange.amount == 0
    await after_sales.review(exchange.case_id, "approve", ReviewIn())
    assert (await after_sales.get(exchange.case_id)).status == "awaiting_exchange_return"

    shipping = await after_sales.receive_return(exchange.case_id, ReturnIn(warehouse_id="w2"))
    assert shipping.status == "exchange_shipping"
    assert [(line.sku, line.warehouse_id, line.qty) for line in shipping.replacement] == [("s1", "w1", 1)]
    assert await levels(store, "s1", "w1") == (2, 0, 1, 3)  # the replacement: committed
    assert await levels(store, "s1", "w2") == (6, 0, 0, 6)  # the returned unit: restocked
    done = await after_sales.ship_exchange(exchange.case_id, ShipIn(carrier="UPS", tracking_number="X2"))
    assert (done.status, done.carrier) == ("succeeded", "UPS")
    assert await levels(store, "s1", "w1") == (2, 0, 0, 2)
    assert (await orders.get(order.order_id)).status == "completed"

    rejected, _ = await after_sales.open(order.order_id, case_in("return_refund", {"s1": 2}))
    await after_sales.review(rejected.case_id, "reject", ReviewIn())
    second, _ = await after_sales.open(order.order_id, case_in("refund_only", {"s2": 1}))
    with pytest.raises(ProblemError) as busy:
        await after_sales.open(order.order_id, case_in("refund_only", {"s1": 1}))
    assert busy.value.extensions["current_status"] == "after_sales"
    await after_sales.review(second.case_id, "approve", ReviewIn())
    await after_sales.refund(second.case_id)

    cases = await after_sales.of_order(order.order_id)
    assert [(case.kind, case.status) for case in cases] == [
        ("exchange", "succeeded"), ("return_refund", "rejected"), ("refund_only", "succeeded"),
    ]  # fmt: skip
    closed = await orders.get(order.order_id)
    assert (closed.status, closed.refunded_amount, closed.case_ids) == ("closed", 300, tuple(c.case_id for c in cases))
    await assert_stock_invariants(store, SKUS)


async def test_an_exchange_for_a_sold_out_sku_says_so_and_can_be_refunded_instead(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    catalog: CatalogService,
    store: RedisStore,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s2": 1}, "k1")
    await catalog.set_stock("s2", "w1", StockSetIn(on_hand=0))
    case, _ = await after_sales.open(order.order_id, case_in("exchange", {"s2": 1}))
    await after_sales.review(case.case_id, "approve", ReviewIn())

    sold_out = await after_sales.receive_return(case.case_id, ReturnIn(warehouse_id="w1", damaged=True))

    assert (sold_out.status, sold_out.sold_out_sku, sold_out.replacement) == ("exchange_sold_out", "s2", ())
    assert await levels(store, "s2", "w1") == (0, 0, 0, 0)
    refunded = await after_sales.refund(case.case_id)
    assert (refunded.status, refunded.amount) == ("succeeded", 300)
    assert (await orders.get(order.order_id)).status == "closed"


async def test_refunds_never_exceed_the_units_or_what_was_paid(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 2}, "k1")
    with pytest.raises(ProblemError) as too_many:
        await after_sales.open(order.order_id, case_in("return_refund", {"s1": 3}))
    assert too_many.value.status == 422
    with pytest.raises(ProblemError) as foreign:
        await after_sales.open(order.order_id, case_in("return_refund", {"s2": 1}))
    assert foreign.value.status == 422
    case, _ = await after_sales.open(order.order_id, case_in("refund_only", {"s1": 2}))
    assert case.amount == 1000 == order.paid_amount


async def test_no_case_opens_after_the_after_sales_window_closed(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
    settings: Settings,
    clock: ManualClock,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 1}, "k1")
    await lifecycle.confirm_receipt(order.order_id)
    clock.advance(15 * DAY_MS)
    with pytest.raises(ProblemError) as late:
        await after_sales.open(order.order_id, case_in("refund_only", {"s1": 1}))
    assert (late.value.status, late.value.kind) == (409, "after-sales-window-closed")
    assert await Sweeper(store, settings, clock).run_once() == 1
    assert (await orders.get(order.order_id)).after_sales_closed


async def test_cases_and_refunds_reach_postgres_and_the_ledger_sums_to_the_counters(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
    settings: Settings,
    database: str,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 2, "s2": 1}, "k1")
    exchange, _ = await after_sales.open(order.order_id, case_in("exchange", {"s1": 1}))
    await after_sales.review(exchange.case_id, "approve", ReviewIn())
    await after_sales.receive_return(exchange.case_id, ReturnIn(warehouse_id="w1"))
    await after_sales.ship_exchange(exchange.case_id, ShipIn(carrier="UPS", tracking_number="X2"))
    refund, _ = await after_sales.open(order.order_id, case_in("return_refund", {"s2": 1}))
    await after_sales.review(refund.case_id, "approve", ReviewIn())
    await after_sales.receive_return(refund.case_id, ReturnIn(warehouse_id="w1"))
    await after_sales.refund(refund.case_id)
    before_shipment = await paid_order(orders, {"s1": 1}, "k2")
    early, _ = await after_sales.open(before_shipment.order_id, case_in("refund_only", {"s1": 1}))

    await drain(store, settings, database)

    await assert_ledger_matches(store, database, SKUS)
    connection = await connect(database)
    try:
        cases = await connection.fetch("SELECT case_id, kind, status, amount FROM after_sales_cases ORDER BY case_id")
        refunds = await connection.fetch("SELECT refund_id, amount, status FROM refunds ORDER BY refund_id")
        orders_rows = await connection.fetch("SELECT order_id, status, refunded_amount FROM orders ORDER BY order_id")
        kinds = await connection.fetch("SELECT kind, sum(qty) AS n FROM stock_movements GROUP BY kind ORDER BY kind")
        feed = await connection.fetch(
            "SELECT payload->'case'->>'case_id' AS case_id, kind FROM events WHERE payload::jsonb ? 'case'"
            " ORDER BY stream_ms, stream_seq"
        )
    finally:
        await connection.close()
    assert {r["case_id"]: (r["kind"], r["status"], r["amount"]) for r in cases} == {
        exchange.case_id: ("exchange", "succeeded", 0),
        refund.case_id: ("return_refund", "succeeded", 300),
        early.case_id: ("refund_only", "awaiting_refund", 500),
    }
    assert {r["refund_id"]: (r["amount"], r["status"]) for r in refunds} == {
        f"{refund.case_id}-refund": (300, "succeeded"),
        f"{early.case_id}-refund": (500, "pending"),
    }
    assert {r["order_id"]: (r["status"], r["refunded_amount"]) for r in orders_rows} == {
        order.order_id: ("closed", 300),
        before_shipment.order_id: ("cancelled", 0),
    }
    assert {r["kind"]: r["n"] for r in kinds}["restock"] == 2
    steps: dict[str, list[str]] = {}
    for row in feed:
        steps.setdefault(row["case_id"], []).append(row["kind"])
    assert steps == {  # the integration feed: what the payment system and others act on
        exchange.case_id: ["after_sales_opened", "after_sales_approved", "return_received", "exchange_shipped"],
        refund.case_id: ["after_sales_opened", "after_sales_approved", "refund_requested", "refund_succeeded"],
        early.case_id: ["refund_requested"],
    }


async def test_recover_rebuilds_every_case_and_the_orders_that_name_them(
    services: Services,
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
    settings: Settings,
    database: str,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 2, "s2": 1}, "k1")
    exchange, _ = await after_sales.open(order.order_id, case_in("exchange", {"s1": 1}))
    await after_sales.review(exchange.case_id, "approve", ReviewIn(note="fine"))
    await after_sales.receive_return(exchange.case_id, ReturnIn(warehouse_id="w1"))
    await after_sales.ship_exchange(exchange.case_id, ShipIn(carrier="UPS", tracking_number="X2"))
    open_case, _ = await after_sales.open(order.order_id, case_in("return_refund", {"s2": 1}))
    await after_sales.review(open_case.case_id, "approve", ReviewIn())
    before_order, before_cases = await orders.get(order.order_id), await after_sales.of_order(order.order_id)
    await drain(store, settings, database)

    await store.client.flushdb()
    result = run_command(services, "recover")
    assert result.returncode == 0, result.stdout + result.stderr
    await store.load_scripts()

    assert await orders.get(order.order_id) == before_order
    assert await after_sales.of_order(order.order_id) == before_cases
    await after_sales.receive_return(open_case.case_id, ReturnIn(warehouse_id="w2"))
    await after_sales.refund(open_case.case_id)
    assert (await orders.get(order.order_id)).status == "closed"
    reconciled = run_command(services, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


async def test_of_two_cases_opened_at_once_exactly_one_wins(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
) -> None:
    order = await shipped_order(orders, lifecycle, {"s1": 2}, "k1")

    outcomes = await asyncio.gather(
        *(after_sales.open(order.order_id, case_in("return_refund", {"s1": 2})) for _ in range(4)),
        return_exceptions=True,
    )

    opened = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, ProblemError)]
    assert len(opened) == 1 and len(refused) == 3
    assert {problem.status for problem in refused} == {409}
    current = await orders.get(order.order_id)
    assert current.case_ids == (opened[0][0].case_id,)


async def test_a_case_ending_without_refund_puts_the_order_back_on_its_timer(
    stocked: None,
    orders: OrderService,
    lifecycle: LifecycleService,
    after_sales: AfterSalesService,
    store: RedisStore,
    settings: Settings,
    clock: ManualClock,
) -> None:
    sweeper = Sweeper(store, settings, clock)
    shipped = await shipped_order(orders, lifecycle, {"s1": 1}, "k1")  # exchanged while shipped
    completed = await shipped_order(orders, lifecycle, {"s1": 1}, "k2")  # case rejected while completed
    await lifecycle.confirm_receipt(completed.order_id)
    exchange, _ = await after_sales.open(shipped.order_id, case_in("exchange", {"s1": 1}))
    rejected, _ = await after_sales.open(completed.order_id, case_in("return_refund", {"s1": 1}))
    await after_sales.review(exchange.case_id, "approve", ReviewIn())
    await after_sales.receive_return(exchange.case_id, ReturnIn(warehouse_id="w1"))

    clock.advance(15 * DAY_MS)  # both deadlines pass while the cases are open: nothing happens to them
    assert await sweeper.run_once() == 0
    assert await store.due_members(store.keys.confirm_due, now_ms=clock.now_ms, count_max=10) == []
    assert await store.due_members(store.keys.window_due, now_ms=clock.now_ms, count_max=10) == []

    await after_sales.ship_exchange(exchange.case_id, ShipIn(carrier="UPS", tracking_number="X1"))
    await after_sales.review(rejected.case_id, "reject", ReviewIn())
    assert (await orders.get(shipped.order_id)).status == "shipped"
    assert (await orders.get(completed.order_id)).status == "completed"
    assert await sweeper.run_once() == 1  # one confirmed automatically, one window closed
    assert (await orders.get(shipped.order_id)).completion == "auto"
    assert (await orders.get(completed.order_id)).after_sales_closed
