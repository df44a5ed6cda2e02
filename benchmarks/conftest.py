"""Fixtures of the pytest-benchmark suites.

The servers come from the test suite's ``services`` fixture (embedded valkey and Postgres,
or REDIS_URL / DATABASE_URL, which are WIPED: point them only at throwaway servers). Each
benchmark owns its event loop and runs coroutines with ``loop.run_until_complete`` inside
the timed callable, so clients are built on that loop here rather than taken from the
test suite's async fixtures (those live on pytest-asyncio's loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
import uvloop

from benchmarks.support import run
from intake.service import CatalogService
from persistence.database import connect as connect_postgres
from reservation.store import RedisStore
from reservation.store import connect as connect_redis
from tests.conftest import TABLES, ManualClock, Services, clock, services, settings
from tests.support import add_sku, setup_region

__all__ = ["clock", "services", "settings"]  # the test suite's fixtures, made fixtures here too

HOT_SKU = "hot"
STOCK_ON_HAND = 1_000_000_000


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A uvloop event loop, as in the API workers (rushgate serve runs uvloop)."""
    event_loop = uvloop.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def store(services: Services, loop: asyncio.AbstractEventLoop) -> Iterator[RedisStore]:
    """A RedisStore on the benchmark's loop, over a flushed Redis with its scripts loaded."""

    async def open_store() -> RedisStore:
        client = connect_redis(services.redis_url, pool_size_max=8, timeout_ms=10_000)
        await client.flushdb()
        redis_store = RedisStore(client)
        await redis_store.load_scripts()
        return redis_store

    redis_store = run(loop, open_store())
    yield redis_store
    run(loop, redis_store.client.aclose())


@pytest.fixture
def hot_sku(store: RedisStore, loop: asyncio.AbstractEventLoop, clock: ManualClock) -> str:
    """Region "eu" with warehouse w1, and one SKU with stock no benchmark can exhaust."""

    async def seed() -> None:
        catalog = CatalogService(store, clock)
        await setup_region(catalog, "eu", ["w1"])
        await add_sku(catalog, HOT_SKU, price=49_900, stock={"w1": STOCK_ON_HAND})

    run(loop, seed())
    return HOT_SKU


@pytest.fixture
def postgres_connection(services: Services, loop: asyncio.AbstractEventLoop) -> Iterator[asyncpg.Connection]:
    """A Postgres connection on the benchmark's loop, over emptied rushgate tables."""
    connection = run(loop, connect_postgres(services.database_url))
    run(loop, connection.execute(f"TRUNCATE {TABLES}"))
    yield connection
    run(loop, connection.close())
