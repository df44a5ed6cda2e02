"""GET /v1/orders: a customer's orders, one page at a time.

Routed by OrderController (Litestar takes one controller per path); the query parameters and
the handler's body live here, so the intake controllers gain only the route.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.params import QueryParameter

from intake.lifecycle_service import OrderQueryService
from intake.schemas import ID_PATTERN, OrdersPageOut
from intake.views import order_detail_out

STATUS_PATTERN = r"^(pending_payment|paid|shipped|completed|cancelled|after_sales|closed)$"
PAGE_SIZE_MAX = 100

CustomerIdQuery = Annotated[str, QueryParameter(name="customer_id", pattern=ID_PATTERN)]
StatusQuery = Annotated[str | None, QueryParameter(name="status", pattern=STATUS_PATTERN)]
CursorQuery = Annotated[
    str | None, QueryParameter(name="cursor", pattern=ID_PATTERN, description="next_cursor of the previous page")
]
LimitQuery = Annotated[int, QueryParameter(name="limit", ge=1, le=PAGE_SIZE_MAX)]


async def list_customer_orders(
    request: Request[Any, Any, Any], customer_id: str, status: str | None, cursor: str | None, limit: int
) -> OrdersPageOut:
    query: OrderQueryService = request.app.state.order_query_service
    orders, next_cursor = await query.page(customer_id, status, cursor, limit)
    return OrdersPageOut([order_detail_out(order) for order in orders], next_cursor)
