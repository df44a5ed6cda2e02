"""Service layer: the use cases behind the HTTP API, in terms of the stock engine.

Controllers translate HTTP to these calls and back; every outcome the engine
returns is mapped here to a result or a problem, in one place.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from intake.problems import ProblemError, invalid_transition
from intake.schemas import (
    STOCK_MAX,
    AdjustmentIn,
    AuditEntryOut,
    AuditPageOut,
    BlockIn,
    BlockOut,
    DispatchIn,
    DispatchOut,
    OrderIn,
    PaymentIn,
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
from orders.states import InvalidTransition, OrderEvent, OrderStatus
from reservation.audit import AuditEntry, AuditPage, AuditQuery, AuditUnavailable
from reservation.clock import milliseconds_of, moment_of, wall_clock_ms
from reservation.coalescer import Coalescer
from reservation.outcomes import CancelCode, PayCode, ReserveCode, StockCode, TransferCode
from reservation.records import CustomerBlock, DispatchPut, OrderRecord, SkuPut, WarehousePut
from reservation.sold_out import SoldOutFlags
from reservation.store import AttemptLimits, OrderRequest, RedisStore, ReserveResult, StockLevels
from rushgate.settings import Settings

Clock = Callable[[], int]
SYSTEM_ACTOR = "system"
"""The actor of a change made in-process, not through the API (tests, tools)."""


from_ms = moment_of  # the wire's name for it: RFC 3339 times out of epoch milliseconds


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ProblemError(400, "invalid-request", "times must carry a UTC offset (RFC 3339)")
    return milliseconds_of(moment)


ORDER_ID_RANDOM_BYTES = 6


ORDER_ID_SUFFIXES_PER_READ = 256
_order_id_suffixes: list[str] = []  # random suffixes read ahead; list.pop is atomic under the GIL
os.register_at_fork(after_in_child=_order_id_suffixes.clear)  # a forked child must never reuse them


def _order_id_suffix() -> str:
    """An unguessable suffix. Suffixes come from the system's randomness 256 at a time: a
    getrandom call per order was about 2% of an intake worker's CPU (py-spy)."""
    try:
        return _order_id_suffixes.pop()
    except IndexError:
        width = 2 * ORDER_ID_RANDOM_BYTES
        read = secrets.token_hex(ORDER_ID_RANDOM_BYTES * ORDER_ID_SUFFIXES_PER_READ)
        _order_id_suffixes.extend(read[start : start + width] for start in range(0, len(read), width))
        return _order_id_suffixes.pop()


def new_order_id(now_ms: int) -> str:
    """Time-ordered (so Postgres appends), unguessable suffix."""
    return f"{now_ms:012x}{_order_id_suffix()}"


def new_order_ids(now_ms: int, count: int) -> list[str]:
    """count ids as new_order_id makes them, for a batch of orders (one clock reading)."""
    prefix = f"{now_ms:012x}"
    return [prefix + _order_id_suffix() for _ in range(count)]


_fingerprint_encoder = msgspec.msgpack.Encoder()


def request_fingerprint(order: OrderIn) -> str:
    """Identity of an order body, independent of item order and JSON formatting."""
    items = sorted([(item.sku, item.qty) for item in order.items])
    canonical = (order.customer_id, order.region, order.order_type, items, order.allow_split)
    return hashlib.blake2b(_fingerprint_encoder.encode(canonical), digest_size=16).hexdigest()


_RESERVE_PROBLEMS = {
    ReserveCode.SOLD_OUT: (409, "sold-out"),
    ReserveCode.PURCHASE_LIMIT: (409, "purchase-limit"),
    ReserveCode.SALE_NOT_OPEN: (409, "sale-not-open"),
    ReserveCode.CUSTOMER_BLOCKED: (403, "customer-blocked"),
    ReserveCode.IDEMPOTENCY_KEY_REUSED: (422, "idempotency-key-reused"),
    ReserveCode.UNKNOWN_SKU: (422, "invalid-request"),
    ReserveCode.UNKNOWN_REGION: (422, "invalid-request"),
    ReserveCode.BACKLOG_FULL: (503, "backlog-full"),
    ReserveCode.MIXED_CURRENCY: (422, "invalid-request"),
    ReserveCode.RATE_LIMITED: (429, "rate-limited"),
    ReserveCode.COOLING_DOWN: (429, "cooling-down"),
}


def _reserve_problem(code: ReserveCode, detail: str) -> ProblemError:
    status, kind = _RESERVE_PROBLEMS[code]
    if code is ReserveCode.SOLD_OUT:
        return ProblemError(status, kind, f"not enough stock of {detail} in the region", sku=detail)
    if code in (ReserveCode.PURCHASE_LIMIT, ReserveCode.SALE_NOT_OPEN):
        return ProblemError(status, kind, f"sku {detail}", sku=detail)
    if code is ReserveCode.UNKNOWN_SKU:
        return ProblemError(status, kind, f"unknown sku {detail}", sku=detail)
    if code is ReserveCode.UNKNOWN_REGION:
        return ProblemError(status, kind, f"region {detail} has no dispatch rule")
    if code is ReserveCode.MIXED_CURRENCY:
        return ProblemError(status, kind, f"sku {detail} is priced in another currency", sku=detail)
    if code is ReserveCode.IDEMPOTENCY_KEY_REUSED:
        return ProblemError(status, kind, "this Idempotency-Key was used with a different body", order_id=detail)
    if code in (ReserveCode.RATE_LIMITED, ReserveCode.COOLING_DOWN):
        wait_s = max(1, -(-int(detail) // 1000))
        error = ProblemError(status, kind, f"try again in {wait_s} s")
        error.headers["Retry-After"] = str(wait_s)
        return error
    error = ProblemError(status, kind, None)
    if code is ReserveCode.BACKLOG_FULL:
        error.headers["Retry-After"] = "1"
    return error


def _levels_out(warehouse_id: str, levels: StockLevels) -> StockLevelOut:
    return StockLevelOut(warehouse_id, levels.on_hand, levels.available, levels.reserved, levels.committed)


class Placed(NamedTuple):
    """An order held (created) or replayed from its idempotency record."""

    created: bool
    order: OrderRecord


def _placed(result: ReserveResult) -> Placed:
    if result.code in (ReserveCode.ACCEPTED, ReserveCode.REPLAYED):
        assert result.order is not None, "an accepted order has a document"
        return Placed(result.code is ReserveCode.ACCEPTED, result.order)
    raise _reserve_problem(result.code, result.detail)


class OrderService:
    """Order intake, payment and cancellation.

    Single orders go through a coalescer, so concurrent requests share script calls;
    with sold-out flags, an order naming a flagged SKU is refused without calling
    the reserve script — unless its idempotency key exists, since a retried order
    must be replayed, never refused.
    """

    def __init__(
        self,
        store: RedisStore,
        settings: Settings,
        clock: Clock = wall_clock_ms,
        sold_out: SoldOutFlags | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sold_out = sold_out
        self.limits = AttemptLimits(
            attempts_max=settings.customer_attempts_max,
            window_ms=settings.customer_window_ms,
            abnormal_attempts_max=settings.abnormal_attempts_max,
            cooldown_ms=settings.abnormal_cooldown_s * 1000,
            client_attempts_max=settings.client_attempts_max,
        )
        bounds = {
            "batch_size_max": settings.coalesce_batch_size_max,
            "calls_in_flight_max": settings.coalesce_calls_in_flight_max,
            "wait_us_max": settings.coalesce_wait_us_max,
        }
        self.reservations: Coalescer[OrderRequest, ReserveResult] = Coalescer(self.reserve_now, **bounds)
        self.known_keys: Coalescer[str, bool] = Coalescer(store.idempotency_keys_exist, **bounds)

    def hold_ttl_ms(self, order_type: str) -> int:
        if order_type == "flash":
            return self.settings.flash_hold_ttl_ms
        return self.settings.normal_hold_ttl_ms

    def to_request(self, order: OrderIn, idempotency_key: str, now_ms: int, client_id: str = "") -> OrderRequest:
        return self._request(order, idempotency_key, new_order_id(now_ms), client_id)

    def _request(self, order: OrderIn, idempotency_key: str, order_id: str, client_id: str) -> OrderRequest:
        items = tuple([(item.sku, item.qty) for item in order.items])
        if len(items) > 1 and len({sku for sku, _ in items}) != len(items):
            raise ProblemError(422, "invalid-request", "each sku may appear once per order; add the quantities")
        return OrderRequest(
            order_id=order_id,
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint(order),
            customer_id=order.customer_id,
            region=order.region,
            order_type=order.order_type,
            hold_ttl_ms=self.hold_ttl_ms(order.order_type),
            allow_split=order.allow_split,
            items=items,
            client_id=client_id,
        )

    async def reserve_now(self, requests: Sequence[OrderRequest]) -> list[ReserveResult]:
        """One script call deciding every request, on the clock as it is now."""
        return await self.store.reserve(
            requests,
            now_ms=self.clock(),
            stream_length_max=self.settings.stream_length_max,
            idempotency_ttl_ms=self.settings.idempotency_ttl_ms,
            limits=self.limits,
        )

    def _flagged_sku(self, request: OrderRequest) -> str | None:
        if self.sold_out is None or not self.sold_out.skus:  # no flags, the usual case: nothing to scan
            return None
        return self.sold_out.first_sold_out(sku for sku, _ in request.items)

    async def place(self, order: OrderIn, idempotency_key: str, client_id: str = "") -> Placed:
        """Hold stock for one order; a refusal raises ProblemError."""
        request = self.to_request(order, idempotency_key, self.clock(), client_id)
        flagged = self._flagged_sku(request)
        if flagged is not None and not await self.known_keys.submit(idempotency_key):
            raise _reserve_problem(ReserveCode.SOLD_OUT, flagged)
        return _placed(await self.reservations.submit(request))

    async def place_batch(
        self, orders: Sequence[tuple[str, OrderIn]], client_id: str = ""
    ) -> list[Placed | ProblemError]:
        """Decide many orders, each on its own; one outcome per order, in order."""
        order_ids = new_order_ids(self.clock(), len(orders))
        outcomes: list[Placed | ProblemError | None] = [None] * len(orders)
        pending: list[tuple[int, OrderRequest]] = []
        for index, (idempotency_key, order) in enumerate(orders):
            try:
                pending.append((index, self._request(order, idempotency_key, order_ids[index], client_id)))
            except ProblemError as problem:
                outcomes[index] = problem
        flagged = [(index, request, sku) for index, request in pending if (sku := self._flagged_sku(request))]
        if flagged:
            known = await self.store.idempotency_keys_exist([request.idempotency_key for _, request, _ in flagged])
            for (index, _, sku), exists in zip(flagged, known, strict=True):
                if not exists:
                    outcomes[index] = _reserve_problem(ReserveCode.SOLD_OUT, sku)
            pending = [(index, request) for index, request in pending if outcomes[index] is None]
        size = self.settings.coalesce_batch_size_max
        chunks = [pending[start : start + size] for start in range(0, len(pending), size)]
        decided = await asyncio.gather(*(self.reserve_now([request for _, request in chunk]) for chunk in chunks))
        for chunk, results in zip(chunks, decided, strict=True):
            for (index, _), result in zip(chunk, results, strict=True):
                try:
                    outcomes[index] = _placed(result)
                except ProblemError as problem:
                    outcomes[index] = problem
        assert all(outcome is not None for outcome in outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    async def close(self) -> None:
        await self.reservations.close()
        await self.known_keys.close()

    async def get(self, order_id: str) -> OrderRecord:
        order = await self.store.get_order(order_id)
        if order is None:
            raise ProblemError(404, "not-found", f"no order {order_id}", order_id=order_id)
        return order

    async def cancel(self, order_id: str, reason: str) -> OrderRecord:
        order = await self.get(order_id)
        (change,) = await self.store.cancel([order], reason=reason, now_ms=self.clock(), due_only=False)
        if change.code is CancelCode.NOT_FOUND:
            raise ProblemError(404, "not-found", f"no order {order_id}", order_id=order_id)
        assert change.order is not None
        if change.code is CancelCode.NOT_CANCELLABLE:
            current = change.order
            if current.status == "paid" and current.shipment_states:  # paid, but a shipment already left
                raise ProblemError(
                    409, "invalid-transition", "a shipment of this order has shipped",
                    current_status=current.status, order_id=order_id,
                )  # fmt: skip
            error = InvalidTransition(OrderStatus(current.status), OrderEvent.CANCEL)
            raise invalid_transition(error, order_id=order_id)
        return change.order

    async def pay(self, order_id: str, payment: PaymentIn) -> OrderRecord:
        order = await self.get(order_id)
        change = await self.store.pay(
            order, payment_id=payment.payment_id, amount=payment.amount, method=payment.method, now_ms=self.clock()
        )
        code = change.code
        if code is PayCode.NOT_FOUND:
            raise ProblemError(404, "not-found", f"no order {order_id}", order_id=order_id)
        current = change.order
        assert current is not None
        if code is PayCode.ALREADY_RECORDED:
            code = PayCode.REFUND_PENDING if current.status == "cancelled" else PayCode.PAID
        if code is PayCode.AMOUNT_MISMATCH:
            raise ProblemError(422, "amount-mismatch", f"order total is {current.total}", order_id=order_id)
        if code is PayCode.ALREADY_PAID:
            raise ProblemError(409, "already-paid", f"paid by {current.payment_id}", order_id=order_id)
        if code is PayCode.PAYMENT_ID_REUSED:
            raise ProblemError(409, "payment-id-reused", None, order_id=order_id)
        if code is PayCode.REFUND_PENDING:
            raise ProblemError(
                409, "refund-pending", f"order is cancelled ({current.cancel_reason})", order_id=order_id
            )
        return current


class CatalogService:
    """Control plane: warehouses, dispatch rules, SKUs, stock and the blocklist.

    Every change names its actor (the API client that asked), which the scripts write into
    the change's event for the audit log, together with what the change replaced.
    """

    def __init__(self, store: RedisStore, clock: Clock = wall_clock_ms) -> None:
        self.store = store
        self.clock = clock

    async def put_warehouse(self, warehouse_id: str, body: WarehouseIn, actor: str = SYSTEM_ACTOR) -> WarehouseOut:
        await self.store.put_config(
            hash_key=self.store.keys.warehouses,
            operation="merge",
            pairs=[warehouse_id, body.region],
            event_kind="warehouse_put",
            actor=actor,
            event_data=WarehousePut(warehouse_id, body.region, body.name),
            now_ms=self.clock(),
        )
        return WarehouseOut(warehouse_id, body.region, body.name)

    async def put_dispatch(self, region: str, body: DispatchIn, actor: str = SYSTEM_ACTOR) -> DispatchOut:
        if len(set(body.warehouses)) != len(body.warehouses):
            raise ProblemError(422, "invalid-request", "a warehouse may appear once in a dispatch rule")
        known = await self.store.hash_get_all(self.store.keys.warehouses)
        unknown = [warehouse for warehouse in body.warehouses if warehouse not in known]
        if unknown:
            raise ProblemError(422, "invalid-request", f"unknown warehouses: {', '.join(unknown)}")
        await self.store.put_config(
            hash_key=self.store.keys.dispatch,
            operation="merge",
            pairs=[region, ",".join(body.warehouses)],
            event_kind="dispatch_put",
            actor=actor,
            event_data=DispatchPut(region, tuple(body.warehouses)),
            now_ms=self.clock(),
        )
        return DispatchOut(region, list(body.warehouses))

    async def get_dispatch(self, region: str) -> DispatchOut:
        rule = await self.store.hash_get(self.store.keys.dispatch, region)
        if rule is None:
            raise ProblemError(404, "not-found", f"region {region} has no dispatch rule")
        return DispatchOut(region, rule.split(","))

    async def put_sku(self, sku: str, body: SkuIn, actor: str = SYSTEM_ACTOR) -> SkuOut:
        starts_ms = to_ms(body.sale_starts_at) if body.sale_starts_at else None
        ends_ms = to_ms(body.sale_ends_at) if body.sale_ends_at else None
        if starts_ms is not None and ends_ms is not None and ends_ms <= starts_ms:
            raise ProblemError(422, "invalid-request", "sale_ends_at must be after sale_starts_at")
        fields: dict[str, str | int | None] = {
            "name": body.name,
            "merchant_id": body.merchant_id,
            "price": body.price,
            "currency": body.currency,
            "safety_stock": body.safety_stock,
            "per_customer_limit": body.per_customer_limit,
            "sale_starts_ms": starts_ms,
            "sale_ends_ms": ends_ms,
        }
        pairs = [item for name, value in fields.items() if value is not None for item in (name, value)]
        event = SkuPut(
            sku, body.name, body.merchant_id, body.price, body.currency,
            body.per_customer_limit, starts_ms, ends_ms, body.safety_stock,
        )  # fmt: skip
        await self.store.put_config(
            hash_key=self.store.keys.sku_config(sku),
            operation="replace",
            pairs=pairs,
            event_kind="sku_put",
            actor=actor,
            event_data=event,
            now_ms=self.clock(),
        )
        await self.store.clear_sold_out(sku)  # a lower safety stock can make units sellable again
        return await self.get_sku(sku)

    async def get_sku(self, sku: str) -> SkuOut:
        fields = await self.store.hash_get_all(self.store.keys.sku_config(sku))
        if not fields:
            raise ProblemError(404, "not-found", f"unknown sku {sku}", sku=sku)

        def optional_time(name: str) -> datetime | None:
            return from_ms(int(fields[name])) if name in fields else None

        limit = fields.get("per_customer_limit")
        return SkuOut(
            sku=sku,
            name=fields["name"],
            merchant_id=fields["merchant_id"],
            price=int(fields["price"]),
            currency=fields["currency"],
            safety_stock=int(fields.get("safety_stock", "0")),
            per_customer_limit=int(limit) if limit is not None else None,
            sale_starts_at=optional_time("sale_starts_ms"),
            sale_ends_at=optional_time("sale_ends_ms"),
        )

    async def _adjust(
        self, sku: str, warehouse_id: str, mode: str, value: int, expected: int | None, reason: str, actor: str
    ) -> StockLevelOut:
        code, levels = await self.store.adjust_stock(
            sku=sku,
            warehouse_id=warehouse_id,
            mode=mode,
            value=value,
            expected_on_hand=expected,
            reason=reason,
            request_id=secrets.token_hex(8),
            actor=actor,
            now_ms=self.clock(),
        )
        if code is StockCode.UNKNOWN_SKU:
            raise ProblemError(404, "not-found", f"unknown sku {sku}", sku=sku)
        if code is StockCode.UNKNOWN_WAREHOUSE:
            raise ProblemError(404, "not-found", f"unknown warehouse {warehouse_id}")
        if code is StockCode.CONFLICT:
            raise ProblemError(
                409, "stock-conflict", "on_hand is not the expected value", current_on_hand=levels.on_hand
            )
        if code is StockCode.ABOVE_MAX:
            raise ProblemError(
                409, "stock-conflict", f"on_hand cannot exceed {STOCK_MAX}", current_on_hand=levels.on_hand
            )
        if code is StockCode.BELOW_HELD:
            held = levels.reserved + levels.committed
            raise ProblemError(
                409, "stock-conflict", f"on_hand cannot go below the {held} units held", current_on_hand=levels.on_hand
            )
        return _levels_out(warehouse_id, levels)

    async def set_stock(
        self, sku: str, warehouse_id: str, body: StockSetIn, actor: str = SYSTEM_ACTOR
    ) -> StockLevelOut:
        return await self._adjust(sku, warehouse_id, "set", body.on_hand, body.expected_on_hand, "stocktake", actor)

    async def adjust_stock(
        self, sku: str, warehouse_id: str, body: AdjustmentIn, actor: str = SYSTEM_ACTOR
    ) -> StockLevelOut:
        return await self._adjust(sku, warehouse_id, "delta", body.delta, None, body.reason, actor)

    async def transfer_stock(self, body: TransferIn, actor: str = SYSTEM_ACTOR) -> TransferOut:
        if body.from_warehouse == body.to_warehouse:
            raise ProblemError(422, "invalid-request", "from_warehouse and to_warehouse must differ")
        code, available = await self.store.transfer_stock(
            sku=body.sku,
            source=body.from_warehouse,
            target=body.to_warehouse,
            qty=body.qty,
            request_id=secrets.token_hex(8),
            actor=actor,
            now_ms=self.clock(),
        )
        if code is TransferCode.UNKNOWN_SKU:
            raise ProblemError(404, "not-found", f"unknown sku {body.sku}", sku=body.sku)
        if code is TransferCode.UNKNOWN_WAREHOUSE:
            raise ProblemError(404, "not-found", "unknown warehouse")
        if code is TransferCode.ABOVE_MAX:
            raise ProblemError(409, "stock-conflict", f"on_hand at {body.to_warehouse} cannot exceed {STOCK_MAX}")
        if code is TransferCode.INSUFFICIENT:
            raise ProblemError(409, "insufficient-stock", f"{available} available at {body.from_warehouse}")
        levels = await self.store.stock_levels(body.sku)
        empty = StockLevels(0, 0, 0, 0)
        return TransferOut(
            body.sku,
            _levels_out(body.from_warehouse, levels.get(body.from_warehouse, empty)),
            _levels_out(body.to_warehouse, levels.get(body.to_warehouse, empty)),
        )

    async def get_stock(self, sku: str) -> StockOut:
        if not await self.store.hash_get_all(self.store.keys.sku_config(sku)):
            raise ProblemError(404, "not-found", f"unknown sku {sku}", sku=sku)
        levels = await self.store.stock_levels(sku)
        return StockOut(sku, [_levels_out(warehouse_id, level) for warehouse_id, level in levels.items()])

    async def block(self, customer_id: str, body: BlockIn, actor: str = SYSTEM_ACTOR) -> BlockOut:
        await self.store.put_config(
            hash_key=self.store.keys.blocklist,
            operation="merge",
            pairs=[customer_id, body.reason],
            event_kind="customer_blocked",
            actor=actor,
            event_data=CustomerBlock(customer_id, body.reason),
            now_ms=self.clock(),
        )
        return BlockOut(customer_id, True, body.reason)

    async def unblock(self, customer_id: str, actor: str = SYSTEM_ACTOR) -> BlockOut:
        await self.store.put_config(
            hash_key=self.store.keys.blocklist,
            operation="delete",
            pairs=[customer_id],
            event_kind="customer_unblocked",
            actor=actor,
            event_data=CustomerBlock(customer_id, ""),
            now_ms=self.clock(),
        )
        return BlockOut(customer_id, False)

    async def get_block(self, customer_id: str) -> BlockOut:
        reason = await self.store.hash_get(self.store.keys.blocklist, customer_id)
        return BlockOut(customer_id, reason is not None, reason)


AuditReader = Callable[[AuditQuery], Awaitable[AuditPage]]
_CURSOR_PREFIX = b"audit:"


def encode_cursor(audit_id: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(audit_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The audit id a cursor stands for; anything not made by encode_cursor is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if raw.startswith(_CURSOR_PREFIX) and raw[len(_CURSOR_PREFIX) :].isdigit():
            return int(raw[len(_CURSOR_PREFIX) :])
    except (binascii.Error, ValueError):
        pass
    raise ProblemError(400, "invalid-request", "cursor is not one this API returned")


def _utc(text: str | None, name: str) -> datetime | None:
    """An RFC 3339 time (with its offset) in UTC; anything else is a 400."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("no offset")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ProblemError(400, "invalid-request", f"{name} must be an RFC 3339 time with an offset") from None


def _entry_out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        entry.audit_id, entry.occurred_at, entry.actor, entry.action, entry.target_type, entry.target_id,
        list(entry.warehouse_ids), entry.request_id, entry.reason, entry.before, entry.after,
    )  # fmt: skip


class AuditService:
    """The audit log, read from Postgres through a reader the composition root hands in."""

    def __init__(self, reader: AuditReader | None) -> None:
        self.reader = reader

    async def page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        warehouse_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> AuditPageOut:
        query = AuditQuery(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            warehouse_id=warehouse_id,
            since=_utc(since, "since"),
            until=_utc(until, "until"),
            before_audit_id=decode_cursor(cursor) if cursor is not None else None,
            limit=limit,
        )
        if self.reader is None:
            raise ProblemError(503, "dependency-unavailable", "the audit log needs Postgres")
        try:
            page = await self.reader(query)
        except AuditUnavailable:
            error = ProblemError(503, "dependency-unavailable", "the audit log could not be read")
            error.headers["Retry-After"] = "1"
            raise error from None
        next_cursor = encode_cursor(page.entries[-1].audit_id) if page.has_more and page.entries else None
        return AuditPageOut([_entry_out(entry) for entry in page.entries], next_cursor)
