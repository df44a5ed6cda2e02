"""RFC 9457 problem documents: one stable ``type`` per kind of error.

Three kinds, never mixed: invalid input (400/413/422), business outcomes
(403/404/409) and bugs (500, logged with the traceback). Problem documents never
echo secrets or internals.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from intake.schemas import Problem
from orders.states import InvalidTransition
from reservation.store import RedisError, ResponseError

PROBLEM_BASE = "https://rushgate.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

logger = logging.getLogger("rushgate.intake")

TITLES = {
    "invalid-request": "The request is invalid",
    "unauthorized": "Missing or wrong bearer token",
    "invalid-signature": "The callback signature is missing, wrong or stale",
    "forbidden": "This token may not use this endpoint",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "payload-too-large": "The request body is too large",
    "unsupported-media-type": "The request body must be JSON or MessagePack",
    "sold-out": "Sold out",
    "purchase-limit": "Purchase limit reached",
    "sale-not-open": "The sale is not open",
    "customer-blocked": "The customer may not order",
    "idempotency-key-reused": "The idempotency key was used with another request",
    "amount-mismatch": "The amount differs from the order total",
    "already-paid": "The order is already paid",
    "payment-id-reused": "The payment id was already used for another order or amount",
    "refund-pending": "The order was cancelled; the payment is recorded for refund",
    "invalid-transition": "The order cannot do that in its current status",
    "track-full": "The shipment's logistics track holds as many events as it may",
    "after-sales-window-closed": "The after-sales window of this order has closed",
    "nothing-to-refund": "Everything paid for this order was refunded already",
    "stock-conflict": "The stock changed or would fall below what is held",
    "insufficient-stock": "Not enough available stock",
    "backlog-full": "Too many events wait to be persisted",
    "rate-limited": "Too many orders from this customer in a short time",
    "cooling-down": "Orders from this customer are paused after unusual activity",
    "dependency-unavailable": "A dependency is unavailable",
    "internal-error": "Internal error",
}


class ProblemError(Exception):
    """Raised by controllers and services; rendered as a problem document."""

    def __init__(self, status: int, kind: str, detail: str | None = None, **extensions: Any) -> None:
        assert kind in TITLES, kind
        super().__init__(detail or kind)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}


def invalid_transition(error: InvalidTransition, **extensions: Any) -> ProblemError:
    """The 409 for a transition the state machine refuses; it names the order's current status."""
    return ProblemError(409, "invalid-transition", str(error), current_status=str(error.status), **extensions)


_problem_encoder = msgspec.json.Encoder()


def make_problem(status: int, kind: str, detail: str | None = None, **extensions: Any) -> Problem:
    return Problem(type=PROBLEM_BASE + kind, title=TITLES[kind], status=status, detail=detail, **extensions)


def as_problem(error: ProblemError) -> Problem:
    return make_problem(error.status, error.kind, error.detail, **error.extensions)


def encode_problem(status: int, kind: str, detail: str | None = None, **extensions: Any) -> bytes:
    return _problem_encoder.encode(make_problem(status, kind, detail, **extensions))


def problem_response(
    status: int, kind: str, detail: str | None = None, headers: dict[str, str] | None = None, **extensions: Any
) -> Response[bytes]:
    return _response(status, encode_problem(status, kind, detail, **extensions), headers or {})


def handle_problem(_: Request[Any, Any, Any], error: ProblemError) -> Response[bytes]:
    return _response(*render_error(error, ""))


def handle_validation(_: Request[Any, Any, Any], error: ValidationException) -> Response[bytes]:
    messages = []
    for item in error.extra or []:
        if isinstance(item, dict):
            messages.append(str(item.get("message", item)))
        else:
            messages.append(str(item))
    return problem_response(400, "invalid-request", error.detail, errors=messages or None)


_KIND_BY_STATUS = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def handle_http(_: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    kind = _KIND_BY_STATUS.get(error.status_code)
    if kind is None:
        if error.status_code >= 500:
            logger.error("HTTP %s: %s", error.status_code, error.detail)
            return problem_response(500, "internal-error")
        kind = "invalid-request"
    headers = dict(error.headers or {})
    if error.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem_response(error.status_code, kind, error.detail, headers or None)


def handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    """Redis out of reach (503) or a bug (500), as render_error decides."""
    return _response(*render_error(error, f"{request.method} {request.url.path}"))


def render_error(error: Exception, where: str) -> tuple[int, bytes, dict[str, str]]:
    """Status, problem document and headers for an exception: the one mapping every path uses.

    A problem raised on purpose is rendered as it is; Redis out of reach is a 503 the client
    may retry; anything else (a script refusing its arguments included) is a bug: 500, logged.
    """
    if isinstance(error, ProblemError):
        return error.status, encode_problem(error.status, error.kind, error.detail, **error.extensions), error.headers
    if isinstance(error, RedisError) and not isinstance(error, ResponseError):
        logger.warning("Redis unavailable: %s", type(error).__name__)
        body = encode_problem(503, "dependency-unavailable", "stock store unreachable")
        return 503, body, {"Retry-After": "1"}
    logger.error("unhandled error on %s", where, exc_info=error)
    return 500, encode_problem(500, "internal-error"), {}


def _response(status: int, body: bytes, headers: dict[str, str]) -> Response[bytes]:
    return Response(content=body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers or None)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ProblemError: handle_problem,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    RedisError: handle_unexpected,
    Exception: handle_unexpected,
}
