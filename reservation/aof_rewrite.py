"""When to compact Redis's append-only file: at a lull in intake, not at a sale's peak.

Redis rewrites its AOF in a forked child whenever the file has grown enough (by default when it
has doubled). The file grows fastest at a sale's peak, so that is when Redis forks: the child takes
a core for seconds and every page written meanwhile is copied. Measured on a 2-core machine, p99 at
half the peak rate was 23-518 ms with a rewrite running against 11-17 ms without one (README,
Performance). This policy waits instead until intake has been quiet (orders decided per second at
or under a setting for some seconds) and the file has doubled since the last rewrite (and grown by a
minimum), and it rewrites whatever the load once the growth reaches a hard cap, which bounds a
restart's replay (about 17 s per GB of AOF on a 2-core machine).

Pure: the sweeper feeds it samples with a monotonic clock, so tests drive it with an explicit one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MB = 1024 * 1024
SAMPLE_GAP_S_MAX = 3.0  # samples come once a second; a longer gap (Redis errors, the lock lost) tells nothing
FAILURE_BACKOFF_S_MIN = 60.0  # after a rewrite failed; doubled for each failure in a row, as Redis does
FAILURE_BACKOFF_S_MAX = 3600.0


class RewriteReason(enum.Enum):
    QUIET = "quiet"  # intake is quiet and the AOF has doubled since the last rewrite
    GROWTH_CAP = "growth cap"  # the AOF grew past the cap: rewritten whatever the load


@dataclass(frozen=True, slots=True)
class AofStatus:
    """What INFO persistence says about the AOF."""

    enabled: bool
    forking: bool  # a rewrite running or scheduled, an RDB save or a module's fork: no new rewrite now
    current_bytes: int
    base_bytes: int  # the size right after the last rewrite (or at start-up)
    failed_rewrites_in_a_row: int = 0  # 0 once a rewrite succeeded

    @property
    def growth_bytes(self) -> int:
        return max(self.current_bytes - self.base_bytes, 0)


@dataclass(frozen=True, slots=True)
class RewriteLimits:
    quiet_orders_per_s: int  # intake is quiet at or under this many orders decided a second
    quiet_s: float  # for at least this long
    growth_bytes_min: int  # a quiet rewrite needs this much growth, and at least the base size
    growth_bytes_max: int  # past this much growth, rewrite whatever the load

    def __post_init__(self) -> None:
        assert self.quiet_orders_per_s >= 0 and self.quiet_s > 0, self
        assert 0 < self.growth_bytes_min <= self.growth_bytes_max, self

    def grown_enough_for_a_quiet_rewrite(self, status: AofStatus) -> bool:
        """The file doubled since the last rewrite, and grew by at least the minimum."""
        return status.growth_bytes >= max(self.growth_bytes_min, status.base_bytes)


def failure_backoff_s(failed_in_a_row: int) -> float:
    """How long to leave Redis alone after that many failed rewrites in a row: each attempt forks
    and opens another incremental AOF file, so a failing one must not be retried every second."""
    doublings = min(max(failed_in_a_row - 1, 0), 10)
    return min(FAILURE_BACKOFF_S_MIN * (1 << doublings), FAILURE_BACKOFF_S_MAX)


class RewritePolicy:
    """Tracks how long intake has been quiet, from a cumulative count of orders decided, and how
    long to wait after failed rewrites."""

    def __init__(self, limits: RewriteLimits) -> None:
        self.limits = limits
        self._last: tuple[float, int] | None = None  # (seconds, orders decided) at the last sample
        self._quiet_since: float | None = None
        self.failures_seen = 0  # failed rewrites in a row, as last seen
        self.retry_after_s = 0.0  # no rewrite before this, after a failure

    def observe(self, now_s: float, orders_decided: int) -> None:
        """A sample of the cumulative count. A count that went down (the counters were reset) or a
        clock that did not move gives no rate: the sample only starts a new interval. A gap over
        SAMPLE_GAP_S_MAX starts the quiet time again: its average could hide a burst."""
        last, self._last = self._last, (now_s, orders_decided)
        if last is None or now_s <= last[0] or orders_decided < last[1]:
            return
        if now_s - last[0] > SAMPLE_GAP_S_MAX:
            self._quiet_since = None
            return
        rate = (orders_decided - last[1]) / (now_s - last[0])
        if rate > self.limits.quiet_orders_per_s:
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = last[0]  # quiet over the whole interval just measured

    def quiet_for_s(self, now_s: float) -> float:
        return 0.0 if self._quiet_since is None else now_s - self._quiet_since

    def decide(self, now_s: float, status: AofStatus) -> RewriteReason | None:
        """Whether to start a rewrite now."""
        if status.failed_rewrites_in_a_row != self.failures_seen:
            self.failures_seen = status.failed_rewrites_in_a_row
            self.retry_after_s = now_s + failure_backoff_s(self.failures_seen) if self.failures_seen else 0.0
        if not status.enabled or status.forking or now_s < self.retry_after_s:
            return None
        growth = status.growth_bytes
        if growth >= self.limits.growth_bytes_max:
            return RewriteReason.GROWTH_CAP
        if self.quiet_for_s(now_s) >= self.limits.quiet_s and self.limits.grown_enough_for_a_quiet_rewrite(status):
            return RewriteReason.QUIET
        return None
