"""The harness's phase watch sees Redis fork (an AOF rewrite or RDB save shows in a phase's tails) and counts
the phase's script calls and orders decided, and the harness sets Redis's and Postgres's configuration for a
run (--redis-config, --postgres-config)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.e2e import _config_pair, configure_postgres, configure_redis
from benchmarks.harness import HarnessError
from benchmarks.housekeeping import PhaseWatch, describe, describe_scripts, overlapped, redis_children
from benchmarks.support import order_requests, reserve
from intake.service import CatalogService
from persistence.database import connect
from reservation.outcomes import ReserveCode
from reservation.store import RedisStore
from tests.processes import eventually
from tests.support import add_sku, setup_region


async def wait_for_no_child(store: RedisStore) -> None:
    async def no_child() -> bool:
        return not (await redis_children(store.client)).child_running

    await eventually(no_child, "Redis's fork child to finish")


async def test_a_save_during_a_phase_is_reported(store: RedisStore) -> None:
    await wait_for_no_child(store)
    watch = PhaseWatch(store)
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
    watch = PhaseWatch(store)
    await watch.start()
    await store.client.set("housekeeping-test", "1")
    report = await watch.stop()

    assert report["redis_forks"] == 0
    assert report["redis_latest_fork_ms"] is None  # an earlier fork's stall is not this phase's
    assert not overlapped(report)
    assert describe(report).endswith("Redis did not fork")


async def test_a_phase_counts_its_script_calls_and_the_orders_they_decided(
    store: RedisStore, catalog: CatalogService
) -> None:
    await setup_region(catalog)
    await add_sku(catalog, "watched", stock={"w1": 11})
    numbers = iter(range(1_000))
    await reserve(store, order_requests("watched", 1_000, numbers, 2), 1_000)  # before the phase: not counted
    watch = PhaseWatch(store)
    await watch.start()
    codes = []
    for count in (5, 3, 1, 3):  # 12 orders in 4 calls; the last 3 are refused: 11 units sold out
        codes += [
            result.code for result in await reserve(store, order_requests("watched", 2_000, numbers, count), 2_000)
        ]
    await store.client.set("housekeeping-test", "1")  # not a script: not counted
    report = await watch.stop()

    assert codes == [ReserveCode.ACCEPTED] * 9 + [ReserveCode.SOLD_OUT] * 3  # refused orders are decided too
    assert report["orders_decided"] == 12
    assert report["redis_script_calls"] == 4
    assert report["redis_script_usec"] > 0
    assert describe_scripts(report).startswith("Redis: 4 script calls for 12 orders decided (3.0 orders per call), ")


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
