"""Stream entries to Postgres: one transaction per batch, COPY and multi-row statements, idempotent.

Replaying any entry changes nothing: events, movements and audit rows are keyed by their stream
position, order rows only move forward in ``version``, configuration rows only move
forward in stream position. A batch may hold entries in any order (claimed entries
of a dead consumer arrive late), so every guard compares, never assumes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from msgspec.structs import astuple

from persistence.audit import AuditRow, audit_rows, write_audit_rows
from reservation.clock import moment_of
from reservation.records import (
    CONFIG_EVENT_TYPES,
    ORDER_EVENT_KINDS,
    CaseRecord,
    ConfigAudit,
    CustomerBlock,
    DispatchPut,
    Movement,
    OrderLine,
    OrderRecord,
    SkuPut,
    StockAudit,
    StockChange,
    WarehousePut,
    case_record_decoder,
    config_audit_decoder,
    movements_decoder,
    order_record_decoder,
    stock_audit_decoder,
    stock_change_decoder,
)

logger = logging.getLogger("rushgate.persistence")

_json = msgspec.json.Encoder()


class Event(msgspec.Struct, frozen=True):
    """One decoded event: a stream entry, or one order of an entry that holds several
    (orders_created, numbered by ``stream_index``). A Struct rather than a frozen dataclass: made
    once per event, it cost 1.36 against 0.11 us (a frozen dataclass sets each field through
    object.__setattr__)."""

    partition: int
    stream_ms: int
    stream_seq: int
    kind: str
    occurred_ms: int
    order: OrderRecord | None
    movements: tuple[Movement, ...]
    data: msgspec.Struct | None
    case: CaseRecord | None = None  # after-sales events carry their case
    audit: ConfigAudit | StockAudit | None = None  # who changed it and what it replaced (control plane)
    stream_index: int = 0  # its place in an entry that holds several events (orders_created); else 0

    @property
    def position(self) -> tuple[int, int]:
        """The stream entry's id, as numbers (what configuration rows keep; a configuration event
        is alone in its entry)."""
        return (self.stream_ms, self.stream_seq)


MULTI_ORDER_KINDS = {b"orders_created": "order_created", b"orders_cancelled": "order_cancelled"}
"""Kinds of entry that hold several orders, and the kind of each order's event: reserve.lua and
cancel.lua append one entry per call, and a call that accepts or cancels two or more orders
writes their documents as one msgpack array (field o)."""

orders_decoder = msgspec.msgpack.Decoder(list[OrderRecord])


def decode_entries(partition: int, entry_id: str, fields: dict[bytes, bytes]) -> list[Event]:
    """The events of one entry: its one event, or for an orders_created (orders_cancelled) entry one
    order_created (order_cancelled) per order, in the order of its array (stream_index 0, 1, ...)."""
    kind = MULTI_ORDER_KINDS.get(fields.get(b"k", b""))
    if kind is None:
        return [decode_entry(partition, entry_id, fields)]
    stream_ms, stream_seq = _entry_position(entry_id)
    orders = orders_decoder.decode(fields[b"o"])
    if len(orders) < 2:
        raise ValueError(f"{kind} entry of {len(orders)} orders at {entry_id}")
    occurred = fields.get(b"t")  # orders_cancelled's; orders_created's is each document's updated_ms
    return [
        Event(partition, stream_ms, stream_seq, kind, int(occurred) if occurred is not None else order.updated_ms,
              order, _derived_movements(kind, order, entry_id), None, stream_index=index)
        for index, order in enumerate(orders)
    ]  # fmt: skip


def extra_events(fields: dict[bytes, bytes]) -> int:
    """Events an entry holds beyond one: an orders_created or orders_cancelled entry's orders less
    one, read from its array's msgpack header (so an entry whose documents do not decode still
    counts what the script counted for it); 0 for any other entry."""
    if fields.get(b"k", b"") not in MULTI_ORDER_KINDS:
        return 0
    packed = fields.get(b"o", b"")
    if packed[:1] and 0x90 <= packed[0] <= 0x9F:
        count = packed[0] - 0x90
    elif packed[:1] == b"\xdc" and len(packed) >= 3:
        count = int.from_bytes(packed[1:3], "big")
    elif packed[:1] == b"\xdd" and len(packed) >= 5:
        count = int.from_bytes(packed[1:5], "big")
    else:
        return 0
    return max(count - 1, 0)


def _entry_position(entry_id: str) -> tuple[int, int]:
    milliseconds, dash, sequence = entry_id.partition("-")  # not a generator: a third of the time
    if not dash:
        raise ValueError(f"malformed entry id {entry_id!r}")
    return int(milliseconds), int(sequence)


def decode_entry(partition: int, entry_id: str, fields: dict[bytes, bytes]) -> Event:
    """Decode one entry of one event; a malformed entry is a bug upstream and fails loudly.
    (decode_entries reads any entry, orders_created included.)"""
    stream_ms, stream_seq = _entry_position(entry_id)
    kind = fields[b"k"].decode()
    if kind in ORDER_EVENT_KINDS:
        order = order_record_decoder.decode(fields[b"o"])
        # reserve.lua leaves t out of order_created: it is the document's updated_ms (and created_ms).
        occurred = fields.get(b"t")
        occurred_ms = int(occurred) if occurred is not None else order.updated_ms
        packed_movements = fields.get(b"m")
        if packed_movements is not None:
            movements = movements_decoder.decode(packed_movements)
        else:
            movements = _derived_movements(kind, order, entry_id)
        case = case_record_decoder.decode(fields[b"c"]) if b"c" in fields else None
        return Event(partition, stream_ms, stream_seq, kind, occurred_ms, order, movements, None, case)
    if fields[b"k"] in MULTI_ORDER_KINDS:
        raise ValueError(f"{entry_id} holds several events: decode_entries reads it")
    occurred_ms = int(fields[b"t"])
    audit_field = fields.get(b"u")  # absent from events written before the audit log existed
    if kind == "stock_changed":
        change = stock_change_decoder.decode(fields[b"d"])
        stock_audit = stock_audit_decoder.decode(audit_field) if audit_field else None
        return Event(
            partition, stream_ms, stream_seq, kind, occurred_ms, None, change.movements, change, audit=stock_audit
        )
    struct_type = CONFIG_EVENT_TYPES.get(kind)
    assert struct_type is not None, f"unknown event kind {kind!r} at {entry_id}"
    data = msgspec.msgpack.decode(fields[b"d"], type=struct_type)
    config_audit = config_audit_decoder.decode(audit_field) if audit_field else None
    return Event(partition, stream_ms, stream_seq, kind, occurred_ms, None, (), data, audit=config_audit)


def _derived_movements(kind: str, order: OrderRecord, entry_id: str) -> tuple[Movement, ...]:
    """The movements of an event that carries none: each document line is one (reserve.lua, cancel.lua).

    order_created: every line was reserved. order_cancelled: every line went back to available,
    from committed if the order was paid (only a paid order has a payment id when it is
    cancelled: paying a pending order makes it paid) or else from reserved."""
    if kind == "order_created":
        movement_kind, available, reserved, committed = "reserve", -1, 1, 0
    elif kind == "order_cancelled":
        paid = bool(order.payment_id)
        movement_kind, available, reserved, committed = "release", 1, (0 if paid else -1), (-1 if paid else 0)
    else:  # not an assert: it decides what is written, so it must hold under -O too
        raise ValueError(f"{kind} event without movements at {entry_id}")
    return tuple([  # a list, not a generator: tuple() of a generator costs twice as much here
        Movement(line.sku, line.warehouse_id, movement_kind, line.qty, available * line.qty, reserved * line.qty,
                 committed * line.qty, 0)
        for line in order.lines
    ])  # fmt: skip


PERMANENT_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
"""Postgres refusing the data itself: retrying the same entry can never succeed."""

UNDECODABLE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError, AssertionError)
"""A stream entry this version cannot read (a bug, or a newer writer during a rolling deploy)."""


def _optional_moment(milliseconds: int | None) -> datetime | None:
    return moment_of(milliseconds) if milliseconds else None


def as_plain(value: Any) -> Any:
    """Structs as dicts (array-like ones included), for readable JSON payloads."""
    if isinstance(value, msgspec.Struct):
        return {name: as_plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, (list, tuple)):
        return [as_plain(item) for item in value]
    return value


def _named_twin(record_type: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """A Struct with record_type's fields that msgspec encodes as a JSON object: the records are
    array_like (compact in Redis and the stream), while the feed's payloads name every field."""
    fields = [(field.name, Any) for field in msgspec.structs.fields(record_type)]
    return msgspec.defstruct(f"{record_type.__name__}Payload", fields, frozen=True, gc=False)


_OrderPayload, _LinePayload, _MovementPayload = (_named_twin(kind) for kind in (OrderRecord, OrderLine, Movement))
_LINES = OrderRecord.__struct_fields__.index("lines")
_SHIPMENT_STATES = OrderRecord.__struct_fields__.index("shipment_states")


def _order_payload(order: OrderRecord, movements: tuple[Movement, ...]) -> dict[str, Any]:
    """as_plain of an order event, spelled out: it runs for every order event. The generic walk (an
    isinstance per value) was a fifth of the persister's time under load. Dicts of the records
    (msgspec's asdict) then took 6.3-7.2 us an order to the JSON text, these named twins, which
    msgspec encodes without a dict, 4.9-5.3 (timeit, 1000 created orders, alternating, the same
    text)."""
    values = list(astuple(order))
    values[_LINES] = [_LinePayload(*astuple(line)) for line in order.lines]
    values[_SHIPMENT_STATES] = as_plain(order.shipment_states)  # empty until shipping: cheap
    return {"order": _OrderPayload(*values), "movements": [_MovementPayload(*astuple(move)) for move in movements]}


def _payload(event: Event) -> str:
    if event.order is not None:
        body = _order_payload(event.order, event.movements)
        if event.case is not None:
            body["case"] = as_plain(event.case)
        return _json.encode(body).decode()
    return _json.encode(as_plain(event.data)).decode()


def _rows_from_json(column_types: str, parameter: int) -> str:
    """A SELECT of one row per element of the parameter (its number), a JSON array of row arrays,
    cast column by column to column_types (space-separated, in the order of the rows' values).

    Rows travel as one JSON document instead of one array parameter per column: asyncpg checks
    every array element against abc types, and for 1000 orders of 29 columns its encoding took
    ~7 ms of the persister's CPU against ~0.7 ms for msgspec's JSON, while Postgres answered the
    JSON form faster (jsonb parsed once, 12 vs 17 ms for the statement, measured here).
    The type ``ms`` is an epoch-millisecond number made a timestamptz here, so the persister sends
    integers rather than formatting (and Postgres parsing) RFC 3339 text for every moment.
    """
    return f"SELECT {_row_casts(column_types)} FROM jsonb_array_elements(${parameter}::jsonb) AS row"


def _row_casts(column_types: str) -> str:
    """The select list of _rows_from_json: each element of ``row`` cast to its column's type."""
    return ", ".join(
        f"(timestamptz 'epoch' + (row->>{index})::bigint * interval '1 millisecond')"
        if name == "ms"
        else f"(row->>{index})::{name}"
        for index, name in enumerate(column_types.split())
    )


_EVENT_COLUMNS = (
    "partition", "stream_ms", "stream_seq", "stream_index", "kind", "order_id", "occurred_at", "payload"
)  # fmt: skip
_ORDER_COLUMNS = (
    "order_id", "customer_id", "region", "order_type", "status", "cancel_reason", "total", "currency",
    "created_at", "expires_at", "payment_id", "paid_amount", "payment_method", "paid_at",
    "refund_status", "refund_amount", "idempotency_key", "version", "updated_at", "fingerprint",
    "shipped_at", "confirm_due_at", "completed_at", "completion", "after_sales_until", "after_sales_closed",
    "previous_status", "refunded_amount", "logistics_exceptions",
)  # fmt: skip
_SHIPMENT_COLUMNS = (
    "shipment_id", "order_id", "warehouse_id", "merchant_id", "status", "carrier", "tracking_number", "shipped_at",
    "order_version",
)  # fmt: skip
_ITEM_COLUMNS = ("order_id", "sku", "warehouse_id", "qty", "unit_price", "merchant_id", "shipment_id")
_MOVEMENT_COLUMNS = (
    "partition", "stream_ms", "stream_seq", "stream_index", "position", "sku", "warehouse_id", "kind", "qty",
    "available_delta", "reserved_delta", "committed_delta", "on_hand_delta", "order_id", "request_id", "reason",
    "occurred_at",
)  # fmt: skip
"""The columns of the tables a batch writes by COPY as well as by statement (write_prepared), in
the order of the rows' values."""

_INSERT_EVENTS = f"""
INSERT INTO events ({", ".join(_EVENT_COLUMNS)})
SELECT {_row_casts("integer bigint bigint integer text text ms")}, payload::json
FROM ROWS FROM (jsonb_array_elements($1::jsonb), unnest($2::text[])) AS batch(row, payload)
ON CONFLICT DO NOTHING
"""
"""The payloads travel beside the rows, as a text array: inside the rows' jsonb document each
~1.2 KB payload was parsed into jsonb with the rest, then printed back to text for the json
column (events was the costliest of the batch's statements: 31 us of 123 per order event)."""

_UPSERT_ORDERS = f"""
INSERT INTO orders ({", ".join(_ORDER_COLUMNS)})
{
    _rows_from_json(
        "text text text text text text bigint text ms ms text bigint text ms text "
        "bigint text integer ms text ms ms ms text ms boolean "
        "text bigint jsonb",
        3,
    )
}
ON CONFLICT (order_id) DO UPDATE SET
    status = excluded.status, cancel_reason = excluded.cancel_reason, expires_at = excluded.expires_at,
    payment_id = excluded.payment_id, paid_amount = excluded.paid_amount,
    payment_method = excluded.payment_method, paid_at = excluded.paid_at,
    refund_status = excluded.refund_status, refund_amount = excluded.refund_amount,
    version = excluded.version, updated_at = excluded.updated_at,
    shipped_at = excluded.shipped_at, confirm_due_at = excluded.confirm_due_at,
    completed_at = excluded.completed_at, completion = excluded.completion,
    after_sales_until = excluded.after_sales_until, after_sales_closed = excluded.after_sales_closed,
    previous_status = excluded.previous_status, refunded_amount = excluded.refunded_amount,
    logistics_exceptions = excluded.logistics_exceptions
WHERE orders.version < excluded.version
"""

_UPSERT_SHIPMENTS = f"""
INSERT INTO shipments ({", ".join(_SHIPMENT_COLUMNS)})
{_rows_from_json("text text text text text text text ms integer", 4)}
ON CONFLICT (shipment_id) DO UPDATE SET
    status = excluded.status, carrier = excluded.carrier, tracking_number = excluded.tracking_number,
    shipped_at = excluded.shipped_at, order_version = excluded.order_version
WHERE shipments.order_version < excluded.order_version
"""

_INSERT_SHIPMENT_EVENTS = f"""
INSERT INTO shipment_events (shipment_id, position, order_id, status, location, occurred_at, recorded_at)
{_rows_from_json("text integer text text text ms ms", 6)}
ON CONFLICT DO NOTHING
"""

_INSERT_ITEMS = f"""
INSERT INTO order_items ({", ".join(_ITEM_COLUMNS)})
{_rows_from_json("text text text integer bigint text text", 5)}
ON CONFLICT DO NOTHING
"""

_INSERT_MOVEMENTS = f"""
INSERT INTO stock_movements ({", ".join(_MOVEMENT_COLUMNS)})
{
    _rows_from_json(
        "integer bigint bigint integer integer text text text integer bigint bigint bigint bigint text text text ms",
        9,
    )
}
ON CONFLICT DO NOTHING
"""

_UPSERT_CASES = f"""
INSERT INTO after_sales_cases (case_id, order_id, customer_id, kind, status, items, reason, amount,
                               return_warehouse_id, damaged, replacement, sold_out_sku, note, carrier,
                               tracking_number, created_at, updated_at, version)
{_rows_from_json("text text text text text jsonb text bigint text boolean jsonb text text text text ms ms integer", 7)}
ON CONFLICT (case_id) DO UPDATE SET
    status = excluded.status, amount = excluded.amount, return_warehouse_id = excluded.return_warehouse_id,
    damaged = excluded.damaged, replacement = excluded.replacement, sold_out_sku = excluded.sold_out_sku,
    note = excluded.note, carrier = excluded.carrier, tracking_number = excluded.tracking_number,
    updated_at = excluded.updated_at, version = excluded.version
WHERE after_sales_cases.version < excluded.version
"""

_UPSERT_REFUNDS = f"""
INSERT INTO refunds (refund_id, case_id, order_id, amount, reason, status, updated_at, case_version)
{_rows_from_json("text text text bigint text text ms integer", 8)}
ON CONFLICT (refund_id) DO UPDATE SET
    amount = excluded.amount, status = excluded.status, updated_at = excluded.updated_at,
    case_version = excluded.case_version
WHERE refunds.case_version < excluded.case_version
"""

_WRITE_BATCH = f"""
WITH batch_events AS ({_INSERT_EVENTS}), batch_orders AS ({_UPSERT_ORDERS}),
     batch_shipments AS ({_UPSERT_SHIPMENTS}), batch_items AS ({_INSERT_ITEMS}),
     batch_tracks AS ({_INSERT_SHIPMENT_EVENTS}), batch_cases AS ({_UPSERT_CASES}),
     batch_refunds AS ({_UPSERT_REFUNDS}), batch_movements AS ({_INSERT_MOVEMENTS})
SELECT 1
"""
"""Every row of a batch in one statement: each data-modifying WITH runs once, whether its rows are
there or not (an empty array inserts nothing). The sub-statements see one snapshot, which is all
they need: each table is written by one of them, and no per-order row is read back. Foreign keys
are checked at the end of the statement, after every sub-statement has inserted its rows.
One statement instead of BEGIN, six statements and COMMIT: one round trip, so Postgres has the
whole batch while the persister prepares the next (rushgate.workers.Persister)."""

_INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (partition, stream_ms, stream_seq, kind, fields, error)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT DO NOTHING
"""

_NEWER = "WHERE ({table}.stream_ms, {table}.stream_seq) < (excluded.stream_ms, excluded.stream_seq)"

_UPSERT_WAREHOUSE = f"""
INSERT INTO warehouses (warehouse_id, region, name, changed_at, stream_ms, stream_seq)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (warehouse_id) DO UPDATE SET region = excluded.region, name = excluded.name,
    changed_at = excluded.changed_at, stream_ms = excluded.stream_ms, stream_seq = excluded.stream_seq
{_NEWER.format(table="warehouses")}
"""

_UPSERT_DISPATCH = f"""
INSERT INTO dispatch_rules (region, warehouse_ids, changed_at, stream_ms, stream_seq)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (region) DO UPDATE SET warehouse_ids = excluded.warehouse_ids,
    changed_at = excluded.changed_at, stream_ms = excluded.stream_ms, stream_seq = excluded.stream_seq
{_NEWER.format(table="dispatch_rules")}
"""

_UPSERT_SKU = f"""
INSERT INTO skus (sku, name, merchant_id, price, currency, per_customer_limit, sale_starts_at,
                  sale_ends_at, safety_stock, changed_at, stream_ms, stream_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (sku) DO UPDATE SET name = excluded.name, merchant_id = excluded.merchant_id,
    price = excluded.price, currency = excluded.currency, per_customer_limit = excluded.per_customer_limit,
    sale_starts_at = excluded.sale_starts_at, sale_ends_at = excluded.sale_ends_at,
    safety_stock = excluded.safety_stock, changed_at = excluded.changed_at,
    stream_ms = excluded.stream_ms, stream_seq = excluded.stream_seq
{_NEWER.format(table="skus")}
"""

_UPSERT_BLOCK = f"""
INSERT INTO customer_blocks (customer_id, blocked, reason, changed_at, stream_ms, stream_seq)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (customer_id) DO UPDATE SET blocked = excluded.blocked, reason = excluded.reason,
    changed_at = excluded.changed_at, stream_ms = excluded.stream_ms, stream_seq = excluded.stream_seq
{_NEWER.format(table="customer_blocks")}
"""


def _json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as the JSON document _rows_from_json reads (datetimes as RFC 3339, None as null)."""
    return _json.encode(rows).decode()


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_MS = 946_684_800_000  # _PG_EPOCH in Unix epoch milliseconds
_MICROSECOND = timedelta(microseconds=1)
_TIMESTAMP = struct.Struct("!q")  # timestamptz on the wire: microseconds since _PG_EPOCH
_INFINITY_US, _NEGATIVE_INFINITY_US = 2**63 - 1, -(2**63)


def _encode_moment(value: int | datetime) -> bytes:
    """timestamptz, binary: an epoch-millisecond number (the rows' moments) or an aware datetime."""
    if type(value) is int:
        return _TIMESTAMP.pack((value - _PG_EPOCH_MS) * 1000)
    assert isinstance(value, datetime)
    return _TIMESTAMP.pack((value - _PG_EPOCH) // _MICROSECOND)  # a naive datetime raises TypeError


def _decode_moment(data: bytes) -> datetime:
    """timestamptz, binary, decoded as asyncpg's own codec does."""
    microseconds: int = _TIMESTAMP.unpack(data)[0]
    if microseconds == _INFINITY_US:
        return datetime.max
    if microseconds == _NEGATIVE_INFINITY_US:
        return datetime.min
    return _PG_EPOCH + microseconds * _MICROSECOND


_COPY_READY: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


async def _ready_for_copy(connection: asyncpg.Connection) -> None:
    """Let the connection's timestamptz take epoch milliseconds, as the rows carry them: asyncpg's
    own codec wants datetimes, and made and encoded one at ~0.9 us a value, 5 a created order
    (a third of COPY's encoding); this one ~0.2 us. Datetimes are still taken (other statements on
    the connection pass them) and columns read back as asyncpg reads them. Once per connection."""
    if connection in _COPY_READY:
        return
    await connection.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=_encode_moment, decoder=_decode_moment, format="binary"
    )
    _COPY_READY.add(connection)


def _order_row(order: OrderRecord) -> tuple[Any, ...]:
    return (
        order.order_id, order.customer_id, order.region, order.order_type, order.status,
        order.cancel_reason or None, order.total, order.currency, order.created_ms,
        order.expires_ms, order.payment_id or None, order.paid_amount if order.payment_id else None,
        order.payment_method or None, order.paid_ms or None, order.refund_status or None,
        order.refund_amount if order.refund_status else None, order.idempotency_key, order.version,
        order.updated_ms, order.fingerprint or None, order.shipped_ms or None,
        order.confirm_due_ms or None, order.completed_ms or None, order.completion or None,
        order.after_sales_until_ms or None, order.after_sales_closed, order.previous_status or None,
        order.refunded_amount, _json.encode(order.logistics_exceptions()).decode() if order.shipment_states else None,
    )  # fmt: skip


def _shipment_and_item_rows(orders: Sequence[OrderRecord]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    shipment_rows = []
    item_rows = []
    for order in orders:
        for shipment in order.shipments():
            state = order.shipped(shipment.shipment_id)
            shipment_rows.append(
                (shipment.shipment_id, order.order_id, shipment.warehouse_id, shipment.merchant_id,
                 "shipped" if state else "pending", state.carrier if state else None,
                 state.tracking_number if state else None, state.shipped_ms if state else None,
                 order.version)
            )  # fmt: skip
            for line in order.lines:
                if (line.merchant_id, line.warehouse_id) == (shipment.merchant_id, shipment.warehouse_id):
                    item_rows.append(
                        (order.order_id, line.sku, line.warehouse_id, line.qty, line.unit_price,
                         line.merchant_id, shipment.shipment_id)
                    )  # fmt: skip
    return shipment_rows, item_rows


def _track_rows(orders: Iterable[OrderRecord]) -> list[tuple[Any, ...]]:
    return [
        (state.shipment_id, position, order.order_id, track_event.status, track_event.location,
         track_event.occurred_ms, track_event.recorded_ms)
        for order in orders
        for state in order.shipment_states
        for position, track_event in enumerate(state.track)
    ]  # fmt: skip


def _case_row(case: CaseRecord) -> tuple[Any, ...]:
    return (
        case.case_id, case.order_id, case.customer_id, case.kind, case.status,
        _json.encode([as_dict(item) for item in case.items]).decode(), case.reason, case.amount,
        case.return_warehouse_id or None, case.damaged,
        _json.encode([as_dict(line) for line in case.replacement]).decode(), case.sold_out_sku or None,
        case.note or None, case.carrier or None, case.tracking_number or None, case.created_ms,
        case.updated_ms, case.version,
    )  # fmt: skip


def as_dict(value: msgspec.Struct) -> dict[str, Any]:
    result: dict[str, Any] = as_plain(value)
    return result


def _config_statement(event: Event) -> tuple[str, tuple[Any, ...]]:
    at = moment_of(event.occurred_ms)
    data = event.data
    if isinstance(data, WarehousePut):
        return _UPSERT_WAREHOUSE, (data.warehouse_id, data.region, data.name, at, *event.position)
    if isinstance(data, DispatchPut):
        return _UPSERT_DISPATCH, (data.region, list(data.warehouse_ids), at, *event.position)
    if isinstance(data, SkuPut):
        return _UPSERT_SKU, (
            data.sku, data.name, data.merchant_id, data.price, data.currency, data.per_customer_limit,
            _optional_moment(data.sale_starts_ms), _optional_moment(data.sale_ends_ms), data.safety_stock,
            at, *event.position,
        )  # fmt: skip
    assert isinstance(data, CustomerBlock), f"no table for {event.kind}"
    return _UPSERT_BLOCK, (data.customer_id, event.kind == "customer_blocked", data.reason, at, *event.position)


COPY_EVENTS_MIN = 64
"""Batches of this many events or more are written with COPY (write_prepared); smaller ones with
the single statement alone, whose one round trip suits a trickle of events better than COPY's
round trip per table."""


@dataclass(frozen=True, slots=True)
class CopyRows:
    """The rows of a batch that no earlier batch can have written, for COPY: its events and stock
    movements (new stream positions), and the order, shipment and item rows of the orders created
    in it. Should one be there already (a batch replayed after a crash), the COPY fails on its key."""

    events: list[tuple[Any, ...]]
    movements: list[tuple[Any, ...]]
    orders: list[tuple[Any, ...]]
    shipments: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]

    async def write(self, connection: asyncpg.Connection) -> None:
        tables = (
            ("events", _EVENT_COLUMNS, self.events), ("stock_movements", _MOVEMENT_COLUMNS, self.movements),
            ("orders", _ORDER_COLUMNS, self.orders), ("shipments", _SHIPMENT_COLUMNS, self.shipments),
            ("order_items", _ITEM_COLUMNS, self.items),
        )  # fmt: skip
        for table, columns, rows in tables:
            if rows:
                await connection.copy_records_to_table(table, records=rows, columns=columns)


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch's rows, encoded for write_prepared. Built apart from the write so a persister can
    prepare its next batch while Postgres writes this one."""

    arguments: tuple[Any, ...] | None  # the parameters of _WRITE_BATCH; None when no row is left for it
    config: list[tuple[str, tuple[Any, ...]]]  # one statement per configuration event, in stream order
    audit: list[AuditRow]
    copy: CopyRows | None = None  # rows for COPY, none of them among the arguments' rows
    events: Sequence[Event] = ()  # kept with copy: prepared again for the statement alone if a COPY fails on a key
    order_ids: frozenset[str] = frozenset()  # with copy: every order the batch writes a row of
    created_ids: frozenset[str] = frozenset()  # with copy: the orders whose rows go by COPY

    def may_copy_behind(self, earlier: PreparedBatch) -> bool:
        """Whether this batch's COPY may run while ``earlier`` is still uncommitted on another
        connection (write_prepared's ``after``): both go by COPY (only their order sets are kept)
        and this one creates no order the earlier one writes, so the COPY can neither wait on the
        earlier batch's rows nor make the earlier batch wait on its own (stream positions differ
        between two reads of a consumer group), which would leave each waiting for the other."""
        return self.copy is not None and earlier.copy is not None and self.created_ids.isdisjoint(earlier.order_ids)


def prepare_batch(events: Sequence[Event], *, copy: bool | None = None) -> PreparedBatch:
    """The rows of a batch: one per event and movement, one per order, shipment and item at the
    order's latest version in the batch, one per after-sales case and refund at its latest.

    With ``copy`` (by default when the batch has COPY_EVENTS_MIN events or more), the rows that
    cannot be there yet go to COPY and the statement gets the rest (rows of orders created by an
    earlier batch, cases, refunds, tracks), if any."""
    copying = len(events) >= COPY_EVENTS_MIN if copy is None else copy
    event_rows: list[tuple[Any, ...]] = []
    payloads: list[str] = []
    latest_orders: dict[str, OrderRecord] = {}
    latest_cases: dict[str, CaseRecord] = {}
    created: set[str] = set()
    movement_rows = []
    for event in events:
        order = event.order
        order_id = order.order_id if order is not None else None
        occurred = event.occurred_ms
        if copying:
            row = (event.partition, event.stream_ms, event.stream_seq, event.stream_index, event.kind, order_id,
                   occurred, _payload(event))  # fmt: skip
            event_rows.append(row)
        else:
            event_rows.append(
                (event.partition, event.stream_ms, event.stream_seq, event.stream_index, event.kind, order_id, occurred)
            )
            payloads.append(_payload(event))
        if order is not None:
            if event.kind == "order_created":
                created.add(order.order_id)
            known = latest_orders.get(order.order_id)
            if known is None or known.version < order.version:
                latest_orders[order.order_id] = order
        if event.case is not None:
            known_case = latest_cases.get(event.case.case_id)
            if known_case is None or known_case.version < event.case.version:
                latest_cases[event.case.case_id] = event.case
        request_id = reason = None
        if isinstance(event.data, StockChange):
            request_id, reason = event.data.request_id, event.data.reason
        for position, movement in enumerate(event.movements):
            movement_rows.append(
                (event.partition, event.stream_ms, event.stream_seq, event.stream_index, position, movement.sku,
                 movement.warehouse_id, movement.kind, movement.qty, movement.available_delta,
                 movement.reserved_delta, movement.committed_delta, movement.on_hand_delta, order_id,
                 request_id, reason, occurred)
            )  # fmt: skip
    if copying:
        new_orders = [order for order_id, order in latest_orders.items() if order_id in created]
        known_orders = [order for order_id, order in latest_orders.items() if order_id not in created]
    else:
        new_orders, known_orders = [], list(latest_orders.values())
    shipment_rows, item_rows = _shipment_and_item_rows(known_orders)
    track_rows = _track_rows(latest_orders.values())
    cases = list(latest_cases.values())
    refund_rows = [
        (case.refund_id, case.case_id, case.order_id, case.amount, case.reason, case.refund_status,
         case.updated_ms, case.version)
        for case in cases
        if case.refund_id
    ]  # fmt: skip
    config_events = sorted((event for event in events if event.data is not None and event.kind != "stock_changed"),
                           key=lambda event: event.position)  # fmt: skip
    config = [_config_statement(event) for event in config_events]
    audit = audit_rows(events)
    order_rows = [_order_row(order) for order in known_orders]
    case_rows = [_case_row(case) for case in cases]
    # With COPY, the events and movements go there and the statement has none of them.
    statement_events, statement_payloads, statement_movements = ([], [], []) if copying else (
        event_rows, payloads, movement_rows)  # fmt: skip
    arguments = (
        _json_rows(statement_events), statement_payloads, _json_rows(order_rows), _json_rows(shipment_rows),
        _json_rows(item_rows), _json_rows(track_rows), _json_rows(case_rows), _json_rows(refund_rows),
        _json_rows(statement_movements),
    )  # fmt: skip
    if not copying:
        return PreparedBatch(arguments, config, audit)
    new_shipment_rows, new_item_rows = _shipment_and_item_rows(new_orders)
    copy_rows = CopyRows(
        event_rows, movement_rows, [_order_row(order) for order in new_orders], new_shipment_rows, new_item_rows
    )
    rest = order_rows or track_rows or case_rows or refund_rows  # shipment and item rows come with order rows
    return PreparedBatch(
        arguments if rest else None, config, audit, copy_rows, events, frozenset(latest_orders), frozenset(created)
    )


async def write_prepared(
    connection: asyncpg.Connection, batch: PreparedBatch, *, after: asyncio.Future[Any] | None = None
) -> None:
    """Write a prepared batch atomically; with ``after`` (an earlier batch being written on another
    connection), commit only once it has: COPY first, then wait for it, then the statement part and
    the commit, so rows become visible in stream order and the statement never misses a row the
    earlier batch is still writing. If ``after`` fails, this transaction is rolled back.

    A small batch of order events (the common case at a steady rate) is a single statement, so a
    single round trip: Postgres runs it as its own transaction. A large one (a backlog, a spike) is
    a transaction of one COPY per table and, for rows that may exist already, the statement: COPY
    spares Postgres the statement's JSON parsing and ON CONFLICT's speculative inserts, and writes
    less WAL (1000-order batches of order_created on Postgres 15: backend CPU 28-31 against 46-50 us
    an order, WAL 2.5 against 3.0 KB; docs/design.md). When a COPY meets a row already written
    (the batch was replayed, or a late order_created follows its order's later events), the
    transaction is rolled back and the batch written again by the statement alone, which keeps
    what is there."""
    if batch.copy is not None:
        await _ready_for_copy(connection)
        try:
            async with connection.transaction():
                await batch.copy.write(connection)
                if after is not None:
                    await after
                await _write_statements(connection, batch)
            return
        except asyncpg.UniqueViolationError as error:
            logger.info("persister: %s is written already (%s): writing the batch again by upsert", error.table_name,
                        error.constraint_name)  # fmt: skip
            batch = prepare_batch(batch.events, copy=False)
    if after is not None:
        await after
    if not batch.config and not batch.audit:
        if batch.arguments is not None:
            await connection.execute(_WRITE_BATCH, *batch.arguments)
        return
    async with connection.transaction():
        await _write_statements(connection, batch)


async def _write_statements(connection: asyncpg.Connection, batch: PreparedBatch) -> None:
    if batch.arguments is not None:
        await connection.execute(_WRITE_BATCH, *batch.arguments)
    for statement, arguments in batch.config:
        await connection.execute(statement, *arguments)
    await write_audit_rows(connection, batch.audit)


async def write_events(connection: asyncpg.Connection, events: Sequence[Event], *, copy: bool | None = None) -> None:
    """Write one batch in one transaction; safe to call again with any of the same events.
    ``copy``: as prepare_batch (None: by the batch's size)."""
    await write_prepared(connection, prepare_batch(events, copy=copy))


async def record_dead_letter(
    connection: asyncpg.Connection, partition: int, entry_id: str, fields: dict[bytes, bytes], error: BaseException
) -> None:
    """Keep an entry that cannot be applied, with its raw fields (base64) and the reason."""
    stream_ms, stream_seq = (int(part) for part in entry_id.split("-"))
    kind = fields.get(b"k", b"").decode(errors="replace") or None
    raw = {name.decode(errors="replace"): base64.b64encode(value).decode() for name, value in fields.items()}
    reason = f"{type(error).__name__}: {error}"[:2000]
    await connection.execute(
        _INSERT_DEAD_LETTER, partition, stream_ms, stream_seq, kind, _json.encode(raw).decode(), reason
    )
