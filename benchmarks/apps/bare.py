"""The ceiling: POST /v1/orders with the same wire bodies as rushgate and no I/O at all.

Decodes ``intake.schemas.OrderIn``, checks the Idempotency-Key header the same way,
and answers 201 with an ``OrderOut`` of the shape rushgate returns for a one-warehouse
order (one shipment, snapshotted prices). What is left is the framework and the server:
the upper bound for any endpoint that does real work on these bodies.

Run (as rushgate serve runs uvicorn):
``python -m benchmarks.uvicorn_serve --port 8000 --workers 2 benchmarks.apps.bare:app``.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

from litestar import Litestar, Response, get, post
from litestar.exceptions import ClientException
from litestar.params import HeaderParameter, JSONBody

from intake.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    OrderIn,
    OrderItemOut,
    OrderOut,
    ShipmentItemOut,
    ShipmentOut,
)
from intake.service import from_ms, new_order_id

UNIT_PRICE = 49_900
CURRENCY = "EUR"
WAREHOUSE_ID = "w1"
MERCHANT_ID = "m1"
HOLD_TTL_MS = 1_800_000

_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def bare_order_out(order: OrderIn, now_ms: int) -> OrderOut:
    """The body rushgate would answer for this order, built without asking anyone."""
    order_id = new_order_id(now_ms)
    shipment_items = [ShipmentItemOut(item.sku, item.qty) for item in order.items]
    return OrderOut(
        order_id=order_id,
        status="pending_payment",
        customer_id=order.customer_id,
        region=order.region,
        order_type=order.order_type,
        created_at=from_ms(now_ms),
        expires_at=from_ms(now_ms + HOLD_TTL_MS),
        total=sum(item.qty for item in order.items) * UNIT_PRICE,
        currency=CURRENCY,
        items=[OrderItemOut(item.sku, item.qty, UNIT_PRICE) for item in order.items],
        shipments=[ShipmentOut(f"{order_id}-1", WAREHOUSE_ID, MERCHANT_ID, shipment_items)],
    )


@post("/v1/orders", status_code=201)
async def create_order(
    data: JSONBody[OrderIn],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
) -> Response[OrderOut]:
    if idempotency_key is None or not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ClientException("a valid Idempotency-Key header is required")
    return Response(bare_order_out(data, time.time_ns() // 1_000_000), status_code=201)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[create_order, healthz], debug=False, openapi_config=None)
