"""The sweeper's AOF rewrites against a real Redis: started at a lull once the file grew, forced at
the growth cap under load, never by a Redis that refuses them; `rushgate up`'s Redis leaves them
to the sweeper."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from benchmarks.harness import HarnessError
from benchmarks.housekeeping import await_lull_rewrite, rewrite_and_wait
from intake.problems import ProblemError
from intake.service import CatalogService, OrderService
from reservation.aof_rewrite import RewriteReason
from reservation.store import RedisStore, connect
from rushgate.embedded import EmbeddedRedis
from rushgate.settings import Settings
from rushgate.workers import AofRewriter, Sweeper, rewrite_limits
from tests.conftest import ManualClock, Services, make_settings
from tests.processes import eventually, redis_config_value
from tests.support import add_sku, order_in, setup_region

CHUNK = b"x" * 100_000  # one SET of this adds about 100 kB to the AOF


class Ticks:
    """An explicit monotonic clock for the rewriter: tests move time, nothing sleeps."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", auto_rewrite=False).start()
    yield server
    server.stop()


@pytest.fixture
async def own_store(own_redis: EmbeddedRedis) -> AsyncIterator[RedisStore]:
    client = connect(own_redis.url, pool_size_max=4, timeout_ms=5000)
    yield RedisStore(client)
    await client.aclose()


def rewrite_settings(services: Services, redis_url: str, **overrides: str) -> Settings:
    limits = {
        "RUSHGATE_AOF_REWRITE_QUIET_ORDERS_PER_S": "100",
        "RUSHGATE_AOF_REWRITE_QUIET_S": "10",
        "RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN": "1",
        "RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX": "4",
    }
    return make_settings(services, REDIS_URL=redis_url, **(limits | overrides))


def clocked_rewriter(
    services: Services, server: EmbeddedRedis, store: RedisStore, **overrides: str
) -> tuple[AofRewriter, Ticks]:
    ticks = Ticks()
    return AofRewriter(store, rewrite_settings(services, server.url, **overrides), monotonic=ticks), ticks


async def start_nothing_for(rewriter: AofRewriter, ticks: Ticks, seconds: int) -> None:
    """Checks a second apart for that long, none starting a rewrite."""
    for _ in range(seconds):
        assert await rewriter.tick() is None
        ticks.now_s += 1


@asynccontextmanager
async def sweeping(store: RedisStore, settings: Settings) -> AsyncIterator[None]:
    """A sweeper running on the real clock for the block's duration."""
    sweeper, stop = Sweeper(store, settings, ManualClock()), asyncio.Event()
    running = asyncio.create_task(sweeper.run(stop))
    try:
        yield
    finally:
        stop.set()
        await running


async def grow_aof(store: RedisStore, megabytes: float) -> None:
    for index in range(int(megabytes * 1_048_576 / len(CHUNK)) + 1):
        await store.client.set(f"filler:{index}", CHUNK)


async def rewrites(store: RedisStore) -> int:
    return int((await store.client.info("persistence"))["aof_rewrites"])


async def rewritten(store: RedisStore, count: int) -> None:
    async def done() -> bool:
        status = await store.aof_status()
        return await rewrites(store) == count and not status.forking

    await eventually(done, f"AOF rewrite number {count} to finish")


async def decide_orders(store: RedisStore, count: int) -> None:
    """Count orders decided, as the reserve script counts them (the metrics hash)."""
    await store.client.hincrby(store.keys.metrics, "reserve_1", count)


async def test_orders_decided_counts_every_outcome_of_the_reserve_script(
    store: RedisStore, orders: OrderService, catalog: CatalogService
) -> None:
    await setup_region(catalog)
    await add_sku(catalog, "hot", stock={"w1": 3})
    before = await store.orders_decided()
    for customer in ("c1", "c2"):
        await orders.place(order_in(customer, {"hot": 1}), idempotency_key=f"key-{customer}")
    with pytest.raises(ProblemError):  # one more than is left: refused by the script
        await orders.place(order_in("c3", {"hot": 2}), idempotency_key="key-c3")

    assert await store.orders_decided() == before + 3


async def test_a_lull_after_the_file_grew_starts_one_rewrite_and_then_none(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store)
    await grow_aof(own_store, 1.5)

    started = []
    for _ in range(11):  # samples a second apart: quiet for 10 s at the eleventh
        started.append(await rewriter.tick())
        ticks.now_s += 1
    assert started == [None] * 10 + [RewriteReason.QUIET]
    await rewritten(own_store, 1)

    status = await own_store.aof_status()
    assert status.growth_bytes < 1_048_576, status
    ticks.now_s += 1
    await start_nothing_for(rewriter, ticks, 5)
    assert await rewrites(own_store) == 1


async def test_busy_intake_defers_the_rewrite_until_the_growth_cap(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store)
    await grow_aof(own_store, 2)

    for _ in range(20):  # 5,000 orders a second
        assert await rewriter.tick() is None
        await decide_orders(own_store, 5_000)
        ticks.now_s += 1
    assert await rewrites(own_store) == 0

    await grow_aof(own_store, 4)
    assert await rewriter.tick() is RewriteReason.GROWTH_CAP
    await rewritten(own_store, 1)


async def test_checks_run_at_most_once_a_second(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store)
    assert await rewriter.tick() is None  # nothing grown yet
    await grow_aof(own_store, 4.5)
    ticks.now_s += 0.5

    assert await rewriter.tick() is None  # past the cap, but checked half a second ago
    ticks.now_s += 0.5
    assert await rewriter.tick() is RewriteReason.GROWTH_CAP
    await rewritten(own_store, 1)


async def test_the_redis_policy_never_rewrites(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store, RUSHGATE_AOF_REWRITE="redis")
    await grow_aof(own_store, 5)

    await start_nothing_for(rewriter, ticks, 15)
    assert await rewrites(own_store) == 0


async def test_a_redis_without_an_aof_is_left_alone(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    await own_store.client.config_set("appendonly", "no")
    await rewritten(own_store, 0)  # turning the AOF off may stop a rewrite: wait until none runs
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store)
    await grow_aof(own_store, 5)

    await start_nothing_for(rewriter, ticks, 15)
    assert not (await own_store.aof_status()).enabled


def workers_messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "rushgate.workers" and text in record.getMessage()
    ]


async def test_a_redis_that_refuses_rewrites_is_asked_again_only_after_a_minute(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """As a managed Redis may: this user may neither CONFIG nor BGREWRITEAOF."""
    await own_store.client.execute_command(
        "ACL", "SETUSER", "limited", "on", "nopass", "~*", "&*", "+@all", "-bgrewriteaof", "-config"
    )
    limited_client = connect(own_redis.url.replace("redis://", "redis://limited:@"), pool_size_max=2, timeout_ms=5000)
    limited = RedisStore(limited_client)
    rewriter, ticks = clocked_rewriter(services, own_redis, limited)
    await grow_aof(own_store, 5)

    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        await start_nothing_for(rewriter, ticks, 60)
        assert len(workers_messages(caplog, "refused BGREWRITEAOF")) == 1
        assert await rewriter.tick() is None  # a minute later it asks again, and is refused again
        assert len(workers_messages(caplog, "refused BGREWRITEAOF")) == 2
    assert not workers_messages(caplog, "AOF on its own")  # CONFIG refused: nothing said about the trigger
    assert await rewrites(own_store) == 0
    await limited_client.aclose()


def fork_children(server: EmbeddedRedis) -> list[int]:
    """Pids of the server's children (a rewrite's fork), from /proc."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return [int(pid) for pid in children]


async def test_a_failed_rewrite_is_retried_after_a_minute_not_every_second(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Each attempt forks and opens another incremental AOF file: a rewrite that keeps failing (disk
    full, the child killed) must not be retried at every check."""
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store)
    await grow_aof(own_store, 5)
    await own_store.client.config_set("rdb-key-save-delay", "100000")  # the child writes a key per 0.1 s: killable

    assert await rewriter.tick() is RewriteReason.GROWTH_CAP
    await eventually(lambda: _has_children(own_redis), "the rewrite's child")
    for pid in fork_children(own_redis):
        os.kill(pid, signal.SIGKILL)

    async def failed() -> bool:
        return (await own_store.aof_status()).failed_rewrites_in_a_row == 1

    await eventually(failed, "Redis to count the failed rewrite")
    await own_store.client.config_set("rdb-key-save-delay", "0")
    ticks.now_s += 1
    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        await start_nothing_for(rewriter, ticks, 60)
        assert len(workers_messages(caplog, "an AOF rewrite failed (1 in a row")) == 1
    assert await rewriter.tick() is RewriteReason.GROWTH_CAP
    await rewritten(own_store, 2)  # Redis counts the failed one too
    assert (await own_store.aof_status()).failed_rewrites_in_a_row == 0


async def _has_children(server: EmbeddedRedis) -> bool:
    return bool(fork_children(server))


async def test_a_redis_that_rewrites_on_its_own_too_is_named_once(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert await own_store.auto_rewrite_percentage() == 0  # as `rushgate up` starts it
    rewriter, ticks = clocked_rewriter(services, own_redis, own_store)
    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        await rewriter.tick()
        assert not workers_messages(caplog, "")

        await own_store.client.config_set("auto-aof-rewrite-percentage", "100")
        other = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
        for _ in range(3):
            await other.tick()
            ticks.now_s += 1
    warnings = workers_messages(caplog, "")
    assert len(warnings) == 1 and "auto-aof-rewrite-percentage 100" in warnings[0], warnings


async def test_the_redis_policy_with_redis_own_trigger_off_warns_that_nothing_rewrites(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    settings = rewrite_settings(services, own_redis.url, RUSHGATE_AOF_REWRITE="redis")
    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        await AofRewriter(own_store, settings, monotonic=Ticks()).tick()
        assert len(workers_messages(caplog, "nothing rewrites Redis's AOF")) == 1

        await own_store.client.config_set("auto-aof-rewrite-percentage", "100")
        await AofRewriter(own_store, settings, monotonic=Ticks()).tick()
    assert len(workers_messages(caplog, "")) == 1


async def test_the_sweeper_holding_the_lock_rewrites_at_a_lull(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    """The wiring, on the real clock: quiet_s of 1 s, so the first rewrite comes within a few seconds."""
    await own_store.load_scripts()
    await grow_aof(own_store, 1.5)
    async with sweeping(own_store, rewrite_settings(services, own_redis.url, RUSHGATE_AOF_REWRITE_QUIET_S="1")):
        await rewritten(own_store, 1)


async def test_the_harness_waits_between_phases_for_a_due_lull_rewrite_and_only_then(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    await own_store.load_scripts()
    settings = rewrite_settings(services, own_redis.url, RUSHGATE_AOF_REWRITE_QUIET_S="1")
    limits = rewrite_limits(settings)
    assert await await_lull_rewrite(own_store, limits, start_timeout_s=5) == {"waited_s": 0.0, "rewrites": 0}

    await grow_aof(own_store, 1.5)
    with pytest.raises(HarnessError, match="is it running"):  # due, and no sweeper to start it
        await await_lull_rewrite(own_store, limits, start_timeout_s=0.5)

    async with sweeping(own_store, settings):
        waited = await await_lull_rewrite(own_store, limits, start_timeout_s=30)
        assert waited["rewrites"] == 1 and waited["waited_s"] > 0, waited
        assert not (await own_store.aof_status()).forking
        assert await await_lull_rewrite(own_store, limits, start_timeout_s=30) == {"waited_s": 0.0, "rewrites": 0}


@pytest.mark.parametrize("already_running", [False, True], ids=["idle", "a-rewrite-running"])
async def test_the_harness_rewrites_before_the_expiry_phase_and_waits_for_the_rewrite_to_finish(
    own_store: RedisStore, already_running: bool
) -> None:
    """rewrite_and_wait returns only once a rewrite started since it was called (its own, or the one
    already running, when Redis refuses a second) has finished; it never starts two."""
    await grow_aof(own_store, 1.5)
    await own_store.client.config_set("rdb-key-save-delay", "20000")  # the child writes a key per 20 ms
    if already_running:
        await own_store.rewrite_aof()  # the sweeper's lull rewrite, say: Redis refuses the harness's
        assert (await own_store.aof_status()).forking
    waited_s = await rewrite_and_wait(own_store)
    await own_store.client.config_set("rdb-key-save-delay", "0")

    assert waited_s > 0
    assert not (await own_store.aof_status()).forking
    assert await rewrites(own_store) == 1


async def test_a_rewrite_the_sweeper_started_before_the_harness_looked_counts_as_the_lulls(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    """The sweeper may start it while the persister still drains the phase's backlog (intake is quiet)."""
    limits = rewrite_limits(rewrite_settings(services, own_redis.url))
    await grow_aof(own_store, 1.5)
    await own_store.client.config_set("rdb-key-save-delay", "20000")  # the child writes a key per 20 ms
    await own_store.rewrite_aof()
    await own_store.client.config_set("rdb-key-save-delay", "0")  # the running child keeps its copy

    waited = await await_lull_rewrite(own_store, limits, start_timeout_s=5)

    assert waited["rewrites"] == 1 and waited["waited_s"] > 0, waited
    assert not (await own_store.aof_status()).forking


async def test_a_timer_that_keeps_failing_does_not_stop_the_rewrites(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    await own_store.load_scripts()
    await own_store.client.set(own_store.keys.expiry, "not a sorted set")  # every expiry sweep fails: WRONGTYPE
    await grow_aof(own_store, 1.5)
    settings = rewrite_settings(services, own_redis.url, RUSHGATE_AOF_REWRITE_QUIET_S="1")
    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        async with sweeping(own_store, settings):
            await rewritten(own_store, 1)
    assert workers_messages(caplog, "WRONGTYPE"), "the sweeps did fail meanwhile"


def test_an_embedded_redis_keeps_its_own_trigger_unless_told(tmp_path: Path) -> None:
    for auto_rewrite, expected in ((True, "100"), (False, "0")):
        server = EmbeddedRedis(tmp_path / f"redis-{auto_rewrite}", auto_rewrite=auto_rewrite).start()
        try:
            answer = asyncio.run(redis_config_value(server.url, "auto-aof-rewrite-percentage"))
        finally:
            server.stop()
        assert answer == expected
