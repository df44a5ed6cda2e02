"""Redis frozen or gone: intake answers 503 dependency-unavailable with Retry-After, never hangs or 500s."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient

from intake.app import create_app
from rushgate.embedded import EmbeddedRedis
from tests.conftest import Services, admin_headers, gateway_headers, make_settings

pytestmark = pytest.mark.slow

ORDER = {"customer_id": "c1", "region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 1}]}


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture
async def client(services: Services, own_redis: EmbeddedRedis) -> AsyncIterator[AsyncClient]:
    settings = make_settings(services, REDIS_URL=own_redis.url, RUSHGATE_REDIS_TIMEOUT_MS="300")
    app = create_app(settings)
    started, finished = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        async with app.lifespan():
            started.set()
            await finished.wait()

    lifespan = asyncio.create_task(run_lifespan())
    await asyncio.wait_for(started.wait(), 30)
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://rushgate", timeout=30) as http:
            for path, body in [
                ("/v1/warehouses/w1", {"region": "eu", "name": "Berlin"}),
                ("/v1/dispatch/eu", {"warehouses": ["w1"]}),
                ("/v1/skus/s1", {"name": "Phone", "merchant_id": "m1", "price": 100, "currency": "EUR"}),
                ("/v1/stock/s1/w1", {"on_hand": 100}),
            ]:
                assert (await http.put(path, json=body, headers=admin_headers())).status_code == 200
            yield http
    finally:
        finished.set()
        await lifespan


def assert_unavailable(response: object) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.json()["type"].endswith("/dependency-unavailable")  # type: ignore[attr-defined]
    assert response.headers["retry-after"] == "1"  # type: ignore[attr-defined]


async def test_a_frozen_redis_gives_503_and_intake_resumes_when_it_thaws(
    client: AsyncClient, own_redis: EmbeddedRedis
) -> None:
    assert (await client.post("/v1/orders", json=ORDER, headers=gateway_headers("before"))).status_code == 201
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        assert_unavailable(await client.post("/v1/orders", json=ORDER, headers=gateway_headers("frozen")))
        assert_unavailable(await client.get("/v1/stock/s1", headers=admin_headers()))
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["checks"]["redis"].startswith("unavailable")) == (503, True)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    after = await client.post("/v1/orders", json=ORDER, headers=gateway_headers("after"))
    assert after.status_code == 201, after.text


async def test_a_killed_redis_gives_503_and_a_restarted_one_serves_again_with_its_data(
    client: AsyncClient, own_redis: EmbeddedRedis
) -> None:
    first = await client.post("/v1/orders", json=ORDER, headers=gateway_headers("before"))
    assert first.status_code == 201
    own_redis.kill()
    assert_unavailable(await client.post("/v1/orders", json=ORDER, headers=gateway_headers("down")))
    own_redis.start()  # same port, same AOF
    replay = await client.post("/v1/orders", json=ORDER, headers=gateway_headers("before"))
    assert (replay.status_code, replay.json()["order_id"]) == (201, first.json()["order_id"])
    stock = (await client.get("/v1/stock/s1", headers=admin_headers())).json()["warehouses"][0]
    assert (stock["available"], stock["reserved"]) == (99, 1)
