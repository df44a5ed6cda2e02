"""Running rushgate's own processes from tests, and waiting on conditions (never on time alone)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from reservation.store import connect as connect_redis
from rushgate.embedded import free_port
from tests.conftest import ADMIN_TOKEN, GATEWAY_TOKEN, Services

WAIT_TIMEOUT_S = 60.0
POLL_S = 0.02


def service_environment(services: Services, **overrides: str) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("RUSHGATE_")}
    environ.update(
        {
            "REDIS_URL": services.redis_url,
            "DATABASE_URL": services.database_url,
            "RUSHGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "RUSHGATE_GATEWAY_TOKEN": GATEWAY_TOKEN,
            "RUSHGATE_LOG_LEVEL": "WARNING",
        }
    )
    environ.update(overrides)
    return environ


def run_command(services: Services, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run one `rushgate ...` command to completion against the suite's servers."""
    return subprocess.run(
        [sys.executable, "-m", "rushgate", *arguments],
        env=service_environment(services),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start(command: list[str], environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "rushgate", *command], env=environ, stdout=log_file, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes], signal_number: int = signal.SIGTERM, timeout_s: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal_number)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Poll a condition until it holds; fail naming it after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(POLL_S)


async def wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:

        async def ready() -> bool:
            assert process.poll() is None, f"process exited with {process.returncode}: {log.read_text()[-2000:]}"
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, f"{base_url}/readyz")


@contextmanager
def running(command: list[str], environ: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start(command, environ, log)
    try:
        yield process
    finally:
        if process.poll() is None:
            stop(process)


def serve_command(workers: int) -> tuple[list[str], int]:
    port = free_port()
    return ["serve", "--port", str(port), "--workers", str(workers)], port


SPIN_SCRIPT = "local n = 0 for i = 1, 15000 do n = n + i end return n"  # about a tenth of a millisecond of Lua


def _resp(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded)


def write_slow_aof(redis_dir: Path, *, keys: int, spins: int) -> None:
    """An old-style single-file AOF (valkey migrates it at start) that takes seconds to replay:
    keys keys to find afterwards, then spins short script calls (about 0.1 ms each). valkey answers
    PING (with -LOADING) and acts on SIGTERM only between every 1024 commands it replays, so each
    call is kept short: it answers about every tenth of a second."""
    redis_dir.mkdir(parents=True)
    commands = [_resp("SELECT", "0")]
    commands += [_resp("SET", f"key-{number}", str(number)) for number in range(keys)]
    commands += [_resp("EVAL", SPIN_SCRIPT, "0") for _ in range(spins)]
    (redis_dir / "appendonly.aof").write_bytes(b"".join(commands))


async def redis_config_value(url: str, name: str) -> str:
    """CONFIG GET name on the Redis at url."""
    client = connect_redis(url, pool_size_max=1, timeout_ms=5000)
    try:
        value = (await client.config_get(name))[name]
    finally:
        await client.aclose()
    return value.decode() if isinstance(value, bytes) else str(value)


def connections_on(process: psutil.Process, port: int) -> int:
    """Established TCP connections of a process on the server's port."""
    return sum(
        1
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_ESTABLISHED and connection.laddr and connection.laddr.port == port
    )
