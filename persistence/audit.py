"""The audit log in Postgres: rows made of control-plane events, client changes, and the reader.

Configuration and stock events carry who made the change and what it replaced (captured
by the script in the same atomic call); the persister turns each into one row keyed by
its stream position, so replaying an event adds nothing. API clients live in Postgres
only, so their rows are written in the transaction that changes the client. Secrets and
their digests are never part of a row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from reservation.audit import AuditEntry, AuditPage, AuditQuery, AuditUnavailable
from reservation.clock import moment_of
from reservation.records import (
    ConfigAudit,
    CustomerBlock,
    DispatchPut,
    SkuPut,
    StockAudit,
    StockChange,
    WarehousePut,
)

if TYPE_CHECKING:
    from persistence.writer import Event

_json = msgspec.json.Encoder()
STOCK_ACTIONS = {"set": "stock.set", "delta": "stock.adjust", "transfer": "stock.transfer"}
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0

AuditRow = tuple[Any, ...]
"""partition, stream_ms, stream_seq, occurred_at, actor, action, target_type, target_id, warehouse_ids,
request_id, reason, before (JSON text or None), after (JSON text or None)"""


def _encoded(value: dict[str, Any] | None) -> str | None:
    return None if value is None else _json.encode(value).decode()


def _optional_moment(milliseconds: int | str | None) -> datetime | None:
    return moment_of(int(milliseconds)) if milliseconds not in (None, "", 0) else None


def _optional_int(value: int | str | None) -> int | None:
    return None if value is None else int(value)


def sku_view(fields: dict[str, Any]) -> dict[str, Any]:
    """A SKU's settings in one shape, from its Redis hash (strings) or from its event."""
    return {
        "name": fields["name"],
        "merchant_id": fields["merchant_id"],
        "price": int(fields["price"]),
        "currency": fields["currency"],
        "safety_stock": int(fields.get("safety_stock") or 0),
        "per_customer_limit": _optional_int(fields.get("per_customer_limit")),
        "sale_starts_at": _optional_moment(fields.get("sale_starts_ms")),
        "sale_ends_at": _optional_moment(fields.get("sale_ends_ms")),
    }


def _levels(available: int, reserved: int, committed: int, on_hand: int) -> dict[str, int]:
    return {"on_hand": on_hand, "available": available, "reserved": reserved, "committed": committed}


def _config_change(event: Event, audit: ConfigAudit) -> tuple[str, str, str, list[str], Any, Any]:
    """(action, target type, target id, warehouses, before, after) of a configuration event."""
    before = audit.before_fields()
    data = event.data
    if isinstance(data, WarehousePut):
        region = before.get(data.warehouse_id)
        return (
            "warehouse.put", "warehouse", data.warehouse_id, [data.warehouse_id],
            {"region": region} if region is not None else None, {"region": data.region, "name": data.name},
        )  # fmt: skip
    if isinstance(data, DispatchPut):
        rule = before.get(data.region)
        previous = rule.split(",") if rule else []
        touched = sorted(set(previous) | set(data.warehouse_ids))
        return (
            "dispatch.put", "dispatch", data.region, touched,
            {"warehouses": previous} if rule is not None else None, {"warehouses": list(data.warehouse_ids)},
        )  # fmt: skip
    if isinstance(data, SkuPut):
        after = sku_view({name: getattr(data, name) for name in data.__struct_fields__})
        return "sku.put", "sku", data.sku, [], sku_view(before) if before else None, after
    assert isinstance(data, CustomerBlock), f"no audit action for {event.kind}"
    reason = before.get(data.customer_id)
    blocked = event.kind == "customer_blocked"
    return (
        "customer.block" if blocked else "customer.unblock", "customer", data.customer_id, [],
        {"blocked": reason is not None, "reason": reason},
        {"blocked": blocked, "reason": data.reason if blocked else None},
    )  # fmt: skip


def _stock_change(change: StockChange, audit: StockAudit) -> tuple[str, str, str, list[str], Any, Any]:
    """Counters per warehouse before the change (from the script) and after it (before + movements)."""
    before = {item.warehouse_id: [item.available, item.reserved, item.committed, item.on_hand] for item in audit.before}
    after = {warehouse: list(counters) for warehouse, counters in before.items()}
    for movement in change.movements:
        counters = after[movement.warehouse_id]
        counters[0] += movement.available_delta
        counters[1] += movement.reserved_delta
        counters[2] += movement.committed_delta
        counters[3] += movement.on_hand_delta
    return (
        STOCK_ACTIONS[audit.operation],
        "stock",
        change.movements[0].sku,
        list(before),
        {warehouse: _levels(*counters) for warehouse, counters in before.items()},
        {warehouse: _levels(*counters) for warehouse, counters in after.items()},
    )


def audit_rows(events: Sequence[Event]) -> list[AuditRow]:
    """One row per event that carries audit facts, in stream order (so audit ids follow the stream)."""
    rows = []
    for event in sorted(events, key=lambda item: item.position):
        audit = event.audit
        if audit is None:
            continue  # an event written before the audit log existed, or not a control-plane change
        request_id = reason = None
        if isinstance(audit, StockAudit):
            assert isinstance(event.data, StockChange)
            request_id, reason = event.data.request_id, event.data.reason
            action, target_type, target_id, warehouses, before, after = _stock_change(event.data, audit)
        else:
            action, target_type, target_id, warehouses, before, after = _config_change(event, audit)
        rows.append(
            (event.partition, event.stream_ms, event.stream_seq, moment_of(event.occurred_ms), audit.actor, action,
             target_type, target_id, warehouses, request_id, reason, _encoded(before), _encoded(after))
        )  # fmt: skip
    return rows


INSERT_AUDIT_ROWS = """
INSERT INTO audit_log (partition, stream_ms, stream_seq, occurred_at, actor, action, target_type, target_id,
                       warehouse_ids, request_id, reason, before, after)
SELECT p, ms, seq, at, actor, action, target_type, target_id,
       ARRAY(SELECT jsonb_array_elements_text(warehouses)), request_id, reason, before, after
FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::jsonb[], $13::jsonb[])
     WITH ORDINALITY AS incoming (p, ms, seq, at, actor, action, target_type, target_id, warehouses, request_id,
                             reason, before, after, number)
ORDER BY number
ON CONFLICT (partition, stream_ms, stream_seq) DO NOTHING
"""


async def write_audit_rows(connection: asyncpg.Connection, rows: Sequence[AuditRow]) -> None:
    """Insert rows made by audit_rows (inside the caller's transaction); a row already there is kept."""
    if not rows:
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[8] = [_json.encode(warehouses).decode() for warehouses in columns[8]]  # text[][] cannot be ragged
    await connection.execute(INSERT_AUDIT_ROWS, *columns)


async def record_direct_change(
    connection: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    warehouse_ids: Sequence[str] = (),
    reason: str | None = None,
) -> None:
    """One row for a change made in Postgres directly (API clients, reconcile); call it in that transaction."""
    await connection.execute(
        "INSERT INTO audit_log (occurred_at, actor, action, target_type, target_id, warehouse_ids, reason,"
        " before, after) VALUES (now(), $1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        actor, action, target_type, target_id, list(warehouse_ids), reason, _encoded(before), _encoded(after),
    )  # fmt: skip


_FILTERS = (
    ("actor", "actor = ${}"),
    ("action", "action = ${}"),
    ("target_type", "target_type = ${}"),
    ("target_id", "target_id = ${}"),
    ("warehouse_id", "${}::text = ANY(warehouse_ids)"),
    ("since", "occurred_at >= ${}"),
    ("until", "occurred_at < ${}"),
    ("before_audit_id", "audit_id < ${}"),
)


async def read_audit(connection: asyncpg.Connection, query: AuditQuery) -> AuditPage:
    """One page, newest first; every value is a parameter, only the fixed conditions above are joined."""
    conditions: list[str] = []
    arguments: list[Any] = []
    for name, condition in _FILTERS:
        value = getattr(query, name)
        if value is not None:
            arguments.append(value)
            conditions.append(condition.format(len(arguments)))
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    arguments.append(query.limit + 1)
    rows = await connection.fetch(
        "SELECT audit_id, occurred_at, actor, action, target_type, target_id, warehouse_ids, request_id, reason,"
        f" before::text AS before, after::text AS after FROM audit_log {where}"
        f" ORDER BY audit_id DESC LIMIT ${len(arguments)}",
        *arguments,
        timeout=READ_TIMEOUT_S,
    )
    entries = [
        AuditEntry(
            audit_id=row["audit_id"],
            occurred_at=row["occurred_at"],
            actor=row["actor"],
            action=row["action"],
            target_type=row["target_type"],
            target_id=row["target_id"],
            warehouse_ids=tuple(row["warehouse_ids"]),
            request_id=row["request_id"],
            reason=row["reason"],
            before=msgspec.json.decode(row["before"]) if row["before"] is not None else None,
            after=msgspec.json.decode(row["after"]) if row["after"] is not None else None,
        )
        for row in rows[: query.limit]
    ]
    return AuditPage(entries, has_more=len(rows) > query.limit)


AuditReader = Callable[[AuditQuery], Awaitable[AuditPage]]


@asynccontextmanager
async def audit_reader(url: str) -> AsyncIterator[AuditReader]:
    """read_audit on its own small pool, for the API."""
    pool = await asyncpg.create_pool(url, min_size=0, max_size=2, timeout=CONNECT_TIMEOUT_S)
    assert pool is not None

    async def read(query: AuditQuery) -> AuditPage:
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as connection:
                return await read_audit(connection, query)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            raise AuditUnavailable(type(error).__name__) from error

    try:
        yield read
    finally:
        await pool.close()
