"""500 buyers race for 50 units over real HTTP served by two worker processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from persistence.database import connect
from reservation.store import RedisStore
from tests.conftest import Services, admin_headers, gateway_headers
from tests.processes import eventually, running, serve_command, service_environment, wait_ready
from tests.support import assert_ledger_matches, count_rows

BUYERS = 500
UNITS = 50

pytestmark = pytest.mark.slow


async def seed_over_http(client: httpx.AsyncClient) -> None:
    admin = admin_headers()
    for request in [
        client.put("/v1/warehouses/w1", json={"region": "eu", "name": "Berlin"}, headers=admin),
        client.put("/v1/warehouses/w2", json={"region": "eu", "name": "Paris"}, headers=admin),
        client.put("/v1/dispatch/eu", json={"warehouses": ["w1", "w2"]}, headers=admin),
        client.put(
            "/v1/skus/hot",
            json={"name": "Console", "merchant_id": "m1", "price": 49_900, "currency": "EUR"},
            headers=admin,
        ),
        client.put("/v1/stock/hot/w1", json={"on_hand": 30}, headers=admin),
        client.put("/v1/stock/hot/w2", json={"on_hand": 20}, headers=admin),
    ]:
        response = await request
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("server_name", ["granian", "uvicorn"])
async def test_exactly_fifty_of_five_hundred_concurrent_buyers_get_the_fifty_units(
    services: Services, store: RedisStore, database: str, tmp_path: Path, server_name: str
) -> None:
    command, port = serve_command(workers=2)
    command += ["--server", server_name]
    environ = service_environment(services)
    with (
        running(command, environ, tmp_path / "serve.log") as server,
        running(["persister"], environ, tmp_path / "persister.log"),
    ):
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, server, tmp_path / "serve.log")
        workers = [
            child
            for child in psutil.Process(server.pid).children()
            if "resource_tracker" not in " ".join(child.cmdline())  # uvicorn also starts one of these
        ]
        assert len(workers) == 2, "the API must be served by two worker processes"
        limits = httpx.Limits(max_connections=BUYERS, max_keepalive_connections=BUYERS)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
            await seed_over_http(client)
            start = asyncio.Event()

            async def buy(buyer: int) -> httpx.Response:
                await start.wait()
                body = {"customer_id": f"buyer-{buyer}", "region": "eu", "order_type": "flash",
                        "items": [{"sku": "hot", "qty": 1}]}  # fmt: skip
                return await client.post("/v1/orders", json=body, headers=gateway_headers(f"race-{buyer}"))

            buyers = [asyncio.create_task(buy(number)) for number in range(BUYERS)]
            start.set()
            responses = await asyncio.gather(*buyers)

        statuses = Counter(response.status_code for response in responses)
        assert statuses == {201: UNITS, 409: BUYERS - UNITS}, statuses
        refused = [response.json() for response in responses if response.status_code == 409]
        assert {(problem["type"].rsplit("/", 1)[1], problem["sku"]) for problem in refused} == {("sold-out", "hot")}
        accepted = {response.json()["order_id"] for response in responses if response.status_code == 201}
        assert len(accepted) == UNITS
        levels = await store.stock_levels("hot")
        assert sum(level.available for level in levels.values()) == 0
        assert sum(level.reserved for level in levels.values()) == UNITS
        assert all(level.available >= 0 for level in levels.values())

        async def persisted() -> bool:
            return await count_rows(database, "SELECT count(*) FROM orders") == UNITS

        await eventually(persisted, "the persister to write every accepted order")
    connection = await connect(database)
    try:
        rows = await connection.fetch("SELECT order_id, status FROM orders")
        items = await connection.fetchval("SELECT sum(qty) FROM order_items")
    finally:
        await connection.close()
    assert {row["order_id"] for row in rows} == accepted
    assert {row["status"] for row in rows} == {"pending_payment"}
    assert items == UNITS
    await assert_ledger_matches(store, database, ["hot"])
