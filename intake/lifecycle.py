"""HTTP controllers of the order lifecycle after payment. Thin: decode, call the service, encode.

Kept apart from intake/controllers.py so the intake hot path (POST /v1/orders) is not touched.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post

from intake.codec import read_body
from intake.controllers import BEARER, PathId, problems
from intake.lifecycle_service import LifecycleService
from intake.schemas import OrderOut, ShipIn, TrackEventIn
from intake.views import order_out


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
    async def ship(self, request: Request[Any, Any, Any], order_id: PathId, shipment_id: PathId) -> OrderOut:
        data = await read_body(request, ShipIn)
        return order_out(await _lifecycle(request).ship(order_id, shipment_id, data))

    @post(
        "/{order_id:str}/shipments/{shipment_id:str}/events",
        operation_id="trackShipment",
        status_code=200,
        summary="A logistics event of a shipped shipment; lost, delayed, damaged and returned_to_sender "
        "are surfaced on the order",
        responses=problems(400, 401, 404, 409),
    )
    async def track(self, request: Request[Any, Any, Any], order_id: PathId, shipment_id: PathId) -> OrderOut:
        data = await read_body(request, TrackEventIn)
        return order_out(await _lifecycle(request).track(order_id, shipment_id, data))

    @post(
        "/{order_id:str}/confirm-receipt",
        operation_id="confirmReceipt",
        status_code=200,
        summary="The customer confirms receipt: the order is completed and its after-sales window opens",
        responses=problems(400, 401, 404, 409),
    )
    async def confirm_receipt(self, request: Request[Any, Any, Any], order_id: PathId) -> OrderOut:
        return order_out(await _lifecycle(request).confirm_receipt(order_id))
