"""An embedded Redis with more data than it can load within the start timeout still starts,
and a stop asked for meanwhile (Ctrl-C on `rushgate up`) stops it without waiting for the load.

After a big sale the AOF takes a while to replay (about 17 s per GB on a 2-core machine), and
valkey answers PING with -LOADING meanwhile. A single start deadline refused to start it,
every time `rushgate up` was tried. The start timeout bounds the wait for a first answer; a
server that says it is loading gets as long as loading takes (rushgate/embedded.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from rushgate.embedded import EmbeddedRedis, Readiness, StartInterrupted, redis_readiness
from tests.processes import write_slow_aof

START_TIMEOUT_S = 1.0
SPINS = 45_000  # about 5 s of loading, with an answer to PING about every 0.1 s
KEYS = 1000


def loading_seconds(log: Path) -> float:
    found = re.findall(r"DB loaded from (?:append only file|old-style AOF)?.*?: ([\d.]+) seconds", log.read_text())
    assert found, f"no loading time in {log}"
    return max(float(seconds) for seconds in found)


def test_a_redis_loading_longer_than_the_start_timeout_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    write_slow_aof(data_dir, keys=KEYS, spins=SPINS)
    server = EmbeddedRedis(data_dir, start_timeout_s=START_TIMEOUT_S).start()
    try:
        assert loading_seconds(data_dir / "server.log") > START_TIMEOUT_S, "the AOF loaded too fast to test anything"
        client = redis.Redis.from_url(server.url)
        assert client.dbsize() == KEYS
        assert client.get(f"key-{KEYS - 1}") == str(KEYS - 1).encode()
        client.close()
    finally:
        server.stop()


def test_a_stop_asked_for_while_redis_loads_stops_it_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    write_slow_aof(data_dir, keys=KEYS, spins=SPINS)
    server = EmbeddedRedis(data_dir, start_timeout_s=START_TIMEOUT_S)
    try:
        with pytest.raises(StartInterrupted):
            # Ctrl-C as soon as it loads
            server.start(interrupted=lambda: redis_readiness(server.port) is Readiness.LOADING)
        assert server.process is not None and server.process.poll() is not None, "the server must be stopped"
    finally:
        server.stop()
    log = (data_dir / "server.log").read_text()
    assert "DB loaded" not in log, "the stop came after loading ended: the test did not interrupt a load"
