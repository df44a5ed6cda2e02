"""The Redis adapter: the only module that imports ``redis``.

Each public coroutine is one script call (or one plain read), so every change of
stock is atomic. Scripts are loaded once at start-up and called by SHA; a server
that lost its script cache (restart, failover) gets them again on NOSCRIPT.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import hiredis
import msgspec
import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from reservation.aof_rewrite import AofStatus
from reservation.keys import KeyTable, PartitionKeys
from reservation.outcomes import (
    CancelCode,
    CaseCode,
    CaseOpenCode,
    ConfirmCode,
    OrderRefundCode,
    PayCode,
    ReserveCode,
    ShipCode,
    StockCode,
    TrackCode,
    TransferCode,
    WindowCode,
)
from reservation.pipelined import PipelinedChannel
from reservation.records import (
    ORDER_EVENT_KINDS,
    CaseRecord,
    OrderRecord,
    case_record_decoder,
    order_record_decoder,
)
from reservation.scripts import Script, read_scripts

STREAM_EXTRA_EVENTS = b"stream_extra_events"
"""The metrics hash's field counting the events stream entries hold beyond one each (reserve.lua,
ack.lua): the backlog in events is the entries plus this."""
EMPTY: Mapping[str, int] = MappingProxyType({})

__all__ = ["Client", "RedisError", "RedisStore", "ResponseError", "connect"]


class OrderRequest(msgspec.Struct, frozen=True, gc=False):
    """One order to decide. Its SKUs must be distinct: the script refuses repeated lines.

    A Struct rather than a frozen dataclass: its __init__ runs in C (the dataclass's set
    every field through object.__setattr__, about 2% of an intake worker's CPU)."""

    order_id: str
    idempotency_key: str
    fingerprint: str
    customer_id: str
    region: str
    order_type: str
    hold_ttl_ms: int
    allow_split: bool
    items: tuple[tuple[str, int], ...]
    client_id: str = ""  # the API client that sent it, for the per-client limit


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """Per-customer limits on tries; 0 switches a limit off."""

    attempts_max: int = 0
    window_ms: int = 1000
    abnormal_attempts_max: int = 0
    cooldown_ms: int = 60_000
    client_attempts_max: int = 0


@dataclass(frozen=True, slots=True)
class ReserveResult:
    code: ReserveCode
    order: OrderRecord | None
    detail: str


@dataclass(frozen=True, slots=True)
class OrderChange:
    """Outcome of a cancel or payment: its code and the order as it is now."""

    code: CancelCode | PayCode | ShipCode | TrackCode | ConfirmCode | WindowCode | OrderRefundCode
    order: OrderRecord | None


@dataclass(frozen=True, slots=True)
class CaseChange:
    """Outcome of an after-sales step: its code, the case and its order as they are now."""

    code: CaseOpenCode | CaseCode
    case: CaseRecord | None
    order: OrderRecord | None


@dataclass(frozen=True, slots=True)
class StockLevels:
    available: int
    reserved: int
    committed: int
    on_hand: int


@dataclass(frozen=True, slots=True)
class StreamEntry:
    entry_id: str
    fields: dict[bytes, bytes]


class _HiredisPacking:
    """Packs each command with one hiredis call (mixed into redis-py's asyncio connections).

    redis-py's own pack_command joins a growing buffer in Python once per argument; a reserve
    call carries some five keys per order, so for a batch that loop was most of the client's
    cost of the call. The bytes on the wire are the same.
    """

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # a name with a space ('SCRIPT LOAD') is sent as two arguments
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        encode = self.encoder.encode
        return [hiredis.pack_command(tuple(map(encode, args)))]


class HiredisPackingConnection(_HiredisPacking, redis_asyncio.Connection):
    """redis-py's asyncio TCP connection, packing with hiredis."""


class HiredisPackingUnixConnection(_HiredisPacking, redis_asyncio.UnixDomainSocketConnection):
    """redis-py's asyncio unix-socket connection, packing with hiredis."""


_PACKING_CONNECTIONS: dict[type, type] = {
    redis_asyncio.Connection: HiredisPackingConnection,
    redis_asyncio.UnixDomainSocketConnection: HiredisPackingUnixConnection,
}


class Client(redis_asyncio.Redis):
    """redis-py's client, plus (for ``redis://`` and ``unix://``) one pipelined connection that
    RedisStore sends its script calls over (reservation/pipelined.py); ``aclose`` closes both."""

    script_channel: PipelinedChannel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.script_channel is not None:
            await self.script_channel.aclose()
        await super().aclose(close_connection_pool)


def connect(url: str, *, pool_size_max: int, timeout_ms: int) -> Client:
    """A client with a bounded pool; waiting for a connection is bounded too. ``redis://`` (TCP)
    and ``unix://`` URLs pack commands with hiredis and get a pipelined channel for script calls
    (one connection more than the pool); TLS (``rediss://``) keeps redis-py for everything."""
    pool = redis_asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size_max,
        timeout=timeout_ms / 1000,
        socket_timeout=timeout_ms / 1000,
        socket_connect_timeout=timeout_ms / 1000,
        # A pooled connection Redis dropped (a restart, a failover) fails its next command: that command
        # is sent once more over a new connection. Never on a timeout (a frozen Redis must answer 503
        # within the timeout, not twice it). Script calls over TLS take this pool too; every script
        # re-checks state, so a repeat of one that ran answers as a client's retry of the request would.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        retry_on_error=[RedisConnectionError],
    )
    packing = _PACKING_CONNECTIONS.get(pool.connection_class)
    client = Client(connection_pool=pool)
    if packing is not None:
        pool.connection_class = packing
        client.script_channel = PipelinedChannel.from_connection_kwargs(pool.connection_kwargs)
    return client


_orders_encoder = msgspec.msgpack.Encoder()
# Fields 11-18 of a new order's document (reserve.lua's header): cancel_reason, payment_id,
# paid_amount, payment_method, paid_ms, refund_status, refund_amount, version.
_DOCUMENT_TAIL_CONSTANTS: tuple[str | int, ...] = ("", "", 0, "", 0, "", 0, 1)
_DOCUMENT_ARRAY_HEADER = b"\xdc\x00\x15"  # msgpack array 16 of 21 fields, as cmsgpack packs the table
_RESERVE_CODES = {code.value: code for code in ReserveCode}  # a dict look-up costs less than ReserveCode(n)


def _as_msgpack_str(data: bytes) -> msgspec.Raw:
    """Bytes as a msgpack str, which Lua's cmsgpack unpacks to a string (it has no bin type)."""
    size = len(data)
    assert size < 0x10000, "a document's ids, idempotency key and fingerprint are bounded far below this"
    header = bytes((0xD9, size)) if size < 0x100 else b"\xda" + size.to_bytes(2, "big")
    return msgspec.Raw(header + data)


def _pack_reserve_orders(
    keys: PartitionKeys, orders: Sequence[OrderRequest], now_ms: int, limits: AttemptLimits
) -> tuple[list[bytes], bytes]:
    """KEYS and the packed orders argument of reserve.lua (layout in its header).

    Keys are numbered in the order the orders name them. A key that many orders of a batch
    name (a hot SKU's two, the API client's rate key) is made and looked up once per call.
    The keys go out already encoded: redis-py's encoder passes bytes through at once, and a
    batch sends some five keys per order. Each order carries the fields of its document that do
    not depend on the script's decisions already packed, so Lua packs three values of 21 per
    order: Redis, which every worker's calls take turns in, spends 5 % fewer instructions an
    order (170,022 against 179,615 at 100 orders a call; python -m benchmarks.lua_instructions)
    for ~1.4 us more here, in a worker of which there can be many. A rate key whose limits are
    off is not sent (index 0): the script never reads it, and each key sent costs Redis the
    parsing and Lua string of a key.
    """
    encode = _orders_encoder.encode
    tail_start = encode((*_DOCUMENT_TAIL_CONSTANTS, now_ms))[1:]  # [1:]: without the array header
    table = KeyTable([keys.stream, keys.expiry, keys.dispatch, keys.blocklist, keys.sold_out, keys.metrics])
    index = table.index
    sku_key_indexes: dict[str, tuple[int, int]] = {}
    client_key_indexes: dict[str, int] = {}
    customer_rate_used = limits.attempts_max > 0 or limits.abnormal_attempts_max > 0
    client_rate_used = limits.client_attempts_max > 0
    flat: list[Any] = []  # one flat array, every order's fields in turn
    for order in orders:
        customer_id, client_id = order.customer_id, order.client_id
        idempotency_index = index(keys.idempotency(order.idempotency_key))
        order_index = index(keys.order(order.order_id))
        counters_index = index(keys.customer_counters(customer_id))
        rate_index = index(keys.customer_rate(customer_id)) if customer_rate_used else 0
        client_index = client_key_indexes.get(client_id, 0)
        if client_rate_used and not client_index:
            client_index = client_key_indexes[client_id] = index(keys.client_rate(client_id))
        items = order.items
        tail = _as_msgpack_str(tail_start + encode((order.idempotency_key, order.fingerprint))[1:])
        head = _as_msgpack_str(
            _DOCUMENT_ARRAY_HEADER
            + encode((order.order_id, "pending_payment", customer_id, order.region, order.order_type, now_ms,
                      now_ms + order.hold_ttl_ms))[1:]
        )  # fmt: skip
        flat += (
            idempotency_index, order_index, counters_index, rate_index, client_index, order.order_id,
            tail, order.fingerprint, customer_id, order.region, head, order.hold_ttl_ms,
            order.allow_split, len(items),
        )  # fmt: skip
        for sku, qty in items:
            sku_indexes = sku_key_indexes.get(sku)
            if sku_indexes is None:
                sku_indexes = sku_key_indexes[sku] = (index(keys.sku_config(sku)), index(keys.stock(sku)))
            flat += (sku, qty, *sku_indexes)
    return [key.encode() for key in table.keys], _orders_encoder.encode(flat)


def _decode_order(packed: bytes) -> OrderRecord | None:
    return order_record_decoder.decode(packed) if packed else None


def _decode_case(packed: bytes) -> CaseRecord | None:
    return case_record_decoder.decode(packed) if packed else None


class RedisStore:
    """Stock, holds and orders in one Redis partition (``{p0}``)."""

    def __init__(self, client: redis_asyncio.Redis, *, partition: int = 0) -> None:
        # Typed loosely on purpose: redis-py's stubs cannot know replies are bytes (decode_responses=False).
        self.client: Any = client
        # Script calls go over the client's pipelined channel when it has one (connect() gives it);
        # bound once here, so _call awaits the sender's coroutine directly.
        channel: PipelinedChannel | None = getattr(client, "script_channel", None)
        self._evalsha: Callable[..., Awaitable[Any]] = (
            functools.partial(channel.call, b"EVALSHA") if channel is not None else client.evalsha
        )
        self.keys = PartitionKeys(partition)
        self._scripts: dict[str, Script] = read_scripts()

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script; a script Redis rejects fails here, at start-up."""
        for script in self._scripts.values():
            loaded_sha = await self.client.script_load(script.source)
            assert loaded_sha == script.sha, f"{script.name}: Redis answered SHA {loaded_sha}"

    async def _call(self, name: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        try:
            return await self._evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load_scripts()
            return await self._evalsha(script.sha, len(keys), *keys, *args)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # -- orders ------------------------------------------------------------

    async def reserve(
        self,
        orders: Sequence[OrderRequest],
        *,
        now_ms: int,
        stream_length_max: int,
        idempotency_ttl_ms: int,
        limits: AttemptLimits = AttemptLimits(),
    ) -> list[ReserveResult]:
        """Decide every order in one call; each is held all-or-nothing on its own."""
        script_keys, packed_orders = _pack_reserve_orders(self.keys, orders, now_ms, limits)
        args = [
            now_ms, stream_length_max, idempotency_ttl_ms, limits.attempts_max, limits.window_ms,
            limits.abnormal_attempts_max, limits.cooldown_ms, limits.client_attempts_max, packed_orders,
        ]  # fmt: skip
        replies = await self._call("reserve", script_keys, args)
        assert len(replies) == 2 * len(orders), "reserve.lua must answer once per order"
        results = []
        for code_number, detail in zip(replies[::2], replies[1::2], strict=True):
            code = _RESERVE_CODES[code_number]
            if code is ReserveCode.ACCEPTED or code is ReserveCode.REPLAYED:
                results.append(ReserveResult(code, _decode_order(detail), ""))
            else:
                results.append(ReserveResult(code, None, detail.decode()))
        return results

    async def convert_legacy_idempotency_records(self, *, scan_count: int = 1000) -> int:
        """Rewrite the hash records of earlier builds as this build's records, keeping their expiry.

        Run at API start-up, so a retry of an order accepted before an upgrade still replays.
        Returns how many it converted; the old keys are deleted once converted. A marker key
        records a finished scan, so later start-ups skip it (stop the old build's API workers
        before starting this one's: records they write after the scan are not converted)."""
        marker = f"{self.keys.tag}:layout:idem2"
        if await self.client.exists(marker):
            return 0
        converted = 0
        legacy_prefix = f"{self.keys.tag}:idem:"  # earlier builds' hash records: order_id, fingerprint, document
        async for key in self.client.scan_iter(match=legacy_prefix + "*", count=scan_count, _type="hash"):
            document, left_ms = await self.client.hget(key, "document"), await self.client.pttl(key)
            if document and left_ms > 0:
                new_key = self.keys.idempotency(key.decode()[len(legacy_prefix) :])
                await self.client.set(new_key, document, px=left_ms, nx=True)
                converted += 1
            await self.client.delete(key)
        await self.client.set(marker, "1")
        return converted

    async def idempotency_keys_exist(self, idempotency_keys: Sequence[str]) -> list[bool]:
        """Which keys already hold an idempotency record, in one call."""
        keys = [self.keys.idempotency(key) for key in idempotency_keys]
        return [bool(found) for found in await self._call("keys_exist", keys, [])]

    async def gauges(self, group: str) -> dict[str, int]:
        """Counters of decided orders by code, and the backlogs an operator watches."""
        counters = await self.client.hgetall(self.keys.metrics)
        result = {field.decode(): int(value) for field, value in counters.items() if field.startswith(b"reserve_")}
        result["holds_outstanding"] = int(await self.client.zcard(self.keys.expiry))
        result["sold_out_skus"] = int(await self.client.scard(self.keys.sold_out))
        try:
            result["stream_backlog"] = await self.stream_backlog(group)
        except RedisError:  # no stream yet
            result["stream_backlog"] = 0
        return result

    async def sold_out_skus(self) -> frozenset[str]:
        """SKUs flagged as having no sellable unit in any warehouse."""
        return frozenset(member.decode() for member in await self.client.smembers(self.keys.sold_out))

    async def clear_sold_out(self, sku: str) -> None:
        await self.client.srem(self.keys.sold_out, sku)

    async def get_order(self, order_id: str) -> OrderRecord | None:
        packed = await self.client.get(self.keys.order(order_id))
        return _decode_order(packed) if packed else None

    async def get_orders(self, order_ids: Sequence[str]) -> list[OrderRecord | None]:
        if not order_ids:
            return []
        packed = await self.client.mget([self.keys.order(order_id) for order_id in order_ids])
        return [_decode_order(item) if item else None for item in packed]

    async def cancel(
        self, orders: Sequence[OrderRecord], *, reason: str, now_ms: int, due_only: bool
    ) -> list[OrderChange]:
        """Cancel orders read earlier (their SKU set never changes after intake)."""
        replies = await self._cancel(orders, "documents", reason=reason, now_ms=now_ms, due_only=due_only)
        return [OrderChange(CancelCode(code), _decode_order(packed)) for code, packed in replies]

    async def expire(self, orders: Sequence[OrderRecord], *, now_ms: int) -> list[CancelCode]:
        """Cancel, for payment_timeout, those of these orders still pending whose deadline has passed
        (the sweeper): only the codes come back, not 500 documents it would decode for nothing."""
        replies = await self._cancel(orders, "codes", reason="payment_timeout", now_ms=now_ms, due_only=True)
        return [CancelCode(code) for code in replies]

    async def _cancel(
        self, orders: Sequence[OrderRecord], reply: str, *, reason: str, now_ms: int, due_only: bool
    ) -> list[Any]:
        keys = self.keys
        table = KeyTable([keys.stream, keys.expiry, keys.sold_out, keys.metrics])
        flat: list[Any] = []
        for order in orders:
            skus = order.skus
            flat += [
                table.index(keys.order(order.order_id)),
                table.index(keys.customer_counters(order.customer_id)),
                order.order_id,
                reason,
                due_only,
                len(skus),
            ]
            for sku in skus:
                flat += [sku, table.index(keys.stock(sku))]
        replies: list[Any] = await self._call("cancel", table.keys, [now_ms, reply, _orders_encoder.encode(flat)])
        assert len(replies) == len(orders), "cancel.lua must answer once per order"
        return replies

    async def pay(self, order: OrderRecord, *, payment_id: str, amount: int, method: str, now_ms: int) -> OrderChange:
        keys = self.keys
        skus = order.skus
        script_keys = [
            keys.stream,
            keys.expiry,
            keys.order(order.order_id),
            keys.customer_counters(order.customer_id),
            keys.payment(payment_id),
            keys.blocklist,
            *[key for sku in skus for key in (keys.stock(sku), keys.sku_config(sku))],
        ]
        args = [now_ms, order.order_id, payment_id, amount, method, len(skus), *skus]
        code, packed = await self._call("pay", script_keys, args)
        return OrderChange(PayCode(code), _decode_order(packed))

    async def due_order_ids(self, *, now_ms: int, count_max: int) -> list[str]:
        """Orders whose hold deadline has passed, oldest first, at most count_max."""
        members = await self.client.zrangebyscore(self.keys.expiry, "-inf", now_ms, start=0, num=count_max)
        return [member.decode() for member in members]

    async def forget_expiry(self, order_ids: Sequence[str]) -> None:
        """Drop deadlines of orders that no longer exist."""
        await self.client.zrem(self.keys.expiry, *order_ids)

    async def expiry_backlog(self) -> int:
        return int(await self.client.zcard(self.keys.expiry))

    # -- lifecycle after payment (shipments, receipt, after-sales window) ----------

    async def ship(
        self, order: OrderRecord, *, shipment_id: str, carrier: str, tracking_number: str, auto_confirm_ms: int,
        now_ms: int,
    ) -> OrderChange:  # fmt: skip
        """Ship one shipment of an order read earlier (its SKU set never changes after intake)."""
        keys = self.keys
        skus = order.skus
        script_keys = [keys.stream, keys.confirm_due, keys.order(order.order_id), *[keys.stock(sku) for sku in skus]]
        args = [now_ms, order.order_id, shipment_id, carrier, tracking_number, auto_confirm_ms, len(skus), *skus]
        code, packed = await self._call("ship", script_keys, args)
        return OrderChange(ShipCode(code), _decode_order(packed))

    async def track(
        self, order_id: str, *, shipment_id: str, status: str, location: str, occurred_ms: int,
        track_length_max: int, now_ms: int,
    ) -> OrderChange:  # fmt: skip
        script_keys = [self.keys.stream, self.keys.order(order_id)]
        args = [now_ms, order_id, shipment_id, status, location, occurred_ms, track_length_max]
        code, packed = await self._call("track", script_keys, args)
        return OrderChange(TrackCode(code), _decode_order(packed))

    async def confirm(
        self, order_ids: Sequence[str], *, window_ms: int, now_ms: int, due_only: bool
    ) -> list[OrderChange]:
        """Confirm receipt of shipped orders (due_only: those whose automatic confirmation is due)."""
        keys = self.keys
        table = KeyTable([keys.stream, keys.confirm_due, keys.window_due])
        args: list[Any] = [now_ms, window_ms, len(order_ids)]
        for order_id in order_ids:
            args += [table.index(keys.order(order_id)), order_id, "1" if due_only else "0"]
        replies = await self._call("confirm", table.keys, args)
        assert len(replies) == len(order_ids), "confirm.lua must answer once per order"
        return [OrderChange(ConfirmCode(code), _decode_order(packed)) for code, packed in replies]

    async def close_windows(self, order_ids: Sequence[str], *, now_ms: int) -> list[OrderChange]:
        """Close the after-sales window of completed orders whose window-due score has passed."""
        keys = self.keys
        table = KeyTable([keys.stream, keys.window_due])
        args: list[Any] = [now_ms, len(order_ids)]
        for order_id in order_ids:
            args += [table.index(keys.order(order_id)), order_id]
        replies = await self._call("window_close", table.keys, args)
        assert len(replies) == len(order_ids), "window_close.lua must answer once per order"
        return [OrderChange(WindowCode(code), _decode_order(packed)) for code, packed in replies]

    async def open_case(
        self, order: OrderRecord, *, case_id: str, kind: str, reason: str, items: Sequence[tuple[str, int]],
        now_ms: int,
    ) -> CaseChange:  # fmt: skip
        """Open a case on an order read earlier; case_id must be the next of the order (see case_open.lua)."""
        keys = self.keys
        skus = order.skus
        script_keys = [
            keys.stream, keys.sold_out, keys.order(order.order_id), keys.case(case_id),
            keys.customer_counters(order.customer_id), *[keys.stock(sku) for sku in skus],
            *[keys.case(existing) for existing in order.case_ids],
        ]  # fmt: skip
        args: list[Any] = [now_ms, case_id, kind, reason, len(skus), *skus, len(items)]
        for sku, qty in items:
            args += [sku, qty]
        code, case_packed, packed = await self._call("case_open", script_keys, args)
        return CaseChange(CaseOpenCode(code), _decode_case(case_packed), _decode_order(packed))

    async def review_case(self, case: CaseRecord, *, decision: str, note: str, now_ms: int) -> CaseChange:
        keys = self.keys
        script_keys = [
            keys.stream,
            keys.confirm_due,
            keys.window_due,
            keys.order(case.order_id),
            keys.case(case.case_id),
        ]
        code, case_packed, packed = await self._call("case_review", script_keys, [now_ms, decision, note])
        return CaseChange(CaseCode(code), _decode_case(case_packed), _decode_order(packed))

    async def receive_return(self, case: CaseRecord, *, warehouse_id: str, damaged: bool, now_ms: int) -> CaseChange:
        keys = self.keys
        skus = case.skus
        script_keys = [
            keys.stream, keys.sold_out, keys.warehouses, keys.dispatch, keys.order(case.order_id),
            keys.case(case.case_id), *[key for sku in skus for key in (keys.stock(sku), keys.sku_config(sku))],
        ]  # fmt: skip
        args = [now_ms, warehouse_id, "1" if damaged else "0", len(skus), *skus]
        code, case_packed, packed = await self._call("case_return", script_keys, args)
        return CaseChange(CaseCode(code), _decode_case(case_packed), _decode_order(packed))

    async def refund_case(self, case: CaseRecord, *, now_ms: int) -> CaseChange:
        keys = self.keys
        script_keys = [keys.stream, keys.order(case.order_id), keys.case(case.case_id)]
        code, case_packed, packed = await self._call("case_refund", script_keys, [now_ms])
        return CaseChange(CaseCode(code), _decode_case(case_packed), _decode_order(packed))

    async def ship_exchange(self, case: CaseRecord, *, carrier: str, tracking_number: str, now_ms: int) -> CaseChange:
        keys = self.keys
        # The case's items, not its replacement: a replacement is the same SKUs, and a case read
        # before its return was received has no replacement yet (a race the script must not refuse).
        skus = case.skus
        script_keys = [
            keys.stream, keys.confirm_due, keys.window_due, keys.order(case.order_id), keys.case(case.case_id),
            *[keys.stock(sku) for sku in skus],
        ]  # fmt: skip
        args = [now_ms, carrier, tracking_number, len(skus), *skus]
        code, case_packed, packed = await self._call("case_exchange_ship", script_keys, args)
        return CaseChange(CaseCode(code), _decode_case(case_packed), _decode_order(packed))

    async def refund_order(self, order_id: str, *, now_ms: int) -> OrderChange:
        """Close a cancelled order whose pending refund the payment system paid out."""
        code, packed = await self._call("order_refund", [self.keys.stream, self.keys.order(order_id)], [now_ms])
        return OrderChange(OrderRefundCode(code), _decode_order(packed))

    async def recent_orders(self, *, customer_id: str, entries_max: int) -> list[OrderRecord]:
        """A customer's orders in the newest entries_max stream entries (at most: not yet persisted ones).

        The stream keeps every entry until the persister acknowledged it, so an order Postgres does
        not know yet is found here while the backlog is shorter than entries_max.
        """
        found: dict[str, OrderRecord] = {}
        needle = customer_id.encode()
        for _, fields in await self.client.xrevrange(self.keys.stream, count=entries_max):
            if fields.get(b"k", b"").decode() not in ORDER_EVENT_KINDS:
                continue
            if needle not in fields[b"o"]:  # a byte search in C spares decoding other customers' orders
                continue
            order = order_record_decoder.decode(fields[b"o"])
            if order.customer_id == customer_id and order.order_id not in found:
                found[order.order_id] = order
        return list(found.values())

    async def get_cases(self, case_ids: Sequence[str]) -> list[CaseRecord | None]:
        if not case_ids:
            return []
        packed = await self.client.mget([self.keys.case(case_id) for case_id in case_ids])
        return [_decode_case(item) if item else None for item in packed]

    async def due_members(self, key: str, *, now_ms: int, count_max: int) -> list[str]:
        """Members of a deadline set scored <= now_ms, earliest first, at most count_max."""
        members = await self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=count_max)
        return [member.decode() for member in members]

    # -- stock and configuration --------------------------------------------

    async def adjust_stock(
        self,
        *,
        sku: str,
        warehouse_id: str,
        mode: str,
        value: int,
        expected_on_hand: int | None,
        reason: str,
        request_id: str,
        actor: str,
        now_ms: int,
    ) -> tuple[StockCode, StockLevels]:
        keys = self.keys
        script_keys = [keys.stream, keys.stock(sku), keys.sku_config(sku), keys.warehouses, keys.sold_out]
        expected = "" if expected_on_hand is None else expected_on_hand
        args = [now_ms, mode, sku, warehouse_id, value, expected, reason, request_id, actor]
        code, available, reserved, committed, on_hand = await self._call("stock_adjust", script_keys, args)
        return StockCode(code), StockLevels(available, reserved, committed, on_hand)

    async def transfer_stock(
        self, *, sku: str, source: str, target: str, qty: int, request_id: str, actor: str, now_ms: int
    ) -> tuple[TransferCode, int]:
        keys = self.keys
        script_keys = [keys.stream, keys.stock(sku), keys.sku_config(sku), keys.warehouses, keys.sold_out]
        code, available = await self._call(
            "stock_transfer", script_keys, [now_ms, sku, source, target, qty, request_id, actor]
        )
        return TransferCode(code), int(available)

    async def stock_levels(self, sku: str) -> dict[str, StockLevels]:
        """Counters of every warehouse that has ever held the SKU."""
        fields = await self.client.hgetall(self.keys.stock(sku))
        counters: dict[str, dict[str, int]] = {}
        for field, value in fields.items():
            kind, _, warehouse_id = field.decode().partition(":")
            counters.setdefault(warehouse_id, {})[kind] = int(value)
        return {
            warehouse_id: StockLevels(values.get("a", 0), values.get("r", 0), values.get("c", 0), values.get("h", 0))
            for warehouse_id, values in sorted(counters.items())
        }

    async def stocked_skus(self) -> list[str]:
        """Every SKU with a stock hash, found by SCAN (for reconciliation, not the hot path)."""
        prefix = self.keys.stock("")
        found = [key.decode()[len(prefix) :] async for key in self.client.scan_iter(match=f"{prefix}*", count=1000)]
        return sorted(found)

    async def live_holds(self, *, chunk_size: int = 1000) -> dict[str, OrderRecord]:
        """Every order in the expiry set, by id (orders awaiting payment)."""
        order_ids = [member.decode() for member in await self.client.zrange(self.keys.expiry, 0, -1)]
        holds: dict[str, OrderRecord] = {}
        for start in range(0, len(order_ids), chunk_size):
            for order in await self.get_orders(order_ids[start : start + chunk_size]):
                if order is not None:
                    holds[order.order_id] = order
        return holds

    async def holds_any_key(self) -> bool:
        """Whether this partition holds anything at all (recover refuses to overwrite)."""
        async for _ in self.client.scan_iter(match=f"{self.keys.tag}:*", count=1000):
            return True
        return False

    async def clear_partition(self, *, keep: Sequence[str], chunk_size: int = 1000) -> int:
        """Delete every key of this partition but ``keep``; returns how many (recover --force, never hot path)."""
        kept = set(keep)
        deleted = 0
        batch: list[str] = []
        async for key in self.client.scan_iter(match=f"{self.keys.tag}:*", count=chunk_size):
            name = key.decode()
            if name not in kept:
                batch.append(name)
            if len(batch) >= chunk_size:
                deleted += int(await self.client.delete(*batch))
                batch = []
        if batch:
            deleted += int(await self.client.delete(*batch))
        return deleted

    async def restore(
        self,
        *,
        warehouses: dict[str, str],
        dispatch: dict[str, str],
        skus: dict[str, dict[str, str]],
        blocklist: dict[str, str],
        stock: dict[tuple[str, str], tuple[int, int, int, int]],
        orders: Sequence[OrderRecord],
        bought: dict[str, dict[str, int]],
        idempotency: Sequence[tuple[str, OrderRecord, int]],
        payments: dict[str, tuple[str, int]],
        cases: Sequence[CaseRecord] = (),
        chunk_size: int = 1000,
    ) -> None:
        """Write a whole partition's state at once, in pipelined chunks (recovery, not the hot path)."""
        keys = self.keys
        commands: list[tuple[Any, ...]] = []
        for key, mapping in ((keys.warehouses, warehouses), (keys.dispatch, dispatch), (keys.blocklist, blocklist)):
            if mapping:
                commands.append(("hset", key, mapping))
        commands += [("hset", keys.sku_config(sku), config) for sku, config in skus.items()]
        for (sku, warehouse_id), (available, reserved, committed, on_hand) in stock.items():
            fields = {f"a:{warehouse_id}": available, f"r:{warehouse_id}": reserved}
            fields |= {f"c:{warehouse_id}": committed, f"h:{warehouse_id}": on_hand}
            commands.append(("hset", keys.stock(sku), fields))
        for order in orders:
            commands.append(("set", keys.order(order.order_id), msgspec.msgpack.encode(order)))
            if order.status == "pending_payment":
                commands.append(("zadd", keys.expiry, {order.order_id: order.expires_ms}))
            elif order.status == "shipped":
                commands.append(("zadd", keys.confirm_due, {order.order_id: order.confirm_due_ms}))
            elif order.status == "completed" and not order.after_sales_closed:
                commands.append(("zadd", keys.window_due, {order.order_id: order.after_sales_until_ms}))
        commands += [("hset", keys.customer_counters(customer), counts) for customer, counts in bought.items()]
        for idempotency_key, accepted, left_ms in idempotency:  # the record is the accepted document (reserve.lua)
            record = (msgspec.msgpack.encode(accepted), left_ms)
            commands.append(("set_px", keys.idempotency(idempotency_key), record))
        for payment_id, (order_id, amount) in payments.items():
            commands.append(("hset", keys.payment(payment_id), {"order_id": order_id, "amount": amount}))
        commands += [("set", keys.case(case.case_id), msgspec.msgpack.encode(case)) for case in cases]
        for start in range(0, len(commands), chunk_size):
            pipeline = self.client.pipeline(transaction=False)
            for name, key, value in commands[start : start + chunk_size]:
                if name == "hset":
                    pipeline.hset(key, mapping=value)
                elif name == "set":
                    pipeline.set(key, value)
                elif name == "zadd":
                    pipeline.zadd(key, value)
                else:
                    document, left_ms = value
                    pipeline.set(key, document, px=left_ms)
            await pipeline.execute()

    async def put_config(
        self,
        *,
        hash_key: str,
        operation: str,
        pairs: Sequence[str | int],
        event_kind: str,
        event_data: msgspec.Struct,
        actor: str,
        now_ms: int,
    ) -> None:
        """Change a configuration hash and append its event (with who and what it replaced), in one call."""
        data = msgspec.msgpack.encode(event_data)
        await self._call(
            "config_put", [self.keys.stream, hash_key], [now_ms, event_kind, data, actor, operation, *pairs]
        )

    async def hash_get(self, key: str, field: str) -> str | None:
        value = await self.client.hget(key, field)
        return value.decode() if value is not None else None

    async def hash_get_all(self, key: str) -> dict[str, str]:
        return {field.decode(): value.decode() for field, value in (await self.client.hgetall(key)).items()}

    # -- AOF rewrites (the whole server's, not the partition's) ----------------

    async def orders_decided(self) -> int:
        """Orders the reserve script has decided so far, whatever the outcome (the metrics hash)."""
        counters = await self.client.hgetall(self.keys.metrics)
        return sum(int(value) for field, value in counters.items() if field.startswith(b"reserve_"))

    async def aof_status(self) -> AofStatus:
        info = await self.client.info("persistence")
        enabled = bool(int(info.get("aof_enabled", 0)))
        forks = (
            "aof_rewrite_in_progress",
            "aof_rewrite_scheduled",
            "rdb_bgsave_in_progress",
            "module_fork_in_progress",
        )
        return AofStatus(
            enabled=enabled,
            forking=any(int(info.get(name, 0)) for name in forks),
            current_bytes=int(info.get("aof_current_size", 0)) if enabled else 0,
            base_bytes=int(info.get("aof_base_size", 0)) if enabled else 0,
            # Redis 7 and valkey count failures in a row; an older server says only whether the last failed.
            failed_rewrites_in_a_row=int(
                info.get("aof_rewrites_consecutive_failures", info.get("aof_last_bgrewrite_status") == "err")
            ),
        )

    async def rewrite_aof(self) -> None:
        """BGREWRITEAOF: Redis forks a child that writes a compact AOF; returns once it started."""
        await self.client.bgrewriteaof()

    async def auto_rewrite_percentage(self) -> int:
        """Redis's own trigger (CONFIG GET auto-aof-rewrite-percentage; 0 is off). A managed Redis
        may refuse CONFIG: ResponseError."""
        answer = await self.client.config_get("auto-aof-rewrite-percentage")
        if "auto-aof-rewrite-percentage" not in answer:
            raise ResponseError("CONFIG GET auto-aof-rewrite-percentage: no such parameter")
        return int(answer["auto-aof-rewrite-percentage"])

    # -- sweeper lock ---------------------------------------------------------

    async def acquire_lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        """Take or extend a lock held by owner; False while someone else holds it."""
        extended = await self.client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end"
            " return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0",
            1,
            key,
            owner,
            ttl_ms,
        )
        return bool(extended)

    async def release_lock(self, key: str, owner: str) -> None:
        """Drop the lock if owner still holds it."""
        await self.client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            1,
            key,
            owner,
        )

    # -- event stream -----------------------------------------------------------

    async def ensure_group(self, group: str) -> None:
        try:
            await self.client.xgroup_create(self.keys.stream, group, id="0", mkstream=True)
        except RedisError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def read_group(self, group: str, consumer: str, *, count: int, block_ms: int | None) -> list[StreamEntry]:
        """New entries for this consumer (waiting up to block_ms for one; None: not at all); they stay
        pending until acknowledged."""
        reply = await self.client.xreadgroup(group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms)
        return [StreamEntry(entry_id.decode(), fields) for _, entries in reply for entry_id, fields in entries]

    async def read_own_pending(self, group: str, consumer: str, *, count: int) -> list[StreamEntry]:
        """Entries delivered to this consumer name but never acknowledged."""
        reply = await self.client.xreadgroup(group, consumer, {self.keys.stream: "0"}, count=count)
        return [StreamEntry(entry_id.decode(), fields) for _, entries in reply for entry_id, fields in entries]

    async def claim_stale(self, group: str, consumer: str, *, idle_ms: int, count: int) -> list[StreamEntry]:
        """Take over entries another consumer left unacknowledged for idle_ms."""
        reply = await self.client.xautoclaim(self.keys.stream, group, consumer, idle_ms, "0-0", count=count)
        entries = reply[1]
        return [StreamEntry(entry_id.decode(), fields) for entry_id, fields in entries if fields is not None]

    async def delete_consumer_if_idle(self, group: str, consumer: str) -> None:
        pending = await self.client.xpending_range(self.keys.stream, group, "-", "+", 1, consumername=consumer)
        if not pending:
            await self.client.xgroup_delconsumer(self.keys.stream, group, consumer)

    async def acknowledge(self, group: str, entry_ids: Sequence[str], extra_events: Mapping[str, int] = EMPTY) -> None:
        """XACK the entries; ``extra_events``: for entries that held several orders, the orders beyond
        the first, taken off the count reserve.lua's backlog bound adds to XLEN (ack.lua)."""
        if not entry_ids:
            return
        if not extra_events:
            await self.client.xack(self.keys.stream, group, *entry_ids)
            return
        multi = [value for entry_id in entry_ids if entry_id in extra_events
                 for value in (entry_id, extra_events[entry_id])]  # fmt: skip
        others = [entry_id for entry_id in entry_ids if entry_id not in extra_events]
        await self._call("ack", [self.keys.stream, self.keys.metrics], [group, len(multi) // 2, *multi, *others])

    async def trim_consumed(self, group: str) -> None:
        """Drop entries every consumer of the group has acknowledged (and only those)."""
        info = await self.client.xinfo_groups(self.keys.stream)
        group_info = next((item for item in info if item["name"].decode() == group), None)
        if group_info is None:
            return
        pending = await self.client.xpending(self.keys.stream, group)
        if pending["pending"]:
            oldest = pending["min"].decode()
        else:
            last = group_info["last-delivered-id"].decode()
            milliseconds, sequence = (int(part) for part in last.split("-"))
            oldest = f"{milliseconds}-{sequence + 1}"
        await self.client.xtrim(self.keys.stream, minid=oldest)

    async def stream_backlog(self, group: str) -> int:
        """Events not yet acknowledged by the group: its pending and never delivered entries, plus
        the orders beyond the first of those that hold several (orders_created, orders_cancelled)."""
        info = await self.client.xinfo_groups(self.keys.stream)
        extra = int(await self.client.hget(self.keys.metrics, STREAM_EXTRA_EVENTS) or 0)
        for item in info:
            if item["name"].decode() == group:
                lag = item.get("lag")
                return int(item["pending"]) + int(lag or 0) + extra
        return int(await self.client.xlen(self.keys.stream)) + extra

    async def stream_length(self) -> int:
        return int(await self.client.xlen(self.keys.stream))
