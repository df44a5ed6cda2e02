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

    @property
    def skus(self) -> list[str]:
        return sorted({line.sku for line in self.lines})

    def shipments(self) -> list[Shipment]:
        """Sub-orders per (merchant, warehouse), numbered in order of first appearance.

        Lines never change after intake, so the numbering (and the shipment ids) is stable.
        """
        groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for line in self.lines:
            groups.setdefault((line.merchant_id, line.warehouse_id), []).append((line.sku, line.qty))
        return [
            Shipment(f"{self.order_id}-{number}", warehouse_id, merchant_id, tuple(items))
            for number, ((merchant_id, warehouse_id), items) in enumerate(groups.items(), start=1)
        ]

    def quantities(self) -> dict[str, tuple[int, int]]:
        """Per SKU, in order of appearance: (qty over all warehouses, unit price)."""
        totals: dict[str, tuple[int, int]] = {}
        for line in self.lines:
            qty, _ = totals.get(line.sku, (0, line.unit_price))
            totals[line.sku] = (qty + line.qty, line.unit_price)
        return totals


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


ORDER_EVENT_KINDS = frozenset({"order_created", "order_paid", "order_cancelled", "order_refund_pending"})

order_record_decoder = msgspec.msgpack.Decoder(OrderRecord)
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
