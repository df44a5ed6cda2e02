"""`rushgate reconcile`: zero differences when all is well; every tampering found, the ledger compensated."""

from __future__ import annotations

import json
import subprocess

import pytest

from intake.schemas import PaymentIn
from intake.service import CatalogService, OrderService
from persistence.reconcile import compare_holds, compare_orders, compare_stock
from reservation.store import RedisStore
from tests.conftest import Services
from tests.processes import run_command
from tests.support import add_sku, assert_ledger_matches, count_rows, order_in, setup_region


def run_reconcile(services: Services, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_command(services, "reconcile", *flags)


@pytest.fixture
async def trading(catalog: CatalogService, orders: OrderService, database: str) -> list[str]:
    """Some stock and orders in every state; nothing persisted yet: reconcile must drain first."""
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", price=100, stock={"w1": 5, "w2": 5})
    await add_sku(catalog, "s2", price=300, stock={"w1": 3})
    placed = [(await orders.place(order_in(f"c{n}", {"s1": 2, "s2": 1}), f"k{n}")).order for n in range(3)]
    await orders.pay(placed[0].order_id, PaymentIn(payment_id="p0", amount=placed[0].total, method="card"))
    await orders.cancel(placed[1].order_id, "customer")
    return [order.order_id for order in placed]


async def test_reconcile_drains_the_stream_and_finds_nothing_when_all_is_well(
    services: Services, store: RedisStore, database: str, trading: list[str]
) -> None:
    result = run_reconcile(services)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 differences" in result.stdout
    assert await count_rows(database, "SELECT count(*) FROM orders") == 3  # it drained the stream first
    await assert_ledger_matches(store, database, ["s1", "s2"])


async def test_reconcile_reports_every_tampering_and_fix_compensates_the_ledger(
    services: Services, store: RedisStore, database: str, trading: list[str]
) -> None:
    assert run_reconcile(services).returncode == 0
    await store.client.hincrby(store.keys.stock("s1"), "a:w2", 4)  # units appear behind the service's back
    await store.client.hincrby(store.keys.stock("s1"), "h:w2", 4)
    await store.client.delete(store.keys.order(trading[2]))  # a live hold lost
    result = run_reconcile(services, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [(item["kind"], item["key"]) for item in report["differences"]] == [
        ("stock", "s1/w2"),
        ("hold", trading[2]),
    ]
    stock = report["differences"][0]
    assert (stock["redis"]["available"] - stock["postgres"]["available"], stock["redis"]["on_hand"]) == (4, 9)
    assert report["differences"][1]["redis"] is None

    fixed = run_reconcile(services, "--fix")
    assert fixed.returncode == 1  # the lost hold cannot be compensated by a movement
    assert "(compensated)" in fixed.stdout
    after = json.loads(run_reconcile(services, "--json").stdout)
    assert [(item["kind"], item["key"]) for item in after["differences"]] == [("hold", trading[2])]


def test_stock_comparison_treats_a_missing_side_as_zero_and_names_each_difference() -> None:
    redis = {("s1", "w1"): (1, 2, 3, 6), ("s2", "w1"): (0, 0, 0, 0)}
    ledger = {("s1", "w1"): (1, 2, 3, 6), ("s3", "w9"): (5, 0, 0, 5)}
    differences = compare_stock(redis, ledger)
    assert [(item.key, item.redis, item.postgres) for item in differences] == [
        ("s3/w9", {"available": 0, "reserved": 0, "committed": 0, "on_hand": 0},
         {"available": 5, "reserved": 0, "committed": 0, "on_hand": 5}),
    ]  # fmt: skip


def test_hold_comparison_reports_holds_known_to_one_side_or_in_another_state() -> None:
    differences = compare_holds(
        {"a": ("pending_payment", 1), "b": ("pending_payment", 1)},
        {"a": ("pending_payment", 1), "b": ("cancelled", 2), "c": ("pending_payment", 1)},
    )
    assert [(item.key, item.redis, item.postgres) for item in differences] == [
        ("b", {"status": "pending_payment", "version": 1}, {"status": "cancelled", "version": 2}),
        ("c", None, {"status": "pending_payment", "version": 1}),
    ]


def test_order_comparison_reports_orders_redis_lost_or_holds_at_another_version_and_leaves_holds_alone() -> None:
    postgres = {"a": ("paid", 2), "b": ("cancelled", 2), "c": ("paid", 2), "d": ("pending_payment", 1)}
    postgres["e"] = ("paid", 2)
    redis = {"a": ("paid", 2), "b": None, "c": ("pending_payment", 1), "d": None, "e": ("pending_payment", 1)}
    differences = compare_orders(redis, postgres, holds={"e": ("pending_payment", 1)})
    assert [(item.key, item.redis, item.postgres) for item in differences] == [
        ("b", None, {"status": "cancelled", "version": 2}),
        ("c", {"status": "pending_payment", "version": 1}, {"status": "paid", "version": 2}),
    ]
