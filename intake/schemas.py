"""Wire schemas: every request and response body is a msgspec Struct with bounds.

Public request bodies forbid unknown fields, so a typo is a 400, not a silently
ignored option. Money is integer minor units; times are RFC 3339 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,128}$"
ORDER_ITEMS_MAX = 50
BATCH_ORDERS_MAX = 1000
QTY_MAX = 10_000
PRICE_MAX = 10_000_000_000  # keeps every order total exact in Lua's doubles (< 2**53)
STOCK_MAX = 1_000_000_000

Identifier = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="1-64 of A-Z a-z 0-9 . _ -")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Qty = Annotated[int, msgspec.Meta(ge=1, le=QTY_MAX)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details, with the extension members rushgate uses."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    sku: str | None = None
    order_id: str | None = None
    current_on_hand: int | None = None
    current_status: str | None = None
    shipment_id: str | None = None
    case_id: str | None = None
    errors: list[str] | None = None


class RequestBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of public request bodies."""


class OrderItemIn(RequestBody):
    sku: Identifier
    qty: Qty


class OrderIn(RequestBody):
    customer_id: Identifier
    region: Identifier
    order_type: Literal["flash", "normal"]
    items: Annotated[list[OrderItemIn], msgspec.Meta(min_length=1, max_length=ORDER_ITEMS_MAX)]
    allow_split: bool = False


class BatchOrderIn(OrderIn, kw_only=True):
    """One order of a batch, with its own idempotency key."""

    idempotency_key: Annotated[str, msgspec.Meta(pattern=IDEMPOTENCY_KEY_PATTERN)]


class BatchIn(RequestBody):
    orders: Annotated[list[BatchOrderIn], msgspec.Meta(min_length=1, max_length=BATCH_ORDERS_MAX)]


class PaymentIn(RequestBody):
    payment_id: Identifier
    amount: Annotated[int, msgspec.Meta(ge=0, le=PRICE_MAX * QTY_MAX * ORDER_ITEMS_MAX)]
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class PaymentCallbackIn(RequestBody):
    """A payment provider's notice that an order was paid."""

    order_id: Identifier
    payment_id: Identifier
    amount: Annotated[int, msgspec.Meta(ge=0, le=PRICE_MAX * QTY_MAX * ORDER_ITEMS_MAX)]
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class CancelIn(RequestBody):
    reason: Literal["customer", "merchant"] = "customer"


class OrderItemOut(msgspec.Struct, frozen=True):
    sku: str
    qty: int
    unit_price: int


class ShipmentItemOut(msgspec.Struct, frozen=True):
    sku: str
    qty: int


class TrackEventOut(msgspec.Struct, frozen=True):
    status: str
    location: str
    occurred_at: datetime
    recorded_at: datetime


class ShipmentOut(msgspec.Struct, frozen=True):
    shipment_id: str
    warehouse_id: str
    merchant_id: str
    items: list[ShipmentItemOut]


class ShipmentDetailOut(ShipmentOut, frozen=True, omit_defaults=True):
    """A sub-order with its lifecycle: status "shipped", carrier, tracking number and track once it
    has shipped (a pending shipment renders exactly as in the intake body, status omitted)."""

    status: Literal["pending", "shipped"] = "pending"
    carrier: str | None = None
    tracking_number: str | None = None
    shipped_at: datetime | None = None
    track: list[TrackEventOut] | None = None
    exception: str | None = None  # the latest track event, when it is an exception (lost, delayed, ...)


class LogisticsExceptionOut(msgspec.Struct, frozen=True):
    shipment_id: str
    status: str


class PaymentOut(msgspec.Struct, frozen=True):
    payment_id: str
    amount: int
    method: str
    paid_at: datetime


class RefundOut(msgspec.Struct, frozen=True):
    status: Literal["refund_pending", "refunded"]
    amount: int


OrderStatusName = Literal["pending_payment", "paid", "shipped", "completed", "cancelled", "after_sales", "closed"]


class OrderOut(msgspec.Struct, frozen=True, omit_defaults=True):
    order_id: str
    status: OrderStatusName
    customer_id: str
    region: str
    order_type: str
    created_at: datetime
    expires_at: datetime
    total: int
    currency: str
    items: list[OrderItemOut]
    shipments: list[ShipmentOut]
    cancel_reason: Literal["customer", "merchant", "payment_timeout"] | None = None
    payment: PaymentOut | None = None
    refund: RefundOut | None = None


class OrderDetailOut(OrderOut, frozen=True, omit_defaults=True):
    """The order with its lifecycle after payment (GET and every lifecycle endpoint).

    A separate type so the intake body (OrderOut) costs what it did before the lifecycle.
    """

    shipments: list[ShipmentDetailOut]  # type: ignore[assignment]  # narrows the field; msgspec allows it
    shipped_at: datetime | None = None
    auto_confirm_at: datetime | None = None
    completed_at: datetime | None = None
    completion: Literal["customer", "auto"] | None = None
    after_sales_until: datetime | None = None
    after_sales_closed: bool = False
    logistics_exceptions: list[LogisticsExceptionOut] | None = None
    refunded_amount: int = 0
    case_ids: list[str] | None = None


class BatchResultOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """Outcome of one order of a batch: its status code and either the order or a problem."""

    status: int
    order: OrderOut | None = None
    problem: Problem | None = None


class BatchOut(msgspec.Struct, frozen=True):
    results: list[BatchResultOut]


class WarehouseIn(RequestBody):
    region: Identifier
    name: Text


class WarehouseOut(msgspec.Struct, frozen=True):
    warehouse_id: str
    region: str
    name: str


class DispatchIn(RequestBody):
    warehouses: Annotated[list[Identifier], msgspec.Meta(min_length=1, max_length=32)]


class DispatchOut(msgspec.Struct, frozen=True):
    region: str
    warehouses: list[str]


class SkuIn(RequestBody):
    name: Text
    merchant_id: Identifier
    price: Annotated[int, msgspec.Meta(ge=0, le=PRICE_MAX)]
    currency: Currency
    per_customer_limit: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    safety_stock: Annotated[int, msgspec.Meta(ge=0, le=STOCK_MAX)] = 0


class SkuOut(msgspec.Struct, frozen=True, omit_defaults=True):
    sku: str
    name: str
    merchant_id: str
    price: int
    currency: str
    safety_stock: int
    per_customer_limit: int | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None


class StockSetIn(RequestBody):
    on_hand: Annotated[int, msgspec.Meta(ge=0, le=STOCK_MAX)]
    expected_on_hand: Annotated[int, msgspec.Meta(ge=0, le=STOCK_MAX)] | None = None


class AdjustmentIn(RequestBody):
    delta: Annotated[int, msgspec.Meta(ge=-STOCK_MAX, le=STOCK_MAX)]
    reason: Text


class TransferIn(RequestBody):
    sku: Identifier
    from_warehouse: Identifier
    to_warehouse: Identifier
    qty: Annotated[int, msgspec.Meta(ge=1, le=STOCK_MAX)]


class StockLevelOut(msgspec.Struct, frozen=True):
    warehouse_id: str
    on_hand: int
    available: int
    reserved: int
    committed: int


class StockOut(msgspec.Struct, frozen=True):
    sku: str
    warehouses: list[StockLevelOut]


class TransferOut(msgspec.Struct, frozen=True):
    sku: str
    from_warehouse: StockLevelOut
    to_warehouse: StockLevelOut


class BlockIn(RequestBody):
    reason: Text


class BlockOut(msgspec.Struct, frozen=True):
    customer_id: str
    blocked: bool
    reason: str | None = None


class HealthOut(msgspec.Struct, frozen=True):
    status: str
    checks: dict[str, str] = {}


AuditAction = Literal[
    "warehouse.put", "dispatch.put", "sku.put", "stock.set", "stock.adjust", "stock.transfer", "stock.reconcile",
    "customer.block", "customer.unblock", "client.create", "client.revoke",
]  # fmt: skip
"""Mirrors reservation.audit.AUDIT_ACTIONS (a unit test checks)."""
AuditTargetType = Literal["warehouse", "dispatch", "sku", "stock", "customer", "client"]


class AuditEntryOut(msgspec.Struct, frozen=True):
    """One control-plane change: who, when, what, and the state before and after it."""

    audit_id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    warehouse_ids: list[str]
    request_id: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPageOut(msgspec.Struct, frozen=True):
    """Newest first; pass next_cursor as cursor (with the same filters) for the next page, null at the end."""

    entries: list[AuditEntryOut]
    next_cursor: str | None


class ShipIn(RequestBody):
    carrier: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    tracking_number: Annotated[str, msgspec.Meta(pattern=r"^[!-~]{1,64}$", description="1-64 printable ASCII")]


class TrackEventIn(RequestBody):
    status: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[a-z][a-z_]{0,31}$",
            description="carrier status, e.g. in_transit, out_for_delivery, delivered; exceptions: "
            "lost, delayed, damaged, returned_to_sender",
        ),
    ]
    location: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with an offset")]


class CaseItemIn(RequestBody):
    sku: Identifier
    qty: Qty


class CaseIn(RequestBody):
    kind: Literal["refund_only", "return_refund", "exchange"]
    items: Annotated[list[CaseItemIn], msgspec.Meta(min_length=1, max_length=ORDER_ITEMS_MAX)]
    reason: Text


class ReviewIn(RequestBody):
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ReturnIn(RequestBody):
    warehouse_id: Identifier
    damaged: bool = False


class CaseItemOut(msgspec.Struct, frozen=True):
    sku: str
    qty: int
    unit_price: int


class ReplacementOut(msgspec.Struct, frozen=True):
    sku: str
    warehouse_id: str
    qty: int


class CaseRefundOut(msgspec.Struct, frozen=True):
    refund_id: str
    amount: int
    reason: str
    status: Literal["pending", "succeeded"]


class CaseOut(msgspec.Struct, frozen=True, omit_defaults=True):
    case_id: str
    order_id: str
    customer_id: str
    kind: Literal["refund_only", "return_refund", "exchange"]
    status: Literal[
        "awaiting_review", "awaiting_return", "awaiting_refund", "awaiting_exchange_return", "exchange_shipping",
        "exchange_sold_out", "succeeded", "rejected",
    ]  # fmt: skip
    items: list[CaseItemOut]
    reason: str
    amount: int
    created_at: datetime
    updated_at: datetime
    refund: CaseRefundOut | None = None
    return_warehouse_id: str | None = None
    damaged: bool = False
    replacement: list[ReplacementOut] | None = None
    sold_out_sku: str | None = None
    note: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None


class CasesOut(msgspec.Struct, frozen=True):
    cases: list[CaseOut]


class OrdersPageOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """One page of a customer's orders, newest first; pass next_cursor as cursor for the next page."""

    orders: list[OrderDetailOut]
    next_cursor: str | None = None


class OrderTimeoutsOut(msgspec.Struct, frozen=True):
    """The timers an order runs on, as this deployment sets them."""

    flash_hold_ttl_s: int
    normal_hold_ttl_s: int
    auto_confirm_days: int
    after_sales_window_days: int
