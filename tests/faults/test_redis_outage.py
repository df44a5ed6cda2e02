"""Redis frozen or gone: intake answers 503 dependency-unavailable with Retry-After, never hangs or 500s."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient

from reservation.store import connect
from rushgate.embedded import EmbeddedRedis
from tests.conftest import ManualClock, Services, admin_headers, gateway_headers, make_settings, running_app
from tests.support import seed_over_http

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
    async with (
        running_app(settings, ManualClock()) as app,
        AsyncClient(transport=ASGITransport(app=app), base_url="http://rushgate", timeout=30) as http,
    ):
        await seed_over_http(http, admin_headers(), on_hand=100)
        yield http


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


async def test_pooled_connections_a_restart_dropped_are_replaced_without_failing_a_command(
    own_redis: EmbeddedRedis,
) -> None:
    """Each idle pooled connection to the killed server would fail its next command once; that command
    is sent again over a new connection instead (a timeout is not retried: a frozen Redis still fails fast)."""
    client = connect(own_redis.url, pool_size_max=8, timeout_ms=2000)
    try:
        await asyncio.gather(*(client.set(f"pooled:{index}", index) for index in range(8)))  # 8 connections
        own_redis.kill()
        own_redis.start()  # same port, same AOF

        values = await asyncio.gather(*(client.get(f"pooled:{index}") for index in range(8)))

        assert values == [str(index).encode() for index in range(8)]
    finally:
        await client.aclose()


@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
async def test_no_acknowledged_order_is_lost_when_redis_is_killed_under_load(
    services: Services, tmp_path: Path, appendfsync: str
) -> None:
    """SIGKILL kills the process, not the host: with either fsync policy the AOF keeps every write.

    (What `everysec` may lose is the last second before a *host* crash: test_redis_host_crash.py
    emulates one by putting back the AOF as the last fsync left it.)
    """
    server = EmbeddedRedis(tmp_path / "redis", appendfsync=appendfsync).start()
    settings = make_settings(services, REDIS_URL=server.url, RUSHGATE_REDIS_TIMEOUT_MS="300")
    acknowledged: dict[str, str] = {}
    try:
        async with (
            running_app(settings, ManualClock()) as app,
            AsyncClient(transport=ASGITransport(app=app), base_url="http://rushgate", timeout=30) as http,
        ):
            await seed_over_http(http, admin_headers(), on_hand=100_000)
            killed = asyncio.Event()

            async def buyer(number: int) -> None:
                for attempt in range(40):
                    key = f"k{number}-{attempt}"
                    response = await http.post("/v1/orders", json=ORDER, headers=gateway_headers(key))
                    if response.status_code == 201:
                        acknowledged[key] = response.json()["order_id"]
                    if len(acknowledged) >= 200 and not killed.is_set():
                        killed.set()
                        server.kill()

            await asyncio.gather(*(buyer(number) for number in range(20)))
            assert killed.is_set()
            server.start()
            for key, order_id in acknowledged.items():
                replay = await http.post("/v1/orders", json=ORDER, headers=gateway_headers(key))
                assert (replay.status_code, replay.json()["order_id"]) == (201, order_id), key
            stock = (await http.get("/v1/stock/s1", headers=admin_headers())).json()["warehouses"][0]
            # An order whose reply the kill cut off may be held without a 201: its client saw a 503 and
            # gets it by retrying the key. Never fewer than acknowledged.
            assert stock["reserved"] >= len(acknowledged)
    finally:
        server.stop()
