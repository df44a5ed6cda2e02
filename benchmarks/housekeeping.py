"""Redis during a phase: its own background work (the forks of AOF rewrites and RDB saves), and the
script calls that carried the phase's orders.

A fork copies Redis's page tables, the child then takes a core for seconds, and every page
Redis writes meanwhile is copied. On a shared 2-core machine that can show in the tails: one
full run released holds up to 2.4 s after their deadline while an automatic AOF rewrite
covered the deadline window. So the harness records each phase's wall-clock span and whether
Redis forked during it, and says so next to the figures, rather than leaving a tail to be
matched against Redis's log by hand (which also shows when a tail had another cause).

The watch also counts the script calls Redis ran (INFO commandstats) and the orders reserve.lua
decided (the metrics hash) during the phase: how many orders a coalesced call carried, and
Redis's own time in scripts per order. A call's fixed cost is most of an order's at a steady
arrival rate, where calls carry one or two orders (README, Performance).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchmarks.harness import HarnessError
from reservation.aof_rewrite import RewriteLimits
from reservation.store import RedisStore, ResponseError

POLL_S = 0.1
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
FORK_WAIT_S_MAX = 600.0  # a rewrite of a few GB takes a minute or so on 2 cores


@dataclass(frozen=True)
class RedisChildren:
    """What INFO says about Redis's forks at one moment."""

    forks: int  # total_forks: every fork since the server started
    aof_rewrites: int
    rdb_saves: int
    child_running: bool  # an AOF rewrite or RDB save in progress
    rewriting: bool  # an AOF rewrite in progress (counted in aof_rewrites from its start)
    latest_fork_ms: float  # how long the latest fork stopped Redis (it answers nothing meanwhile)


async def redis_children(client: Any) -> RedisChildren:
    """Read from INFO stats and persistence (fields missing from older servers count as 0)."""
    stats, persistence = await client.info("stats"), await client.info("persistence")
    return RedisChildren(
        forks=int(stats.get("total_forks", 0)),
        aof_rewrites=int(persistence.get("aof_rewrites", 0)),
        rdb_saves=int(persistence.get("rdb_saves", 0)),
        child_running=bool(persistence.get("aof_rewrite_in_progress") or persistence.get("rdb_bgsave_in_progress")),
        rewriting=bool(persistence.get("aof_rewrite_in_progress")),
        latest_fork_ms=int(stats.get("latest_fork_usec", 0)) / 1000,
    )


@dataclass(frozen=True)
class ScriptCalls:
    """What INFO commandstats says of every script command since the server started (or CONFIG RESETSTAT)."""

    calls: int
    usec: int  # Redis's time in them, as it measures it


async def script_calls(client: Any) -> ScriptCalls:
    stats = await client.info("commandstats")
    entries = [stats[f"cmdstat_{name}"] for name in SCRIPT_COMMANDS if f"cmdstat_{name}" in stats]
    return ScriptCalls(sum(int(entry["calls"]) for entry in entries), sum(int(entry["usec"]) for entry in entries))


def wall_clock_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class PhaseWatch:
    """Start before a phase, stop after it: its wall-clock span, Redis's forks and script calls during it,
    and the orders decided."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._started_s = 0.0
        self._before: RedisChildren | None = None
        self._scripts_before = ScriptCalls(0, 0)
        self._orders_before = 0

    async def start(self) -> None:
        client = self.store.client
        self._before = await redis_children(client)
        self._scripts_before, self._orders_before = await script_calls(client), await self.store.orders_decided()
        self._started_s = time.time()

    async def stop(self) -> dict[str, Any]:
        assert self._before is not None, "PhaseWatch.stop() before start()"
        ended_s = time.time()
        client = self.store.client
        after, before = await redis_children(client), self._before
        scripts, orders = await script_calls(client), await self.store.orders_decided()
        return {
            "started_at": wall_clock_text(self._started_s),
            "ended_at": wall_clock_text(ended_s),
            "redis_forks": after.forks - before.forks,
            "redis_aof_rewrites": after.aof_rewrites - before.aof_rewrites,
            "redis_rdb_saves": after.rdb_saves - before.rdb_saves,
            "redis_child_running_at_start": before.child_running,
            "redis_child_running_at_end": after.child_running,
            # The stall of the phase's last fork: Redis serves no command while it copies its page tables.
            "redis_latest_fork_ms": after.latest_fork_ms if after.forks > before.forks else None,
            "orders_decided": orders - self._orders_before,
            "redis_script_calls": scripts.calls - self._scripts_before.calls,
            "redis_script_usec": scripts.usec - self._scripts_before.usec,
        }


def overlapped(watch: dict[str, Any]) -> bool:
    """Whether a Redis child (rewrite or save) ran during some part of the phase."""
    return bool(watch["redis_forks"] or watch["redis_child_running_at_start"])


def describe(watch: dict[str, Any]) -> str:
    """One line for the report: the phase's span, and Redis's background work if there was any."""
    span = f"{watch['started_at'][11:23]}-{watch['ended_at'][11:23]} UTC"
    if not overlapped(watch):
        return f"{span}; Redis did not fork"
    parts = []
    if watch["redis_child_running_at_start"]:
        parts.append("a child already running at the start")
    if watch["redis_forks"]:
        stall = watch.get("redis_latest_fork_ms")  # absent from reports written before it was recorded
        forks = (
            f"{watch['redis_forks']} fork(s): {watch['redis_aof_rewrites']} AOF rewrite(s), "
            f"{watch['redis_rdb_saves']} RDB save(s)"
        )
        parts.append(forks + (f", the last stopped Redis for {stall:.1f} ms" if stall else ""))
    return f"{span}; Redis background work during it ({'; '.join(parts)}): its tails include that"


def describe_scripts(watch: dict[str, Any]) -> str | None:
    """One line on the phase's script calls per order decided; None when it decided none (or predates the count)."""
    orders, calls = watch.get("orders_decided", 0), watch.get("redis_script_calls", 0)
    if not orders or not calls:
        return None
    return (
        f"Redis: {calls:,} script calls for {orders:,} orders decided ({orders / calls:.1f} orders per call), "
        f"{watch['redis_script_usec'] / orders:.1f} us of script time per order"
    )


async def await_lull_rewrite(
    store: RedisStore, limits: RewriteLimits, *, start_timeout_s: float, fork_wait_s_max: float = FORK_WAIT_S_MAX
) -> dict[str, Any]:
    """Between two phases, when the sweeper's lull rewrite is due: wait until it has started and
    finished, so that it runs in the lull rather than into the next phase (a comparator's, say).

    Returns the seconds waited and the rewrites that ran meanwhile. HarnessError when a rewrite was
    due and none started within the quiet time plus start_timeout_s of Redis having no child (is
    the sweeper running?), or when Redis still has a child fork_wait_s_max after the phase."""
    started_s = time.monotonic()
    before = await redis_children(store.client)
    # One the sweeper started during the phase's drain (intake was quiet meanwhile) counts as this lull's.
    rewrites_before = before.aof_rewrites - before.rewriting
    status = await store.aof_status()
    if not status.forking and not limits.grown_enough_for_a_quiet_rewrite(status):
        return {"waited_s": 0.0, "rewrites": 0}
    deadline_s = started_s + limits.quiet_s + start_timeout_s
    while True:
        polled_s = time.monotonic()
        status, children = await store.aof_status(), await redis_children(store.client)
        if not status.forking and (
            children.aof_rewrites > rewrites_before or not limits.grown_enough_for_a_quiet_rewrite(status)
        ):
            return {"waited_s": time.monotonic() - started_s, "rewrites": children.aof_rewrites - rewrites_before}
        if status.forking:  # the sweeper starts nothing meanwhile: its time to start one counts from the end
            deadline_s = max(deadline_s, polled_s + start_timeout_s)
            if polled_s - started_s > fork_wait_s_max:
                raise HarnessError(f"Redis still had a fork child {fork_wait_s_max:.0f} s after a phase ended")
        elif polled_s > deadline_s:
            raise HarnessError(
                f"an AOF rewrite was due ({status.growth_bytes / 1_048_576:.0f} MB grown) and the sweeper started"
                f" none within {limits.quiet_s + start_timeout_s:.0f} s of quiet: is it running? (logs/sweeper.log)"
            )
        await asyncio.sleep(POLL_S)


async def rewrite_and_wait(store: RedisStore, *, wait_s_max: float = FORK_WAIT_S_MAX) -> float:
    """BGREWRITEAOF now, and return once it (or one already running) has finished: the seconds taken.

    The expiry phase creates its holds and then waits, quiet, for their deadlines: to the sweeper
    that is a lull, and the holds may have made a lull rewrite due, whose fork would then run
    through the deadlines. In a sale the lull comes right after the peak and the holds expire a
    hold's lifetime later, so the harness rewrites before the phase, as that lull would have."""
    started_s = time.monotonic()
    before = await redis_children(store.client)
    try:
        await store.rewrite_aof()
    except ResponseError as error:  # the sweeper's own lull rewrite got there first: wait for that one
        if "in progress" not in str(error):
            raise HarnessError(f"BGREWRITEAOF before the expiry phase: {error}") from None
    while True:
        children, status = await redis_children(store.client), await store.aof_status()
        started_one = children.aof_rewrites > before.aof_rewrites or before.rewriting
        if started_one and not status.forking:
            return time.monotonic() - started_s
        if time.monotonic() - started_s > wait_s_max:
            raise HarnessError(f"the AOF rewrite before the expiry phase took over {wait_s_max:.0f} s")
        await asyncio.sleep(POLL_S)
