"""The persister reads its next batch while Postgres writes the current one: what was read ahead is
written next, in stream order, after a failed write as well, and a clean stop writes it; a backlog
does not keep entries a dead persister left from being claimed."""

from __future__ import annotations

import msgspec
import pytest

from intake.service import CatalogService, OrderService
from persistence.database import connect
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore
from rushgate.settings import Settings
from rushgate.workers import Persister
from tests.processes import eventually
from tests.support import add_sku, assert_ledger_matches, order_in, setup_region

BATCH = 4  # every non-empty batch is large enough to read ahead (a quarter of it is 1)
ORDERS = 20


@pytest.fixture
async def backlog(catalog: CatalogService, orders: OrderService, store: RedisStore) -> list[str]:
    """Entry ids of a stream holding the catalog's entries and ORDERS orders, none persisted."""
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 100})
    for number in range(ORDERS):
        await orders.place(order_in(f"c{number}", {"s1": 1}), f"k{number}")
    await store.ensure_group(PERSISTER_GROUP)
    return [entry_id.decode() for entry_id, _ in await store.client.xrange(store.keys.stream)]


async def pending_at(store: RedisStore, consumer: str) -> list[str]:
    """Entries delivered to the consumer and not acknowledged."""
    rows = await store.client.xpending_range(store.keys.stream, PERSISTER_GROUP, "-", "+", 1000, consumername=consumer)
    return [row["message_id"].decode() for row in rows]


async def persisted(database: str) -> set[tuple[int, int]]:
    connection = await connect(database)
    try:
        return {(row[0], row[1]) for row in await connection.fetch("SELECT stream_ms, stream_seq FROM events")}
    finally:
        await connection.close()


def positions(entry_ids: list[str]) -> set[tuple[int, int]]:
    return {(int(ms), int(seq)) for ms, seq in (entry_id.split("-") for entry_id in entry_ids)}


def small_batches(settings: Settings, claim_idle_ms: int = 3_600_000) -> Settings:
    """Batches of BATCH; claims due only on the first step unless claim_idle_ms says otherwise."""
    return msgspec.structs.replace(settings, persister_batch_size_max=BATCH, persister_claim_idle_ms=claim_idle_ms)


async def test_the_next_batch_is_read_while_one_is_written_and_a_clean_stop_writes_it(
    backlog: list[str], store: RedisStore, database: str, settings: Settings
) -> None:
    persister = Persister(store, small_batches(settings), name="p")
    connection = await connect(database)
    try:
        assert await persister.step(connection) == BATCH
        # The first batch is written and acknowledged; the second was delivered during the write.
        assert await persisted(database) == positions(backlog[:BATCH])
        assert await pending_at(store, "p") == backlog[BATCH : 2 * BATCH]
        assert await persister.step(connection) == BATCH  # the batch read ahead, not a fresh read
        assert await persisted(database) == positions(backlog[: 2 * BATCH])
        assert await pending_at(store, "p") == backlog[2 * BATCH : 3 * BATCH]
        await persister.finish(connection)  # as run() does on a clean stop
    finally:
        await connection.close()
    assert await pending_at(store, "p") == []
    assert await persisted(database) == positions(backlog[: 3 * BATCH])
    assert await store.stream_backlog(PERSISTER_GROUP) == len(backlog) - 3 * BATCH  # never delivered


async def test_a_write_that_fails_while_reading_ahead_is_written_again_first_and_nothing_is_lost(
    backlog: list[str], store: RedisStore, database: str, settings: Settings
) -> None:
    persister = Persister(store, small_batches(settings), name="p")
    broken = await connect(database)
    broken.terminate()  # Postgres away: the write fails, the read ahead succeeds
    with pytest.raises(Exception) as failure:
        await persister.step(broken)
    assert "closed" in str(failure.value), failure.value
    assert await persisted(database) == set()
    assert await pending_at(store, "p") == backlog[: 2 * BATCH]  # both batches held, neither acknowledged
    connection = await connect(database)
    try:
        assert await persister.step(connection) == BATCH
        assert await persisted(database) == positions(backlog[:BATCH])  # the failed batch first, alone
        assert await persister.step(connection) == BATCH
        assert await persisted(database) == positions(backlog[: 2 * BATCH])  # then the one read ahead
        while await store.stream_backlog(PERSISTER_GROUP):
            await persister.step(connection)
    finally:
        await connection.close()
    assert await persisted(database) == positions(backlog)
    assert await pending_at(store, "p") == []
    await assert_ledger_matches(store, database, ["s1"])


async def test_a_backlog_does_not_keep_a_dead_persisters_entries_from_being_claimed(
    backlog: list[str], store: RedisStore, database: str, settings: Settings
) -> None:
    """Claims are due every half claim_idle_ms; a step with a claim due does not read ahead, so the
    step after it reads (and claims) instead of taking a batch read ahead, backlog or not."""
    claim_idle_ms = 100  # the least the settings allow
    persister = Persister(store, small_batches(settings, claim_idle_ms), name="p")
    connection = await connect(database)
    try:
        assert await persister.step(connection) == BATCH  # claims nothing, writes a batch, reads one ahead
        dead = [entry.entry_id for entry in await store.read_group(PERSISTER_GROUP, "dead", count=BATCH, block_ms=None)]
        assert len(dead) == BATCH

        async def dead_entries_stale() -> bool:
            rows = await store.client.xpending_range(
                store.keys.stream, PERSISTER_GROUP, "-", "+", BATCH, consumername="dead"
            )
            return all(row["time_since_delivered"] >= claim_idle_ms for row in rows)

        await eventually(dead_entries_stale, "the dead persister's entries to be idle for claim_idle_ms")
        assert await persister.step(connection) == BATCH  # the batch read ahead; a claim is due: no read ahead
        assert await persister.step(connection) == BATCH  # so this step claims
    finally:
        await connection.close()
    assert await pending_at(store, "dead") == []
    assert positions(dead) <= await persisted(database)
