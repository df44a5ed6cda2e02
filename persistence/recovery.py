"""What Redis must hold, read back from Postgres, for `rushgate recover` after Redis lost its data.

Postgres has everything the persister wrote: configuration, the ledger (whose sums are the
stock counters), every order with its lines. From those this module builds the Redis state
as plain values; the Redis adapter writes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import msgspec

from persistence.reconcile import Levels, ledger_totals
from reservation.clock import milliseconds_of
from reservation.records import (
    CaseItem,
    CaseRecord,
    OrderLine,
    OrderRecord,
    ReplacementLine,
    ShipmentState,
    TrackEvent,
)


@dataclass
class Snapshot:
    warehouses: dict[str, str] = field(default_factory=dict)  # warehouse id -> region
    dispatch: dict[str, str] = field(default_factory=dict)  # region -> "w1,w2"
    skus: dict[str, dict[str, str]] = field(default_factory=dict)  # sku -> config hash
    blocklist: dict[str, str] = field(default_factory=dict)  # customer -> reason
    stock: dict[tuple[str, str], Levels] = field(default_factory=dict)
    orders: list[OrderRecord] = field(default_factory=list)
    bought: dict[str, dict[str, int]] = field(default_factory=dict)  # customer -> sku -> units held or paid
    idempotency: list[tuple[str, OrderRecord, int]] = field(default_factory=list)  # key, order as accepted, ms left
    payments: dict[str, tuple[str, int]] = field(default_factory=dict)  # payment id -> (order id, amount)
    cases: list[CaseRecord] = field(default_factory=list)


def _ms(moment: datetime | None) -> int:
    return milliseconds_of(moment) if moment is not None else 0


async def load_snapshot(connection: asyncpg.Connection, *, now_ms: int, idempotency_ttl_ms: int) -> Snapshot:
    snapshot = Snapshot()
    for row in await connection.fetch("SELECT warehouse_id, region FROM warehouses"):
        snapshot.warehouses[row["warehouse_id"]] = row["region"]
    for row in await connection.fetch("SELECT region, warehouse_ids FROM dispatch_rules"):
        snapshot.dispatch[row["region"]] = ",".join(row["warehouse_ids"])
    for row in await connection.fetch("SELECT * FROM skus"):
        config = {
            "name": row["name"],
            "merchant_id": row["merchant_id"],
            "price": str(row["price"]),
            "currency": row["currency"],
            "safety_stock": str(row["safety_stock"]),
        }
        if row["per_customer_limit"] is not None:
            config["per_customer_limit"] = str(row["per_customer_limit"])
        if row["sale_starts_at"] is not None:
            config["sale_starts_ms"] = str(_ms(row["sale_starts_at"]))
        if row["sale_ends_at"] is not None:
            config["sale_ends_ms"] = str(_ms(row["sale_ends_at"]))
        snapshot.skus[row["sku"]] = config
    for row in await connection.fetch("SELECT customer_id, reason FROM customer_blocks WHERE blocked"):
        snapshot.blocklist[row["customer_id"]] = row["reason"]
    snapshot.stock = await ledger_totals(connection)
    await _load_orders(connection, snapshot, now_ms=now_ms, idempotency_ttl_ms=idempotency_ttl_ms)
    return snapshot


async def _load_orders(
    connection: asyncpg.Connection, snapshot: Snapshot, *, now_ms: int, idempotency_ttl_ms: int
) -> None:
    lines: dict[str, list[tuple[int, OrderLine]]] = defaultdict(list)
    for row in await connection.fetch(
        "SELECT order_id, sku, warehouse_id, qty, unit_price, merchant_id, shipment_id FROM order_items"
    ):
        # Keep lines grouped in their shipment's order so the shipment ids come out the same.
        number = int(row["shipment_id"].rsplit("-", 1)[1])
        line = OrderLine(row["sku"], row["warehouse_id"], row["qty"], row["unit_price"], row["merchant_id"])
        lines[row["order_id"]].append((number, line))
    states = await _load_shipment_states(connection)
    snapshot.cases = await _load_cases(connection)
    case_ids: dict[str, list[str]] = defaultdict(list)
    for case in snapshot.cases:
        case_ids[case.order_id].append(case.case_id)
    bought: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in await connection.fetch("SELECT * FROM orders ORDER BY created_at"):
        order_lines = tuple(line for _, line in sorted(lines[row["order_id"]], key=lambda item: item[0]))
        order = OrderRecord(
            order_id=row["order_id"],
            status=row["status"],
            customer_id=row["customer_id"],
            region=row["region"],
            order_type=row["order_type"],
            created_ms=_ms(row["created_at"]),
            expires_ms=_ms(row["expires_at"]),
            total=row["total"],
            currency=row["currency"],
            lines=order_lines,
            cancel_reason=row["cancel_reason"] or "",
            payment_id=row["payment_id"] or "",
            paid_amount=row["paid_amount"] or 0,
            payment_method=row["payment_method"] or "",
            paid_ms=_ms(row["paid_at"]),
            refund_status=row["refund_status"] or "",
            refund_amount=row["refund_amount"] or 0,
            version=row["version"],
            updated_ms=_ms(row["updated_at"]),
            idempotency_key=row["idempotency_key"],
            fingerprint=row["fingerprint"] or "",
            shipment_states=tuple(states.get(row["order_id"], ())),
            previous_status=row["previous_status"] or "",
            shipped_ms=_ms(row["shipped_at"]),
            confirm_due_ms=_ms(row["confirm_due_at"]),
            completed_ms=_ms(row["completed_at"]),
            completion=row["completion"] or "",
            after_sales_until_ms=_ms(row["after_sales_until"]),
            after_sales_closed=row["after_sales_closed"],
            refunded_amount=row["refunded_amount"],
            case_ids=tuple(case_ids.get(row["order_id"], ())),
        )
        snapshot.orders.append(order)
        # Units count against the purchase limit from intake until the order is cancelled.
        if order.status != "cancelled" and not order.cancel_reason:
            for line in order.lines:
                bought[order.customer_id][line.sku] += line.qty
        if order.payment_id:
            snapshot.payments[order.payment_id] = (order.order_id, order.paid_amount)
        left_ms = order.created_ms + idempotency_ttl_ms - now_ms
        if left_ms > 0 and order.fingerprint:
            accepted = OrderRecord(*msgspec.structs.astuple(order)[:21])  # the document as reserve.lua wrote it
            accepted = msgspec.structs.replace(
                accepted, status="pending_payment", cancel_reason="", payment_id="", paid_amount=0,
                payment_method="", paid_ms=0, refund_status="", refund_amount=0, version=1,
                updated_ms=order.created_ms,
            )  # fmt: skip
            snapshot.idempotency.append((order.idempotency_key, accepted, left_ms))
    snapshot.bought = {customer: dict(skus) for customer, skus in bought.items()}


async def _load_shipment_states(connection: asyncpg.Connection) -> dict[str, list[ShipmentState]]:
    """Per order, its shipped shipments in the order they shipped, each with its track."""
    tracks: dict[str, list[TrackEvent]] = defaultdict(list)
    for row in await connection.fetch(
        "SELECT shipment_id, status, location, occurred_at, recorded_at FROM shipment_events"
        " ORDER BY shipment_id, position"
    ):
        event = TrackEvent(row["status"], row["location"], _ms(row["occurred_at"]), _ms(row["recorded_at"]))
        tracks[row["shipment_id"]].append(event)
    states: dict[str, list[ShipmentState]] = defaultdict(list)
    for row in await connection.fetch(
        "SELECT shipment_id, order_id, carrier, tracking_number, shipped_at FROM shipments"
        " WHERE status = 'shipped' ORDER BY shipped_at, shipment_id"
    ):
        state = ShipmentState(
            row["shipment_id"], row["carrier"], row["tracking_number"], _ms(row["shipped_at"]),
            tuple(tracks[row["shipment_id"]]),
        )  # fmt: skip
        states[row["order_id"]].append(state)
    return states


class _CaseItemRow(msgspec.Struct):
    sku: str
    qty: int
    unit_price: int


class _ReplacementRow(msgspec.Struct):
    sku: str
    warehouse_id: str
    qty: int


async def _load_cases(connection: asyncpg.Connection) -> list[CaseRecord]:
    """Every after-sales case, each order's in the order they were opened (by their number)."""
    cases = []
    for row in await connection.fetch(
        "SELECT c.*, r.refund_id, r.status AS refund_status FROM after_sales_cases c"
        " LEFT JOIN refunds r ON r.case_id = c.case_id"
    ):
        items = msgspec.json.decode(row["items"], type=list[_CaseItemRow])
        replacement = msgspec.json.decode(row["replacement"], type=list[_ReplacementRow])
        cases.append(
            CaseRecord(
                case_id=row["case_id"],
                order_id=row["order_id"],
                customer_id=row["customer_id"],
                kind=row["kind"],
                status=row["status"],
                items=tuple(CaseItem(item.sku, item.qty, item.unit_price) for item in items),
                reason=row["reason"],
                amount=row["amount"],
                created_ms=_ms(row["created_at"]),
                updated_ms=_ms(row["updated_at"]),
                version=row["version"],
                refund_id=row["refund_id"] or "",
                refund_status=row["refund_status"] or "",
                return_warehouse_id=row["return_warehouse_id"] or "",
                damaged=row["damaged"],
                replacement=tuple(ReplacementLine(line.sku, line.warehouse_id, line.qty) for line in replacement),
                sold_out_sku=row["sold_out_sku"] or "",
                note=row["note"] or "",
                carrier=row["carrier"] or "",
                tracking_number=row["tracking_number"] or "",
            )
        )
    return sorted(cases, key=lambda case: (case.order_id, int(case.case_id.rsplit("-r", 1)[1])))
