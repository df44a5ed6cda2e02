"""Helpers shared by the tests: catalog seeding, order bodies and invariant checks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from intake.schemas import DispatchIn, OrderIn, OrderItemIn, SkuIn, StockSetIn, WarehouseIn
from intake.service import CatalogService
from persistence.database import connect
from reservation.store import RedisStore, StockLevels


async def setup_region(catalog: CatalogService, region: str = "eu", warehouses: Iterable[str] = ("w1", "w2")) -> None:
    """Warehouses in the region and a dispatch rule in the given priority order."""
    names = list(warehouses)
    for warehouse_id in names:
        await catalog.put_warehouse(warehouse_id, WarehouseIn(region=region, name=f"Warehouse {warehouse_id}"))
    await catalog.put_dispatch(region, DispatchIn(warehouses=names))


async def add_sku(
    catalog: CatalogService,
    sku: str,
    *,
    price: int = 1000,
    currency: str = "EUR",
    merchant_id: str = "m1",
    per_customer_limit: int | None = None,
    safety_stock: int = 0,
    stock: dict[str, int] | None = None,
) -> None:
    body = SkuIn(
        name=f"Product {sku}",
        merchant_id=merchant_id,
        price=price,
        currency=currency,
        per_customer_limit=per_customer_limit,
        safety_stock=safety_stock,
    )
    await catalog.put_sku(sku, body)
    for warehouse_id, on_hand in (stock or {}).items():
        await catalog.set_stock(sku, warehouse_id, StockSetIn(on_hand=on_hand))


def order_in(
    customer_id: str,
    items: dict[str, int],
    *,
    region: str = "eu",
    order_type: str = "flash",
    allow_split: bool = False,
) -> OrderIn:
    return OrderIn(
        customer_id=customer_id,
        region=region,
        order_type=order_type,  # type: ignore[arg-type]
        items=[OrderItemIn(sku=sku, qty=qty) for sku, qty in items.items()],
        allow_split=allow_split,
    )


async def assert_stock_invariants(store: RedisStore, skus: Iterable[str]) -> dict[tuple[str, str], StockLevels]:
    """DESIGN.md §3 for every (sku, warehouse): no negative counter, the four add up."""
    levels: dict[tuple[str, str], StockLevels] = {}
    for sku in skus:
        for warehouse_id, level in (await store.stock_levels(sku)).items():
            assert level.available >= 0, (sku, warehouse_id, level)
            assert level.reserved >= 0, (sku, warehouse_id, level)
            assert level.committed >= 0, (sku, warehouse_id, level)
            assert level.available + level.reserved + level.committed == level.on_hand, (sku, warehouse_id, level)
            levels[(sku, warehouse_id)] = level
    return levels


async def ledger_totals(database_url: str) -> dict[tuple[str, str], StockLevels]:
    """Sum of every persisted stock movement per (sku, warehouse)."""
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT sku, warehouse_id, sum(available_delta) AS a, sum(reserved_delta) AS r,"
            " sum(committed_delta) AS c, sum(on_hand_delta) AS h FROM stock_movements GROUP BY sku, warehouse_id"
        )
    finally:
        await connection.close()
    return {(row["sku"], row["warehouse_id"]): StockLevels(row["a"], row["r"], row["c"], row["h"]) for row in rows}


async def assert_ledger_matches(store: RedisStore, database_url: str, skus: Iterable[str]) -> None:
    """Reconciliation: the persisted movements sum to the Redis counters, with zero differences."""
    counters = await assert_stock_invariants(store, skus)
    ledger = await ledger_totals(database_url)
    nonzero = {key: level for key, level in counters.items() if level != StockLevels(0, 0, 0, 0)}
    assert {key: ledger[key] for key in ledger if ledger[key] != StockLevels(0, 0, 0, 0)} == nonzero


async def count_rows(database_url: str, query: str, *arguments: object) -> int:
    connection = await connect(database_url)
    try:
        return int(await connection.fetchval(query, *arguments))
    finally:
        await connection.close()


def by_warehouse(levels: dict[tuple[str, str], StockLevels]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for (sku, warehouse_id), level in levels.items():
        table[sku][warehouse_id] = level.available
    return dict(table)


async def seed_over_http(client: Any, admin_headers: dict[str, str], *, on_hand: int) -> None:
    """One warehouse in region eu, its dispatch rule, SKU s1 at 100 EUR cents, on_hand units of it."""
    for path, body in [
        ("/v1/warehouses/w1", {"region": "eu", "name": "Berlin"}),
        ("/v1/dispatch/eu", {"warehouses": ["w1"]}),
        ("/v1/skus/s1", {"name": "Phone", "merchant_id": "m1", "price": 100, "currency": "EUR"}),
        ("/v1/stock/s1/w1", {"on_hand": on_hand}),
    ]:
        response = await client.put(path, json=body, headers=admin_headers)
        assert response.status_code == 200, response.text
