"""The sweeper's AOF rewrites against a real Redis: started at a lull once the file grew, forced at
the growth cap under load, never by a Redis that refuses them; `rushgate up`'s Redis leaves them
to the sweeper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from benchmarks.harness import HarnessError
from benchmarks.housekeeping import await_lull_rewrite
from intake.problems import ProblemError
from intake.service import CatalogService, OrderService
from reservation.store import RedisStore, connect
from rushgate.embedded import EmbeddedRedis
from rushgate.settings import Settings
from rushgate.workers import AofRewriter, Sweeper, rewrite_limits
from tests.conftest import ManualClock, Services, make_settings
from tests.processes import eventually
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
        "RUSHGATE_AOF_REWRITE_QUIET_ORDERS_S": "100",
        "RUSHGATE_AOF_REWRITE_QUIET_S": "10",
        "RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN": "1",
        "RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX": "4",
    }
    return make_settings(services, REDIS_URL=redis_url, **(limits | overrides))


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
    ticks = Ticks()
    rewriter = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
    await grow_aof(own_store, 1.5)

    started = []
    for _ in range(11):  # samples a second apart: quiet for 10 s at the eleventh
        started.append(await rewriter.tick())
        ticks.now_s += 1
    assert started == [None] * 10 + ["quiet"]
    await rewritten(own_store, 1)

    status = await own_store.aof_status()
    assert status.growth_bytes < 1_048_576, status
    for _ in range(5):
        ticks.now_s += 1
        assert await rewriter.tick() is None
    assert await rewrites(own_store) == 1


async def test_busy_intake_defers_the_rewrite_until_the_growth_cap(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    ticks = Ticks()
    rewriter = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
    await grow_aof(own_store, 2)

    for _ in range(20):  # 5,000 orders a second
        assert await rewriter.tick() is None
        await decide_orders(own_store, 5_000)
        ticks.now_s += 1
    assert await rewrites(own_store) == 0

    await grow_aof(own_store, 4)
    assert await rewriter.tick() == "growth cap"
    await rewritten(own_store, 1)


async def test_checks_run_at_most_once_a_second(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    ticks = Ticks()
    rewriter = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
    await grow_aof(own_store, 1.5)
    await rewriter.tick()
    ticks.now_s += 20  # one interval of 20 s: quiet for 20 s at the next check

    assert await rewriter.tick() == "quiet"
    await rewritten(own_store, 1)
    await grow_aof(own_store, 4.5)
    ticks.now_s += 0.5

    assert await rewriter.tick() is None  # past the cap, but checked half a second ago
    ticks.now_s += 0.5
    assert await rewriter.tick() == "growth cap"
    await rewritten(own_store, 2)


async def test_the_redis_policy_never_rewrites(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    ticks = Ticks()
    settings = rewrite_settings(services, own_redis.url, RUSHGATE_AOF_REWRITE="redis")
    rewriter = AofRewriter(own_store, settings, monotonic=ticks)
    await grow_aof(own_store, 5)

    for _ in range(15):
        assert await rewriter.tick() is None
        ticks.now_s += 1
    assert await rewrites(own_store) == 0


async def test_a_redis_without_an_aof_is_left_alone(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    await own_store.client.config_set("appendonly", "no")
    await rewritten(own_store, 0)  # turning the AOF off may stop a rewrite: wait until none runs
    ticks = Ticks()
    rewriter = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
    await grow_aof(own_store, 5)

    for _ in range(15):
        assert await rewriter.tick() is None
        ticks.now_s += 1
    assert not (await own_store.aof_status()).enabled


async def test_a_redis_that_refuses_rewrites_is_asked_again_only_after_a_minute(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """As a managed Redis may: this user may neither CONFIG nor BGREWRITEAOF."""
    await own_store.client.execute_command(
        "ACL", "SETUSER", "limited", "on", "nopass", "~*", "&*", "+@all", "-bgrewriteaof", "-config"
    )
    limited_client = connect(own_redis.url.replace("redis://", "redis://limited:@"), pool_size_max=2, timeout_ms=5000)
    limited = RedisStore(limited_client)
    ticks = Ticks()
    rewriter = AofRewriter(limited, rewrite_settings(services, own_redis.url), monotonic=ticks)
    await grow_aof(own_store, 5)

    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        assert await rewriter.tick() is None
        for _ in range(59):
            ticks.now_s += 1
            assert await rewriter.tick() is None
    refusals = [record for record in caplog.records if "refused BGREWRITEAOF" in record.getMessage()]
    assert len(refusals) == 1
    assert not any("on its own" in record.getMessage() for record in caplog.records)  # CONFIG refused: silent

    ticks.now_s += 1
    assert await rewriter.tick() is None  # a minute later it asks again, and is refused again
    assert await rewrites(own_store) == 0
    await limited_client.aclose()


async def test_a_redis_that_rewrites_on_its_own_too_is_named_once(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert await own_store.auto_rewrite_percentage() == 0  # as `rushgate up` starts it
    ticks = Ticks()
    rewriter = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
    with caplog.at_level(logging.WARNING, logger="rushgate.workers"):
        await rewriter.tick()
        assert not caplog.records

        await own_store.client.config_set("auto-aof-rewrite-percentage", "100")
        other = AofRewriter(own_store, rewrite_settings(services, own_redis.url), monotonic=ticks)
        for _ in range(3):
            await other.tick()
            ticks.now_s += 1
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "auto-aof-rewrite-percentage 100" in warnings[0], warnings


async def test_the_sweeper_holding_the_lock_rewrites_at_a_lull(
    services: Services, own_redis: EmbeddedRedis, own_store: RedisStore
) -> None:
    """The wiring, on the real clock: quiet_s of 1 s, so the first rewrite comes within a few seconds."""
    await own_store.load_scripts()
    await grow_aof(own_store, 1.5)
    settings = rewrite_settings(services, own_redis.url, RUSHGATE_AOF_REWRITE_QUIET_S="1")
    sweeper, stop = Sweeper(own_store, settings, ManualClock()), asyncio.Event()
    running = asyncio.create_task(sweeper.run(stop))
    try:
        await rewritten(own_store, 1)
    finally:
        stop.set()
        await running


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

    sweeper, stop = Sweeper(own_store, settings, ManualClock()), asyncio.Event()
    running = asyncio.create_task(sweeper.run(stop))
    try:
        waited = await await_lull_rewrite(own_store, limits, start_timeout_s=30)
        assert waited["rewrites"] == 1 and waited["waited_s"] > 0, waited
        assert not (await own_store.aof_status()).forking
        assert await await_lull_rewrite(own_store, limits, start_timeout_s=30) == {"waited_s": 0.0, "rewrites": 0}
    finally:
        stop.set()
        await running


def test_an_embedded_redis_keeps_its_own_trigger_unless_told(tmp_path: Path) -> None:
    for auto_rewrite, expected in ((True, "100"), (False, "0")):
        server = EmbeddedRedis(tmp_path / f"redis-{auto_rewrite}", auto_rewrite=auto_rewrite).start()
        try:
            answer = asyncio.run(_config_get(server.url, "auto-aof-rewrite-percentage"))
        finally:
            server.stop()
        assert answer == expected


async def _config_get(url: str, name: str) -> str:
    client = connect(url, pool_size_max=1, timeout_ms=5000)
    try:
        value = (await client.config_get(name))[name]
    finally:
        await client.aclose()
    return value.decode() if isinstance(value, bytes) else str(value)
