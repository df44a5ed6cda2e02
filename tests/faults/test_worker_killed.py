"""An API worker SIGKILLed mid-load: clients retrying with the same key get exactly one order each."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from reservation.store import RedisStore
from tests.conftest import Services, admin_headers, gateway_headers
from tests.processes import running, serve_command, service_environment, wait_ready
from tests.support import seed_over_http

pytestmark = pytest.mark.slow

BUYERS = 100
ORDERS_EACH = 10
KILL_AFTER = 300
ATTEMPTS_MAX = 20
PAUSE_MS_MAX = 10_000  # Redis resumes by itself after this even if the test fails half-way


@pytest.mark.parametrize("server_name", ["uvicorn", "granian"])
async def test_retries_across_a_killed_worker_give_exactly_one_order_per_idempotency_key(
    services: Services, store: RedisStore, tmp_path: Path, server_name: str
) -> None:
    command, port = serve_command(workers=2)
    command += ["--server", server_name]
    with running(command, service_environment(services), tmp_path / "serve.log") as server:
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, server, tmp_path / "serve.log")
        workers = [  # uvicorn also forks multiprocessing's resource tracker: not a worker
            child
            for child in psutil.Process(server.pid).children()
            if not any("resource_tracker" in part for part in child.cmdline())
        ]
        assert len(workers) == 2, [child.cmdline() for child in psutil.Process(server.pid).children()]
        # One connection per request, so a request lands on either worker, as behind a load balancer.
        async with httpx.AsyncClient(
            base_url=base_url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            await seed_over_http(client, admin_headers(), on_hand=10_000)
            answered: dict[str, set[str]] = {}
            failures = 0
            enough_answered, all_waiting = asyncio.Event(), asyncio.Event()
            waiting, active, paused = 0, BUYERS, False

            async def post(body: dict[str, object], key: str) -> httpx.Response:
                nonlocal waiting
                waiting += 1
                if paused and waiting == active:
                    all_waiting.set()
                try:
                    return await client.post("/v1/orders", json=body, headers=gateway_headers(key))
                finally:
                    waiting -= 1

            async def buy(buyer: int) -> None:
                nonlocal failures, active
                body = {"customer_id": f"b{buyer}", "region": "eu", "order_type": "flash",
                        "items": [{"sku": "s1", "qty": 1}]}  # fmt: skip
                for number in range(ORDERS_EACH):
                    key = f"key-{buyer}-{number}"
                    for _ in range(ATTEMPTS_MAX):
                        try:
                            response = await post(body, key)
                        except httpx.TransportError:
                            failures += 1
                            continue  # the worker died under this request: retry with the same key
                        if response.status_code >= 500:
                            failures += 1
                            continue
                        assert response.status_code == 201, response.text
                        answered.setdefault(key, set()).add(response.json()["order_id"])
                        if len(answered) >= KILL_AFTER:
                            enough_answered.set()
                        break
                active -= 1
                if paused and waiting == active:
                    all_waiting.set()

            async def kill_one_worker() -> None:
                nonlocal paused
                await enough_answered.wait()
                # Hold every reservation in Redis (scripts that write wait while writes are paused),
                # so the workers have requests in flight when one dies; answered at full speed, the
                # requests were mostly on the client's side and a kill could miss all of them.
                await store.client.execute_command("CLIENT", "PAUSE", PAUSE_MS_MAX, "WRITE")
                paused = True
                try:
                    if waiting < active:
                        await all_waiting.wait()  # every buyer has sent a request that cannot be answered
                    # The worker holding the most connections: the kernel may hand a worker few or
                    # none for a while (it hashes each new connection onto one worker's socket).
                    busiest = max(workers, key=lambda worker: connections_on(worker, port))
                    busiest.send_signal(signal.SIGKILL)
                finally:
                    await store.client.execute_command("CLIENT", "UNPAUSE")

            await asyncio.gather(kill_one_worker(), *(buy(number) for number in range(BUYERS)))
    orders = BUYERS * ORDERS_EACH
    assert failures > 0, "the kill must hit requests in flight for the test to mean anything"
    assert len(answered) == orders, "every order got an answer"
    assert all(len(order_ids) == 1 for order_ids in answered.values()), "a retry never created a second order"
    level = (await store.stock_levels("s1"))["w1"]
    assert (level.reserved, level.available) == (orders, 10_000 - orders)


def connections_on(process: psutil.Process, port: int) -> int:
    """Established TCP connections of a process on the server's port."""
    return sum(
        1
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_ESTABLISHED and connection.laddr and connection.laddr.port == port
    )
