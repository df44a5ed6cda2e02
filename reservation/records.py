"""Shapes of what the Lua scripts store and append, decoded with msgspec.

These Structs are the Python half of the contracts written in the script headers
(lua/reserve.lua documents the order document, every script its event). Field
order is the contract: they are array-like msgpack on both sides.
"""

from __future__ import annotations

import msgspec


class OrderLine(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One allocated piece of an order line: units of a SKU held in one warehouse."""

    sku: str
    warehouse_id: str
    qty: int
    unit_price: int
    merchant_id: str


class Shipment(msgspec.Struct, frozen=True):
    """A sub-order: what one merchant ships from one warehouse."""

    shipment_id: str
    warehouse_id: str
    merchant_id: str
    items: tuple[tuple[str, int], ...]


class TrackEvent(msgspec.Struct, array_like=True, frozen=True):
    """One logistics event of a shipment, as the carrier reported it."""

    status: str
    location: str
    occurred_ms: int
    recorded_ms: int


class ShipmentState(msgspec.Struct, array_like=True, frozen=True):
    """A shipment that left its warehouse, with its logistics track (oldest first)."""

    shipment_id: str
    carrier: str
    tracking_number: str
    shipped_ms: int
    track: tuple[TrackEvent, ...] = ()


EXCEPTION_TRACK_STATUSES = frozenset({"lost", "delayed", "damaged", "returned_to_sender"})
"""Logistics statuses that need someone's attention; the latest one of a shipment is shown on the order."""


class OrderRecord(msgspec.Struct, array_like=True, frozen=True):
    """The order document kept in Redis under the order key and carried by events."""

    order_id: str
    status: str
    customer_id: str
    region: str
    order_type: str
    created_ms: int
    expires_ms: int
    total: int
    currency: str
    lines: tuple[OrderLine, ...]
    cancel_reason: str
    payment_id: str
    paid_amount: int
    payment_method: str
    paid_ms: int
    refund_status: str
    refund_amount: int
    version: int
    updated_ms: int
    idempotency_key: str
    fingerprint: str = ""  # identity of the request body; "" in documents written before it was kept
    # The lifecycle after payment (issue 4). Documents written by reserve.lua stop at fingerprint;
    # every later script fills these in (see lua/ship.lua for the layout).
    shipment_states: tuple[ShipmentState, ...] = ()
    previous_status: str = ""  # the status before the open after-sales case
    shipped_ms: int = 0  # when the last shipment left
    confirm_due_ms: int = 0  # automatic confirmation of receipt, once shipped
    completed_ms: int = 0
    completion: str = ""  # "customer" | "auto"
    after_sales_until_ms: int = 0  # end of the after-sales window, once completed
    after_sales_closed: bool = False
    refunded_amount: int = 0  # refunds recorded by after-sales cases, never above paid_amount
    case_ids: tuple[str, ...] = ()

    @property
    def skus(self) -> list[str]:
        return sorted({line.sku for line in self.lines})

    def shipments(self) -> list[Shipment]:
        """Sub-orders per (merchant, warehouse), numbered in order of first appearance.

        Lines never change after intake, so the numbering (and the shipment ids) is stable.
        """
        if len(self.lines) == 1:  # most orders (every flash order of one unit): one shipment, no grouping
            line = self.lines[0]
            return [Shipment(f"{self.order_id}-1", line.warehouse_id, line.merchant_id, ((line.sku, line.qty),))]
        groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for line in self.lines:
            groups.setdefault((line.merchant_id, line.warehouse_id), []).append((line.sku, line.qty))
        return [
            Shipment(f"{self.order_id}-{number}", warehouse_id, merchant_id, tuple(items))
            for number, ((merchant_id, warehouse_id), items) in enumerate(groups.items(), start=1)
        ]

    def shipped(self, shipment_id: str) -> ShipmentState | None:
        return next((state for state in self.shipment_states if state.shipment_id == shipment_id), None)

    def logistics_exceptions(self) -> dict[str, str]:
        """Shipment id -> exception status, for shipments whose latest event is an exception."""
        return {
            state.shipment_id: state.track[-1].status
            for state in self.shipment_states
            if state.track and state.track[-1].status in EXCEPTION_TRACK_STATUSES
        }

    def quantities(self) -> dict[str, tuple[int, int]]:
        """Per SKU, in order of appearance: (qty over all warehouses, unit price)."""
        totals: dict[str, tuple[int, int]] = {}
        for line in self.lines:
            qty, _ = totals.get(line.sku, (0, line.unit_price))
            totals[line.sku] = (qty + line.qty, line.unit_price)
        return totals


class CaseItem(msgspec.Struct, array_like=True, frozen=True, gc=False):
    sku: str
    qty: int
    unit_price: int


class ReplacementLine(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Units an exchange took for its replacement: committed in one warehouse."""

    sku: str
    warehouse_id: str
    qty: int


class CaseRecord(msgspec.Struct, array_like=True, frozen=True):
    """An after-sales case, kept under its own key; layout in lua/case_open.lua."""

    case_id: str
    order_id: str
    customer_id: str
    kind: str  # refund_only | return_refund | exchange
    status: str
    items: tuple[CaseItem, ...]
    reason: str
    amount: int  # the refund, never above what the order paid less earlier refunds
    created_ms: int
    updated_ms: int
    version: int
    refund_id: str
    refund_status: str  # "" | pending | succeeded
    return_warehouse_id: str
    damaged: bool
    replacement: tuple[ReplacementLine, ...]
    sold_out_sku: str
    note: str
    carrier: str
    tracking_number: str

    @property
    def skus(self) -> list[str]:
        return sorted({item.sku for item in self.items})


OPEN_CASE_STATUSES = frozenset(
    {"awaiting_review", "awaiting_return", "awaiting_refund", "awaiting_exchange_return", "exchange_shipping",
     "exchange_sold_out"}
)  # fmt: skip


class Movement(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One change of the stock counters of (sku, warehouse); deltas sum to the counters."""

    sku: str
    warehouse_id: str
    kind: str
    qty: int
    available_delta: int
    reserved_delta: int
    committed_delta: int
    on_hand_delta: int


class StockChange(msgspec.Struct, array_like=True, frozen=True):
    """Data of a ``stock_changed`` event (stocktake, adjustment, transfer)."""

    request_id: str
    reason: str
    movements: tuple[Movement, ...]


ORDER_EVENT_KINDS = frozenset(
    {
        "order_created", "order_paid", "order_cancelled", "order_refund_pending",
        "shipment_shipped", "shipment_tracked", "order_completed", "order_after_sales_closed",
        "after_sales_opened", "after_sales_approved", "after_sales_rejected", "return_received", "refund_requested",
        "refund_succeeded", "exchange_shipped", "order_refunded",
    }
)  # fmt: skip

order_record_decoder = msgspec.msgpack.Decoder(OrderRecord)
case_record_decoder = msgspec.msgpack.Decoder(CaseRecord)
movements_decoder = msgspec.msgpack.Decoder(tuple[Movement, ...])
stock_change_decoder = msgspec.msgpack.Decoder(StockChange)


class WarehousePut(msgspec.Struct, array_like=True, frozen=True):
    """Data of a ``warehouse_put`` event."""

    warehouse_id: str
    region: str
    name: str


class DispatchPut(msgspec.Struct, array_like=True, frozen=True):
    """Data of a ``dispatch_put`` event: a region's warehouses in priority order."""

    region: str
    warehouse_ids: tuple[str, ...]


class SkuPut(msgspec.Struct, array_like=True, frozen=True):
    """Data of a ``sku_put`` event. Optional values are None when unset."""

    sku: str
    name: str
    merchant_id: str
    price: int
    currency: str
    per_customer_limit: int | None
    sale_starts_ms: int | None
    sale_ends_ms: int | None
    safety_stock: int


class CustomerBlock(msgspec.Struct, array_like=True, frozen=True):
    """Data of a ``customer_blocked`` / ``customer_unblocked`` event."""

    customer_id: str
    reason: str


CONFIG_EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "warehouse_put": WarehousePut,
    "dispatch_put": DispatchPut,
    "sku_put": SkuPut,
    "customer_blocked": CustomerBlock,
    "customer_unblocked": CustomerBlock,
}


class ConfigAudit(msgspec.Struct, array_like=True, frozen=True):
    """Field ``u`` of a configuration event (config_put.lua): who changed it, and what the hash held."""

    actor: str
    operation: str
    before: tuple[str, ...]  # field, value, field, value, ...

    def before_fields(self) -> dict[str, str]:
        return dict(zip(self.before[::2], self.before[1::2], strict=True))


class LevelsBefore(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The counters of one warehouse just before a stock change."""

    warehouse_id: str
    available: int
    reserved: int
    committed: int
    on_hand: int


class StockAudit(msgspec.Struct, array_like=True, frozen=True):
    """Field ``u`` of a ``stock_changed`` event: who, which operation ("set", "delta", "transfer"), before."""

    actor: str
    operation: str
    before: tuple[LevelsBefore, ...]


config_audit_decoder = msgspec.msgpack.Decoder(ConfigAudit)
stock_audit_decoder = msgspec.msgpack.Decoder(StockAudit)
