"""``POST /v1/orders`` and ``POST /v1/orders:batch`` answered as plain ASGI, ahead of Litestar's router.

Profiled with py-spy on one intake worker under wrk, Litestar's per-request pipeline
(router, kwargs and signature model, exception middleware, ``Response`` to ``ASGIResponse``)
took about a third of the worker's CPU: more than the Redis call. These two operations are
the whole hot path of a flash sale, so they skip it: one scan of the raw headers, the body
read within its size bound, the strict msgspec decode, the service call, one encode and two
``send`` calls. Everything else goes through Litestar, including these operations' OpenAPI
entries; Litestar's handlers for them (intake/controllers.py) call the same functions below
and serve the other spellings of the paths (a trailing slash).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.types import Receive, Scope, Send

from intake.asgi import send_raw
from intake.auth import ClientRegistry, Refusal, authorize, send_refusal
from intake.codec import decode_body, encode_for
from intake.problems import PROBLEM_MEDIA_TYPE, ProblemError, as_problem, render_error
from intake.schemas import IDEMPOTENCY_KEY_PATTERN, BatchIn, BatchOut, BatchResultOut, OrderIn
from intake.service import OrderService, Placed
from intake.views import order_out

INTAKE_SCOPES = frozenset({"gateway", "admin"})
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

Reply = tuple[int, bytes, str, dict[str, str]]  # status, body, media type, extra headers
HotEndpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


def checked_idempotency_key(value: str | None) -> str:
    """The Idempotency-Key header, which every single-order intake must carry."""
    if value is None or not _IDEMPOTENCY_KEY.match(value):
        raise ProblemError(400, "invalid-request", "a valid Idempotency-Key header is required (1-128 printable ASCII)")
    return value


async def create_order(
    orders: OrderService, body: bytes, content_type: str, accept: str, idempotency_key: str | None, client_id: str
) -> Reply:
    """One order decided and its 201 body encoded (JSON, or MessagePack when accepted); refusals raise."""
    key = checked_idempotency_key(idempotency_key)
    placed = await orders.place(decode_body(body, content_type, OrderIn), key, client_id)
    encoded, media_type = encode_for(accept, order_out(placed.order))
    return 201, encoded, media_type, {} if placed.created else {"Idempotent-Replayed": "true"}


async def create_orders(orders: OrderService, body: bytes, content_type: str, accept: str, client_id: str) -> Reply:
    """Every order of a batch decided on its own: one result per order, in order."""
    data = decode_body(body, content_type, BatchIn)
    outcomes = await orders.place_batch([(order.idempotency_key, order) for order in data.orders], client_id)
    results = [
        BatchResultOut(201, order=order_out(outcome.order))
        if isinstance(outcome, Placed)
        else BatchResultOut(outcome.status, problem=as_problem(outcome))
        for outcome in outcomes
    ]
    encoded, media_type = encode_for(accept, BatchOut(results))
    return 200, encoded, media_type, {}


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_body(receive: Receive, declared_length: int | None, size_max: int) -> bytes:
    """The whole request body, refusing (before reading, when declared) one above size_max bytes."""
    if declared_length is not None and declared_length > size_max:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > size_max:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return b"".join(chunks) + chunk if chunks else chunk
        chunks.append(chunk)


class HotIntake:
    """The two intake endpoints as ASGI callables; the service is looked up per request (the lifespan sets it)."""

    def __init__(
        self,
        registry: ClientRegistry,
        order_service: Callable[[], OrderService],
        *,
        body_bytes_max: int,
        batch_body_bytes_max: int,
    ) -> None:
        self.registry = registry
        self.order_service = order_service
        self.body_bytes_max = body_bytes_max
        self.batch_body_bytes_max = batch_body_bytes_max

    def routes(self) -> dict[str, HotEndpoint]:
        """POST paths answered here, exactly as the client spells them."""
        return {"/v1/orders": self.create_order, "/v1/orders:batch": self.create_orders}

    async def create_order(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, batch=False)

    async def create_orders(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, batch=True)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, *, batch: bool) -> None:
        authorization = content_type = accept = b""
        idempotency_key: bytes | None = None
        declared_length: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"accept":
                accept = value
            elif name == b"idempotency-key":
                idempotency_key = value
            elif name == b"content-length" and value.isdigit():
                declared_length = int(value)
        client_id = authorize(self.registry, authorization, INTAKE_SCOPES)
        if isinstance(client_id, Refusal):
            await send_refusal(send, client_id)
            return
        size_max = self.batch_body_bytes_max if batch else self.body_bytes_max
        media_types = (content_type.decode("latin-1"), accept.decode("latin-1"))
        try:
            body = await read_body(receive, declared_length, size_max)
            if batch:
                reply = await create_orders(self.order_service(), body, *media_types, client_id)
            else:
                key = idempotency_key.decode("latin-1") if idempotency_key is not None else None
                reply = await create_order(self.order_service(), body, *media_types, key, client_id)
        except ClientGone:
            return
        except BodyTooLarge:
            too_large = ProblemError(413, "payload-too-large", f"the body is too large: at most {size_max} bytes")
            reply = _problem_reply(too_large, scope)
        except Exception as error:  # noqa: BLE001 - every error becomes its problem document (render_error)
            reply = _problem_reply(error, scope)
        await send_raw(send, *reply)


def _problem_reply(error: Exception, scope: Scope) -> Reply:
    status, body, headers = render_error(error, f"POST {scope['path']}")
    return status, body, PROBLEM_MEDIA_TYPE, headers
