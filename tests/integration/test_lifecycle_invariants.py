"""DESIGN.md §3, extended with shipped and returned units, after Hypothesis-generated lifecycles.

Orders are placed, paid, shipped shipment by shipment, tracked, confirmed (by the customer or
the sweeper on an explicit clock), cancelled, and taken through after-sales cases of every kind,
among stock adjustments. After every step, against the real Redis: no counter is negative and the
four add up; reserved equals the lines of pending orders; committed equals the unshipped
shipments of paid orders plus the replacements of exchanges not shipped yet; no order was
refunded above what it paid; every status change is one the pure state machine allows for that
step. At the end the persisted ledger sums to the Redis counters and every order and case row in
Postgres matches its Redis document.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from intake.lifecycle_service import AfterSalesService, LifecycleService
from intake.problems import ProblemError
from intake.schemas import AdjustmentIn, CaseIn, CaseItemIn, PaymentIn, ReturnIn, ReviewIn, ShipIn, TrackEventIn
from intake.service import CatalogService, OrderService
from orders.states import CancelReason, OrderEvent, OrderStatus, next_status
from persistence.database import connect
from reservation.records import CaseRecord, OrderRecord
from reservation.store import RedisStore
from reservation.store import connect as connect_redis
from rushgate.reconcile import drain
from rushgate.settings import DAY_MS
from rushgate.workers import Sweeper
from tests.conftest import TABLES, ManualClock, Services, make_settings
from tests.support import add_sku, assert_ledger_matches, assert_stock_invariants, order_in, setup_region

SKUS = ("s1", "s2")
GROUP_SIZE = 6
WAREHOUSES = ("w1", "w2")


@dataclass(frozen=True)
class Place:
    order: int  # the story it starts
    customer: int
    items: tuple[tuple[str, int], ...]
    pay: bool


@dataclass(frozen=True)
class Pay:
    order: int


@dataclass(frozen=True)
class Ship:
    order: int
    shipment: int


@dataclass(frozen=True)
class Track:
    order: int
    status: str


@dataclass(frozen=True)
class Confirm:
    order: int


@dataclass(frozen=True)
class Cancel:
    order: int
    reason: str


@dataclass(frozen=True)
class RefundOrder:
    order: int


@dataclass(frozen=True)
class Open:
    order: int
    kind: str
    whole: bool


@dataclass(frozen=True)
class Review:
    order: int  # the story's latest case
    approve: bool


@dataclass(frozen=True)
class Return:
    order: int  # the story's latest case
    warehouse: str
    damaged: bool


@dataclass(frozen=True)
class Refund:
    order: int  # the story's latest case, else the order's own refund


@dataclass(frozen=True)
class ShipExchange:
    order: int  # the story's latest case


@dataclass(frozen=True)
class Advance:
    days: int


@dataclass(frozen=True)
class Adjust:
    sku: str
    warehouse: str
    delta: int


STORIES_MAX = 5
story_ids = st.integers(0, STORIES_MAX - 1)
items = st.dictionaries(st.sampled_from(SKUS), st.integers(1, 2), min_size=1, max_size=2).map(
    lambda d: tuple(d.items())
)
kinds = st.sampled_from(["refund_only", "return_refund", "exchange"])


@st.composite
def story(draw: st.DrawFn, number: int) -> list[object]:
    """One order's life, cut short at a random point: most steps then act on something that exists."""
    variant = draw(st.sampled_from(["lifecycle", "lifecycle", "unpaid", "merchant-cancel", "refund-before-shipment"]))
    steps: list[object] = [Place(number, draw(st.integers(0, 2)), draw(items), variant != "unpaid")]
    if variant == "unpaid":
        steps += [Advance(1), Pay(number)]
    elif variant == "merchant-cancel":
        steps += [Ship(number, 1), Cancel(number, "merchant"), RefundOrder(number)]
    elif variant == "refund-before-shipment":
        steps += [Open(number, "refund_only", True), Refund(number)]
    else:
        kind, second_kind = draw(kinds), draw(kinds)
        steps += [
            Ship(number, 0),
            Ship(number, 1),
            Ship(number, 2),
            Track(number, draw(st.sampled_from(["lost", "delivered"]))),
        ]
        if draw(st.booleans()):
            steps.append(Confirm(number))
        steps += [
            Open(number, kind, draw(st.booleans())),
            Review(number, draw(st.booleans())),
            Return(number, draw(st.sampled_from(WAREHOUSES)), draw(st.booleans())),
            ShipExchange(number) if kind == "exchange" else Refund(number),
            Refund(number),  # an exchange that found its SKU sold out is refunded instead
            Open(number, second_kind, draw(st.booleans())),
            Review(number, True),
            Return(number, draw(st.sampled_from(WAREHOUSES)), draw(st.booleans())),
            ShipExchange(number) if second_kind == "exchange" else Refund(number),
        ]
    return steps[: draw(st.one_of(st.just(len(steps)), st.integers(1, len(steps))))]


noise = st.one_of(
    st.builds(Advance, st.sampled_from([1, 7, 15])),
    st.builds(Adjust, st.sampled_from(SKUS), st.sampled_from(WAREHOUSES), st.integers(-3, 3).filter(bool)),
    st.builds(Cancel, story_ids, st.sampled_from(["customer", "merchant"])),
    st.builds(Confirm, story_ids),
    st.builds(Open, story_ids, kinds, st.booleans()),
    st.builds(Review, story_ids, st.booleans()),
    st.builds(Refund, story_ids),
)


@st.composite
def scenarios(draw: st.DrawFn) -> list[object]:
    """Several stories interleaved in a random order, with random other steps among them."""
    pending = [draw(story(number)) for number in range(draw(st.integers(1, STORIES_MAX)))]
    pending.append(draw(st.lists(noise, max_size=8)))
    scenario: list[object] = []
    while any(pending):
        queue = draw(st.sampled_from([queue for queue in pending if queue]))
        scenario.append(queue.pop(0))
    return scenario


async def check_against_documents(
    store: RedisStore, order_ids: list[str], case_ids: list[str]
) -> tuple[dict[str, OrderRecord], dict[str, CaseRecord]]:
    levels = await assert_stock_invariants(store, SKUS)
    orders = {order.order_id: order for order in await store.get_orders(order_ids) if order is not None}
    cases = {case.case_id: case for case in await store.get_cases(case_ids) if case is not None}
    reserved: Counter[tuple[str, str]] = Counter()
    committed: Counter[tuple[str, str]] = Counter()
    for order in orders.values():
        shipped = {state.shipment_id for state in order.shipment_states}
        for shipment in order.shipments():
            for sku, qty in shipment.items:
                key = (sku, shipment.warehouse_id)
                if order.status == "pending_payment":
                    reserved[key] += qty
                elif order.status == "paid" and shipment.shipment_id not in shipped:
                    committed[key] += qty
        assert order.refunded_amount <= order.paid_amount, order
        refunding = sum(
            case.amount for case in cases.values() if case.order_id == order.order_id and case.status != "rejected"
        )
        assert refunding <= order.paid_amount, order
    for case in cases.values():
        if case.status == "exchange_shipping":
            for line in case.replacement:
                committed[(line.sku, line.warehouse_id)] += line.qty
    for key, level in levels.items():
        assert (level.reserved, level.committed) == (reserved[key], committed[key]), (key, level)
    return orders, cases


def event_of(step: object, before: str) -> OrderEvent:
    if isinstance(step, Place | Pay):
        return OrderEvent.PAY
    if isinstance(step, Ship):
        return OrderEvent.SHIP
    if isinstance(step, Confirm):
        return OrderEvent.CONFIRM_RECEIPT
    if isinstance(step, Advance):
        return OrderEvent.EXPIRE if before == "pending_payment" else OrderEvent.CONFIRM_RECEIPT
    if isinstance(step, Open):
        return OrderEvent.CANCEL if before == "paid" else OrderEvent.OPEN_AFTER_SALES
    if isinstance(step, Review):
        return OrderEvent.REJECT_AFTER_SALES
    if isinstance(step, ShipExchange):
        return OrderEvent.FINISH_EXCHANGE
    if isinstance(step, Refund | RefundOrder):
        return OrderEvent.REFUND
    return OrderEvent.CANCEL


async def run_lifecycles(services: Services, scenario: list[object], *, concurrent: bool = False) -> None:
    settings = make_settings(services)
    client = connect_redis(services.redis_url, pool_size_max=8, timeout_ms=5000)
    await client.flushdb()
    connection = await connect(services.database_url)
    await connection.execute(f"TRUNCATE {TABLES}")
    await connection.close()
    store = RedisStore(client)
    await store.load_scripts()
    clock = ManualClock()
    catalog, orders = CatalogService(store, clock), OrderService(store, settings, clock)
    lifecycle, after_sales = LifecycleService(store, settings, clock), AfterSalesService(store, clock)
    sweeper = Sweeper(store, settings, clock)
    try:
        await setup_region(catalog, "eu", WAREHOUSES)
        await add_sku(catalog, "s1", price=300, stock={"w1": 5, "w2": 3})
        await add_sku(catalog, "s2", price=500, merchant_id="m2", safety_stock=1, stock={"w1": 6})
        order_ids: list[str] = []
        case_ids: list[str] = []
        orders_of_story: dict[int, str] = {}
        cases_of_story: dict[int, list[str]] = {}
        seen: dict[str, OrderRecord] = {}

        async def apply(number: int, step: object) -> None:
            order_id = None if isinstance(step, Place) else orders_of_story.get(getattr(step, "order", -1))
            case_id = (cases_of_story.get(getattr(step, "order", -1)) or [None])[-1]
            try:
                if isinstance(step, Place):
                    _, order = await orders.place(order_in(f"c{step.customer}", dict(step.items)), f"k{number}")
                    order_ids.append(order.order_id)
                    orders_of_story[step.order] = order.order_id
                    if step.pay:
                        await orders.pay(
                            order.order_id, PaymentIn(payment_id=f"p{number}", amount=order.total, method="card")
                        )
                elif isinstance(step, Pay) and order_id:
                    total = (await orders.get(order_id)).total
                    await orders.pay(order_id, PaymentIn(payment_id=f"p{number}", amount=total, method="card"))
                elif isinstance(step, Ship) and order_id:
                    shipments = (await orders.get(order_id)).shipments()
                    shipment_id = shipments[step.shipment % len(shipments)].shipment_id
                    await lifecycle.ship(order_id, shipment_id, ShipIn(carrier="DHL", tracking_number=f"T{number}"))
                elif isinstance(step, Track) and order_id:
                    shipment_id = (await orders.get(order_id)).shipments()[0].shipment_id
                    moment = datetime(2030, 1, 1, tzinfo=UTC)
                    await lifecycle.track(
                        order_id, shipment_id, TrackEventIn(status=step.status, location="Hub", occurred_at=moment)
                    )
                elif isinstance(step, Confirm) and order_id:
                    await lifecycle.confirm_receipt(order_id)
                elif isinstance(step, Cancel) and order_id:
                    await orders.cancel(order_id, step.reason)
                elif isinstance(step, RefundOrder) and order_id:
                    await lifecycle.refund_cancelled(order_id)
                elif isinstance(step, Open) and order_id:
                    lines = (await orders.get(order_id)).quantities()
                    items = [CaseItemIn(sku=sku, qty=qty if step.whole else 1) for sku, (qty, _) in lines.items()]
                    case, _ = await after_sales.open(order_id, CaseIn(kind=step.kind, items=items, reason="r"))  # type: ignore[arg-type]
                    case_ids.append(case.case_id)
                    cases_of_story.setdefault(step.order, []).append(case.case_id)
                elif isinstance(step, Review) and case_id:
                    await after_sales.review(case_id, "approve" if step.approve else "reject", ReviewIn())
                elif isinstance(step, Return) and case_id:
                    await after_sales.receive_return(
                        case_id, ReturnIn(warehouse_id=step.warehouse, damaged=step.damaged)
                    )
                elif isinstance(step, Refund) and case_id:
                    await after_sales.refund(case_id)
                elif isinstance(step, Refund) and order_id:
                    await lifecycle.refund_cancelled(order_id)
                elif isinstance(step, ShipExchange) and case_id:
                    await after_sales.ship_exchange(case_id, ShipIn(carrier="UPS", tracking_number=f"X{number}"))
                elif isinstance(step, Advance):
                    clock.advance(step.days * DAY_MS)
                    while await sweeper.run_once() == settings.sweeper_batch_size_max:
                        pass
                elif isinstance(step, Adjust):
                    await catalog.adjust_stock(step.sku, step.warehouse, AdjustmentIn(delta=step.delta, reason="test"))
            except ProblemError as refusal:
                assert refusal.status in (404, 409, 422), (refusal.kind, refusal.detail)

        if concurrent:
            # Groups of steps run at once; between groups the counters are checked against the documents
            # (which transition each step caused is not known when steps race).
            for first in range(0, len(scenario), GROUP_SIZE):
                group = list(enumerate(scenario))[first : first + GROUP_SIZE]
                await asyncio.gather(*(apply(number, step) for number, step in group))
                await check_against_documents(store, order_ids, case_ids)
        for number, step in enumerate([] if concurrent else scenario):
            await apply(number, step)
            documents, _ = await check_against_documents(store, order_ids, case_ids)
            for changed_id, document in documents.items():
                before = seen.get(changed_id)
                if before is not None and before.status != document.status:
                    reason = CancelReason(before.cancel_reason) if before.cancel_reason else None
                    previous = OrderStatus(before.previous_status) if before.previous_status else None
                    expected = next_status(
                        OrderStatus(before.status), event_of(step, before.status), reason, previous=previous
                    )
                    assert expected == OrderStatus(document.status), (step, before.status, document.status)
                seen[changed_id] = document
        await drain(store, settings, services.database_url)
        await assert_ledger_matches(store, services.database_url, SKUS)
        documents, cases = await check_against_documents(store, order_ids, case_ids)
        connection = await connect(services.database_url)
        try:
            order_rows = await connection.fetch("SELECT order_id, status, version, refunded_amount FROM orders")
            case_rows = await connection.fetch("SELECT case_id, status, version FROM after_sales_cases")
            movement_kinds = await connection.fetch("SELECT DISTINCT kind FROM stock_movements")
        finally:
            await connection.close()
        # pytest --hypothesis-show-statistics shows how deep the generated stories got.
        for status in sorted({order.status for order in documents.values()} | {case.status for case in cases.values()}):
            event(f"reached: {status}")
        for row in movement_kinds:
            event(f"movement: {row['kind']}")
        assert {row["order_id"]: (row["status"], row["version"], row["refunded_amount"]) for row in order_rows} == {
            order.order_id: (order.status, order.version, order.refunded_amount) for order in documents.values()
        }
        assert {row["case_id"]: (row["status"], row["version"]) for row in case_rows} == {
            case.case_id: (case.status, case.version) for case in cases.values()
        }
    finally:
        await client.aclose()


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_stock_invariants_hold_through_any_generated_lifecycle(services: Services, scenario: list[object]) -> None:
    asyncio.run(run_lifecycles(services, scenario))


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_stock_invariants_hold_when_lifecycle_steps_run_concurrently(
    services: Services, scenario: list[object]
) -> None:
    asyncio.run(run_lifecycles(services, scenario, concurrent=True))
