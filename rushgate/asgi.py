"""ASGI entry point for `rushgate serve`: each worker process builds its app from the environment."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from litestar import Litestar

from intake.app import create_app
from persistence.audit import AuditReader, audit_reader
from persistence.clients import scopes_reader
from persistence.database import readiness_check
from persistence.queries import order_index
from rushgate.settings import load_settings, require_services


def create_app_from_environment() -> Litestar:
    settings = load_settings(os.environ)
    _, database_url = require_services(settings)

    def database_check() -> AbstractAsyncContextManager[Callable[[], Awaitable[None]]]:
        return readiness_check(database_url)

    def client_source() -> AbstractAsyncContextManager[
        Callable[[], Awaitable[dict[bytes, tuple[str, frozenset[str]]]]]
    ]:
        return scopes_reader(database_url)

    def audit_source() -> AbstractAsyncContextManager[AuditReader]:
        return audit_reader(database_url)

    return create_app(
        settings,
        database_check=database_check,
        client_source=client_source,
        audit_reader=audit_source,
        order_index=lambda: order_index(database_url),
    )


__all__ = ["create_app_from_environment"]
