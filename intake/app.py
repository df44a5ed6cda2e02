"""The Litestar application factory. The lifespan owns every client it uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from intake.auth import BearerAuthMiddleware
from intake.controllers import BatchController, CatalogController, HealthController, OrderController
from intake.openapi import refine_openapi
from intake.problems import EXCEPTION_HANDLERS
from intake.service import CatalogService, Clock, OrderService, wall_clock_ms
from reservation.sold_out import SoldOutFlags
from reservation.store import RedisStore, connect
from rushgate.settings import Settings

DatabaseCheck = Callable[[], Awaitable[None]]
DatabaseCheckFactory = Callable[[], AbstractAsyncContextManager[DatabaseCheck]]

READINESS_TIMEOUT_S = 2.0
TOKEN_HELP = "/v1/orders* takes a gateway or the admin token; every other /v1/ path takes the admin token."


def create_app(
    settings: Settings,
    *,
    clock: Clock = wall_clock_ms,
    database_check: DatabaseCheckFactory | None = None,
) -> Litestar:
    """An app for these settings; Redis (and the database probe) open in its lifespan."""
    assert settings.redis_url is not None, "the API needs REDIS_URL"

    batch_controller = type(
        "BatchController", (BatchController,), {"request_max_body_size": settings.batch_body_bytes_max}
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = connect(
            settings.redis_url or "", pool_size_max=settings.redis_pool_size_max, timeout_ms=settings.redis_timeout_ms
        )
        try:
            store = RedisStore(client)
            await store.load_scripts()
            sold_out = SoldOutFlags(store, refresh_ms=settings.sold_out_refresh_ms)
            await sold_out.refresh()
            stop = asyncio.Event()
            refresher = asyncio.create_task(sold_out.run(stop))
            orders = OrderService(store, settings, clock, sold_out)
            app.state.order_service = orders
            app.state.catalog_service = CatalogService(store, clock)
            try:
                if database_check is None:
                    app.state.readiness = _readiness(store, None)
                    yield
                else:
                    async with database_check() as check:
                        app.state.readiness = _readiness(store, check)
                        yield
            finally:
                stop.set()
                await refresher
                await orders.close()
        finally:
            await client.aclose()

    app = Litestar(
        route_handlers=[OrderController, batch_controller, CatalogController, HealthController],
        lifespan=[lifespan],
        middleware=[
            DefineMiddleware(
                BearerAuthMiddleware, gateway_tokens=settings.gateway_tokens, admin_token=settings.admin_token
            )
        ],
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
    return app


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
