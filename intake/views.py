"""Rendering of stored records as response bodies."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from intake.schemas import (
    CaseItemOut,
    CaseOut,
    CaseRefundOut,
    LogisticsExceptionOut,
    OrderDetailOut,
    OrderItemOut,
    OrderOut,
    PaymentOut,
    RefundOut,
    ReplacementOut,
    ShipmentDetailOut,
    ShipmentItemOut,
    ShipmentOut,
    TrackEventOut,
)
from intake.service import from_ms
from reservation.outcomes import ReserveCode
from reservation.records import EXCEPTION_TRACK_STATUSES, CaseRecord, OrderRecord, Shipment, ShipmentState

# The creation and expiry times of an order fresh from intake: every order of a batch (or of one
# coalesced call) shares its clock reading, so one datetime serves them all.
_intake_moment = lru_cache(maxsize=256)(from_ms)


def shipment_out(shipment: Shipment, state: ShipmentState | None) -> ShipmentDetailOut:
    items = [ShipmentItemOut(sku, qty) for sku, qty in shipment.items]
    if state is None:
        return ShipmentDetailOut(shipment.shipment_id, shipment.warehouse_id, shipment.merchant_id, items)
    latest = state.track[-1].status if state.track else None
    return ShipmentDetailOut(
        shipment.shipment_id,
        shipment.warehouse_id,
        shipment.merchant_id,
        items,
        status="shipped",
        carrier=state.carrier,
        tracking_number=state.tracking_number,
        shipped_at=from_ms(state.shipped_ms),
        track=[
            TrackEventOut(event.status, event.location, from_ms(event.occurred_ms), from_ms(event.recorded_ms))
            for event in state.track
        ],
        exception=latest if latest in EXCEPTION_TRACK_STATUSES else None,
    )


def lifecycle_fields(order: OrderRecord) -> dict[str, Any]:
    """The fields an order gains after payment (none for an order fresh from intake)."""
    fields: dict[str, Any] = {}
    if order.shipped_ms:
        fields["shipped_at"] = from_ms(order.shipped_ms)
    if order.confirm_due_ms and order.status == "shipped":
        fields["auto_confirm_at"] = from_ms(order.confirm_due_ms)
    if order.completed_ms:
        fields["completed_at"] = from_ms(order.completed_ms)
        fields["completion"] = order.completion
        fields["after_sales_until"] = from_ms(order.after_sales_until_ms)
        fields["after_sales_closed"] = order.after_sales_closed
    exceptions = order.logistics_exceptions()
    if exceptions:
        fields["logistics_exceptions"] = [LogisticsExceptionOut(key, value) for key, value in exceptions.items()]
    if order.refunded_amount:
        fields["refunded_amount"] = order.refunded_amount
    if order.case_ids:
        fields["case_ids"] = list(order.case_ids)
    return fields


def order_out(order: OrderRecord) -> OrderOut:
    """The order body of intake, payment and cancellation; once the lifecycle went further
    (a shipment, a case, a refund paid out) the detailed body, so no answer hides it."""
    if order.shipment_states or order.case_ids or order.refunded_amount or order.refund_status == "refunded":
        return order_detail_out(order)
    status: Any = order.status
    return OrderOut(
        order_id=order.order_id,
        status=status,
        customer_id=order.customer_id,
        region=order.region,
        order_type=order.order_type,
        created_at=_intake_moment(order.created_ms),
        expires_at=_intake_moment(order.expires_ms),
        total=order.total,
        currency=order.currency,
        items=[OrderItemOut(sku, qty, unit_price) for sku, (qty, unit_price) in order.quantities().items()],
        shipments=[
            ShipmentOut(
                shipment.shipment_id,
                shipment.warehouse_id,
                shipment.merchant_id,
                [ShipmentItemOut(sku, qty) for sku, qty in shipment.items],
            )
            for shipment in order.shipments()
        ],
        cancel_reason=order.cancel_reason or None,  # type: ignore[arg-type]
        payment=PaymentOut(order.payment_id, order.paid_amount, order.payment_method, from_ms(order.paid_ms))
        if order.payment_id
        else None,
        refund=RefundOut("refund_pending", order.refund_amount) if order.refund_status else None,
    )


def order_detail_out(order: OrderRecord) -> OrderDetailOut:
    """The order with its lifecycle: shipment statuses and tracks, receipt, window, refunds, cases."""
    status: Any = order.status
    refund_status: Any = "refunded" if order.refund_status == "refunded" else "refund_pending"
    return OrderDetailOut(
        order_id=order.order_id,
        status=status,
        customer_id=order.customer_id,
        region=order.region,
        order_type=order.order_type,
        created_at=from_ms(order.created_ms),
        expires_at=from_ms(order.expires_ms),
        total=order.total,
        currency=order.currency,
        items=[OrderItemOut(sku, qty, unit_price) for sku, (qty, unit_price) in order.quantities().items()],
        shipments=[shipment_out(shipment, order.shipped(shipment.shipment_id)) for shipment in order.shipments()],
        cancel_reason=order.cancel_reason or None,  # type: ignore[arg-type]
        payment=PaymentOut(order.payment_id, order.paid_amount, order.payment_method, from_ms(order.paid_ms))
        if order.payment_id
        else None,
        refund=RefundOut(refund_status, order.refund_amount) if order.refund_status else None,
        **lifecycle_fields(order),
    )


def case_out(case: CaseRecord) -> CaseOut:
    kind: Any = case.kind
    status: Any = case.status
    refund_status: Any = case.refund_status
    return CaseOut(
        case_id=case.case_id,
        order_id=case.order_id,
        customer_id=case.customer_id,
        kind=kind,
        status=status,
        items=[CaseItemOut(item.sku, item.qty, item.unit_price) for item in case.items],
        reason=case.reason,
        amount=case.amount,
        created_at=from_ms(case.created_ms),
        updated_at=from_ms(case.updated_ms),
        refund=CaseRefundOut(case.refund_id, case.amount, case.reason, refund_status) if case.refund_id else None,
        return_warehouse_id=case.return_warehouse_id or None,
        damaged=case.damaged,
        replacement=[ReplacementOut(line.sku, line.warehouse_id, line.qty) for line in case.replacement] or None,
        sold_out_sku=case.sold_out_sku or None,
        note=case.note or None,
        carrier=case.carrier or None,
        tracking_number=case.tracking_number or None,
    )


_GAUGES = {
    "holds_outstanding": "Orders awaiting payment, each holding stock until its deadline.",
    "sold_out_skus": "SKUs with no sellable unit in any warehouse.",
    "stream_backlog": "Events not yet written to Postgres by the persister.",
}


def render_metrics(values: dict[str, int]) -> str:
    """Prometheus text exposition of the partition's counters and gauges.

    Orders refused by a worker's sold-out short-circuit never reach the script and are not counted.
    """
    lines = [
        "# HELP rushgate_orders_total Orders decided by reserve.lua, by outcome.",
        "# TYPE rushgate_orders_total counter",
    ]
    for code in ReserveCode:
        count = values.get(f"reserve_{code.value}", 0)
        lines.append(f'rushgate_orders_total{{outcome="{code.name.lower()}"}} {count}')
    for name, help_text in _GAUGES.items():
        lines += [
            f"# HELP rushgate_{name} {help_text}",
            f"# TYPE rushgate_{name} gauge",
            f"rushgate_{name} {values[name]}",
        ]
    return "\n".join(lines) + "\n"
