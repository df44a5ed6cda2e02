"""The background processes: the persister (stream -> Postgres) and the sweeper (expiry).

Both run until ``stop`` is set, then finish the batch in hand and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from persistence.database import InterfaceError, Pool, PostgresError, create_pool
from persistence.writer import decode_entry, write_events
from reservation.keys import PartitionKeys
from reservation.store import RedisError, RedisStore, StreamEntry, connect
from reservation.sweeper import sweep_once
from rushgate.settings import Settings, require_services

logger = logging.getLogger("rushgate.workers")

PERSISTER_GROUP = "persister"
TRIM_INTERVAL_S = 1.0
RETRY_S_MIN = 0.05


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Persister:
    """Reads the partition's stream in a consumer group and writes batches to Postgres.

    An entry is acknowledged only after its batch committed, so a crash at any point
    leaves it pending; another persister claims entries idle for ``claim_idle_ms``.
    """

    def __init__(self, store: RedisStore, settings: Settings, *, name: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.name = name or consumer_name()
        self.batches_written = 0
        self._last_claim = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        _, database_url = require_services(self.settings)
        await self.store.ensure_group(PERSISTER_GROUP)
        pool = await create_pool(database_url, size_max=1)
        retry_s = RETRY_S_MIN
        last_trim = 0.0
        try:
            while not stop.is_set():
                try:
                    await self.step(pool)
                    if time.monotonic() - last_trim >= TRIM_INTERVAL_S:
                        last_trim = time.monotonic()
                        await self.store.trim_consumed(PERSISTER_GROUP)
                    retry_s = RETRY_S_MIN
                except (RedisError, PostgresError, InterfaceError, OSError) as error:
                    logger.warning("persister: %s; retrying in %.2fs", error, retry_s)
                    await _wait(stop, retry_s)
                    retry_s = min(retry_s * 2, self.settings.persister_retry_ms_max / 1000)
        finally:
            await pool.close()

    async def step(self, pool: Pool) -> int:
        """Write one batch (claimed entries first when a claim is due); returns its size."""
        entries: list[StreamEntry] = []
        if time.monotonic() - self._last_claim >= self.settings.persister_claim_idle_ms / 2000:
            self._last_claim = time.monotonic()
            entries = await self.claim()
        if not entries:
            entries = await self.store.read_group(
                PERSISTER_GROUP,
                self.name,
                count=self.settings.persister_batch_size_max,
                block_ms=self.settings.persister_block_ms,
            )
        if entries:
            await self.write(pool, entries)
        return len(entries)

    async def claim(self) -> list[StreamEntry]:
        """This consumer's own unacknowledged entries, then those a dead consumer left."""
        own = await self.store.read_own_pending(
            PERSISTER_GROUP, self.name, count=self.settings.persister_batch_size_max
        )
        if own:
            return own
        return await self.store.claim_stale(
            PERSISTER_GROUP,
            self.name,
            idle_ms=self.settings.persister_claim_idle_ms,
            count=self.settings.persister_batch_size_max,
        )

    async def write(self, pool: Pool, entries: list[StreamEntry]) -> None:
        partition = self.store.keys.partition
        events = [decode_entry(partition, entry.entry_id, entry.fields) for entry in entries]
        async with pool.acquire() as connection:
            await write_events(connection, events)
        await self.store.acknowledge(PERSISTER_GROUP, [entry.entry_id for entry in entries])
        self.batches_written += 1


class Sweeper:
    """Releases expired holds; several may run, the lock picks one to do the work."""

    def __init__(self, store: RedisStore, settings: Settings, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.owner = consumer_name()

    async def run(self, stop: asyncio.Event) -> None:
        interval_s = self.settings.sweeper_interval_ms / 1000
        while not stop.is_set():
            try:
                released = await self.run_once()
                if released == self.settings.sweeper_batch_size_max:
                    continue  # more are due: sweep again at once
            except RedisError as error:
                logger.warning("sweeper: %s", error)
            await _wait(stop, interval_s)

    async def run_once(self) -> int | None:
        """One bounded sweep if this sweeper holds the lock; None when another one does."""
        lock_key = PartitionKeys(self.store.keys.partition).sweeper_lock
        if not await self.store.acquire_lock(lock_key, self.owner, self.settings.sweeper_lock_ttl_ms):
            return None
        return await sweep_once(self.store, now_ms=self.clock(), batch_size_max=self.settings.sweeper_batch_size_max)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def open_store(settings: Settings) -> RedisStore:
    redis_url, _ = require_services(settings)
    client = connect(
        redis_url, pool_size_max=8, timeout_ms=max(settings.redis_timeout_ms, settings.persister_block_ms + 1000)
    )
    return RedisStore(client)
