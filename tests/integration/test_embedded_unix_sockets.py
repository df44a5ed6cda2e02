"""The embedded servers of `rushgate up` and the benchmark harness listen on Unix sockets in their data
directories too, and their URLs name those sockets: scripts (the pipelined channel), plain commands and
Postgres queries all go over them. A data directory too deep for a socket path falls back to TCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persistence.database import connect as connect_postgres
from reservation.store import RedisStore, connect
from rushgate.embedded import SOCKET_PATH_MAX, EmbeddedPostgres, EmbeddedRedis, socket_path_usable


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sock")
    assert socket_path_usable(path / ".s.PGSQL.65535.lock"), f"{path} is too long for this test"
    yield path


def too_deep(base: Path) -> Path:
    deep = base / ("d" * (SOCKET_PATH_MAX - len(str(base))))
    assert not socket_path_usable(deep / "redis.sock")
    return deep


async def commands_and_scripts_work(url: str) -> None:
    client = connect(url, pool_size_max=2, timeout_ms=5000)
    try:
        store = RedisStore(client)
        await store.load_scripts()
        assert await store.idempotency_keys_exist(["a", "b"]) == [False, False]  # a script call
        assert await client.ping()
    finally:
        await client.aclose()


async def test_redis_answers_over_its_socket(short_dir: Path) -> None:
    server = EmbeddedRedis(short_dir / "redis", unix_socket=True).start()
    try:
        assert server.url == f"unix://{short_dir / 'redis' / 'redis.sock'}?db=0"
        assert (short_dir / "redis" / "redis.sock").is_socket()
        await commands_and_scripts_work(server.url)
        await commands_and_scripts_work(f"redis://127.0.0.1:{server.port}/0")  # TCP stays open (tools, probes)
    finally:
        server.stop()
    assert not (short_dir / "redis" / "redis.sock").exists()  # removed on a clean stop


async def test_redis_in_a_directory_too_deep_for_a_socket_is_reached_over_tcp(short_dir: Path) -> None:
    server = EmbeddedRedis(too_deep(short_dir) / "redis", unix_socket=True).start()
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        await commands_and_scripts_work(server.url)
    finally:
        server.stop()


async def test_redis_without_the_option_is_tcp_only(short_dir: Path) -> None:
    server = EmbeddedRedis(short_dir / "redis").start()
    try:
        assert server.url.startswith("redis://127.0.0.1:")
        assert not (short_dir / "redis" / "redis.sock").exists()
    finally:
        server.stop()


@pytest.mark.parametrize("deep", [False, True], ids=["socket", "too-deep-tcp"])
async def test_postgres_answers_over_its_socket_or_tcp_when_the_path_is_too_deep(short_dir: Path, deep: bool) -> None:
    data_dir = (too_deep(short_dir) if deep else short_dir) / "postgres"
    server = EmbeddedPostgres(data_dir, durable=False, unix_socket=True).start()
    try:
        if deep:
            assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        else:
            assert server.url == f"postgresql://postgres@/postgres?host={data_dir}&port={server.port}"
            assert (data_dir / f".s.PGSQL.{server.port}").is_socket()
        connection = await connect_postgres(server.url)
        try:
            await connection.execute("CREATE DATABASE other")
            on_socket = await connection.fetchval("SELECT inet_server_addr() IS NULL")  # NULL over a Unix socket
            assert on_socket is not deep
        finally:
            await connection.close()
        other = await connect_postgres(server.database_url("other"))
        try:
            assert await other.fetchval("SELECT current_database()") == "other"
        finally:
            await other.close()
    finally:
        server.stop()
