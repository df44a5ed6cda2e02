"""When to compact Redis's append-only file: at a lull in intake, not at a sale's peak.

Redis rewrites its AOF in a forked child whenever the file has grown enough (by default when it
has doubled). The file grows fastest at a sale's peak, so that is when Redis forks: the child takes
a core for seconds and every page written meanwhile is copied. Measured on a 2-core machine, p99 at
half the peak rate was 23-518 ms with a rewrite running against 11-17 ms without one (README,
Performance). This policy waits instead until intake has been quiet (orders decided per second at
or under a setting for some seconds) and the file has grown as Redis's default would want, and it
rewrites whatever the load once the growth reaches a hard cap, which bounds a restart's replay
(about 17 s per GB of AOF on a 2-core machine).

Pure: the sweeper feeds it samples with a monotonic clock, so tests drive it with an explicit one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MB = 1024 * 1024


class RewriteReason(enum.Enum):
    QUIET = "quiet"  # intake is quiet and the AOF has grown as Redis's default trigger would want
    GROWTH_CAP = "growth cap"  # the AOF grew past the cap: rewritten whatever the load


@dataclass(frozen=True, slots=True)
class AofStatus:
    """What INFO persistence says about the AOF."""

    enabled: bool
    forking: bool  # a rewrite running or scheduled, an RDB save or a module's fork: no new rewrite now
    current_bytes: int
    base_bytes: int  # the size right after the last rewrite (or at start-up)

    @property
    def growth_bytes(self) -> int:
        return max(self.current_bytes - self.base_bytes, 0)


@dataclass(frozen=True, slots=True)
class RewriteLimits:
    quiet_orders_s: int  # intake is quiet at or under this many orders decided a second
    quiet_s: float  # for at least this long
    growth_bytes_min: int  # a quiet rewrite needs this much growth, and at least the base size
    growth_bytes_max: int  # past this much growth, rewrite whatever the load

    def __post_init__(self) -> None:
        assert self.quiet_orders_s >= 0 and self.quiet_s > 0, self
        assert 0 < self.growth_bytes_min <= self.growth_bytes_max, self

    def grown_enough_for_a_quiet_rewrite(self, status: AofStatus) -> bool:
        """As Redis's default trigger: the file doubled since the last rewrite (and grew by the minimum)."""
        return status.growth_bytes >= max(self.growth_bytes_min, status.base_bytes)


class RewritePolicy:
    """Tracks how long intake has been quiet, from a cumulative count of orders decided."""

    def __init__(self, limits: RewriteLimits) -> None:
        self.limits = limits
        self._last: tuple[float, int] | None = None  # (seconds, orders decided) at the last sample
        self._quiet_since: float | None = None

    def observe(self, now_s: float, orders_decided: int) -> None:
        """A sample of the cumulative count. A count that went down (the counters were reset) or a
        clock that did not move gives no rate: the sample only starts a new interval."""
        last, self._last = self._last, (now_s, orders_decided)
        if last is None or now_s <= last[0] or orders_decided < last[1]:
            return
        rate = (orders_decided - last[1]) / (now_s - last[0])
        if rate > self.limits.quiet_orders_s:
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = last[0]  # quiet over the whole interval just measured

    def quiet_for_s(self, now_s: float) -> float:
        return 0.0 if self._quiet_since is None else now_s - self._quiet_since

    def decide(self, now_s: float, status: AofStatus) -> RewriteReason | None:
        """Whether to start a rewrite now."""
        if not status.enabled or status.forking:
            return None
        growth = status.growth_bytes
        if growth >= self.limits.growth_bytes_max:
            return RewriteReason.GROWTH_CAP
        if self.quiet_for_s(now_s) >= self.limits.quiet_s and self.limits.grown_enough_for_a_quiet_rewrite(status):
            return RewriteReason.QUIET
        return None
