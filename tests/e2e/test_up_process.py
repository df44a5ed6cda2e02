"""`rushgate up` as a process: one per data dir, nothing outlives it, even a SIGKILL, and Ctrl-C
stops it even while its Redis replays a long AOF."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rushgate.embedded import Readiness, free_port, redis_readiness, socket_path_usable
from tests.processes import eventually, redis_config_value, wait_ready, write_slow_aof

pytestmark = pytest.mark.slow
SLOW_AOF_SPINS = 150_000  # about 15 s of replay
STOPPED_WITHIN_S = 15


def start_up(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("RUSHGATE_") and name not in ("REDIS_URL", "DATABASE_URL")}  # fmt: skip
    with open(log, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "rushgate", "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def test_a_second_up_on_the_same_data_dir_refuses_and_a_killed_up_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    first = start_up(data_dir, port, tmp_path / "first.log")
    try:
        await wait_ready(f"http://127.0.0.1:{port}", first, tmp_path / "first.log")
        printed = (tmp_path / "first.log").read_text()
        redis_url = re.search(r"REDIS_URL=(\S+)", printed)
        assert redis_url is not None
        # Ready (/readyz pings both) over the servers' Unix sockets: cheaper per call than loopback TCP.
        assert socket_path_usable(data_dir.resolve() / "postgres" / ".s.PGSQL.65535.lock"), "tmp_path too deep"
        assert redis_url.group(1) == f"unix://{(data_dir / 'redis' / 'redis.sock').resolve()}?db=0"
        assert f"DATABASE_URL=postgresql://postgres@/postgres?host={(data_dir / 'postgres').resolve()}&port=" in printed
        # The sweeper rewrites the AOF at lulls, so up's Redis has its own trigger off (RUSHGATE_AOF_REWRITE).
        assert await redis_config_value(redis_url.group(1), "auto-aof-rewrite-percentage") == "0"
        second = start_up(data_dir, free_port(), tmp_path / "second.log")
        assert second.wait(60) != 0
        assert "another `rushgate up` is running" in (tmp_path / "second.log").read_text()
        family = psutil.Process(first.pid).children(recursive=True)
        names = {child.name() for child in family}
        assert {"valkey-server", "postgres"} <= names, names
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)

    async def all_gone() -> bool:
        return not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in family)

    await eventually(all_gone, "every child of the killed `up` to exit")
    third = start_up(data_dir, port, tmp_path / "third.log")  # the data dir is free again
    try:
        await wait_ready(f"http://127.0.0.1:{port}", third, tmp_path / "third.log")
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0


def redis_port_in(log: Path) -> int | None:
    found = re.search(r"port=(\d+)", log.read_text()) if log.exists() else None
    return int(found.group(1)) if found else None


async def test_ctrl_c_while_redis_replays_its_aof_stops_up_without_waiting_for_the_replay(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_slow_aof(data_dir / "redis", keys=10, spins=SLOW_AOF_SPINS)
    redis_log = data_dir / "redis" / "server.log"
    up = start_up(data_dir, free_port(), tmp_path / "up.log")
    try:

        async def redis_is_loading() -> bool:
            port = redis_port_in(redis_log)
            return port is not None and redis_readiness(port) is Readiness.LOADING

        await eventually(redis_is_loading, "the embedded Redis to answer -LOADING")
        valkey = [child for child in psutil.Process(up.pid).children() if child.name() == "valkey-server"]
        up.send_signal(signal.SIGINT)
        assert up.wait(STOPPED_WITHIN_S) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(30)
    assert "DB loaded" not in redis_log.read_text(), "the replay ended before the stop: nothing was interrupted"
    assert valkey and not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in valkey)
