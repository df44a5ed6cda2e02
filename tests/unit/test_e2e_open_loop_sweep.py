"""The harness's open-loop sweep: its fractions, and the rate it reports the p99 target held up to."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from benchmarks.e2e import _fractions, _render_open_loop_sweep

QUIET = {"redis_forks": 0, "redis_child_running_at_start": False}


def run(fraction: float, p99_ms: float, *, non_2xx: int = 0, connection_errors: int = 0) -> dict[str, Any]:
    return {
        "fraction_of_peak": fraction,
        "rate_target": 10_000 * fraction,
        "latency_ms": {"p50": 1.0, "p99": p99_ms, "p999": p99_ms},
        "non_2xx": non_2xx,
        "connection_errors": connection_errors,
        "unfinished": 0,
        "redis": QUIET,
    }


def test_fractions_are_sorted_and_empty_means_none() -> None:
    assert _fractions("0.5, 0.3") == [0.3, 0.5]
    assert _fractions("") == []


@pytest.mark.parametrize("text", ["0", "1.5", "-0.2", "half"])
def test_a_fraction_outside_zero_to_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _fractions(text)


def test_the_highest_rate_within_the_target_is_reported() -> None:
    lines = _render_open_loop_sweep(run(0.8, 40.0), [run(0.3, 4.0), run(0.5, 9.5)])
    assert lines[-1] == "  p99 <= 10 ms up to 5,000 req/s (50% of peak) of the rates measured"


@pytest.mark.parametrize("failure", [{"non_2xx": 3}, {"connection_errors": 1}])
def test_a_rate_with_failed_requests_does_not_count_as_met(failure: dict[str, int]) -> None:
    lines = _render_open_loop_sweep(run(0.8, 40.0), [run(0.3, 4.0), run(0.5, 5.0, **failure)])
    assert lines[-1] == "  p99 <= 10 ms up to 3,000 req/s (30% of peak) of the rates measured"


def test_no_rate_within_the_target_is_said_plainly() -> None:
    lines = _render_open_loop_sweep(run(0.8, 40.0), [run(0.3, 12.0)])
    assert lines[-1] == "  p99 <= 10 ms at none of the rates measured"
