"""Order states and the transitions between them: the pure model the Lua scripts implement.

The scripts decide in Redis; this table is what they must agree with, and the
tests check that they do (tests/integration/test_invariants.py).
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    CANCELLED = "cancelled"


class CancelReason(StrEnum):
    CUSTOMER = "customer"
    MERCHANT = "merchant"
    PAYMENT_TIMEOUT = "payment_timeout"


class OrderEvent(StrEnum):
    PAY = "pay"
    CANCEL = "cancel"
    EXPIRE = "expire"


class InvalidTransition(Exception):
    def __init__(self, status: OrderStatus, event: OrderEvent) -> None:
        super().__init__(f"an order that is {status} cannot {event}")
        self.status = status
        self.event = event


_TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (OrderStatus.PENDING_PAYMENT, OrderEvent.PAY): OrderStatus.PAID,
    (OrderStatus.PENDING_PAYMENT, OrderEvent.CANCEL): OrderStatus.CANCELLED,
    (OrderStatus.PENDING_PAYMENT, OrderEvent.EXPIRE): OrderStatus.CANCELLED,
    (OrderStatus.PAID, OrderEvent.CANCEL): OrderStatus.CANCELLED,
    # A payment after the hold expired pays the order again if its stock is still there;
    # only an order cancelled for payment_timeout (see next_status).
    (OrderStatus.CANCELLED, OrderEvent.PAY): OrderStatus.PAID,
}


def next_status(status: OrderStatus, event: OrderEvent, cancel_reason: CancelReason | None = None) -> OrderStatus:
    """Where an event takes an order; InvalidTransition when it may not happen.

    cancel_reason is the reason a cancelled order was cancelled for: only an order
    whose hold expired (payment_timeout) can still be paid.
    """
    target = _TRANSITIONS.get((status, event))
    if target is None:
        raise InvalidTransition(status, event)
    if status is OrderStatus.CANCELLED and cancel_reason is not CancelReason.PAYMENT_TIMEOUT:
        raise InvalidTransition(status, event)
    return target


def allowed_events(status: OrderStatus) -> frozenset[OrderEvent]:
    return frozenset(event for (source, event) in _TRANSITIONS if source is status)
