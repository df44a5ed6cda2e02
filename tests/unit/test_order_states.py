"""Every (status, event) pair: either the documented next status or InvalidTransition."""

from __future__ import annotations

import itertools

import pytest

from orders.states import CancelReason, InvalidTransition, OrderEvent, OrderStatus, allowed_events, next_status

PENDING, PAID, CANCELLED = OrderStatus.PENDING_PAYMENT, OrderStatus.PAID, OrderStatus.CANCELLED

# The lifecycle of DESIGN.md, written out independently of orders/states.py.
EXPECTED: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (PENDING, OrderEvent.PAY): PAID,
    (PENDING, OrderEvent.CANCEL): CANCELLED,
    (PENDING, OrderEvent.EXPIRE): CANCELLED,
    (PAID, OrderEvent.CANCEL): CANCELLED,  # releases holds, a refund record is kept
    (CANCELLED, OrderEvent.PAY): PAID,  # a late payment re-reserves if the stock is still there
}

EVERY_PAIR = list(itertools.product(OrderStatus, OrderEvent))


def test_the_enums_hold_exactly_the_documented_members() -> None:
    assert {status.value for status in OrderStatus} == {"pending_payment", "paid", "cancelled"}
    assert {event.value for event in OrderEvent} == {"pay", "cancel", "expire"}
    assert len(EVERY_PAIR) == 9


@pytest.mark.parametrize(("status", "event"), EVERY_PAIR)
def test_every_status_and_event_gives_the_documented_outcome(status: OrderStatus, event: OrderEvent) -> None:
    expected = EXPECTED.get((status, event))

    reason = CancelReason.PAYMENT_TIMEOUT if status is CANCELLED else None
    if expected is not None:
        assert next_status(status, event, reason) is expected
        return
    with pytest.raises(InvalidTransition) as caught:
        next_status(status, event, reason)
    assert caught.value.status is status
    assert caught.value.event is event
    assert str(status) in str(caught.value)
    assert str(event) in str(caught.value)


@pytest.mark.parametrize("status", list(OrderStatus))
def test_allowed_events_are_exactly_the_events_next_status_accepts(status: OrderStatus) -> None:
    accepted = set()
    reason = CancelReason.PAYMENT_TIMEOUT if status is CANCELLED else None
    for event in OrderEvent:
        try:
            next_status(status, event, reason)
        except InvalidTransition:
            continue
        accepted.add(event)

    assert allowed_events(status) == frozenset(accepted)
    assert allowed_events(status) == frozenset(event for (source, event) in EXPECTED if source is status)


def test_paid_and_cancelled_orders_never_expire() -> None:
    assert OrderEvent.EXPIRE not in allowed_events(PAID)
    assert OrderEvent.EXPIRE not in allowed_events(CANCELLED)


def test_every_status_is_reachable_from_pending_payment() -> None:
    reached = {PENDING}
    frontier = [PENDING]
    while frontier:
        status = frontier.pop()
        for event in allowed_events(status):
            target = next_status(status, event, CancelReason.PAYMENT_TIMEOUT if status is CANCELLED else None)
            if target not in reached:
                reached.add(target)
                frontier.append(target)

    assert reached == set(OrderStatus)


@pytest.mark.parametrize("reason", [None, CancelReason.CUSTOMER, CancelReason.MERCHANT])
def test_only_an_order_cancelled_for_payment_timeout_can_still_be_paid(reason: CancelReason | None) -> None:
    with pytest.raises(InvalidTransition):
        next_status(CANCELLED, OrderEvent.PAY, reason)
    assert next_status(CANCELLED, OrderEvent.PAY, CancelReason.PAYMENT_TIMEOUT) is PAID
