"""Service layer of the order lifecycle after payment: shipments, logistics, receipt, after-sales.

Each use case is one script call; the script decides against the order as it is in
Redis. When it refuses a transition, the pure state machine (orders/states.py) names
the refusal, so every ``409 invalid-transition`` says the order's current status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from intake.problems import ProblemError, invalid_transition
from intake.schemas import CaseIn, ReturnIn, ReviewIn, ShipIn, TrackEventIn
from intake.service import Clock, to_ms
from orders.states import InvalidTransition, OrderEvent, OrderStatus
from reservation.clock import wall_clock_ms
from reservation.outcomes import CaseCode, CaseOpenCode, ConfirmCode, OrderRefundCode, ShipCode, TrackCode
from reservation.records import CaseRecord, OrderRecord
from reservation.store import CaseChange, OrderChange, RedisStore
from rushgate.settings import Settings

OrderLookup = Callable[[str, str | None, str | None, int], Awaitable[list[str]]]
"""(customer_id, status or None, before order id or None, limit) -> order ids newest first
(persistence.queries.order_index gives one; intake never imports persistence)."""


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

    async def refund_cancelled(self, order_id: str) -> OrderRecord:
        """The payment system paid out a cancelled order's pending refund: the order is closed."""
        change = await self.store.refund_order(order_id, now_ms=self.clock())
        current = _current(change, order_id)
        if change.code is OrderRefundCode.NOT_ALLOWED:
            if current.case_ids:
                raise ProblemError(
                    409, "invalid-transition", "this order is refunded through its after-sales cases",
                    current_status=current.status, order_id=order_id,
                )  # fmt: skip
            if current.status == "cancelled":
                raise ProblemError(
                    409, "invalid-transition", "no refund is pending for this order",
                    current_status=current.status, order_id=order_id,
                )  # fmt: skip
            raise refused(current, OrderEvent.REFUND)
        return current


CASE_OPEN_ATTEMPTS_MAX = 3  # concurrent openings on one order race for the next case id; the loser retries


def _case_not_found(case_id: str) -> ProblemError:
    return ProblemError(404, "not-found", f"no after-sales case {case_id}", case_id=case_id)


class AfterSalesService:
    """After-sales cases: opened by the customer, reviewed and settled by the merchant."""

    def __init__(self, store: RedisStore, clock: Clock = wall_clock_ms) -> None:
        self.store = store
        self.clock = clock

    async def open(self, order_id: str, body: CaseIn) -> tuple[CaseRecord, OrderRecord]:
        skus = [item.sku for item in body.items]
        if len(set(skus)) != len(skus):
            raise ProblemError(422, "invalid-request", "each sku may appear once per case; add the quantities")
        for _ in range(CASE_OPEN_ATTEMPTS_MAX):
            order = await self.store.get_order(order_id)
            if order is None:
                raise _not_found(order_id)
            change = await self.store.open_case(
                order,
                case_id=f"{order_id}-r{len(order.case_ids) + 1}",
                kind=body.kind,
                reason=body.reason,
                items=[(item.sku, item.qty) for item in body.items],
                now_ms=self.clock(),
            )
            if change.code is not CaseOpenCode.CASE_ID_TAKEN:
                return self._opened(change, order_id)
        raise ProblemError(409, "invalid-transition", "another case was opened on this order at the same time")

    def _opened(self, change: CaseChange, order_id: str) -> tuple[CaseRecord, OrderRecord]:
        code, order = change.code, change.order
        if code is CaseOpenCode.NOT_FOUND or order is None:
            raise _not_found(order_id)
        if code is CaseOpenCode.NOT_ALLOWED:
            if order.status == "paid":
                raise ProblemError(
                    409, "invalid-transition", "before shipment only a refund_only case may be opened",
                    current_status=order.status, order_id=order_id,
                )  # fmt: skip
            raise refused(order, OrderEvent.OPEN_AFTER_SALES)
        if code is CaseOpenCode.ITEMS_INVALID:
            detail = "items must name the order's SKUs, within the units not refunded yet"
            if order.status == "paid":
                detail = "before shipment a refund covers the whole order"
            raise ProblemError(422, "invalid-request", detail, order_id=order_id)
        if code is CaseOpenCode.WINDOW_CLOSED:
            raise ProblemError(409, "after-sales-window-closed", None, order_id=order_id, current_status=order.status)
        if code is CaseOpenCode.NOTHING_TO_REFUND:
            raise ProblemError(409, "nothing-to-refund", None, order_id=order_id)
        assert change.case is not None, "an opened case has a document"
        return change.case, order

    async def get(self, case_id: str) -> CaseRecord:
        (case,) = await self.store.get_cases([case_id])
        if case is None:
            raise _case_not_found(case_id)
        return case

    async def of_order(self, order_id: str) -> list[CaseRecord]:
        order = await self.store.get_order(order_id)
        if order is None:
            raise _not_found(order_id)
        return [case for case in await self.store.get_cases(list(order.case_ids)) if case is not None]

    def _settled(self, change: CaseChange, case_id: str, step: str) -> CaseRecord:
        if change.code is CaseCode.NOT_FOUND or change.case is None:
            raise _case_not_found(case_id)
        if change.code is CaseCode.NOT_ALLOWED:
            raise ProblemError(
                409, "invalid-transition", f"a case that is {change.case.status} cannot {step}",
                current_status=change.case.status, case_id=case_id,
            )  # fmt: skip
        if change.code is CaseCode.UNKNOWN_WAREHOUSE:
            raise ProblemError(422, "invalid-request", "unknown warehouse", case_id=case_id)
        return change.case

    async def review(self, case_id: str, decision: str, body: ReviewIn) -> CaseRecord:
        case = await self.get(case_id)
        change = await self.store.review_case(case, decision=decision, note=body.note, now_ms=self.clock())
        return self._settled(change, case_id, decision)

    async def receive_return(self, case_id: str, body: ReturnIn) -> CaseRecord:
        case = await self.get(case_id)
        change = await self.store.receive_return(
            case, warehouse_id=body.warehouse_id, damaged=body.damaged, now_ms=self.clock()
        )
        return self._settled(change, case_id, "receive a return")

    async def refund(self, case_id: str) -> CaseRecord:
        case = await self.get(case_id)
        return self._settled(await self.store.refund_case(case, now_ms=self.clock()), case_id, "refund")

    async def ship_exchange(self, case_id: str, body: ShipIn) -> CaseRecord:
        case = await self.get(case_id)
        change = await self.store.ship_exchange(
            case, carrier=body.carrier, tracking_number=body.tracking_number, now_ms=self.clock()
        )
        return self._settled(change, case_id, "ship an exchange")


STREAM_SCAN_ENTRIES_MAX = 10_000
"""How far back a listing looks in the event stream for orders Postgres does not know yet:
well beyond the persister's normal backlog (about a second of events)."""


class OrderQueryService:
    """A customer's orders: Postgres as the index, merged with the stream's not-yet-persisted orders,
    each answered as Redis holds it now (read-your-writes)."""

    def __init__(self, store: RedisStore, lookup: OrderLookup | None) -> None:
        self.store = store
        self.lookup = lookup

    async def page(
        self, customer_id: str, status: str | None, cursor: str | None, limit: int
    ) -> tuple[list[OrderRecord], str | None]:
        if self.lookup is None:
            raise ProblemError(503, "dependency-unavailable", "this API has no order index (no DATABASE_URL)")
        try:
            indexed = await self.lookup(customer_id, status, cursor, limit + 1)
        except (OSError, TimeoutError) as error:
            raise ProblemError(503, "dependency-unavailable", f"order index: {type(error).__name__}") from None
        recent = await self.store.recent_orders(customer_id=customer_id, entries_max=STREAM_SCAN_ENTRIES_MAX)
        candidates = set(indexed) | {order.order_id for order in recent if cursor is None or order.order_id < cursor}
        newest_first = sorted(candidates, reverse=True)
        current = await self.store.get_orders(newest_first)
        matching = [
            order
            for order in current
            if order is not None and order.customer_id == customer_id and (status is None or order.status == status)
        ]
        page = matching[:limit]
        more = len(indexed) > limit or len(matching) > limit
        return page, (page[-1].order_id if more and page else None)
