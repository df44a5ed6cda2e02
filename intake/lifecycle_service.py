"""Service layer of the order lifecycle after payment: shipments, logistics, receipt.

Each use case is one script call; the script decides against the order as it is in
Redis. When it refuses a transition, the pure state machine (orders/states.py) names
the refusal, so every ``409 invalid-transition`` says the order's current status.
"""

from __future__ import annotations

from intake.problems import ProblemError, invalid_transition
from intake.schemas import ShipIn, TrackEventIn
from intake.service import Clock, to_ms
from orders.states import InvalidTransition, OrderEvent, OrderStatus
from reservation.clock import wall_clock_ms
from reservation.outcomes import ConfirmCode, ShipCode, TrackCode
from reservation.records import OrderRecord
from reservation.store import OrderChange, RedisStore
from rushgate.settings import Settings


def _not_found(order_id: str) -> ProblemError:
    return ProblemError(404, "not-found", f"no order {order_id}", order_id=order_id)


def refused(order: OrderRecord, event: OrderEvent) -> ProblemError:
    """The 409 for an event the order's status does not allow."""
    return invalid_transition(InvalidTransition(OrderStatus(order.status), event), order_id=order.order_id)


def _current(change: OrderChange, order_id: str) -> OrderRecord:
    if change.order is None:
        raise _not_found(order_id)
    return change.order


class LifecycleService:
    def __init__(self, store: RedisStore, settings: Settings, clock: Clock = wall_clock_ms) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    async def _get(self, order_id: str) -> OrderRecord:
        order = await self.store.get_order(order_id)
        if order is None:
            raise _not_found(order_id)
        return order

    async def ship(self, order_id: str, shipment_id: str, body: ShipIn) -> OrderRecord:
        """Ship one shipment; shipping it again answers the order unchanged."""
        order = await self._get(order_id)
        change = await self.store.ship(
            order,
            shipment_id=shipment_id,
            carrier=body.carrier,
            tracking_number=body.tracking_number,
            auto_confirm_ms=self.settings.auto_confirm_ms,
            now_ms=self.clock(),
        )
        current = _current(change, order_id)
        if change.code is ShipCode.NO_SUCH_SHIPMENT:
            raise ProblemError(
                404, "not-found", f"order {order_id} has no shipment {shipment_id}", order_id=order_id,
                shipment_id=shipment_id,
            )  # fmt: skip
        if change.code is ShipCode.NOT_PAID:
            raise refused(current, OrderEvent.SHIP)
        return current

    async def track(self, order_id: str, shipment_id: str, body: TrackEventIn) -> OrderRecord:
        """Record a logistics event of a shipped shipment; the same event twice is recorded once."""
        change = await self.store.track(
            order_id,
            shipment_id=shipment_id,
            status=body.status,
            location=body.location,
            occurred_ms=to_ms(body.occurred_at),
            track_length_max=self.settings.track_length_max,
            now_ms=self.clock(),
        )
        current = _current(change, order_id)
        if change.code is TrackCode.NOT_SHIPPED:
            if shipment_id not in {shipment.shipment_id for shipment in current.shipments()}:
                raise ProblemError(
                    404, "not-found", f"order {order_id} has no shipment {shipment_id}", order_id=order_id,
                    shipment_id=shipment_id,
                )  # fmt: skip
            raise ProblemError(
                409, "invalid-transition", f"shipment {shipment_id} has not shipped yet",
                current_status=current.status, order_id=order_id, shipment_id=shipment_id,
            )  # fmt: skip
        if change.code is TrackCode.TRACK_FULL:
            raise ProblemError(
                409, "track-full", f"at most {self.settings.track_length_max} events per shipment",
                order_id=order_id, shipment_id=shipment_id,
            )  # fmt: skip
        return current

    async def confirm_receipt(self, order_id: str) -> OrderRecord:
        """The customer confirms receipt: a shipped order is completed (again: unchanged)."""
        (change,) = await self.store.confirm(
            [order_id], window_ms=self.settings.after_sales_window_ms, now_ms=self.clock(), due_only=False
        )
        current = _current(change, order_id)
        if change.code is ConfirmCode.NOT_SHIPPED:
            raise refused(current, OrderEvent.CONFIRM_RECEIPT)
        return current
