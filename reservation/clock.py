"""Milliseconds since the epoch, the unit of every time the scripts and events carry.

Conversions are exact (integer arithmetic on timedelta): a float timestamp can land a
millisecond short, and what Postgres stores must come back as the same millisecond.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def moment_of(milliseconds: int) -> datetime:
    """The UTC datetime of an epoch-millisecond value."""
    return EPOCH + milliseconds * MILLISECOND


def milliseconds_of(moment: datetime) -> int:
    """The epoch milliseconds of an aware datetime."""
    return (moment - EPOCH) // MILLISECOND
