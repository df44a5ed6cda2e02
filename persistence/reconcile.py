"""Reconciliation: the Postgres ledger against the Redis counters and live holds.

The ledger (``stock_movements``) sums to the counters once the persister has drained the
stream: every stock change's movements are carried by its event or derived from its order
document (``persistence.writer``, docs/design.md); any difference means something was lost or
changed behind the service's back. ``compare_*`` are pure; the readers and the
compensation writer are the only parts that touch Postgres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from persistence.audit import record_direct_change

Levels = tuple[int, int, int, int]
"""available, reserved, committed, on hand"""

ZERO: Levels = (0, 0, 0, 0)
COMPENSATION_PARTITION = -1  # movements written by reconciliation, not by the stream
LEVEL_NAMES = ("available", "reserved", "committed", "on_hand")


@dataclass(frozen=True, slots=True)
class Difference:
    """One inconsistency: a (sku, warehouse) whose sums differ, or a live hold the two disagree on."""

    kind: str  # "stock" | "hold" | "order"
    key: str  # "sku/warehouse" or an order id
    redis: dict[str, Any] | None
    postgres: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "redis": self.redis, "postgres": self.postgres}


def compare_stock(
    redis: Mapping[tuple[str, str], Levels], ledger: Mapping[tuple[str, str], Levels]
) -> list[Difference]:
    """Every (sku, warehouse) whose Redis counters differ from the ledger's sums (absent = zero)."""
    differences = []
    for sku, warehouse_id in sorted(set(redis) | set(ledger)):
        counters, sums = redis.get((sku, warehouse_id), ZERO), ledger.get((sku, warehouse_id), ZERO)
        if counters != sums:
            differences.append(
                Difference(
                    "stock",
                    f"{sku}/{warehouse_id}",
                    dict(zip(LEVEL_NAMES, counters, strict=True)),
                    dict(zip(LEVEL_NAMES, sums, strict=True)),
                )
            )
    return differences


def compare_holds(redis: Mapping[str, tuple[str, int]], postgres: Mapping[str, tuple[str, int]]) -> list[Difference]:
    """Orders pending payment on either side whose (status, version) the other side does not share."""
    differences = []
    for order_id in sorted(set(redis) | set(postgres)):
        in_redis, in_postgres = redis.get(order_id), postgres.get(order_id)
        if in_redis != in_postgres:
            differences.append(
                Difference(
                    "hold",
                    order_id,
                    {"status": in_redis[0], "version": in_redis[1]} if in_redis else None,
                    {"status": in_postgres[0], "version": in_postgres[1]} if in_postgres else None,
                )
            )
    return differences


def compare_orders(
    redis: Mapping[str, tuple[str, int] | None], postgres: Mapping[str, tuple[str, int]], holds: Mapping[str, object]
) -> list[Difference]:
    """Orders Postgres has whose Redis document is missing or at another (status, version).

    ``redis`` maps each of the ``postgres`` ids to its Redis document's (status, version), None if
    Redis has none. Orders pending payment on either side are compare_holds' business and skipped.
    """
    differences = []
    for order_id in sorted(postgres):
        in_redis, in_postgres = redis.get(order_id), postgres[order_id]
        if in_postgres[0] == "pending_payment" or order_id in holds or in_redis == in_postgres:
            continue
        differences.append(
            Difference(
                "order",
                order_id,
                {"status": in_redis[0], "version": in_redis[1]} if in_redis else None,
                {"status": in_postgres[0], "version": in_postgres[1]},
            )
        )
    return differences


async def orders_page(
    connection: asyncpg.Connection, *, after_order_id: str, count_max: int
) -> dict[str, tuple[str, int]]:
    """(status, version) of up to count_max orders with ids above after_order_id, in id order."""
    rows = await connection.fetch(
        "SELECT order_id, status, version FROM orders WHERE order_id > $1 ORDER BY order_id LIMIT $2",
        after_order_id,
        count_max,
    )
    return {row["order_id"]: (row["status"], row["version"]) for row in rows}


async def ledger_totals(connection: asyncpg.Connection) -> dict[tuple[str, str], Levels]:
    rows = await connection.fetch(
        "SELECT sku, warehouse_id, sum(available_delta) AS a, sum(reserved_delta) AS r,"
        " sum(committed_delta) AS c, sum(on_hand_delta) AS h FROM stock_movements GROUP BY sku, warehouse_id"
    )
    return {
        (row["sku"], row["warehouse_id"]): (int(row["a"]), int(row["r"]), int(row["c"]), int(row["h"])) for row in rows
    }


async def order_states(connection: asyncpg.Connection, order_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """(status, version) of the given orders and of every order Postgres holds as pending payment."""
    rows = await connection.fetch(
        "SELECT order_id, status, version FROM orders WHERE status = 'pending_payment' OR order_id = ANY($1::text[])",
        list(order_ids),
    )
    return {row["order_id"]: (row["status"], row["version"]) for row in rows}


async def write_compensations(
    connection: asyncpg.Connection, differences: Sequence[Difference], now_ms: int, *, actor: str
) -> list[Difference]:
    """Movements that bring the ledger to the Redis counters, one per stock difference.

    Each is a control-plane change of the ledger, so each gets an audit row (``stock.reconcile``:
    the ledger's sums before, the Redis counters after), in the same transaction.

    Returns the differences that were compensated. A difference whose own deltas do not
    add up (available + reserved + committed != on hand) means the Redis counters are
    themselves broken; no movement can mirror that, so it is left for a person.
    """
    rows: list[tuple[Any, ...]] = []
    fixed: list[Difference] = []
    for difference in differences:
        if difference.kind != "stock":
            continue
        assert difference.redis is not None and difference.postgres is not None
        deltas = [difference.redis[name] - difference.postgres[name] for name in LEVEL_NAMES]
        if deltas[0] + deltas[1] + deltas[2] != deltas[3]:
            continue
        sku, _, warehouse_id = difference.key.partition("/")
        rows.append((COMPENSATION_PARTITION, now_ms, 0, len(rows), sku, warehouse_id, abs(deltas[3]), *deltas))
        fixed.append(difference)
    if rows:
        async with connection.transaction():
            await connection.executemany(
                "INSERT INTO stock_movements (partition, stream_ms, stream_seq, position, sku, warehouse_id, kind,"
                " qty, available_delta, reserved_delta, committed_delta, on_hand_delta, reason, occurred_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'adjust', $7, $8, $9, $10, $11, 'reconcile', now())",
                rows,
            )
            for difference in fixed:
                sku, _, warehouse_id = difference.key.partition("/")
                await record_direct_change(
                    connection, actor=actor, action="stock.reconcile", target_type="stock", target_id=sku,
                    warehouse_ids=[warehouse_id], reason="reconcile",
                    before={warehouse_id: difference.postgres}, after={warehouse_id: difference.redis},
                )  # fmt: skip
    return fixed
