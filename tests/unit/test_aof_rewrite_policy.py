"""The AOF rewrite policy: a quiet rewrite only after intake stayed quiet long enough and the file
doubled; a forced one at the growth cap whatever the load; never while Redis is forking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reservation.aof_rewrite import (
    MB,
    SAMPLE_GAP_S_MAX,
    AofStatus,
    RewriteLimits,
    RewritePolicy,
    RewriteReason,
    failure_backoff_s,
)

LIMITS = RewriteLimits(quiet_orders_per_s=100, quiet_s=10, growth_bytes_min=64 * MB, growth_bytes_max=2048 * MB)


def aof(
    *, grown_mb: float, base_mb: float = 0, forking: bool = False, enabled: bool = True, failed: int = 0
) -> AofStatus:
    base = int(base_mb * MB)
    return AofStatus(
        enabled=enabled,
        forking=forking,
        current_bytes=base + int(grown_mb * MB),
        base_bytes=base,
        failed_rewrites_in_a_row=failed,
    )


def policy_fed(rates: list[float], *, limits: RewriteLimits = LIMITS) -> tuple[RewritePolicy, float]:
    """A policy sampled once a second from t=0, intake running at each rate in turn; and the time now."""
    policy, decided, now_s = RewritePolicy(limits), 0.0, 0.0
    policy.observe(now_s, 0)
    for rate in rates:
        now_s, decided = now_s + 1, decided + rate
        policy.observe(now_s, int(decided))
    return policy, now_s


def test_a_quiet_spell_long_enough_after_the_file_doubled_gives_a_quiet_rewrite() -> None:
    policy, now_s = policy_fed([5_000] * 30 + [20] * 10)

    assert policy.quiet_for_s(now_s) == 10
    assert policy.decide(now_s, aof(grown_mb=500, base_mb=400)) is RewriteReason.QUIET


def test_a_quiet_spell_one_second_short_gives_nothing() -> None:
    policy, now_s = policy_fed([5_000] * 30 + [20] * 9)

    assert policy.decide(now_s, aof(grown_mb=1000)) is None


def test_one_busy_second_starts_the_quiet_spell_again() -> None:
    policy, now_s = policy_fed([0] * 30 + [101] + [0] * 9)

    assert policy.quiet_for_s(now_s) == 9
    assert policy.decide(now_s, aof(grown_mb=1000)) is None


def test_quiet_intake_waits_until_the_file_grew_by_its_base_size_and_the_minimum() -> None:
    policy, now_s = policy_fed([0] * 20)

    assert policy.decide(now_s, aof(grown_mb=63)) is None  # under the minimum
    assert policy.decide(now_s, aof(grown_mb=64)) is RewriteReason.QUIET
    assert policy.decide(now_s, aof(grown_mb=399, base_mb=400)) is None  # not doubled yet
    assert policy.decide(now_s, aof(grown_mb=400, base_mb=400)) is RewriteReason.QUIET


def test_busy_intake_defers_the_rewrite_until_the_growth_cap_then_forces_it() -> None:
    policy, now_s = policy_fed([20_000] * 120)

    assert policy.decide(now_s, aof(grown_mb=2047, base_mb=10)) is None
    assert policy.decide(now_s, aof(grown_mb=2048, base_mb=10)) is RewriteReason.GROWTH_CAP


def test_nothing_starts_while_redis_is_forking_or_without_an_aof() -> None:
    policy, now_s = policy_fed([0] * 20)

    assert policy.decide(now_s, aof(grown_mb=4096, forking=True)) is None
    assert policy.decide(now_s, aof(grown_mb=4096, enabled=False)) is None


def test_no_rate_before_the_second_sample_so_no_quiet_rewrite() -> None:
    policy = RewritePolicy(LIMITS)
    policy.observe(100.0, 0)

    assert policy.quiet_for_s(1000.0) == 0
    assert policy.decide(1000.0, aof(grown_mb=1000)) is None


def test_counters_reset_under_it_neither_break_nor_start_a_quiet_spell() -> None:
    busy = RewritePolicy(LIMITS)
    busy.observe(0, 50_000)
    busy.observe(1, 60_000)  # busy
    busy.observe(2, 10)  # counters reset (Redis restored): no rate
    assert busy.quiet_for_s(2) == 0

    quiet, now_s = policy_fed([50] * 5)
    quiet.observe(now_s + 1, 0)
    assert quiet.quiet_for_s(now_s + 1) == now_s + 1


def test_a_gap_between_samples_tells_nothing_so_the_quiet_time_starts_again() -> None:
    """A sweeper that could not sample for a while (Redis errors, the lock lost) must not average a
    burst away: 30,000 orders over 600 s is 50 a second, and may have been 1,000 a second for 30 s."""
    policy, now_s = policy_fed([0] * 20)
    policy.observe(now_s + 600, 30_000)

    assert policy.quiet_for_s(now_s + 600) == 0
    assert policy.decide(now_s + 600, aof(grown_mb=1000)) is None
    for second in range(1, 11):
        policy.observe(now_s + 600 + second, 30_000)
    assert policy.decide(now_s + 610, aof(grown_mb=1000)) is RewriteReason.QUIET


def test_after_a_failed_rewrite_it_waits_a_minute_doubling_for_each_failure_in_a_row() -> None:
    policy, now_s = policy_fed([0] * 20)
    assert policy.decide(now_s, aof(grown_mb=4096, failed=1)) is None
    assert policy.decide(now_s + 59, aof(grown_mb=4096, failed=1)) is None
    assert policy.decide(now_s + 60, aof(grown_mb=4096, failed=1)) is RewriteReason.GROWTH_CAP

    assert policy.decide(now_s + 61, aof(grown_mb=4096, failed=2)) is None  # it failed again: two minutes
    assert policy.decide(now_s + 180, aof(grown_mb=4096, failed=2)) is None
    assert policy.decide(now_s + 181, aof(grown_mb=4096, failed=2)) is RewriteReason.GROWTH_CAP
    assert policy.decide(now_s + 182, aof(grown_mb=4096, failed=0)) is RewriteReason.GROWTH_CAP  # one succeeded


def test_the_backoff_doubles_up_to_an_hour() -> None:
    assert [failure_backoff_s(count) for count in (1, 2, 3, 6, 7, 50)] == [60, 120, 240, 1920, 3600, 3600]


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=5), st.integers(min_value=0, max_value=1_000)),
        min_size=1,
        max_size=40,
    )
)
def test_quiet_time_is_the_time_since_the_last_busy_interval_ended(intervals: list[tuple[int, int]]) -> None:
    """Against a brute-force model: sampled at integer seconds, with (seconds, orders) per interval
    (a gap over SAMPLE_GAP_S_MAX counts as busy)."""
    limits = RewriteLimits(quiet_orders_per_s=100, quiet_s=10, growth_bytes_min=MB, growth_bytes_max=2 * MB)
    policy, now_s, decided = RewritePolicy(limits), 0, 0
    policy.observe(now_s, decided)
    quiet_since = 0  # the model: the end of the last interval over the rate, else the first sample
    for seconds, orders in intervals:
        now_s, decided = now_s + seconds, decided + orders
        policy.observe(now_s, decided)
        if seconds > SAMPLE_GAP_S_MAX or orders / seconds > limits.quiet_orders_per_s:
            quiet_since = now_s

    assert policy.quiet_for_s(now_s) == now_s - quiet_since
    reason = policy.decide(now_s, aof(grown_mb=1))
    assert (reason is RewriteReason.QUIET) == (now_s - quiet_since >= limits.quiet_s)
