"""Thin HTTP controllers: decode, call the service, encode. No business rules here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, Parameter, QueryParameter

from intake import hot_path
from intake.auth import client_id_of
from intake.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from intake.codec import decode_body, read_body, read_optional_body
from intake.order_queries import CursorQuery, CustomerIdQuery, LimitQuery, StatusQuery, list_customer_orders
from intake.problems import PROBLEM_MEDIA_TYPE
from intake.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    AdjustmentIn,
    AuditAction,
    AuditPageOut,
    AuditTargetType,
    BatchOut,
    BlockIn,
    BlockOut,
    CancelIn,
    DispatchIn,
    DispatchOut,
    HealthOut,
    OrderDetailOut,
    OrderOut,
    OrdersPageOut,
    PaymentCallbackIn,
    PaymentIn,
    Problem,
    SkuIn,
    SkuOut,
    StockLevelOut,
    StockOut,
    StockSetIn,
    TransferIn,
    TransferOut,
    WarehouseIn,
    WarehouseOut,
)
from intake.service import AuditService, CatalogService, OrderService
from intake.views import order_detail_out, order_out, render_metrics
from reservation.audit import AUDIT_PAGE_SIZE_MAX
from reservation.keys import PERSISTER_GROUP
from rushgate.settings import Settings

BEARER: tuple[dict[str, list[str]], ...] = ({"bearer": []},)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem documents an operation may answer."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=PROBLEM_DESCRIPTIONS[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


PROBLEM_DESCRIPTIONS = {
    400: "invalid-request: malformed body, header or value",
    401: "unauthorized: missing or unknown bearer token",
    403: "forbidden or customer-blocked",
    404: "not-found",
    409: "a business outcome: sold-out, purchase-limit, sale-not-open, already-paid, refund-pending, ...",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-request (unknown sku or region, ...), idempotency-key-reused, amount-mismatch",
    429: "rate-limited or cooling-down (Retry-After)",
    503: "backlog-full or dependency-unavailable (Retry-After)",
}
DATA_PLANE_PROBLEMS = problems(400, 401, 404, 409, 422, 503)
CONTROL_PLANE_PROBLEMS = problems(400, 401, 403, 404, 409, 422)

PathId = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def _orders(request: Request[Any, Any, Any]) -> OrderService:
    service: OrderService = request.app.state.order_service
    return service


def _catalog(request: Request[Any, Any, Any]) -> CatalogService:
    service: CatalogService = request.app.state.catalog_service
    return service


class OrderController(Controller):
    path = "/v1/orders"
    tags = ("orders",)
    security = BEARER

    @post(
        "/",
        operation_id="createOrder",
        status_code=201,
        summary="Hold stock for an order",
        description="Body and response in JSON or MessagePack (Content-Type / Accept: application/msgpack).",
        responses=problems(400, 401, 403, 409, 413, 415, 422, 429, 503),
    )
    async def create_order(
        self,
        request: Request[Any, Any, Any],
        idempotency_key: Annotated[
            str,
            HeaderParameter(
                name="Idempotency-Key",
                description="1-128 printable ASCII",
                required=True,
                pattern=IDEMPOTENCY_KEY_PATTERN,
            ),
        ],
    ) -> Response[OrderOut]:
        return await _reply(request, hot_path.create_order, idempotency_key)

    @get(
        "/{order_id:str}",
        operation_id="getOrder",
        summary="Current state of an order",
        responses=problems(400, 401, 404),
    )
    async def get_order(self, request: Request[Any, Any, Any], order_id: PathId) -> OrderDetailOut:
        return order_detail_out(await _orders(request).get(order_id))

    @post(
        "/{order_id:str}/cancel",
        operation_id="cancelOrder",
        status_code=200,
        summary="Cancel and release",
        responses=problems(400, 401, 404, 409),
    )
    async def cancel_order(self, request: Request[Any, Any, Any], order_id: PathId) -> OrderOut:
        data = await read_optional_body(request, CancelIn)
        reason = data.reason if data is not None else "customer"
        return order_out(await _orders(request).cancel(order_id, reason))

    @post(
        "/{order_id:str}/payment",
        operation_id="payOrder",
        status_code=200,
        summary="Record a payment",
        responses=DATA_PLANE_PROBLEMS,
    )
    async def pay_order(self, request: Request[Any, Any, Any], order_id: PathId) -> OrderOut:
        data = await read_body(request, PaymentIn)
        return order_out(await _orders(request).pay(order_id, data))

    @get(
        "/",
        operation_id="listOrders",
        summary="A customer's orders, newest first, optionally of one status; cursor pagination",
        description="Postgres is the index, merged with orders not persisted yet, so an order shows the moment "
        "it is made; each order is answered as it is now.",
        responses=problems(400, 401, 503),
    )
    async def list_orders(
        self,
        request: Request[Any, Any, Any],
        customer_id: CustomerIdQuery,
        status: StatusQuery = None,
        cursor: CursorQuery = None,
        limit: LimitQuery = 20,
    ) -> OrdersPageOut:
        return await list_customer_orders(request, customer_id, status, cursor, limit)


class BatchController(Controller):
    """Many orders in one request; its body limit is set per app (RUSHGATE_BATCH_BODY_BYTES_MAX)."""

    path = "/v1/orders:batch"
    tags = ("orders",)
    security = BEARER

    @post(
        "/",
        operation_id="createOrders",
        status_code=200,
        summary="Hold stock for up to 1000 orders, each with its own idempotency key",
        description="One result per order, in order: {status: 201, order} or {status, problem}. JSON or MessagePack.",
        responses=problems(400, 401, 413, 415),
    )
    async def create_orders(self, request: Request[Any, Any, Any]) -> Response[BatchOut]:
        return await _reply(request, hot_path.create_orders)


async def _reply(
    request: Request[Any, Any, Any], operation: Callable[..., Awaitable[hot_path.Reply]], *header: str
) -> Response[Any]:
    """An intake operation of intake/hot_path.py served through Litestar (same function, same answer)."""
    status, body, media_type, headers = await operation(
        _orders(request),
        await request.body(),
        request.headers.get("content-type", ""),
        request.headers.get("accept", ""),
        *header,
        client_id_of(request.scope),
    )
    return Response(body, status_code=status, media_type=media_type, headers=headers or None)


class PaymentCallbackController(Controller):
    """Payment providers' callbacks: no bearer token, an HMAC signature instead."""

    path = "/v1/payments/callbacks"
    tags = ("payments",)

    @post(
        "/{provider:str}",
        operation_id="paymentCallback",
        status_code=200,
        summary="A signed notice from a payment provider; same effect as POST /v1/orders/{order_id}/payment",
        description=(
            "Headers Rushgate-Timestamp (unix seconds) and Rushgate-Signature: v1=<hex HMAC-SHA256 of"
            " '<timestamp>.' + body with the provider's secret>. Replaying a callback changes nothing."
        ),
        responses=problems(400, 401, 404, 409, 422, 503),
    )
    async def payment_callback(self, request: Request[Any, Any, Any], provider: PathId) -> OrderOut:
        body = await request.body()
        settings: Settings = request.app.state.settings
        orders = _orders(request)
        verify(
            settings.provider_secrets.get(provider),
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            now_s=orders.clock() // 1000,
            tolerance_s=settings.callback_tolerance_s,
        )
        data = decode_body(body, request.headers.get("content-type", ""), PaymentCallbackIn)
        payment = PaymentIn(payment_id=data.payment_id, amount=data.amount, method=data.method)
        return order_out(await orders.pay(data.order_id, payment))


class CatalogController(Controller):
    path = "/v1"
    tags = ("control plane",)
    security = BEARER

    @put(
        "/warehouses/{warehouse_id:str}",
        operation_id="putWarehouse",
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def put_warehouse(self, request: Request[Any, Any, Any], warehouse_id: PathId) -> WarehouseOut:
        data = await read_body(request, WarehouseIn)
        return await _catalog(request).put_warehouse(warehouse_id, data, client_id_of(request.scope))

    @put(
        "/dispatch/{region:str}",
        operation_id="putDispatch",
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def put_dispatch(self, request: Request[Any, Any, Any], region: PathId) -> DispatchOut:
        data = await read_body(request, DispatchIn)
        return await _catalog(request).put_dispatch(region, data, client_id_of(request.scope))

    @get("/dispatch/{region:str}", operation_id="getDispatch", responses=CONTROL_PLANE_PROBLEMS)
    async def get_dispatch(self, request: Request[Any, Any, Any], region: PathId) -> DispatchOut:
        return await _catalog(request).get_dispatch(region)

    @put(
        "/skus/{sku:str}",
        operation_id="putSku",
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def put_sku(self, request: Request[Any, Any, Any], sku: PathId) -> SkuOut:
        data = await read_body(request, SkuIn)
        return await _catalog(request).put_sku(sku, data, client_id_of(request.scope))

    @get("/skus/{sku:str}", operation_id="getSku", responses=CONTROL_PLANE_PROBLEMS)
    async def get_sku(self, request: Request[Any, Any, Any], sku: PathId) -> SkuOut:
        return await _catalog(request).get_sku(sku)

    @put(
        "/stock/{sku:str}/{warehouse_id:str}",
        operation_id="setStock",
        summary="Stocktake (compare-and-set)",
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def set_stock(self, request: Request[Any, Any, Any], sku: PathId, warehouse_id: PathId) -> StockLevelOut:
        data = await read_body(request, StockSetIn)
        return await _catalog(request).set_stock(sku, warehouse_id, data, client_id_of(request.scope))

    @post(
        "/stock/{sku:str}/{warehouse_id:str}/adjustments",
        operation_id="adjustStock",
        status_code=200,
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def adjust_stock(self, request: Request[Any, Any, Any], sku: PathId, warehouse_id: PathId) -> StockLevelOut:
        data = await read_body(request, AdjustmentIn)
        return await _catalog(request).adjust_stock(sku, warehouse_id, data, client_id_of(request.scope))

    @post(
        "/stock/transfers",
        operation_id="transferStock",
        status_code=200,
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def transfer_stock(self, request: Request[Any, Any, Any]) -> TransferOut:
        data = await read_body(request, TransferIn)
        return await _catalog(request).transfer_stock(data, client_id_of(request.scope))

    @get("/stock/{sku:str}", operation_id="getStock", responses=CONTROL_PLANE_PROBLEMS)
    async def get_stock(self, request: Request[Any, Any, Any], sku: PathId) -> StockOut:
        return await _catalog(request).get_stock(sku)

    @put(
        "/blocklist/{customer_id:str}",
        operation_id="blockCustomer",
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def block_customer(self, request: Request[Any, Any, Any], customer_id: PathId) -> BlockOut:
        data = await read_body(request, BlockIn)
        return await _catalog(request).block(customer_id, data, client_id_of(request.scope))

    @post(
        "/blocklist/{customer_id:str}/unblock",
        operation_id="unblockCustomer",
        status_code=200,
        responses=CONTROL_PLANE_PROBLEMS,
    )
    async def unblock_customer(self, request: Request[Any, Any, Any], customer_id: PathId) -> BlockOut:
        return await _catalog(request).unblock(customer_id, client_id_of(request.scope))

    @get("/blocklist/{customer_id:str}", operation_id="getBlock", responses=CONTROL_PLANE_PROBLEMS)
    async def get_block(self, request: Request[Any, Any, Any], customer_id: PathId) -> BlockOut:
        return await _catalog(request).get_block(customer_id)


RFC3339_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
"""An RFC 3339 time with its offset. Taken as text: Litestar would also take a number as a time."""
AuditText = Annotated[str | None, QueryParameter(pattern=r"^[!-~]{1,128}$", description="exact match")]


class AuditController(Controller):
    """The audit log of control-plane changes (admin scope only: it shows who operates the service)."""

    path = "/v1/audit"
    tags = ("control plane",)
    security = BEARER

    @get(
        "/",
        operation_id="listAudit",
        summary="Control-plane changes, newest first: who, when, what, before and after",
        description=(
            "Filters combine with AND. warehouse_id matches every change touching that warehouse (its own"
            " settings, dispatch rules naming it, stock in it). since is inclusive, until exclusive."
            " Pass next_cursor back as cursor, with the same filters, for the next page."
        ),
        responses=problems(400, 401, 403, 503),
    )
    async def list_audit(
        self,
        request: Request[Any, Any, Any],
        actor: AuditText = None,
        action: Annotated[AuditAction | None, QueryParameter()] = None,
        target_type: Annotated[AuditTargetType | None, QueryParameter()] = None,
        target_id: AuditText = None,
        warehouse_id: AuditText = None,
        since: Annotated[str | None, QueryParameter(pattern=RFC3339_PATTERN, description="inclusive")] = None,
        until: Annotated[str | None, QueryParameter(pattern=RFC3339_PATTERN, description="exclusive")] = None,
        cursor: Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=AUDIT_PAGE_SIZE_MAX)] = 50,
    ) -> AuditPageOut:
        service: AuditService = request.app.state.audit_service
        return await service.page(
            actor=actor, action=action, target_type=target_type, target_id=target_id,
            warehouse_id=warehouse_id, since=since, until=until, cursor=cursor, limit=limit,
        )  # fmt: skip


class MetricsController(Controller):
    path = "/v1/metrics"
    tags = ("operations",)
    security = BEARER

    @get(
        "/",
        operation_id="metrics",
        summary="Prometheus text: orders decided by outcome, holds outstanding, sold-out SKUs, persister backlog",
        media_type="text/plain; version=0.0.4",
        responses=problems(401, 403),
    )
    async def metrics(self, request: Request[Any, Any, Any]) -> str:
        return render_metrics(await _orders(request).store.gauges(PERSISTER_GROUP))


class HealthController(Controller):
    path = "/"
    tags = ("health",)

    @get("/healthz", operation_id="health", summary="The process is up")
    async def healthz(self) -> HealthOut:
        return HealthOut("ok")

    @get("/readyz", operation_id="ready", summary="Redis and Postgres answer")
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[HealthOut]:
        checks = await request.app.state.readiness()
        ready = all(value == "ok" for value in checks.values())
        return Response(HealthOut("ok" if ready else "unavailable", checks), status_code=200 if ready else 503)
