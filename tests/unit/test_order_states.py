"""Every (status, event) pair: either the documented next status or InvalidTransition naming the status."""

from __future__ import annotations

import itertools

import pytest

from orders.states import (
    AFTER_SALES_SOURCES,
    CancelReason,
    InvalidTransition,
    OrderEvent,
    OrderStatus,
    allowed_events,
    next_status,
)

PENDING, PAID, CANCELLED = OrderStatus.PENDING_PAYMENT, OrderStatus.PAID, OrderStatus.CANCELLED
SHIPPED, COMPLETED = OrderStatus.SHIPPED, OrderStatus.COMPLETED
AFTER_SALES, CLOSED = OrderStatus.AFTER_SALES, OrderStatus.CLOSED
E = OrderEvent
PREVIOUS = "the status before the case"

# The lifecycle of issue 4, written out independently of orders/states.py.
EXPECTED: dict[tuple[OrderStatus, OrderEvent], OrderStatus | str] = {
    (PENDING, E.PAY): PAID,
    (PENDING, E.CANCEL): CANCELLED,
    (PENDING, E.EXPIRE): CANCELLED,
    (PAID, E.CANCEL): CANCELLED,  # customer or merchant, before shipment; refund record kept
    (PAID, E.SHIP): SHIPPED,
    (CANCELLED, E.PAY): PAID,  # a late payment re-reserves if the stock is still there
    (CANCELLED, E.REFUND): CLOSED,  # a cancelled and refunded order
    (SHIPPED, E.CONFIRM_RECEIPT): COMPLETED,
    (SHIPPED, E.OPEN_AFTER_SALES): AFTER_SALES,
    (COMPLETED, E.OPEN_AFTER_SALES): AFTER_SALES,
    (AFTER_SALES, E.REJECT_AFTER_SALES): PREVIOUS,
    (AFTER_SALES, E.FINISH_EXCHANGE): PREVIOUS,
    (AFTER_SALES, E.REFUND): CLOSED,
}

EVERY_PAIR = list(itertools.product(OrderStatus, OrderEvent, sorted(AFTER_SALES_SOURCES)))


def test_the_enums_hold_exactly_the_documented_members() -> None:
    assert {status.value for status in OrderStatus} == {
        "pending_payment", "paid", "shipped", "completed", "cancelled", "after_sales", "closed",
    }  # fmt: skip
    assert {event.value for event in OrderEvent} == {
        "pay", "cancel", "expire", "ship", "confirm_receipt", "open_after_sales", "reject_after_sales",
        "finish_exchange", "refund",
    }  # fmt: skip
    assert len(EVERY_PAIR) == 7 * 9 * 2


@pytest.mark.parametrize(("status", "event", "previous"), EVERY_PAIR)
def test_every_status_and_event_gives_the_documented_outcome(
    status: OrderStatus, event: OrderEvent, previous: OrderStatus
) -> None:
    expected = EXPECTED.get((status, event))
    reason = CancelReason.PAYMENT_TIMEOUT if status is CANCELLED else None
    if expected is not None:
        assert next_status(status, event, reason, previous=previous) is (previous if expected == PREVIOUS else expected)
        return
    with pytest.raises(InvalidTransition) as caught:
        next_status(status, event, reason, previous=previous)
    assert caught.value.status is status
    assert caught.value.event is event
    assert f"an order that is {status} cannot {event}" == str(caught.value)


@pytest.mark.parametrize("status", list(OrderStatus))
def test_allowed_events_are_exactly_the_events_next_status_accepts(status: OrderStatus) -> None:
    accepted = set()
    reason = CancelReason.PAYMENT_TIMEOUT if status is CANCELLED else None
    for event in OrderEvent:
        try:
            next_status(status, event, reason, previous=SHIPPED)
        except InvalidTransition:
            continue
        accepted.add(event)

    assert allowed_events(status) == frozenset(accepted)
    assert allowed_events(status) == frozenset(event for (source, event) in EXPECTED if source is status)


def test_only_pending_orders_expire_and_nothing_happens_to_a_closed_order() -> None:
    assert [status for status in OrderStatus if E.EXPIRE in allowed_events(status)] == [PENDING]
    assert allowed_events(CLOSED) == frozenset()


def test_no_order_can_be_cancelled_once_shipped() -> None:
    assert {status for status in OrderStatus if E.CANCEL in allowed_events(status)} == {PENDING, PAID}


def test_every_status_is_reachable_from_pending_payment() -> None:
    reached = {PENDING}
    frontier = [PENDING]
    while frontier:
        status = frontier.pop()
        for event in allowed_events(status):
            reason = CancelReason.PAYMENT_TIMEOUT if status is CANCELLED else None
            for previous in AFTER_SALES_SOURCES:
                target = next_status(status, event, reason, previous=previous)
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)

    assert reached == set(OrderStatus)


@pytest.mark.parametrize("reason", [None, CancelReason.CUSTOMER, CancelReason.MERCHANT])
def test_only_an_order_cancelled_for_payment_timeout_can_still_be_paid(reason: CancelReason | None) -> None:
    with pytest.raises(InvalidTransition):
        next_status(CANCELLED, E.PAY, reason)
    assert next_status(CANCELLED, E.PAY, CancelReason.PAYMENT_TIMEOUT) is PAID


@pytest.mark.parametrize("reason", list(CancelReason))
def test_a_cancelled_order_can_be_refunded_whatever_it_was_cancelled_for(reason: CancelReason) -> None:
    assert next_status(CANCELLED, E.REFUND, reason) is CLOSED


@pytest.mark.parametrize("previous", sorted(AFTER_SALES_SOURCES))
def test_a_rejected_case_or_a_finished_exchange_returns_the_order_to_where_it_was(previous: OrderStatus) -> None:
    assert next_status(AFTER_SALES, E.REJECT_AFTER_SALES, previous=previous) is previous
    assert next_status(AFTER_SALES, E.FINISH_EXCHANGE, previous=previous) is previous
