"""Rendering of stored records as response bodies."""

from __future__ import annotations

from typing import Any

from intake.schemas import OrderItemOut, OrderOut, PaymentOut, RefundOut, ShipmentItemOut, ShipmentOut
from intake.service import from_ms
from reservation.records import OrderRecord


def order_out(order: OrderRecord) -> OrderOut:
    status: Any = order.status
    return OrderOut(
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
