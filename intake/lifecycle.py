"""HTTP controllers of the order lifecycle after payment. Thin: decode, call the service, encode.

Kept apart from intake/controllers.py so the intake hot path (POST /v1/orders) is not touched.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post

from intake.codec import read_body, read_optional_body
from intake.controllers import BEARER, PathId, problems
from intake.lifecycle_service import AfterSalesService, LifecycleService
from intake.schemas import (
    CaseIn,
    CaseOut,
    CasesOut,
    OrderDetailOut,
    OrderTimeoutsOut,
    ReturnIn,
    ReviewIn,
    ShipIn,
    TrackEventIn,
)
from intake.views import case_out, order_detail_out
from rushgate.settings import Settings

CASE_PROBLEMS = problems(400, 401, 403, 404, 409, 422)


def _lifecycle(request: Request[Any, Any, Any]) -> LifecycleService:
    service: LifecycleService = request.app.state.lifecycle_service
    return service


class ShipmentController(Controller):
    path = "/v1/orders"
    tags = ("lifecycle",)
    security = BEARER

    @post(
        "/{order_id:str}/shipments/{shipment_id:str}/ship",
        operation_id="shipShipment",
        status_code=200,
        summary="A shipment leaves its warehouse: committed and on-hand stock drop; the order is shipped "
        "when all its shipments are",
        responses=problems(400, 401, 404, 409),
    )
    async def ship(self, request: Request[Any, Any, Any], order_id: PathId, shipment_id: PathId) -> OrderDetailOut:
        data = await read_body(request, ShipIn)
        return order_detail_out(await _lifecycle(request).ship(order_id, shipment_id, data))

    @post(
        "/{order_id:str}/shipments/{shipment_id:str}/events",
        operation_id="trackShipment",
        status_code=200,
        summary="A logistics event of a shipped shipment; lost, delayed, damaged and returned_to_sender "
        "are surfaced on the order",
        responses=problems(400, 401, 404, 409),
    )
    async def track(self, request: Request[Any, Any, Any], order_id: PathId, shipment_id: PathId) -> OrderDetailOut:
        data = await read_body(request, TrackEventIn)
        return order_detail_out(await _lifecycle(request).track(order_id, shipment_id, data))

    @post(
        "/{order_id:str}/confirm-receipt",
        operation_id="confirmReceipt",
        status_code=200,
        summary="The customer confirms receipt: the order is completed and its after-sales window opens",
        responses=problems(400, 401, 404, 409),
    )
    async def confirm_receipt(self, request: Request[Any, Any, Any], order_id: PathId) -> OrderDetailOut:
        return order_detail_out(await _lifecycle(request).confirm_receipt(order_id))


def _after_sales(request: Request[Any, Any, Any]) -> AfterSalesService:
    service: AfterSalesService = request.app.state.after_sales_service
    return service


class OrderCasesController(Controller):
    """After-sales cases of one order, opened by the customer (through the storefront's gateway)."""

    path = "/v1/orders"
    tags = ("after-sales",)
    security = BEARER

    @post(
        "/{order_id:str}/after-sales",
        operation_id="openCase",
        status_code=201,
        summary="Open an after-sales case: refund_only, return_refund or exchange, for some of the order's units",
        description="Before shipment only a refund_only case for the whole order, approved at once: the order is "
        "cancelled and its stock released. After shipment (or within the after-sales window of a completed "
        "order) the case awaits review and the order is in after_sales.",
        responses=problems(400, 401, 404, 409, 422),
    )
    async def open_case(self, request: Request[Any, Any, Any], order_id: PathId) -> CaseOut:
        data = await read_body(request, CaseIn)
        case, _ = await _after_sales(request).open(order_id, data)
        return case_out(case)

    @get(
        "/{order_id:str}/after-sales",
        operation_id="listOrderCases",
        summary="Every after-sales case of an order, oldest first",
        responses=problems(400, 401, 404),
    )
    async def list_cases(self, request: Request[Any, Any, Any], order_id: PathId) -> CasesOut:
        return CasesOut([case_out(case) for case in await _after_sales(request).of_order(order_id)])


class CaseController(Controller):
    """One after-sales case: read by the storefront, reviewed and settled by the merchant (admin)."""

    path = "/v1/after-sales"
    tags = ("after-sales",)
    security = BEARER

    @get("/{case_id:str}", operation_id="getCase", summary="An after-sales case", responses=problems(400, 401, 404))
    async def get_case(self, request: Request[Any, Any, Any], case_id: PathId) -> CaseOut:
        return case_out(await _after_sales(request).get(case_id))

    @post(
        "/{case_id:str}/approve",
        operation_id="approveCase",
        status_code=200,
        summary="Approve a case awaiting review",
        responses=CASE_PROBLEMS,
    )
    async def approve(self, request: Request[Any, Any, Any], case_id: PathId) -> CaseOut:
        data = await read_optional_body(request, ReviewIn) or ReviewIn()
        return case_out(await _after_sales(request).review(case_id, "approve", data))

    @post(
        "/{case_id:str}/reject",
        operation_id="rejectCase",
        status_code=200,
        summary="Reject a case awaiting review: the order returns to its previous status",
        responses=CASE_PROBLEMS,
    )
    async def reject(self, request: Request[Any, Any, Any], case_id: PathId) -> CaseOut:
        data = await read_optional_body(request, ReviewIn) or ReviewIn()
        return case_out(await _after_sales(request).review(case_id, "reject", data))

    @post(
        "/{case_id:str}/return-received",
        operation_id="receiveReturn",
        status_code=200,
        summary="The returned units arrived: restocked unless damaged; an exchange takes its replacement",
        responses=CASE_PROBLEMS,
    )
    async def return_received(self, request: Request[Any, Any, Any], case_id: PathId) -> CaseOut:
        data = await read_body(request, ReturnIn)
        return case_out(await _after_sales(request).receive_return(case_id, data))

    @post(
        "/{case_id:str}/refund",
        operation_id="refundCase",
        status_code=200,
        summary="The refund was paid out: the case succeeds and the order is closed",
        responses=CASE_PROBLEMS,
    )
    async def refund(self, request: Request[Any, Any, Any], case_id: PathId) -> CaseOut:
        return case_out(await _after_sales(request).refund(case_id))

    @post(
        "/{case_id:str}/exchange-shipped",
        operation_id="shipExchange",
        status_code=200,
        summary="The replacement left: the case succeeds and the order returns to its previous status",
        responses=CASE_PROBLEMS,
    )
    async def exchange_shipped(self, request: Request[Any, Any, Any], case_id: PathId) -> CaseOut:
        data = await read_body(request, ShipIn)
        return case_out(await _after_sales(request).ship_exchange(case_id, data))


class OrderRefundController(Controller):
    path = "/v1/orders"
    tags = ("orders",)
    security = BEARER

    @post(
        "/{order_id:str}/refund",
        operation_id="refundCancelledOrder",
        status_code=200,
        summary="The payment system paid out a cancelled order's pending refund: the order is closed",
        description="Orders with after-sales cases are refunded through POST /v1/after-sales/{case_id}/refund.",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def refund(self, request: Request[Any, Any, Any], order_id: PathId) -> OrderDetailOut:
        return order_detail_out(await _lifecycle(request).refund_cancelled(order_id))


class SettingsController(Controller):
    path = "/v1/settings"
    tags = ("control plane",)
    security = BEARER

    @get(
        "/order-timeouts",
        operation_id="getOrderTimeouts",
        summary="Hold expiry, automatic confirmation of receipt and the after-sales window",
        responses=problems(401, 403),
    )
    async def order_timeouts(self, request: Request[Any, Any, Any]) -> OrderTimeoutsOut:
        settings: Settings = request.app.state.settings
        return OrderTimeoutsOut(
            flash_hold_ttl_s=settings.flash_hold_ttl_s,
            normal_hold_ttl_s=settings.normal_hold_ttl_s,
            auto_confirm_days=settings.auto_confirm_days,
            after_sales_window_days=settings.after_sales_window_days,
        )
