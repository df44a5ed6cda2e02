"""Order states and the transitions between them: the pure model the Lua scripts implement.

The scripts decide in Redis; this table is what they must agree with, and the
tests check that they do (tests/integration/test_invariants.py,
tests/integration/test_lifecycle.py). The service asks it for the problem to
answer when a script refuses a transition, so every refusal names the current state.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    AFTER_SALES = "after_sales"
    CLOSED = "closed"


class CancelReason(StrEnum):
    CUSTOMER = "customer"
    MERCHANT = "merchant"
    PAYMENT_TIMEOUT = "payment_timeout"


class OrderEvent(StrEnum):
    PAY = "pay"
    CANCEL = "cancel"
    EXPIRE = "expire"
    SHIP = "ship"  # the last unshipped shipment leaves the warehouse
    CONFIRM_RECEIPT = "confirm_receipt"  # by the customer, or automatically after the confirmation delay
    OPEN_AFTER_SALES = "open_after_sales"
    REJECT_AFTER_SALES = "reject_after_sales"
    FINISH_EXCHANGE = "finish_exchange"  # the replacement shipped: the case succeeded without a refund
    REFUND = "refund"  # a refund completed the case (or refunded a cancelled, paid order)


class InvalidTransition(Exception):
    def __init__(self, status: OrderStatus, event: OrderEvent) -> None:
        super().__init__(f"an order that is {status} cannot {event}")
        self.status = status
        self.event = event


RETURN_TO_PREVIOUS = None
"""Target of an after-sales case that ends without closing the order: the status it had before."""

_TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus | None] = {
    (OrderStatus.PENDING_PAYMENT, OrderEvent.PAY): OrderStatus.PAID,
    (OrderStatus.PENDING_PAYMENT, OrderEvent.CANCEL): OrderStatus.CANCELLED,
    (OrderStatus.PENDING_PAYMENT, OrderEvent.EXPIRE): OrderStatus.CANCELLED,
    (OrderStatus.PAID, OrderEvent.CANCEL): OrderStatus.CANCELLED,
    (OrderStatus.PAID, OrderEvent.SHIP): OrderStatus.SHIPPED,
    # A payment after the hold expired pays the order again if its stock is still there;
    # only an order cancelled for payment_timeout (see next_status).
    (OrderStatus.CANCELLED, OrderEvent.PAY): OrderStatus.PAID,
    # A cancelled order whose payment is refunded is closed (the refund is its last step).
    (OrderStatus.CANCELLED, OrderEvent.REFUND): OrderStatus.CLOSED,
    (OrderStatus.SHIPPED, OrderEvent.CONFIRM_RECEIPT): OrderStatus.COMPLETED,
    (OrderStatus.SHIPPED, OrderEvent.OPEN_AFTER_SALES): OrderStatus.AFTER_SALES,
    (OrderStatus.COMPLETED, OrderEvent.OPEN_AFTER_SALES): OrderStatus.AFTER_SALES,
    (OrderStatus.AFTER_SALES, OrderEvent.REJECT_AFTER_SALES): RETURN_TO_PREVIOUS,
    (OrderStatus.AFTER_SALES, OrderEvent.FINISH_EXCHANGE): RETURN_TO_PREVIOUS,
    (OrderStatus.AFTER_SALES, OrderEvent.REFUND): OrderStatus.CLOSED,
}

AFTER_SALES_SOURCES = frozenset({OrderStatus.SHIPPED, OrderStatus.COMPLETED})
"""The statuses an order may return to when its after-sales case ends without a refund."""


def next_status(
    status: OrderStatus,
    event: OrderEvent,
    cancel_reason: CancelReason | None = None,
    *,
    previous: OrderStatus | None = None,
) -> OrderStatus:
    """Where an event takes an order; InvalidTransition when it may not happen.

    cancel_reason is the reason a cancelled order was cancelled for: only an order
    whose hold expired (payment_timeout) can still be paid. previous is the status
    an order in after-sales had when its case was opened; it is where a rejected
    case or a finished exchange takes it back.
    """
    if (status, event) not in _TRANSITIONS:
        raise InvalidTransition(status, event)
    if (
        status is OrderStatus.CANCELLED
        and event is OrderEvent.PAY
        and cancel_reason is not CancelReason.PAYMENT_TIMEOUT
    ):
        raise InvalidTransition(status, event)
    target = _TRANSITIONS[(status, event)]
    if target is RETURN_TO_PREVIOUS:
        assert previous in AFTER_SALES_SOURCES, f"an order in after-sales came from {previous}"
        return previous
    return target


def allowed_events(status: OrderStatus) -> frozenset[OrderEvent]:
    return frozenset(event for (source, event) in _TRANSITIONS if source is status)
