"""Test fixtures: real Redis and real Postgres, started by the suite (or taken from env).

With REDIS_URL / DATABASE_URL set, those servers are used and WIPED between tests
(FLUSHDB, TRUNCATE): point them only at throwaway instances.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from litestar import Litestar

from intake.app import create_app
from intake.service import CatalogService, OrderService
from persistence.database import connect, migrate
from reservation.store import RedisStore
from reservation.store import connect as connect_redis
from rushgate.embedded import EmbeddedPostgres, EmbeddedRedis
from rushgate.settings import Settings, load_settings

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
GATEWAY_TOKEN = "gateway-token-for-tests-0123456789"
START_MS = 1_900_000_000_000  # a fixed "now" for explicit-clock tests
TABLES = (
    "stock_movements, order_items, shipment_events, shipments, refunds, after_sales_cases, orders, events,"
    " warehouses, dispatch_rules, skus, customer_blocks, audit_log"
)


@dataclass
class Services:
    redis_url: str
    database_url: str
    embedded: list[Any] = field(default_factory=list)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    redis_url = os.environ.get("REDIS_URL")
    database_url = os.environ.get("DATABASE_URL")
    started: list[Any] = []
    base = tmp_path_factory.mktemp("servers")
    if not redis_url:
        server = EmbeddedRedis(Path(base) / "redis").start()
        started.append(server)
        redis_url = server.url
    if not database_url:
        postgres = EmbeddedPostgres(Path(base) / "postgres", durable=False).start()
        started.append(postgres)
        database_url = postgres.url
    asyncio.run(migrate(database_url))
    yield Services(redis_url, database_url, started)
    for server in reversed(started):
        server.stop()


def make_settings(services: Services, **overrides: str) -> Settings:
    environ = {
        "REDIS_URL": services.redis_url,
        "DATABASE_URL": services.database_url,
        "RUSHGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RUSHGATE_GATEWAY_TOKEN": GATEWAY_TOKEN,
        "RUSHGATE_PERSISTER_BLOCK_MS": "10",
        "RUSHGATE_PERSISTER_CLAIM_IDLE_MS": "500",
        **overrides,
    }
    return load_settings(environ)


@pytest.fixture
def settings(services: Services) -> Settings:
    return make_settings(services)


class ManualClock:
    """An explicit clock: tests move time, nothing sleeps."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, milliseconds: int) -> None:
        self.now_ms += milliseconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(services: Services) -> AsyncIterator[RedisStore]:
    client = connect_redis(services.redis_url, pool_size_max=64, timeout_ms=5000)
    await client.flushdb()
    redis_store = RedisStore(client)
    await redis_store.load_scripts()
    yield redis_store
    await client.aclose()


@pytest.fixture
async def database(services: Services) -> AsyncIterator[str]:
    connection = await connect(services.database_url)
    await connection.execute(f"TRUNCATE {TABLES}")
    await connection.close()
    yield services.database_url


@pytest.fixture
def orders(store: RedisStore, settings: Settings, clock: ManualClock) -> OrderService:
    return OrderService(store, settings, clock)


@pytest.fixture
def catalog(store: RedisStore, clock: ManualClock) -> CatalogService:
    return CatalogService(store, clock)


@asynccontextmanager
async def running_app(settings: Settings, clock: ManualClock) -> AsyncIterator[Litestar]:
    """The real app with its lifespan running (entered and left in one task, as anyio needs)."""
    application = create_app(settings, clock=clock)
    started, finished = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        async with application.lifespan():
            started.set()
            await finished.wait()

    lifespan = asyncio.create_task(run_lifespan())
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield application
    finally:
        finished.set()
        await lifespan


@pytest.fixture
async def app(store: RedisStore, settings: Settings, clock: ManualClock) -> AsyncIterator[Litestar]:
    """The real app on the explicit clock, against the same Redis as the store fixture."""
    async with running_app(settings, clock) as application:
        yield application


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[AsyncClient]:
    """An HTTP client for the app, in-process over ASGI."""
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://rushgate") as client:
        yield client


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def gateway_headers(idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers
