"""Under a backlog the persister writes two batches at once, one per connection: the later one's
COPY runs while the earlier one is written, and it commits only after the earlier one committed,
so rows still become visible in stream order; when the earlier one fails, the later one is rolled
back and both are written again, in order. A batch that creates an order the batch before it
writes is written after it instead: the earlier batch's upsert of that order could otherwise wait
on the row the later COPY inserted, while the later batch waits for the earlier one to commit."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import msgspec
import pytest

from intake.schemas import PaymentIn
from intake.service import CatalogService, OrderService
from persistence.database import connect
from persistence.writer import decode_entries, prepare_batch, write_events
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore
from rushgate.settings import Settings
from rushgate.workers import Persister, _Batch, share_nice
from tests.integration.test_persister_read_ahead import pending_at, persisted, positions
from tests.processes import eventually
from tests.support import add_sku, assert_ledger_matches, order_in, setup_region

BATCH = 64  # the least batch written by COPY (COPY_EVENTS_MIN): only those go two at a time
ORDERS = 5 * BATCH


@pytest.fixture
async def backlog(catalog: CatalogService, orders: OrderService, store: RedisStore) -> list[str]:
    """Entry ids of a stream holding the catalog's entries and ORDERS orders, none persisted."""
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 10 * ORDERS})
    for number in range(ORDERS):
        await orders.place(order_in(f"c{number}", {"s1": 1}), f"k{number}")
    await store.ensure_group(PERSISTER_GROUP)
    return [entry_id.decode() for entry_id, _ in await store.client.xrange(store.keys.stream)]


def copy_batches(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, persister_batch_size_max=BATCH, persister_claim_idle_ms=3_600_000)


class GatedPersister(Persister):
    """Holds the write of a batch that has no earlier batch to wait for until ``gate`` is set."""

    def __init__(self, store: RedisStore, settings: Settings, *, name: str) -> None:
        super().__init__(store, settings, name=name)
        self.gate = asyncio.Event()

    async def write(
        self, connection: asyncpg.Connection, batch: _Batch, *, after: asyncio.Future[int] | None = None
    ) -> int:
        if after is None:
            await self.gate.wait()
        return await super().write(connection, batch, after=after)


@contextlib.asynccontextmanager
async def two_connections(database: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """The persister's two connections, closed at the end (a test may replace one)."""
    connections = [await connect(database), await connect(database)]
    try:
        yield connections
    finally:
        for connection in connections:
            await connection.close()


async def write_the_rest(
    persister: Persister, first: asyncpg.Connection, second: asyncpg.Connection, store: RedisStore
) -> None:
    """Step until the stream is drained, then write what is in hand, as a clean stop does."""
    while await store.stream_backlog(PERSISTER_GROUP):
        await persister.step(first, second=second)
    await persister.finish(first)


async def assert_written_once(store: RedisStore, database: str, backlog: list[str]) -> None:
    assert await persisted(database) == positions(backlog)
    assert await pending_at(store, "p") == []
    await assert_ledger_matches(store, database, ["s1"])


async def backend_state(database: str, pid: int) -> str | None:
    probe = await connect(database)
    try:
        return await probe.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await probe.close()


async def test_two_batches_are_written_at_once_and_the_later_commits_after_the_earlier(
    backlog: list[str], store: RedisStore, database: str, settings: Settings
) -> None:
    persister = GatedPersister(store, copy_batches(settings), name="p")
    async with two_connections(database) as connections:
        first, second = connections
        persister.gate.set()
        assert await persister.step(first, second=second) == BATCH  # alone: nothing was read ahead yet
        assert await persisted(database) == positions(backlog[:BATCH])
        assert await pending_at(store, "p") == backlog[BATCH : 3 * BATCH]  # two batches read ahead
        persister.gate.clear()

        stepping = asyncio.ensure_future(persister.step(first, second=second))
        second_pid = second.get_server_pid()

        async def copied_and_waiting() -> bool:
            return await backend_state(database, second_pid) == "idle in transaction"

        # The later batch's COPY ran on the second connection, which now waits, uncommitted, for
        # the earlier batch (held by the gate): nothing of either is visible yet.
        await eventually(copied_and_waiting, "the later batch to be copied and waiting for the earlier one")
        assert await persisted(database) == positions(backlog[:BATCH])
        persister.gate.set()
        assert await stepping == 2 * BATCH
        assert await persisted(database) == positions(backlog[: 3 * BATCH])
        await write_the_rest(persister, first, second, store)
    await assert_written_once(store, database, backlog)


async def test_when_the_earlier_batch_fails_the_later_is_rolled_back_and_both_are_written_again_in_order(
    backlog: list[str], store: RedisStore, database: str, settings: Settings
) -> None:
    persister = Persister(store, copy_batches(settings), name="p")
    async with two_connections(database) as connections:
        first, second = connections
        await persister.step(first, second=second)
        assert await pending_at(store, "p") == backlog[BATCH : 3 * BATCH]
        first.terminate()  # Postgres away for the earlier batch: its write fails, the later one's COPY runs
        with pytest.raises(asyncpg.InterfaceError):
            await persister.step(first, second=second)
        assert await persisted(database) == positions(backlog[:BATCH])  # the later batch rolled back
        assert await pending_at(store, "p") == backlog[BATCH : 5 * BATCH]  # all held, none acknowledged
        first = connections[0] = await connect(database)
        assert await persister.step(first, second=second) == 2 * BATCH  # the two failed batches, in order
        assert await persisted(database) == positions(backlog[: 3 * BATCH])
        await write_the_rest(persister, first, second, store)
    await assert_written_once(store, database, backlog)


async def test_a_later_batch_already_written_falls_back_to_the_statement_after_the_earlier_commits(
    backlog: list[str], store: RedisStore, database: str, settings: Settings
) -> None:
    """A replay: the later batch's rows are there already, its COPY fails on a key while the
    earlier batch is written, and it is written again by upsert once the earlier one committed."""
    raw = await store.client.xrange(store.keys.stream)
    later = [
        event
        for entry_id, fields in raw[2 * BATCH : 3 * BATCH]
        for event in decode_entries(0, entry_id.decode(), fields)
    ]
    connection = await connect(database)
    try:
        await write_events(connection, later)
    finally:
        await connection.close()
    persister = Persister(store, copy_batches(settings), name="p")
    async with two_connections(database) as connections:
        first, second = connections
        await persister.step(first, second=second)
        assert await persister.step(first, second=second) == 2 * BATCH
        assert await persisted(database) == positions(backlog[: 3 * BATCH])
        await write_the_rest(persister, first, second, store)
    await assert_written_once(store, database, backlog)


async def test_a_batch_creating_an_order_the_batch_before_writes_is_not_copied_behind_it(
    catalog: CatalogService, orders: OrderService, store: RedisStore
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=250, stock={"w1": 10})
    _, placed = await orders.place(order_in("c1", {"s1": 1}), "k1")
    await orders.place(order_in("c2", {"s1": 1}), "k2")
    await orders.pay(placed.order_id, PaymentIn(payment_id="p1", amount=250, method="card"))
    raw = await store.client.xrange(store.keys.stream)
    events = [event for entry_id, fields in raw for event in decode_entries(0, entry_id.decode(), fields)]
    created_first, created_second, paid = (event for event in events if event.order is not None)
    assert (created_first.kind, created_second.kind, paid.kind) == ("order_created", "order_created", "order_paid")
    # A late order_created (claimed after the entries behind it were written) behind its own payment:
    # the payment's upsert of the order row could wait on the row the later COPY inserted.
    assert not prepare_batch([created_first], copy=True).may_copy_behind(prepare_batch([paid], copy=True))
    assert prepare_batch([created_second], copy=True).may_copy_behind(prepare_batch([paid], copy=True))
    assert prepare_batch([paid], copy=True).may_copy_behind(prepare_batch([created_first], copy=True))
    # Only COPY batches go behind another: a small batch is one statement, written in turn.
    assert not prepare_batch([created_second], copy=False).may_copy_behind(prepare_batch([paid], copy=True))
    assert not prepare_batch([created_second], copy=True).may_copy_behind(prepare_batch([paid], copy=False))


async def test_the_persisters_nice_covers_its_postgres_backends_on_this_machine(database: str) -> None:
    """The persister runs at nice RUSHGATE_PERSISTER_NICE; its backends, which do half its work,
    get the same when they are on this machine and this process may renice them."""
    connection = await connect(database)
    try:
        pid = connection.get_server_pid()
        may_renice = os.geteuid() == 0 or os.stat(f"/proc/{pid}").st_uid == os.geteuid()
        before = os.getpriority(os.PRIO_PROCESS, pid)
        assert share_nice(connection, before + 3) is may_renice
        assert os.getpriority(os.PRIO_PROCESS, pid) == (before + 3 if may_renice else before)
    finally:
        await connection.close()


class NotPostgres:
    """A connection whose server process id is this test's own process: not a Postgres backend."""

    _transport = None

    def get_server_pid(self) -> int:
        return os.getpid()


def test_a_process_that_is_not_the_connections_backend_is_never_reniced() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert share_nice(NotPostgres(), before + 1) is False  # type: ignore[arg-type]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


async def test_a_persister_refused_a_second_connection_writes_with_one(
    backlog: list[str], store: RedisStore, database: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A role limited to one connection (a tight connection budget): the persister says so and
    writes everything over the one it has, rather than failing over and over."""
    role = "rg_one_connection"
    admin = await connect(database)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    try:
        await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        await admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        limited = urlsplit(database)._replace(netloc=f"{role}@{urlsplit(database).netloc.split('@')[-1]}").geturl()
        persister = Persister(store, msgspec.structs.replace(copy_batches(settings), database_url=limited), name="p")
        stop = asyncio.Event()
        running = asyncio.create_task(persister.run(stop))

        async def all_persisted() -> bool:
            return len(await persisted(database)) == len(backlog)

        await eventually(all_persisted, "every entry written over one connection")
        stop.set()
        await running
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
    assert "a second Postgres connection failed" in caplog.text
    await assert_written_once(store, database, backlog)
