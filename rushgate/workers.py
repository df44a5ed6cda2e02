"""The background processes: the persister (stream -> Postgres) and the sweeper (expiry).

Both run until ``stop`` is set, then finish the batch in hand and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from persistence.database import Connection, InterfaceError, PostgresError
from persistence.database import connect as connect_database
from persistence.writer import (
    MULTI_ORDER_KINDS,
    PERMANENT_ERRORS,
    UNDECODABLE_ERRORS,
    Event,
    PreparedBatch,
    decode_entries,
    decode_entry,
    extra_events,
    prepare_batch,
    record_dead_letter,
    write_events,
    write_prepared,
)
from reservation.aof_rewrite import MB, RewriteLimits, RewritePolicy, RewriteReason
from reservation.clock import wall_clock_ms
from reservation.keys import PERSISTER_GROUP, PartitionKeys
from reservation.store import RedisError, RedisStore, ResponseError, StreamEntry, connect
from reservation.sweeper import close_windows_once, confirm_due_once, sweep_once
from rushgate.settings import Settings, require_services

logger = logging.getLogger("rushgate.workers")

TRIM_INTERVAL_S = 1.0
AOF_CHECK_INTERVAL_S = 1.0  # INFO persistence and the metrics hash, once a second
AOF_REFUSED_BACKOFF_S = 60.0  # after Redis refused BGREWRITEAOF (a managed Redis may rename it)
FINISH_TIMEOUT_S = 10.0  # a stopping persister writes what it holds for at most this long
RETRY_S_MIN = 0.05
SECOND_CONNECTION_RETRY_S = 30.0  # the persister's second Postgres connection, after it failed
# What escapes Persister.write is never about the data (that becomes a dead letter), so it is retried.
TRANSIENT_ERRORS = (RedisError, PostgresError, InterfaceError, OSError, TimeoutError)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _local_backend(connection: Connection) -> int | None:
    """The process id of the connection's Postgres backend when it runs on this machine and can
    be told apart with certainty, else None: over TCP, a ``postgres`` process whose title names
    this connection's own port; over a Unix socket, a ``postgres`` child of the process that
    listens on it (its peer credentials). A remote server's backend id may belong to an
    unrelated process here, which is never touched."""
    pid = connection.get_server_pid()
    transport = getattr(connection, "_transport", None)  # asyncpg's; no public way to the socket
    sock = transport.get_extra_info("socket") if transport is not None else None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            name, _, rest = stat_file.read().partition(b") ")
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline_file:
            title = cmdline_file.read()
    except OSError:
        return None
    if sock is None or not name.endswith(b"(postgres"):
        return None
    if sock.family == socket.AF_UNIX:
        listener_pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        parent_pid = int(rest.split()[1])
        return pid if parent_pid == listener_pid else None
    local_port = sock.getsockname()[1]
    return pid if f"({local_port})".encode() in title else None


def share_nice(connection: Connection, nice: int) -> bool:
    """Give the connection's Postgres backend the nice value ``nice`` when it is on this machine
    and runs as a user this process may renice (as under ``rushgate up``): the persister's
    nice then covers the Postgres work it asks for too. Returns whether it did."""
    pid = _local_backend(connection)
    if pid is None:
        return False
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:  # another user's process (a system Postgres), or gone
        return False
    return True


def small_batch_under(settings: Settings) -> int:
    """A batch of fewer events than a quarter of persister_batch_size_max is small: the persister is
    keeping up."""
    return max(1, settings.persister_batch_size_max // 4)


def persister_linger_s(written: int, settings: Settings) -> float:
    """How long to let the stream fill after a batch of written events: persister_linger_ms after a
    small batch (under a steady load each Postgres transaction then carries more orders; its commit
    costs about the same for 20 orders as for 200), else 0: a larger batch means a backlog building
    up, and an empty read already waited in XREADGROUP's BLOCK."""
    if 0 < written < small_batch_under(settings):
        return settings.persister_linger_ms / 1000
    return 0.0


@dataclass(frozen=True, slots=True)
class _Batch:
    """Stream entries decoded and prepared for Postgres; the undecodable ones set aside."""

    entries: list[StreamEntry]
    events: list[tuple[StreamEntry, Event]]
    refused: list[tuple[StreamEntry, BaseException]]
    prepared: PreparedBatch
    extra_events: dict[str, int]  # entries that hold several events: the events beyond the first

    @property
    def size(self) -> int:
        """Events in the batch (an orders_created entry holds several), undecodable entries included."""
        return len(self.entries) + sum(self.extra_events.values())


class Persister:
    """Reads the partition's stream in a consumer group and writes batches to Postgres.

    An entry is acknowledged only after its batch committed, so a crash at any point
    leaves it pending; another persister claims entries idle for ``claim_idle_ms``.
    Batches in hand (read ahead, or failed for a passing reason such as Postgres or Redis
    away) are written in the order they were read, the failed ones first, so order is
    kept as far as the stream allows. An entry that can never be applied (undecodable,
    or refused by Postgres as data) is recorded in ``dead_letters`` and acknowledged, so
    it cannot stall the entries behind it.

    Under a backlog, with a second connection (``persister_connections`` 2), two batches
    are written at once, each on its own connection: the later one's COPY runs while the
    earlier one is written, and it commits only after the earlier one did
    (``PreparedBatch.may_copy_behind`` says when that is safe).
    """

    def __init__(self, store: RedisStore, settings: Settings, *, name: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.name = name or consumer_name()
        self._last_claim = 0.0
        # Read but not yet committed, in stream order: batches read ahead, and batches whose
        # write failed for a passing reason; each leaves once written and acknowledged.
        self._in_hand: list[_Batch] = []
        # Entries to read at once: persister_batch_size_max counts events, and an entry may hold
        # several (orders_created), so each read asks for as many entries as the last read's
        # events per entry say make persister_batch_size_max events (_prepare splits a read that
        # holds more into batches of at most that many).
        self._read_count = settings.persister_batch_size_max

    async def run(self, stop: asyncio.Event) -> None:
        _, database_url = require_services(self.settings)
        connection: Connection | None = None
        second: Connection | None = None
        second_at = 0.0  # when to try for a second connection next
        retry_s = RETRY_S_MIN
        last_trim = 0.0
        try:
            while not stop.is_set():
                try:
                    if connection is None:
                        await self.store.ensure_group(PERSISTER_GROUP)
                        connection = await self._connect(database_url)
                    if second is None and self.settings.persister_connections > 1 and time.monotonic() >= second_at:
                        try:
                            second = await self._connect(database_url)
                        except TRANSIENT_ERRORS as error:  # a connection limit, say: one connection still writes
                            second_at = time.monotonic() + SECOND_CONNECTION_RETRY_S
                            logger.warning(
                                "persister: a second Postgres connection failed: %s: %s; writing with one,"
                                " trying again in %.0fs",
                                type(error).__name__, error, SECOND_CONNECTION_RETRY_S,
                            )  # fmt: skip
                    linger_s = persister_linger_s(await self.step(connection, second=second), self.settings)
                    if linger_s:
                        await _wait(stop, linger_s)
                    if time.monotonic() - last_trim >= TRIM_INTERVAL_S:
                        last_trim = time.monotonic()
                        await self.store.trim_consumed(PERSISTER_GROUP)
                    retry_s = RETRY_S_MIN
                except TRANSIENT_ERRORS as error:
                    logger.warning("persister: %s: %s; retrying in %.2fs", type(error).__name__, error, retry_s)
                    for broken in (connection, second):
                        if broken is not None:
                            broken.terminate()  # a fresh connection next time; this one may be broken
                    connection = second = None
                    await _wait(stop, retry_s)
                    retry_s = min(retry_s * 2, self.settings.persister_retry_ms_max / 1000)
            if connection is not None:
                try:
                    async with asyncio.timeout(FINISH_TIMEOUT_S):
                        await self.finish(connection)
                except TRANSIENT_ERRORS as error:  # what cannot be written now is claimed later
                    logger.warning("persister: stopping with entries unwritten: %s: %s", type(error).__name__, error)
                    connection.terminate()  # it may be broken: a graceful close could wait on it
                    connection = None
        finally:
            for open_connection in (connection, second):
                if open_connection is not None:
                    await open_connection.close()
            await self._leave_group()

    async def _connect(self, database_url: str) -> Connection:
        connection = await connect_database(database_url)
        if self.settings.persister_nice:
            # Niced, the persister would still keep Postgres busy at full priority on its behalf.
            nice = os.getpriority(os.PRIO_PROCESS, 0)
            if share_nice(connection, nice):
                logger.info("persister: its Postgres backend %d runs at nice %d too", connection.get_server_pid(), nice)
        return connection

    async def step(self, connection: Connection, *, second: Connection | None = None, read_ahead: bool = True) -> int:
        """Write the first batch in hand (else claimed entries, else new ones); returns the events
        written.

        While a batch that is not small is written, the next one is read and prepared (decoded,
        rows encoded): Postgres writes one batch while this process prepares the next, where under
        a backlog the two used to take turns. With ``second``, the batch after it is written too,
        on that connection and committed after it, and two batches are read ahead."""
        if not self._in_hand:
            self._in_hand.extend(self._prepare(await self._next_entries()))
        batch = self._in_hand[0]
        if (
            read_ahead
            and batch.size >= small_batch_under(self.settings)
            and not self._claim_due()  # else a backlog would keep stale entries from ever being claimed
        ):
            behind = self._in_hand[1] if second is not None and len(self._in_hand) > 1 else None
            if behind is not None and not behind.prepared.may_copy_behind(batch.prepared):
                behind = None
            wanted = (2 if second is not None else 1) - (len(self._in_hand) - (2 if behind else 1))
            writing = (
                self.write(connection, batch) if behind is None else self._write_two(connection, second, batch, behind)
            )
            written, ahead = await asyncio.gather(writing, self._read_ahead(wanted), return_exceptions=True)
            if isinstance(ahead, list):
                self._in_hand.extend(ahead)  # delivered to this consumer: kept even if the write failed
            if isinstance(written, BaseException):
                if isinstance(ahead, Exception):
                    logger.warning("persister: reading ahead failed too: %s: %s", type(ahead).__name__, ahead)
                raise written
            if isinstance(ahead, BaseException):
                raise ahead
            return written
        if batch.entries:
            return await self.write(connection, batch)
        self._let_go(batch)
        return 0

    async def finish(self, connection: Connection) -> None:
        """On a clean stop: write what is in hand (read ahead, or failed last time) rather than
        leave it pending until another persister claims it."""
        while self._in_hand:
            await self.step(connection, read_ahead=False)

    async def _read_ahead(self, batches: int) -> list[_Batch]:
        ahead: list[_Batch] = []
        for _ in range(batches):
            entries = await self.store.read_group(PERSISTER_GROUP, self.name, count=self._read_count, block_ms=None)
            if not entries:
                break
            ahead.extend(self._prepare(entries))
        return ahead

    def _claim_due(self) -> bool:
        """Claims are tried every half claim_idle_ms, whatever the load."""
        return time.monotonic() - self._last_claim >= self.settings.persister_claim_idle_ms / 2000

    async def _next_entries(self) -> list[StreamEntry]:
        if self._claim_due():
            self._last_claim = time.monotonic()
            claimed = await self.claim()
            if claimed:
                return claimed
        return await self.store.read_group(
            PERSISTER_GROUP, self.name, count=self._read_count, block_ms=self.settings.persister_block_ms
        )

    async def claim(self) -> list[StreamEntry]:
        """This consumer's own unacknowledged entries, then those a dead consumer left."""
        own = await self.store.read_own_pending(PERSISTER_GROUP, self.name, count=self._read_count)
        if own:
            return own
        return await self.store.claim_stale(
            PERSISTER_GROUP,
            self.name,
            idle_ms=self.settings.persister_claim_idle_ms,
            count=self._read_count,
        )

    def _prepare(self, entries: list[StreamEntry]) -> list[_Batch]:
        """The entries of one read as batches of at most persister_batch_size_max events each (an
        entry is never split; no entries: one empty batch), in stream order."""
        size_max = self.settings.persister_batch_size_max
        extra = {entry.entry_id: extra_events(entry.fields) for entry in entries
                 if entry.fields.get(b"k", b"") in MULTI_ORDER_KINDS}  # fmt: skip
        if entries:
            self._read_count = max(1, min(size_max, size_max * len(entries) // (len(entries) + sum(extra.values()))))
        if not extra:
            return [self._prepare_batch(entries, extra)]
        groups: list[list[StreamEntry]] = [[]]
        size = 0
        for entry in entries:
            events = 1 + extra.get(entry.entry_id, 0)
            if groups[-1] and size + events > size_max:
                groups.append([])
                size = 0
            groups[-1].append(entry)
            size += events
        return [self._prepare_batch(group, extra) for group in groups]

    def _prepare_batch(self, entries: list[StreamEntry], extra: dict[str, int]) -> _Batch:
        partition = self.store.keys.partition
        events: list[tuple[StreamEntry, Event]] = []
        refused: list[tuple[StreamEntry, BaseException]] = []
        for entry in entries:
            try:
                if entry.entry_id in extra:
                    events.extend((entry, event) for event in decode_entries(partition, entry.entry_id, entry.fields))
                else:
                    events.append((entry, decode_entry(partition, entry.entry_id, entry.fields)))
            except UNDECODABLE_ERRORS as error:
                refused.append((entry, error))
        mine = {entry.entry_id: extra[entry.entry_id] for entry in entries if entry.entry_id in extra}
        return _Batch(entries, events, refused, prepare_batch([event for _, event in events]), mine)

    async def _write_two(self, connection: Connection, second: Connection, first: _Batch, behind: _Batch) -> int:
        """Write first on connection and behind on second at once, behind committing after first.
        Whatever happens to behind, first's write runs to its end before this returns; if first
        fails, behind's transaction is rolled back (it waits for first inside it)."""
        first_written = asyncio.ensure_future(self.write(connection, first))
        try:
            behind_written = await self.write(second, behind, after=first_written)
        except asyncio.CancelledError:
            first_written.cancel()
            raise
        except BaseException:
            await asyncio.wait([first_written])  # its commit does not depend on behind's
            if not first_written.cancelled() and (error := first_written.exception()) is not None:
                logger.warning("persister: the batch before failed too: %s: %s", type(error).__name__, error)
            raise
        return first_written.result() + behind_written  # behind's write waited for it

    async def write(self, connection: Connection, batch: _Batch, *, after: asyncio.Future[int] | None = None) -> int:
        """Write batch, acknowledge its entries and let it go; with ``after`` (an earlier batch's
        write on another connection), commit only once that one has."""
        refused = list(batch.refused)
        try:
            await write_prepared(connection, batch.prepared, after=after)
        except PERMANENT_ERRORS:
            if after is not None:
                await after
            # Find the entries Postgres refuses: apply the batch one event at a time. An entry of
            # several events is a dead letter once, for its first refused event (the others are written).
            for entry, event in batch.events:
                try:
                    await write_events(connection, [event])
                except PERMANENT_ERRORS as error:
                    if all(refused_entry is not entry for refused_entry, _ in refused):
                        refused.append((entry, error))
        partition = self.store.keys.partition
        for entry, reason in refused:
            logger.error("persister: dead letter %s: %s: %s", entry.entry_id, type(reason).__name__, reason)
            await record_dead_letter(connection, partition, entry.entry_id, entry.fields, reason)
        await self.store.acknowledge(PERSISTER_GROUP, [entry.entry_id for entry in batch.entries], batch.extra_events)
        self._let_go(batch)
        return batch.size

    def _let_go(self, batch: _Batch) -> None:
        """Take a written batch out of hand, found by identity (comparing by value would compare
        every row)."""
        for position, held in enumerate(self._in_hand):
            if held is batch:
                del self._in_hand[position]
                return

    async def _leave_group(self) -> None:
        """On a clean stop, remove this consumer's name if it holds nothing, so names do not pile up."""
        with contextlib.suppress(RedisError):
            await self.store.delete_consumer_if_idle(PERSISTER_GROUP, self.name)


def rewrite_limits(settings: Settings) -> RewriteLimits:
    return RewriteLimits(
        quiet_orders_per_s=settings.aof_rewrite_quiet_orders_per_s,
        quiet_s=settings.aof_rewrite_quiet_s,
        growth_bytes_min=settings.aof_rewrite_growth_mb_min * MB,
        growth_bytes_max=settings.aof_rewrite_growth_mb_max * MB,
    )


class AofRewriter:
    """Starts Redis's AOF rewrites at a lull in intake (reservation/aof_rewrite.py says why).

    Run by the sweeper that holds the lock, so one process decides. With ``aof_rewrite`` set to
    ``redis`` it starts none and Redis's own trigger decides."""

    def __init__(self, store: RedisStore, settings: Settings, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.enabled = not settings.redis_rewrites_aof
        self.policy = RewritePolicy(rewrite_limits(settings))
        self.monotonic = monotonic
        self._next_check_s = 0.0
        self._checked_redis_trigger = False

    async def tick(self) -> RewriteReason | None:
        """At most once a second: sample intake, and start a rewrite when one is due. Returns why it
        started one, else None."""
        now_s = self.monotonic()
        if now_s < self._next_check_s:
            return None
        self._next_check_s = now_s + AOF_CHECK_INTERVAL_S
        if not self._checked_redis_trigger:
            await self._check_redis_trigger()
            self._checked_redis_trigger = True
        if not self.enabled:
            return None
        self.policy.observe(now_s, await self.store.orders_decided())
        status = await self.store.aof_status()
        failures_before = self.policy.failures_seen
        reason = self.policy.decide(now_s, status)
        if self.policy.failures_seen > failures_before:
            logger.warning(
                "sweeper: an AOF rewrite failed (%d in a row; Redis's log says why); the next attempt in %.0fs",
                self.policy.failures_seen,
                self.policy.retry_after_s - now_s,
            )
        if reason is None:
            return None
        try:
            await self.store.rewrite_aof()
        except ResponseError as error:
            logger.warning(
                "sweeper: Redis refused BGREWRITEAOF: %s; trying again in %.0fs",
                error,
                AOF_REFUSED_BACKOFF_S,
            )
            self._next_check_s = now_s + AOF_REFUSED_BACKOFF_S
            return None
        logger.info(
            "sweeper: AOF rewrite started (%s): %.0f MB grown since the last one, intake quiet for %.0fs",
            reason.value,
            status.growth_bytes / MB,
            self.policy.quiet_for_s(now_s),
        )
        return reason

    async def _check_redis_trigger(self) -> None:
        """Once: warn when Redis's own trigger is on beside this policy, or off with nothing else
        rewriting. Silent where CONFIG is refused (a managed Redis) or the AOF is off."""
        try:
            percentage = await self.store.auto_rewrite_percentage()
        except ResponseError:
            return
        if not (await self.store.aof_status()).enabled:
            return
        if self.enabled and percentage:
            logger.warning(
                "sweeper: Redis rewrites its AOF on its own too (auto-aof-rewrite-percentage %d), which may fork"
                " at a sale's peak; set it to 0 to leave rewrites to rushgate (README.md#durability)",
                percentage,
            )
        elif not self.enabled and not percentage:
            logger.warning(
                "sweeper: nothing rewrites Redis's AOF: RUSHGATE_AOF_REWRITE=redis and Redis's own trigger is off"
                " (auto-aof-rewrite-percentage 0); the file only grows, and so does a restart's replay"
            )


class Sweeper:
    """Releases expired holds and runs the lifecycle timers; several may run, the lock picks one to work.
    The one holding the lock also starts AOF rewrites at lulls (AofRewriter)."""

    def __init__(self, store: RedisStore, settings: Settings, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.owner = consumer_name()
        self.aof = AofRewriter(store, settings)
        self.holds_lock = False

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every interval, start to start: a sweep that took a while does not push the next one
        later (a deadline waits at most one interval plus one sweep), and a full batch sweeps again at once."""
        interval_s = self.settings.sweeper_interval_ms / 1000
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                started = loop.time()
                released = None
                try:
                    released = await self.run_once()
                except RedisError as error:
                    logger.warning("sweeper: %s: %s", type(error).__name__, error)
                except Exception:  # a bug: log it and keep expiring holds, the next sweep may succeed
                    logger.exception("sweeper: unexpected error")
                if self.holds_lock:  # apart from the timers: one failing must not stop the AOF's rewrites
                    try:
                        await self.aof.tick()
                    except RedisError as error:
                        logger.warning("sweeper: AOF: %s: %s", type(error).__name__, error)
                    except Exception:
                        logger.exception("sweeper: AOF: unexpected error")
                if released == self.settings.sweeper_batch_size_max:
                    continue  # more are due: sweep again at once
                await _wait(stop, max(interval_s - (loop.time() - started), 0.0))
        finally:
            # Hand the lock over at once rather than after its TTL: another sweeper takes over within 1 s.
            with contextlib.suppress(RedisError):
                await self.store.release_lock(self.lock_key, self.owner)

    @property
    def lock_key(self) -> str:
        return PartitionKeys(self.store.keys.partition).sweeper_lock

    async def run_once(self) -> int | None:
        """One bounded sweep of each timer if this sweeper holds the lock; None when another one does.

        Returns the most orders one timer handled: the batch size means that timer has more due.
        """
        self.holds_lock = False  # stays so when taking the lock raises
        self.holds_lock = await self.store.acquire_lock(self.lock_key, self.owner, self.settings.sweeper_lock_ttl_ms)
        if not self.holds_lock:
            return None
        now_ms, batch_size_max = self.clock(), self.settings.sweeper_batch_size_max
        released = await sweep_once(self.store, now_ms=now_ms, batch_size_max=batch_size_max)
        confirmed = await confirm_due_once(
            self.store, now_ms=now_ms, window_ms=self.settings.after_sales_window_ms, batch_size_max=batch_size_max
        )
        closed = await close_windows_once(self.store, now_ms=now_ms, batch_size_max=batch_size_max)
        return max(released, confirmed, closed)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def open_store(settings: Settings) -> RedisStore:
    redis_url, _ = require_services(settings)
    client = connect(
        redis_url, pool_size_max=8, timeout_ms=max(settings.redis_timeout_ms, settings.persister_block_ms + 1000)
    )
    return RedisStore(client)
