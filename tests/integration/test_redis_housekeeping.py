"""The harness's phase watch sees Redis fork (an AOF rewrite or RDB save shows in a phase's tails), and it
sets Redis's and Postgres's configuration for a run (--redis-config, --postgres-config)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.e2e import _config_pair, configure_postgres, configure_redis
from benchmarks.harness import HarnessError
from benchmarks.housekeeping import PhaseWatch, describe, overlapped, redis_children
from persistence.database import connect
from reservation.store import RedisStore
from tests.processes import eventually


async def wait_for_no_child(store: RedisStore) -> None:
    async def no_child() -> bool:
        return not (await redis_children(store.client)).child_running

    await eventually(no_child, "Redis's fork child to finish")


async def test_a_save_during_a_phase_is_reported(store: RedisStore) -> None:
    await wait_for_no_child(store)
    watch = PhaseWatch(store.client)
    await watch.start()
    await store.client.bgsave()
    await wait_for_no_child(store)
    report = await watch.stop()

    assert report["redis_forks"] == 1
    assert report["redis_rdb_saves"] == 1
    assert report["redis_aof_rewrites"] == 0
    assert overlapped(report)
    assert report["redis_latest_fork_ms"] > 0
    assert "1 fork(s): 0 AOF rewrite(s), 1 RDB save(s), the last stopped Redis for " in describe(report)
    assert report["started_at"] <= report["ended_at"]


async def test_a_phase_without_a_fork_says_so(store: RedisStore) -> None:
    await wait_for_no_child(store)
    watch = PhaseWatch(store.client)
    await watch.start()
    await store.client.set("housekeeping-test", "1")
    report = await watch.stop()

    assert report["redis_forks"] == 0
    assert report["redis_latest_fork_ms"] is None  # an earlier fork's stall is not this phase's
    assert not overlapped(report)
    assert describe(report).endswith("Redis did not fork")


async def test_the_harness_sets_redis_configuration_and_stops_on_a_refused_one(store: RedisStore) -> None:
    """--redis-config: each NAME=VALUE is set with CONFIG SET; one Redis refuses stops the run."""
    original = (await store.client.config_get("auto-aof-rewrite-percentage"))["auto-aof-rewrite-percentage"]
    try:
        await configure_redis(store.client, [_config_pair("auto-aof-rewrite-percentage=0")])
        assert (await store.client.config_get("auto-aof-rewrite-percentage")) == {"auto-aof-rewrite-percentage": "0"}
        with pytest.raises(HarnessError, match="no-such-setting"):
            await configure_redis(store.client, [("no-such-setting", "1")])
    finally:
        await store.client.config_set("auto-aof-rewrite-percentage", original)
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=VALUE"):
        _config_pair("auto-aof-rewrite-percentage")


async def test_the_harness_sets_postgres_configuration_and_stops_on_one_it_cannot_apply(database: str) -> None:
    """--postgres-config: ALTER SYSTEM SET and a reload; unknown, refused or restart-only settings stop the run."""
    connection = await connect(database)
    try:
        await configure_postgres(connection, [("log_min_duration_statement", "123456")])

        async def applied() -> bool:
            return await connection.fetchval("SHOW log_min_duration_statement") == "123456ms"

        await eventually(applied, "the reloaded setting")
        with pytest.raises(HarnessError, match="no such setting"):
            await configure_postgres(connection, [("no_such_setting", "1")])
        with pytest.raises(HarnessError, match="only a restart applies it"):
            await configure_postgres(connection, [("shared_buffers", "1GB")])
        with pytest.raises(HarnessError, match="Postgres refused it"):
            await configure_postgres(connection, [("max_wal_size", "lots")])
        with pytest.raises(HarnessError, match="Postgres refused it"):  # a quote stays inside the value
            await configure_postgres(connection, [("log_min_duration_statement", "1'; SELECT '1")])
    finally:
        await connection.execute("ALTER SYSTEM RESET log_min_duration_statement")
        await connection.execute("SELECT pg_reload_conf()")
        await connection.close()
