"""Rendering of stored records as response bodies."""

from __future__ import annotations

from typing import Any

from intake.schemas import OrderItemOut, OrderOut, PaymentOut, RefundOut, ShipmentItemOut, ShipmentOut
from intake.service import from_ms
from reservation.outcomes import ReserveCode
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
