"""Persister lag, read from the event stream while load runs.

Two views of the same lag, sampled every ``SAMPLE_INTERVAL_S``:

- backlog: events the persister group has not acknowledged yet (its pending and never delivered
  entries, an orders_created entry counting its orders: ``RedisStore.stream_backlog``), turned
  into seconds of orders by dividing by the measured intake rate;
- age of the oldest unacknowledged entry (its stream id carries the time it was appended):
  how far behind Postgres is, directly in seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore

SAMPLE_INTERVAL_S = 0.2
DRAIN_POLL_S = 0.05
STOP_RETRY_S = 1.0


def _entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


async def oldest_unacknowledged_ms(store: RedisStore) -> int | None:
    """Append time of the oldest entry the persister group has not acknowledged, None if none."""
    client, stream = store.client, store.keys.stream
    pending = await client.xpending(stream, PERSISTER_GROUP)
    if pending["pending"]:
        return _entry_ms(pending["min"])
    groups = await client.xinfo_groups(stream)
    group = next((item for item in groups if item["name"].decode() == PERSISTER_GROUP), None)
    last_delivered = group["last-delivered-id"].decode() if group is not None else "0-0"
    entries = await client.xrange(stream, min=f"({last_delivered}", count=1)
    return _entry_ms(entries[0][0]) if entries else None


@dataclass
class BacklogSamples:
    entries: list[int] = field(default_factory=list)
    oldest_age_ms: list[int] = field(default_factory=list)

    def summary(self, rate: float) -> dict[str, Any]:
        entries_max = max(self.entries, default=0)
        return {
            "samples": len(self.entries),
            "entries_max": entries_max,
            "seconds_of_orders_max": entries_max / rate if rate > 0 else None,
            "oldest_age_ms_max": max(self.oldest_age_ms, default=0),
        }


class BacklogSampler:
    """Samples the persister's backlog in the background between start() and stop()."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.samples = BacklogSamples()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _sample_forever(self) -> None:
        while not self._stopping:
            backlog = await self.store.stream_backlog(PERSISTER_GROUP)
            oldest_ms = await oldest_unacknowledged_ms(self.store)
            self.samples.entries.append(backlog)
            age_ms = 0 if oldest_ms is None else max(0, time.time_ns() // 1_000_000 - oldest_ms)
            self.samples.oldest_age_ms.append(age_ms)
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample_forever())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> BacklogSamples:
        """Stop sampling and return the samples.

        A cancellation can be lost inside a Redis client call (redis-py has had such races; one
        left a harness run sampling for ever, the phase never ending), so the sampler also checks
        a flag and the cancellation is repeated until the task is done. Waiting with asyncio.wait
        never absorbs a cancellation of the caller, as awaiting the task under suppress did."""
        assert self._task is not None
        self._stopping = True
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_RETRY_S)
        error = None if self._task.cancelled() else self._task.exception()
        if error is not None:
            raise error  # sampling failed: not a stop
        return self.samples


async def drain_seconds(store: RedisStore, timeout_s: float) -> float | None:
    """Seconds until the persister group has acknowledged everything; None after timeout_s."""
    started = time.monotonic()
    while await store.stream_backlog(PERSISTER_GROUP) > 0:
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(DRAIN_POLL_S)
    return time.monotonic() - started
