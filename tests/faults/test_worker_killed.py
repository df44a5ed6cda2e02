"""An API worker SIGKILLed mid-load: clients retrying with the same key get exactly one order each.

The dangerous moment is a reservation Redis has committed whose answer never reached the client:
the retry must replay that order, not create a second one. The workers reach Redis through a
proxy that can hold Redis's replies back; the busiest worker is killed while replies to its
script calls are held, so some of its reservations are certainly committed and unanswered."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import pytest

from reservation.store import RedisStore
from tests.conftest import Services, admin_headers, gateway_headers
from tests.processes import WAIT_TIMEOUT_S, running, serve_command, service_environment, wait_ready
from tests.support import seed_over_http

pytestmark = pytest.mark.slow

BUYERS = 100
ORDERS_EACH = 10
KILL_AFTER = 300
ATTEMPTS_MAX = 20


class _Link:
    """One client connection through the proxy."""

    def __init__(self, client_port: int, writer: asyncio.StreamWriter) -> None:
        self.client_port = client_port
        self.writer = writer
        self.held = bytearray()
        self.carries_scripts = False  # the client sent EVALSHA on it (the pipelined channel)


class ReplyHoldingProxy:
    """TCP between the service and Redis: commands always pass; while holding, replies wait here."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.links: list[_Link] = []
        self.holding = False
        self.held_more = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        link = _Link(writer.get_extra_info("peername")[1], writer)
        self.links.append(link)

        async def commands() -> None:
            while data := await reader.read(65536):
                link.carries_scripts = link.carries_scripts or b"EVALSHA" in data
                upstream_writer.write(data)
                await upstream_writer.drain()
            upstream_writer.close()

        async def replies() -> None:
            while data := await upstream_reader.read(65536):
                if self.holding:
                    link.held += data
                    self.held_more.set()
                else:
                    writer.write(data)
            writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(commands(), replies())

    def release(self) -> None:
        self.holding = False
        for link in self.links:
            if link.held and not link.writer.is_closing():
                link.writer.write(bytes(link.held))
            link.held.clear()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for link in self.links:
            link.writer.close()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


@pytest.mark.parametrize("server_name", ["uvicorn", "granian"])
async def test_retries_across_a_killed_worker_give_exactly_one_order_per_idempotency_key(
    services: Services, store: RedisStore, tmp_path: Path, server_name: str
) -> None:
    redis = urlsplit(services.redis_url)
    proxy = ReplyHoldingProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    proxy_port = await proxy.start()
    command, port = serve_command(workers=2)
    command += ["--server", server_name]
    environ = service_environment(services, REDIS_URL=_through(services.redis_url, proxy_port))
    try:
        with running(command, environ, tmp_path / "serve.log") as server:
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
                failures = replays = finished = 0
                enough_answered = asyncio.Event()

                async def buy(buyer: int) -> None:
                    nonlocal failures, replays, finished
                    body = {"customer_id": f"b{buyer}", "region": "eu", "order_type": "flash",
                            "items": [{"sku": "s1", "qty": 1}]}  # fmt: skip
                    for number in range(ORDERS_EACH):
                        key = f"key-{buyer}-{number}"
                        for _ in range(ATTEMPTS_MAX):
                            try:
                                response = await client.post("/v1/orders", json=body, headers=gateway_headers(key))
                            except httpx.TransportError:
                                failures += 1
                                continue  # the worker died under this request: retry with the same key
                            if response.status_code >= 500:
                                failures += 1
                                continue
                            assert response.status_code == 201, response.text
                            replays += response.headers.get("idempotent-replayed") == "true"
                            answered.setdefault(key, set()).add(response.json()["order_id"])
                            if len(answered) >= KILL_AFTER:
                                enough_answered.set()
                            break
                    finished += 1
                    if finished == BUYERS:
                        enough_answered.set()  # never wait for a kill point that cannot come

                def worker_with_a_held_script_reply() -> psutil.Process | None:
                    held_ports = {link.client_port for link in proxy.links if link.carries_scripts and link.held}
                    for worker in workers:
                        for connection in worker.net_connections(kind="tcp"):
                            to_proxy = connection.raddr and connection.raddr.port == proxy_port
                            if to_proxy and connection.laddr.port in held_ports:
                                return worker
                    return None

                async def kill_one_worker() -> None:
                    await enough_answered.wait()
                    if finished == BUYERS:
                        return
                    proxy.holding = True
                    try:
                        # Kill the worker whose script channel has a reply held: that worker certainly
                        # has reservations Redis committed and it never answered. (Picking a worker
                        # first, say the one with most connections, can pick one with nothing in flight.)
                        async with asyncio.timeout(WAIT_TIMEOUT_S):
                            while (victim := worker_with_a_held_script_reply()) is None:
                                proxy.held_more.clear()
                                await proxy.held_more.wait()
                        victim.send_signal(signal.SIGKILL)
                    finally:
                        proxy.release()

                await asyncio.gather(kill_one_worker(), *(buy(number) for number in range(BUYERS)))
    finally:
        await proxy.stop()
    orders = BUYERS * ORDERS_EACH
    assert failures > 0, "the kill must hit requests in flight for the test to mean anything"
    assert replays > 0, "a retry must have met an order committed before the kill: the case under test"
    assert len(answered) == orders, "every order got an answer"
    assert all(len(order_ids) == 1 for order_ids in answered.values()), "a retry never created a second order"
    level = (await store.stock_levels("s1"))["w1"]
    assert (level.reserved, level.available) == (orders, 10_000 - orders)
