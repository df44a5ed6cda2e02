"""The pipelined channel script calls travel over (reservation/pipelined.py), against real Redis:
replies reach their own callers, errors keep redis-py's meaning, a lost or stuck connection fails
the calls in flight and the next call reconnects, a cancelled caller does not shift the replies."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis_asyncio
from redis.exceptions import AuthenticationError, ConnectionError, DataError, NoScriptError, ResponseError, TimeoutError

from reservation.pipelined import PipelinedChannel
from reservation.store import RedisStore, connect
from tests.conftest import Services


@pytest.fixture
async def plain(services: Services) -> AsyncIterator[redis_asyncio.Redis]:
    """A plain redis-py client on the suite's Redis, to look and to interfere."""
    client = redis_asyncio.Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


def _channel(services: Services, *, timeout_ms: int = 5000, url: str | None = None) -> PipelinedChannel:
    channel = connect(url or services.redis_url, pool_size_max=2, timeout_ms=timeout_ms).script_channel
    assert channel is not None
    return channel


async def _blocked(plain: redis_asyncio.Redis, name: bytes) -> None:
    """Wait until the client named name is blocked in Redis (no sleep: CLIENT LIST says so)."""
    for _ in range(5000):
        clients = await plain.client_list()
        if any(entry.get("name") == name.decode() and entry.get("flags", "").find("b") >= 0 for entry in clients):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{name!r} never blocked")


async def test_concurrent_calls_get_their_own_replies(services: Services) -> None:
    channel = _channel(services)
    try:
        script = "if ARGV[1] % 7 == 0 then return redis.error_reply('ERR seven ' .. ARGV[1]) end return ARGV[1]"
        results = await asyncio.gather(
            *(channel.call("EVAL", script, 0, number) for number in range(500)), return_exceptions=True
        )
        for number, result in enumerate(results):
            if number % 7 == 0:
                assert isinstance(result, ResponseError) and str(result) == f"seven {number}"
            else:
                assert result == str(number).encode()
    finally:
        await channel.aclose()


async def test_unknown_script_is_no_script_error_and_the_store_reloads(services: Services) -> None:
    client = connect(services.redis_url, pool_size_max=2, timeout_ms=5000)
    store = RedisStore(client)
    try:
        assert client.script_channel is not None
        with pytest.raises(NoScriptError):
            await client.script_channel.call("EVALSHA", "0" * 40, 0)
        await client.script_flush()
        assert await store.idempotency_keys_exist(["nothing-here"]) == [False]  # NOSCRIPT, load, call again
    finally:
        await client.aclose()


async def test_an_argument_it_cannot_send_is_refused_before_anything_is_sent(services: Services) -> None:
    channel = _channel(services)
    try:
        with pytest.raises(DataError):
            await channel.call("ECHO", None)
        assert await channel.call("ECHO", "still aligned") == b"still aligned"
    finally:
        await channel.aclose()


async def test_a_killed_connection_fails_the_calls_in_flight_and_the_next_call_reconnects(
    services: Services, plain: redis_asyncio.Redis
) -> None:
    channel = _channel(services)
    name = f"victim{secrets.token_hex(4)}".encode()
    key = f"never-pushed:{secrets.token_hex(4)}"
    try:
        await channel.call("CLIENT", "SETNAME", name)
        first_id = await channel.call("CLIENT", "ID")
        blocked = asyncio.ensure_future(channel.call("BLPOP", key, 0))
        queued = asyncio.ensure_future(channel.call("PING"))
        await _blocked(plain, name)
        await plain.execute_command("CLIENT", "KILL", "ID", first_id)
        for call in (blocked, queued):
            with pytest.raises(ConnectionError):
                await call
        assert await channel.call("PING") == b"PONG"
        assert await channel.call("CLIENT", "ID") != first_id
    finally:
        await channel.aclose()


async def test_a_call_without_reply_times_out_and_the_connection_is_replaced(
    services: Services, plain: redis_asyncio.Redis
) -> None:
    channel = _channel(services, timeout_ms=200)
    key = f"never-pushed:{secrets.token_hex(4)}"
    try:
        first_id = await channel.call("CLIENT", "ID")
        blocked = asyncio.ensure_future(channel.call("BLPOP", key, 0))  # only the deadline can end it
        queued = asyncio.ensure_future(channel.call("ECHO", "behind it"))
        with pytest.raises(TimeoutError):
            await blocked
        with pytest.raises(TimeoutError):  # its reply would come after BLPOP's: it cannot be told apart
            await queued
        assert await channel.call("ECHO", "fresh") == b"fresh"
        assert await channel.call("CLIENT", "ID") != first_id
    finally:
        await channel.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(services: Services, plain: redis_asyncio.Redis) -> None:
    channel = _channel(services)
    name = f"cancel{secrets.token_hex(4)}".encode()
    key = f"list:{secrets.token_hex(4)}"
    try:
        await channel.call("CLIENT", "SETNAME", name)
        blocked = asyncio.ensure_future(channel.call("BLPOP", key, 0))
        queued = asyncio.ensure_future(channel.call("ECHO", "mine"))
        await _blocked(plain, name)
        blocked.cancel()
        await plain.rpush(key, "for the cancelled call")
        assert await queued == b"mine"
        assert await channel.call("ECHO", "next") == b"next"
    finally:
        await channel.aclose()


async def test_it_selects_the_database_and_authenticates_like_the_pool(
    services: Services, plain: redis_asyncio.Redis
) -> None:
    user, password = f"u{secrets.token_hex(4)}", secrets.token_hex(8)
    await plain.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    parts = urlsplit(services.redis_url)
    base = f"{parts.hostname}:{parts.port or 6379}"
    try:
        client = connect(f"redis://{user}:{password}@{base}/7", pool_size_max=2, timeout_ms=5000)
        try:
            await client.set("where", "database 7")
            assert client.script_channel is not None
            assert await client.script_channel.call("GET", "where") == b"database 7"
            assert await client.script_channel.call("ACL", "WHOAMI") == user.encode()
        finally:
            await client.flushdb()
            await client.aclose()
        wrong = _channel(services, url=f"redis://{user}:wrong@{base}/7")
        with pytest.raises(AuthenticationError):
            await wrong.call("PING")
        await wrong.aclose()
    finally:
        await plain.execute_command("ACL", "DELUSER", user)


async def test_calls_after_close_are_refused(services: Services) -> None:
    channel = _channel(services)
    assert await channel.call("PING") == b"PONG"
    await channel.aclose()
    with pytest.raises(ConnectionError):
        await channel.call("PING")


def test_tls_clients_have_no_channel() -> None:
    assert connect("rediss://127.0.0.1:6379/0", pool_size_max=1, timeout_ms=100).script_channel is None
    assert connect("unix:///tmp/redis.sock", pool_size_max=1, timeout_ms=100).script_channel is not None


class SilentRedis:
    """Accepts connections and reads commands; answers each with +OK only once ``answer`` is set."""

    def __init__(self) -> None:
        self.accepted = 0
        self.received = asyncio.Event()
        self.answer = asyncio.Event()
        self.closed_by_client = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        data = await reader.read(4096)
        if data:
            self.received.set()
            await self.answer.wait()
            writer.write(b"+OK\r\n")
            await writer.drain()
        if not await reader.read(4096):
            self.closed_by_client.set()
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        self.answer.set()


async def test_callers_queued_on_a_connect_share_one_attempt() -> None:
    silent = SilentRedis()
    port = await silent.start()
    channel = PipelinedChannel(port=port, password="secret", timeout_s=5.0, connect_timeout_s=0.2)
    try:
        results = await asyncio.gather(*(channel.call("PING") for _ in range(6)), return_exceptions=True)
        assert all(isinstance(result, TimeoutError) for result in results), results
        assert silent.accepted == 1  # not one attempt after another, each with its own timeout
    finally:
        await channel.aclose()
        await silent.stop()


async def test_closing_while_connecting_keeps_nothing_open() -> None:
    silent = SilentRedis()
    port = await silent.start()
    channel = PipelinedChannel(port=port, password="secret", timeout_s=5.0, connect_timeout_s=30.0)
    try:
        call = asyncio.ensure_future(channel.call("PING"))
        await silent.received.wait()  # the AUTH is out, unanswered
        await channel.aclose()
        silent.answer.set()  # the set-up now succeeds, on a closed channel
        with pytest.raises(ConnectionError):
            await call
        await asyncio.wait_for(silent.closed_by_client.wait(), 30)  # a bound, so a regression fails, not hangs
        with pytest.raises(ConnectionError):
            await channel.call("PING")
        assert silent.accepted == 1
    finally:
        await silent.stop()


async def test_a_connection_lost_under_a_caller_fails_its_call_at_once(services: Services) -> None:
    """A caller holding a connection that was lost meanwhile (it got it from the connect attempt,
    the loss came before it sent) is refused at once, not left waiting for a reply or a deadline."""
    channel = _channel(services)
    try:
        assert await channel.call("PING") == b"PONG"
        protocol = channel._protocol
        assert protocol is not None
        protocol.abort(ConnectionError("gone"))
        with pytest.raises(ConnectionError):
            await protocol.send(b"*1\r\n$4\r\nPING\r\n", 5.0)
        assert await channel.call("PING") == b"PONG"  # the next call reconnects
    finally:
        await channel.aclose()
