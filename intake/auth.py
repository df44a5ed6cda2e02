"""Bearer-token authentication with scopes: gateway, payments, admin, read.

Tokens come from two places: the environment (the admin token has every scope; a
gateway token has gateway, payments and read) and API clients kept in Postgres as
SHA-256 digests of their secrets, which each worker re-reads every
``RUSHGATE_CLIENTS_REFRESH_MS`` so a revoked client is refused within that period.

A plain ASGI middleware rather than route guards: Litestar copies the route handler
for every guard call, which cost about a tenth of an intake worker's CPU when
measured with py-spy. Here a request costs one scan of its raw headers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from intake.asgi import send_raw
from intake.problems import PROBLEM_MEDIA_TYPE, encode_problem

ALL_SCOPES = frozenset({"gateway", "payments", "admin", "read"})
GATEWAY_TOKEN_SCOPES = frozenset({"gateway", "payments", "read"})
CLIENT_ID_SCOPE_KEY = "rushgate.client_id"
"""Where the middleware leaves the authenticated client's id in the ASGI scope (see client_id_of)."""

Identity = tuple[str, frozenset[str]]  # client id, scopes


def required_scopes(method: str, path: str) -> frozenset[str] | None:
    """The scopes any one of which lets the request pass; None when no token is needed."""
    if path.startswith("/v1/payments/callbacks/"):
        return None  # providers sign their callbacks instead (intake/callbacks.py)
    if path.startswith("/v1/orders"):
        if method in ("GET", "HEAD"):
            return frozenset({"gateway", "read", "admin"})
        if path.endswith(("/payment", "/refund")):  # the payment system reports payments and refunds
            return frozenset({"payments", "gateway", "admin"})
        return frozenset({"gateway", "admin"})
    if path.startswith("/v1/audit"):
        return frozenset({"admin"})  # who operates the service is not for read-only dashboards
    if path.startswith("/v1/after-sales/"):
        if method in ("GET", "HEAD"):
            return frozenset({"gateway", "read", "admin"})  # a storefront shows its customer the case
        if path.endswith("/refund"):
            return frozenset({"payments", "admin"})  # the payment system paid the refund out
    if path.startswith("/v1/"):
        if method in ("GET", "HEAD"):
            return frozenset({"admin", "read"})
        return frozenset({"admin"})
    return None


def secret_digest(token: bytes) -> bytes:
    """How client secrets are kept (persistence.clients.digest computes the same)."""
    return hashlib.sha256(token).digest()


class ClientRegistry:
    """Which scopes a presented token carries."""

    def __init__(self, gateway_tokens: Sequence[str], admin_token: str) -> None:
        self.admin_token = admin_token.encode()
        self.gateway_tokens = [token.encode() for token in gateway_tokens]
        self.clients: Mapping[bytes, Identity] = {}

    def identify(self, token: bytes) -> Identity | None:
        """(client id, scopes) of a token; the environment's tokens are the clients admin and gateway."""
        if self.admin_token and hmac.compare_digest(token, self.admin_token):
            return ("admin", ALL_SCOPES)
        # Compare against every gateway token so the time taken does not reveal which one matched.
        if any([hmac.compare_digest(token, expected) for expected in self.gateway_tokens]):
            return ("gateway", GATEWAY_TOKEN_SCOPES)
        return self.clients.get(secret_digest(token))


def client_id_of(scope: Mapping[str, Any]) -> str:
    """The authenticated client's id ("" where no token was needed)."""
    return str(scope.get(CLIENT_ID_SCOPE_KEY, ""))


class BearerAuthMiddleware:
    """Refuses a request to /v1/ without a token (401) or without a fitting scope (403)."""

    def __init__(self, app: ASGIApp, registry: ClientRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            needed = required_scopes(scope["method"], scope["path"])
            if needed is not None:
                refusal = self.refusal(scope, needed)
                if refusal is not None:
                    await send_refusal(send, refusal)
                    return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope, needed: frozenset[str]) -> Refusal | None:
        """(status, kind, detail) when the request may not pass, else None."""
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        identity = authorize(self.registry, header, needed)
        if isinstance(identity, Refusal):
            return identity
        cast(dict[str, Any], scope)[CLIENT_ID_SCOPE_KEY] = identity
        return None


class Refusal(NamedTuple):
    """Why a request may not pass: its problem's status, kind and detail."""

    status: int
    kind: str
    detail: str


def authorize(registry: ClientRegistry, authorization: bytes, needed: frozenset[str]) -> str | Refusal:
    """The client id behind an Authorization header value if it has one of the needed scopes, else a Refusal."""
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return Refusal(401, "unauthorized", "send Authorization: Bearer <token>")
    identity = registry.identify(token)
    if identity is None:
        return Refusal(401, "unauthorized", "unknown or revoked token")
    client_id, scopes = identity
    if not scopes & needed:
        return Refusal(403, "forbidden", f"this token needs one of the scopes: {', '.join(sorted(needed))}")
    return client_id


async def send_refusal(send: Send, refusal: Refusal) -> None:
    """The refusal as a problem document (401s also say which scheme to use)."""
    status, kind, detail = refusal
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    await send_raw(send, status, encode_problem(status, kind, detail), PROBLEM_MEDIA_TYPE, headers)
