"""`rushgate recover`: after Redis loses everything, Postgres puts back what intake needs."""

from __future__ import annotations

import pytest

from intake.problems import ProblemError
from intake.schemas import BlockIn, PaymentIn
from intake.service import CatalogService, OrderService
from reservation.records import OrderRecord
from reservation.store import RedisStore
from reservation.sweeper import sweep_once
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.conftest import Services
from tests.processes import run_command
from tests.support import add_sku, order_in, setup_region


async def everything(store: RedisStore, order_ids: list[str]) -> tuple[object, ...]:
    levels = {sku: await store.stock_levels(sku) for sku in ("s1", "s2")}
    orders = await store.get_orders(order_ids)
    counters = {customer: await store.hash_get_all(store.keys.customer_counters(customer)) for customer in ("c0", "c1")}
    return levels, orders, counters, await store.hash_get_all(store.keys.dispatch), await store.expiry_backlog()


async def test_recover_rebuilds_stock_orders_holds_limits_idempotency_and_payments(
    services: Services,
    store: RedisStore,
    database: str,
    settings: Settings,
    catalog: CatalogService,
    orders: OrderService,
) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=100, per_customer_limit=3, stock={"w1": 2, "w2": 5})
    await add_sku(catalog, "s2", price=250, safety_stock=1, stock={"w1": 5})
    await catalog.block("bad", BlockIn(reason="fraud"))
    placed: list[OrderRecord] = []
    for number in range(4):
        placed.append((await orders.place(order_in(f"c{number % 2}", {"s1": 1, "s2": 1}), f"k{number}")).order)
    await orders.pay(placed[0].order_id, PaymentIn(payment_id="p0", amount=350, method="card"))
    await orders.cancel(placed[1].order_id, "customer")
    await drain(store, settings, database)
    order_ids = [order.order_id for order in placed]
    before = await everything(store, order_ids)

    await store.client.flushdb()  # Redis lost its data
    result = run_command(services, "recover")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 orders (2 awaiting payment)" in result.stdout
    await store.load_scripts()
    assert await everything(store, order_ids) == before

    created, replayed = await orders.place(order_in("c0", {"s1": 1, "s2": 1}), "k0")
    assert (created, replayed.order_id) == (False, placed[0].order_id)
    with pytest.raises(ProblemError) as reused:
        await orders.place(order_in("c0", {"s1": 2}), "k0")
    assert reused.value.kind == "idempotency-key-reused"
    again = await orders.pay(placed[0].order_id, PaymentIn(payment_id="p0", amount=350, method="card"))
    assert again.status == "paid"
    with pytest.raises(ProblemError) as limited:
        await orders.place(order_in("c0", {"s1": 2}), "k-new")  # c0 holds or owns 2 of its 3
    assert limited.value.kind == "purchase-limit"
    with pytest.raises(ProblemError) as blocked:
        await orders.place(order_in("bad", {"s1": 1}), "k-bad")
    assert blocked.value.kind == "customer-blocked"
    assert await sweep_once(store, now_ms=placed[3].expires_ms, batch_size_max=10) == 2

    reconciled = run_command(services, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


async def test_recover_refuses_to_overwrite_a_redis_that_still_holds_data(
    services: Services, store: RedisStore, database: str, catalog: CatalogService
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    result = run_command(services, "recover")
    assert result.returncode == 1
    assert "--force" in result.stderr
