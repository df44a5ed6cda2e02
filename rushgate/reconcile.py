"""`rushgate reconcile`: drain the stream, then compare Redis with the Postgres ledger."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from persistence.database import Connection
from persistence.database import connect as connect_database
from persistence.reconcile import (
    Difference,
    Levels,
    compare_holds,
    compare_orders,
    compare_stock,
    ledger_totals,
    order_states,
    orders_page,
    write_compensations,
)
from reservation.clock import wall_clock_ms
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore
from rushgate.settings import Settings, require_services
from rushgate.workers import Persister

DRAIN_TIMEOUT_S = 60.0
ORDERS_PAGE_SIZE = 1000


class NotDrained(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Report:
    differences: list[Difference]
    fixed: list[Difference]

    @property
    def remaining(self) -> list[Difference]:
        return [difference for difference in self.differences if difference not in self.fixed]


async def drain(store: RedisStore, settings: Settings, database_url: str) -> None:
    """Write every unpersisted event first: a difference must never be mere lag."""
    await store.ensure_group(PERSISTER_GROUP)
    persister = Persister(store, settings, name="reconcile")
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    connection = await connect_database(database_url)
    try:
        while await store.stream_backlog(PERSISTER_GROUP) > 0:
            if time.monotonic() > deadline:
                raise NotDrained(f"the stream did not drain in {DRAIN_TIMEOUT_S:.0f} s")
            if await persister.step(connection) == 0:
                await asyncio.sleep(0.05)  # entries pending at another persister: give it a moment
    finally:
        await connection.close()
        await store.delete_consumer_if_idle(PERSISTER_GROUP, persister.name)


async def reconcile(store: RedisStore, settings: Settings, *, fix: bool, actor: str = "system") -> Report:
    _, database_url = require_services(settings)
    await drain(store, settings, database_url)
    counters: dict[tuple[str, str], Levels] = {}
    for sku in await store.stocked_skus():
        for warehouse_id, level in (await store.stock_levels(sku)).items():
            counters[(sku, warehouse_id)] = (level.available, level.reserved, level.committed, level.on_hand)
    holds = {order_id: (order.status, order.version) for order_id, order in (await store.live_holds()).items()}
    connection = await connect_database(database_url)
    try:
        differences = compare_stock(counters, await ledger_totals(connection))
        differences += compare_holds(holds, await order_states(connection, list(holds)))
        differences += await _order_differences(store, connection, holds)
        fixed = await write_compensations(connection, differences, wall_clock_ms(), actor=actor) if fix else []
    finally:
        await connection.close()
    return Report(differences, fixed)


async def _order_differences(
    store: RedisStore, connection: Connection, holds: dict[str, tuple[str, int]]
) -> list[Difference]:
    """Every order Postgres has, page by page, against its Redis document (a lost paid or cancelled order)."""
    differences: list[Difference] = []
    last_order_id = ""
    while page := await orders_page(connection, after_order_id=last_order_id, count_max=ORDERS_PAGE_SIZE):
        documents = await store.get_orders(list(page))
        in_redis = {
            order_id: (document.status, document.version) if document is not None else None
            for order_id, document in zip(page, documents, strict=True)
        }
        differences += compare_orders(in_redis, page, holds)
        last_order_id = list(page)[-1]  # the database's order, whatever its collation
    return differences


def render_table(report: Report) -> str:
    if not report.differences:
        return "reconcile: Redis and Postgres agree (0 differences)"
    lines = [f"{'kind':<6} {'key':<40} {'redis':<48} postgres"]
    for difference in report.differences:
        mark = " (compensated)" if difference in report.fixed else ""
        lines.append(f"{difference.kind:<6} {difference.key:<40} {difference.redis!s:<48} {difference.postgres}{mark}")
    lines.append(f"{len(report.differences)} differences, {len(report.fixed)} compensated")
    return "\n".join(lines)
