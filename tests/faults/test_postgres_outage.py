"""Postgres dies under load: intake goes on, the persister waits, then catches up with nothing lost or doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from intake.service import CatalogService, OrderService
from persistence.database import migrate
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore
from rushgate.embedded import EmbeddedPostgres
from tests.conftest import Services
from tests.processes import eventually, running, service_environment
from tests.support import add_sku, assert_ledger_matches, count_rows, order_in, setup_region

pytestmark = pytest.mark.slow


async def place(orders: OrderService, first: int, count: int) -> None:
    await asyncio.gather(*(orders.place(order_in(f"c{n}", {"s1": 1}), f"k{n}") for n in range(first, first + count)))


async def test_orders_taken_while_postgres_is_down_reach_it_once_it_is_back(
    services: Services, store: RedisStore, catalog: CatalogService, orders: OrderService, tmp_path: Path
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "postgres", durable=False).start()
    try:
        await migrate(postgres.url)
        await setup_region(catalog, "eu", ["w1"])
        await add_sku(catalog, "s1", stock={"w1": 1000})
        environ = service_environment(
            services,
            DATABASE_URL=postgres.url,
            RUSHGATE_PERSISTER_RETRY_MS_MAX="200",
            RUSHGATE_PERSISTER_BATCH_SIZE_MAX="50",
        )
        with running(["persister"], environ, tmp_path / "persister.log") as persister:

            async def persisted(count: int) -> bool:
                return await count_rows(postgres.url, "SELECT count(*) FROM orders") == count

            await place(orders, 0, 200)
            await eventually(lambda: persisted(200), "the first 200 orders in Postgres")
            postgres.kill()
            await place(orders, 200, 300)  # intake never touches Postgres
            await eventually(
                lambda: _backlog_at_least(store, 300), "the persister to hold the new orders unacknowledged"
            )
            postgres.start()
            await eventually(lambda: persisted(500), "every order in Postgres after the restart")
            assert persister.poll() is None, "the persister must wait for Postgres, not exit"
            await eventually(lambda: _backlog_at_least(store, 0, exactly=True), "the backlog to drain")
        assert await count_rows(postgres.url, "SELECT count(DISTINCT order_id) FROM order_items") == 500
        assert await count_rows(postgres.url, "SELECT count(*) FROM stock_movements WHERE kind = 'reserve'") == 500
        await assert_ledger_matches(store, postgres.url, ["s1"])
    finally:
        postgres.stop()


async def _backlog_at_least(store: RedisStore, count: int, *, exactly: bool = False) -> bool:
    backlog = await store.stream_backlog(PERSISTER_GROUP)
    return backlog == count if exactly else backlog >= count
