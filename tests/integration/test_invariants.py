"""DESIGN.md §3 after Hypothesis-generated sequences of reserve, pay, cancel, expire, adjust, transfer.

Each example runs against the real Redis and Postgres: after every step the
counters are checked against each other and against the orders themselves
(reserved = lines of pending orders, committed = lines of paid orders, customer
counters = live and paid quantities), every status change is one the pure state
machine allows, and at the end the persisted ledger sums to the Redis counters
and every order row matches its Redis document.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from intake.problems import ProblemError
from intake.schemas import AdjustmentIn, PaymentIn, StockSetIn, TransferIn
from intake.service import CatalogService, OrderService
from orders.states import CancelReason, OrderEvent, OrderStatus, next_status
from persistence.database import connect
from reservation.records import OrderRecord
from reservation.store import RedisStore
from reservation.store import connect as connect_redis
from reservation.sweeper import sweep_until_clear
from rushgate.reconcile import drain
from tests.conftest import TABLES, ManualClock, Services, make_settings
from tests.support import add_sku, assert_ledger_matches, assert_stock_invariants, order_in, setup_region

SKUS = ("s1", "s2", "s3")
WAREHOUSES = ("w1", "w2")
HOLD_TTL_S = 60
GROUP_SIZE = 6
LIMIT = 3


@dataclass(frozen=True)
class Reserve:
    customer: int
    items: tuple[tuple[str, int], ...]
    order_type: str
    allow_split: bool


@dataclass(frozen=True)
class Pay:
    order: int
    correct_amount: bool


@dataclass(frozen=True)
class Replay:
    order: int


@dataclass(frozen=True)
class Cancel:
    order: int


@dataclass(frozen=True)
class Expire:
    advance_s: int


@dataclass(frozen=True)
class Adjust:
    sku: str
    warehouse: str
    delta: int


@dataclass(frozen=True)
class SetStock:
    sku: str
    warehouse: str
    on_hand: int


@dataclass(frozen=True)
class Transfer:
    sku: str
    source: str
    qty: int


skus = st.sampled_from(SKUS)
warehouses = st.sampled_from(WAREHOUSES)
reserves = st.builds(
    Reserve,
    st.integers(0, 3),
    st.dictionaries(skus, st.integers(1, 3), min_size=1, max_size=2).map(lambda d: tuple(d.items())),
    st.sampled_from(["flash", "normal"]),
    st.booleans(),
)
# Reserves and payments are listed twice: scarce stock and late payments make the interesting races.
steps = st.one_of(
    reserves,
    reserves,
    st.builds(Pay, st.integers(0, 4), st.just(True)),
    st.builds(Pay, st.integers(0, 4), st.just(True)),  # weighted towards payments that fit
    st.builds(Pay, st.integers(0, 4), st.booleans()),
    st.builds(Cancel, st.integers(0, 4)),
    st.builds(Replay, st.integers(0, 4)),
    st.builds(Expire, st.integers(0, 3 * HOLD_TTL_S)),
    st.builds(Adjust, skus, warehouses, st.integers(-6, 6).filter(bool)),
    st.builds(SetStock, skus, warehouses, st.integers(0, 12)),
    st.builds(Transfer, skus, warehouses, st.integers(1, 5)),
)


async def check_against_orders(store: RedisStore, order_ids: list[str]) -> dict[str, OrderRecord]:
    """Counters equal what the orders hold; customer counters equal live and paid quantities."""
    levels = await assert_stock_invariants(store, SKUS)
    documents = {order.order_id: order for order in await store.get_orders(order_ids) if order is not None}
    reserved: Counter[tuple[str, str]] = Counter()
    committed: Counter[tuple[str, str]] = Counter()
    bought: Counter[tuple[str, str]] = Counter()
    for order in documents.values():
        for line in order.lines:
            if order.status == "pending_payment":
                reserved[(line.sku, line.warehouse_id)] += line.qty
            if order.status == "paid":
                committed[(line.sku, line.warehouse_id)] += line.qty
            if order.status in ("pending_payment", "paid"):
                bought[(order.customer_id, line.sku)] += line.qty
    for key, level in levels.items():
        assert level.reserved == reserved[key], (key, level)
        assert level.committed == committed[key], (key, level)
    for customer_id in {order.customer_id for order in documents.values()}:
        counters = await store.hash_get_all(store.keys.customer_counters(customer_id))
        for sku in SKUS:
            assert int(counters.get(sku, "0")) == bought[(customer_id, sku)], (customer_id, sku)
            assert bought[(customer_id, sku)] <= LIMIT, (customer_id, sku)
    return documents


def event_of(step: object) -> OrderEvent:
    if isinstance(step, Pay):
        return OrderEvent.PAY
    if isinstance(step, Cancel):
        return OrderEvent.CANCEL
    return OrderEvent.EXPIRE


async def run_scenario(services: Services, scenario: list[object], *, concurrent: bool = False) -> None:
    settings = make_settings(services, RUSHGATE_FLASH_HOLD_TTL_S=str(HOLD_TTL_S), RUSHGATE_NORMAL_HOLD_TTL_S="120")
    client = connect_redis(services.redis_url, pool_size_max=8, timeout_ms=5000)
    await client.flushdb()
    connection = await connect(services.database_url)
    await connection.execute(f"TRUNCATE {TABLES}")
    await connection.close()
    store = RedisStore(client)
    await store.load_scripts()
    clock = ManualClock()
    catalog, orders = CatalogService(store, clock), OrderService(store, settings, clock)
    try:
        await setup_region(catalog, "eu", WAREHOUSES)
        for number, sku in enumerate(SKUS):
            await add_sku(catalog, sku, price=100 * (number + 1), per_customer_limit=LIMIT,
                          safety_stock=number % 2, stock={"w1": 2, "w2": 1})  # fmt: skip
        order_ids: list[str] = []
        accepted: list[tuple[str, object]] = []  # (idempotency key, body) of each accepted order
        statuses: dict[str, tuple[str, str]] = {}

        async def apply(index: int, step: object) -> None:
            order_id = order_ids[step.order % len(order_ids)] if isinstance(step, Pay | Cancel) and order_ids else None
            try:
                if isinstance(step, Reserve):
                    body = order_in(f"c{step.customer}", dict(step.items), order_type=step.order_type,
                                    allow_split=step.allow_split)  # fmt: skip
                    _, order = await orders.place(body, f"key-{index}")
                    order_ids.append(order.order_id)
                    accepted.append((f"key-{index}", body))
                elif isinstance(step, Replay) and accepted:
                    key, body = accepted[step.order % len(accepted)]
                    events_before = await store.stream_length()
                    created, replayed = await orders.place(body, key)  # type: ignore[arg-type]
                    assert not created and replayed.order_id == order_ids[accepted.index((key, body))]
                    if not concurrent:  # others may append events meanwhile
                        assert await store.stream_length() == events_before
                elif isinstance(step, Pay) and order_id is not None:
                    total = (await orders.get(order_id)).total
                    amount = total if step.correct_amount else total + 1
                    await orders.pay(order_id, PaymentIn(payment_id=f"pay-{index}", amount=amount, method="card"))
                elif isinstance(step, Cancel) and order_id is not None:
                    await orders.cancel(order_id, "customer")
                elif isinstance(step, Expire):
                    clock.advance(step.advance_s * 1000)
                    await sweep_until_clear(store, now_ms=clock.now_ms, batch_size_max=7)
                elif isinstance(step, Adjust):
                    await catalog.adjust_stock(step.sku, step.warehouse, AdjustmentIn(delta=step.delta, reason="test"))
                elif isinstance(step, SetStock):
                    await catalog.set_stock(step.sku, step.warehouse, StockSetIn(on_hand=step.on_hand))
                elif isinstance(step, Transfer):
                    target = "w2" if step.source == "w1" else "w1"
                    await catalog.transfer_stock(
                        TransferIn(sku=step.sku, from_warehouse=step.source, to_warehouse=target, qty=step.qty)
                    )
            except ProblemError as refusal:
                assert refusal.status in (403, 409, 422), refusal.kind

        if concurrent:
            # Groups of steps run at once; only the invariants are checked between groups, since the
            # order in which concurrent steps land is not known.
            for first in range(0, len(scenario), GROUP_SIZE):
                group = list(enumerate(scenario))[first : first + GROUP_SIZE]
                await asyncio.gather(*(apply(index, step) for index, step in group))
                await check_against_orders(store, order_ids)
        else:
            for index, step in enumerate(scenario):
                await apply(index, step)
                documents = await check_against_orders(store, order_ids)
                for changed_id, document in documents.items():
                    before = statuses.get(changed_id)
                    if before is not None and before[0] != document.status:
                        reason = CancelReason(before[1]) if before[1] else None
                        expected = next_status(OrderStatus(before[0]), event_of(step), reason)
                        assert expected == OrderStatus(document.status)
                    statuses[changed_id] = (document.status, document.cancel_reason)
        await drain(store, settings, services.database_url)
        await assert_ledger_matches(store, services.database_url, SKUS)
        connection = await connect(services.database_url)
        try:
            rows = {row["order_id"]: (row["status"], row["version"]) for row in await connection.fetch(
                "SELECT order_id, status, version FROM orders")}  # fmt: skip
        finally:
            await connection.close()
        documents = await check_against_orders(store, order_ids)
        assert rows == {order_id: (order.status, order.version) for order_id, order in documents.items()}
    finally:
        await client.aclose()


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=st.lists(steps, min_size=5, max_size=40))
def test_stock_invariants_hold_after_any_sequence_of_operations(services: Services, scenario: list[object]) -> None:
    asyncio.run(run_scenario(services, scenario))


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=st.lists(steps, min_size=5, max_size=40))
def test_stock_invariants_hold_when_the_operations_run_concurrently(services: Services, scenario: list[object]) -> None:
    asyncio.run(run_scenario(services, scenario, concurrent=True))
