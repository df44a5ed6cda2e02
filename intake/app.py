"""The Litestar application factory. The lifespan owns every client it uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from intake.auth import BearerAuthMiddleware, ClientRegistry
from intake.controllers import (
    AuditController,
    BatchController,
    CatalogController,
    HealthController,
    MetricsController,
    OrderController,
    PaymentCallbackController,
)
from intake.hot_path import HotEndpoint, HotIntake
from intake.lifecycle import (
    CaseController,
    OrderCasesController,
    OrderRefundController,
    SettingsController,
    ShipmentController,
)
from intake.lifecycle_service import AfterSalesService, LifecycleService, OrderLookup, OrderQueryService
from intake.openapi import refine_openapi
from intake.problems import EXCEPTION_HANDLERS
from intake.service import AuditReader, AuditService, CatalogService, Clock, OrderService
from reservation.clock import wall_clock_ms
from reservation.sold_out import SoldOutFlags
from reservation.store import RedisStore, connect
from rushgate.settings import Settings

DatabaseCheck = Callable[[], Awaitable[None]]
DatabaseCheckFactory = Callable[[], AbstractAsyncContextManager[DatabaseCheck]]
ClientSource = Callable[[], Awaitable[dict[bytes, tuple[str, frozenset[str]]]]]
ClientSourceFactory = Callable[[], AbstractAsyncContextManager[ClientSource]]
AuditReaderFactory = Callable[[], AbstractAsyncContextManager[AuditReader]]
OrderIndexFactory = Callable[[], AbstractAsyncContextManager[OrderLookup]]

READINESS_TIMEOUT_S = 2.0
logger = logging.getLogger("rushgate.intake")
TOKEN_HELP = (
    "/v1/orders* takes a gateway or the admin token; every other /v1/ path takes the admin token"
    " (/v1/audit: the admin scope only)."
)


class RushgateApp(Litestar):
    """Litestar, with the intake hot path answered before its router (intake/hot_path.py)."""

    hot_routes: Mapping[str, HotEndpoint] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.hot_routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    clock: Clock = wall_clock_ms,
    database_check: DatabaseCheckFactory | None = None,
    client_source: ClientSourceFactory | None = None,
    audit_reader: AuditReaderFactory | None = None,
    order_index: OrderIndexFactory | None = None,
) -> Litestar:
    """An app for these settings; Redis, the database probe, the client list and the audit reader open in its
    lifespan (without an audit reader, GET /v1/audit answers 503)."""
    assert settings.redis_url is not None, "the API needs REDIS_URL"
    registry = ClientRegistry(settings.gateway_tokens, settings.admin_token)

    batch_controller = type(
        "BatchController", (BatchController,), {"request_max_body_size": settings.batch_body_bytes_max}
    )

    # The hot path reads the order service from here: Litestar's State attribute look-up cost
    # more than a percent of an intake worker's CPU (py-spy).
    hot_services: dict[str, OrderService] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = connect(
            settings.redis_url or "", pool_size_max=settings.redis_pool_size_max, timeout_ms=settings.redis_timeout_ms
        )
        try:
            store = RedisStore(client)
            await store.load_scripts()
            if converted := await store.convert_legacy_idempotency_records():
                logger.warning("converted %d idempotency records of an earlier build", converted)
            sold_out = SoldOutFlags(store, refresh_ms=settings.sold_out_refresh_ms)
            await sold_out.refresh()
            stop = asyncio.Event()
            refresher = asyncio.create_task(sold_out.run(stop))
            orders = OrderService(store, settings, clock, sold_out)
            app.state.order_service = hot_services["orders"] = orders
            app.state.catalog_service = CatalogService(store, clock)
            app.state.audit_service = AuditService(None)
            app.state.lifecycle_service = LifecycleService(store, settings, clock)
            app.state.after_sales_service = AfterSalesService(store, clock)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    check = await stack.enter_async_context(database_check()) if database_check else None
                    app.state.readiness = _readiness(store, check)
                    lookup = await stack.enter_async_context(order_index()) if order_index else None
                    app.state.order_query_service = OrderQueryService(store, lookup)
                    if client_source is not None:
                        source = await stack.enter_async_context(client_source())
                        await load_clients(registry, source)
                        stack.push_async_callback(_stop_task, _refresh_clients(registry, source, settings, stop))
                    if audit_reader is not None:
                        app.state.audit_service = AuditService(await stack.enter_async_context(audit_reader()))
                    try:
                        yield
                    finally:
                        # Before the stack unwinds: the client refresher then ends by itself even when
                        # its cancellation is lost (Python 3.11's wait_for can swallow a cancel that
                        # races its inner future; the API then never finished shutting down).
                        stop.set()
            finally:
                stop.set()
                await refresher
                await orders.close()
        finally:
            await client.aclose()

    app = RushgateApp(
        route_handlers=[
            OrderController,
            batch_controller,
            PaymentCallbackController,
            CatalogController,
            AuditController,
            MetricsController,
            HealthController,
            ShipmentController,
            OrderCasesController,
            CaseController,
            OrderRefundController,
            SettingsController,
        ],
        lifespan=[lifespan],
        middleware=[DefineMiddleware(BearerAuthMiddleware, registry=registry)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.request_body_bytes_max,
        openapi_config=OpenAPIConfig(
            title="rushgate",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", description=TOKEN_HELP)}
            ),
        ),
        state=State({"settings": settings}),
        debug=False,
    )
    refine_openapi(app)
    hot_intake = HotIntake(
        registry,
        lambda: hot_services["orders"],
        body_bytes_max=settings.request_body_bytes_max,
        batch_body_bytes_max=settings.batch_body_bytes_max,
    )
    app.hot_routes = hot_intake.routes()
    return app


def _refresh_clients(
    registry: ClientRegistry, source: ClientSource, settings: Settings, stop: asyncio.Event
) -> asyncio.Task[None]:
    """Re-read the API clients every period; on failure keep the last list and say so."""

    async def refresh() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.clients_refresh_ms / 1000)
            if not stop.is_set():
                await load_clients(registry, source)

    return asyncio.create_task(refresh())


async def load_clients(registry: ClientRegistry, source: ClientSource) -> None:
    try:
        registry.clients = await asyncio.wait_for(source(), READINESS_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any failure: keep serving the last known list
        logger.warning("api clients not refreshed: %s", type(error).__name__)


async def _stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _readiness(store: RedisStore, database: DatabaseCheck | None) -> Callable[[], Awaitable[dict[str, str]]]:
    async def check() -> dict[str, str]:
        results: dict[str, str] = {}
        probes: dict[str, Callable[[], Awaitable[object]]] = {"redis": store.ping}
        if database is not None:
            probes["postgres"] = database
        for name, probe in probes.items():
            try:
                await asyncio.wait_for(probe(), READINESS_TIMEOUT_S)
                results[name] = "ok"
            except Exception as error:  # noqa: BLE001 - any failure means not ready; the kind is reported
                results[name] = f"unavailable: {type(error).__name__}"
        return results

    return check
