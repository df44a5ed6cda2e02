"""The harness's phase watch sees Redis fork (an AOF rewrite or RDB save shows in a phase's tails)."""

from __future__ import annotations

from benchmarks.housekeeping import PhaseWatch, describe, overlapped, redis_children
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
