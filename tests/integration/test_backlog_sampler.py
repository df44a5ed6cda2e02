"""The harness's backlog sampler stops even when a Redis call loses the cancellation sent to it
(redis-py has had such races; one left a benchmark run sampling for ever, its phase never ending)."""

from __future__ import annotations

import asyncio

from benchmarks.backlog import BacklogSampler
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore

WAIT_S = 60


class CancelLosingStore(RedisStore):
    """A store whose first backlog read waits until cancelled, then swallows the cancellation."""

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store.client)
        self.waiting = asyncio.Event()
        self.lost = 0

    async def stream_backlog(self, group: str) -> int:
        backlog = await super().stream_backlog(group)
        if not self.lost:
            self.waiting.set()
            try:
                await asyncio.Event().wait()  # never set: only a cancellation ends this wait
            except asyncio.CancelledError:
                self.lost += 1  # the bug: not re-raised
        return backlog


async def sampling_into_a_lost_cancellation(store: RedisStore) -> tuple[CancelLosingStore, BacklogSampler]:
    """A sampler started on a CancelLosingStore, its first read waiting for a cancellation to lose."""
    await store.ensure_group(PERSISTER_GROUP)
    losing = CancelLosingStore(store)
    sampler = BacklogSampler(losing)
    sampler.start()
    await asyncio.wait_for(losing.waiting.wait(), WAIT_S)
    return losing, sampler


async def test_a_lost_cancellation_does_not_keep_the_sampler_running(store: RedisStore) -> None:
    losing, sampler = await sampling_into_a_lost_cancellation(store)
    samples = await asyncio.wait_for(sampler.stop(), WAIT_S)
    assert losing.lost == 1, "the cancellation must have been lost for the test to mean anything"
    assert not sampler.running
    assert samples.entries == [0]  # the read that lost the cancellation still counted; none after


async def test_stopping_does_not_absorb_the_callers_cancellation(store: RedisStore) -> None:
    _, sampler = await sampling_into_a_lost_cancellation(store)
    stopping = asyncio.create_task(sampler.stop())
    await asyncio.sleep(0)  # one turn of the loop: stop() is now waiting for the sampler
    stopping.cancel()
    await asyncio.wait({stopping}, timeout=WAIT_S)
    assert stopping.cancelled(), "stop() swallowed its caller's cancellation (or did not end)"
    await asyncio.wait_for(sampler.stop(), WAIT_S)
    assert not sampler.running
