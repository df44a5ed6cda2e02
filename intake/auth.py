"""Bearer-token guards: gateway tokens for the data plane, the admin token for everything."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from rushgate.settings import Settings


def _presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("send Authorization: Bearer <token>")
    return token.strip()


def _matches(token: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def _settings(connection: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def require_gateway(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Data plane: any gateway token, or the admin token."""
    token = _presented_token(connection)
    settings = _settings(connection)
    # Compare against every token so the time taken does not reveal which one matched.
    matched = [_matches(token, expected) for expected in (*settings.gateway_tokens, settings.admin_token)]
    if not any(matched):
        raise NotAuthorizedException("unknown token")


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Control plane: the admin token only."""
    token = _presented_token(connection)
    settings = _settings(connection)
    if _matches(token, settings.admin_token):
        return
    if any([_matches(token, expected) for expected in settings.gateway_tokens]):
        raise PermissionDeniedException("a gateway token may not use the control plane")
    raise NotAuthorizedException("unknown token")
