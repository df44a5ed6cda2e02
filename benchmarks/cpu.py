"""Where the machine's CPU goes during a run: CPU seconds per process group, per accepted order.

Each group is a process we started and all its descendants (uvicorn's workers, Postgres's
backends). The load generator is measured from the harness's own reaped children (wrk
is waited for before the meter stops), the harness itself from its own process. A process
that starts during the run counts in full; one that ends during it loses its share.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from typing import Any

import psutil

LOAD_GENERATOR = "load generator"
HARNESS = "harness"


def _tree_cpu(root_pid: int) -> dict[int, float]:
    """User plus system CPU seconds of a process and its descendants, by pid."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def _reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Start before a run, stop after it: CPU seconds of every group over the run."""

    def __init__(self, groups: Mapping[str, int]) -> None:
        self.groups = dict(groups)
        self._started: dict[str, dict[int, float]] = {}
        self._children_started = 0.0
        self._own_started = 0.0
        self._wall_started = 0.0

    def start(self) -> None:
        self._started = {name: _tree_cpu(pid) for name, pid in self.groups.items()}
        self._children_started = _reaped_children_cpu()
        self._own_started = time.process_time()
        self._wall_started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall_s = time.monotonic() - self._wall_started
        seconds: dict[str, float] = {}
        for name, pid in self.groups.items():
            before = self._started.get(name, {})
            seconds[name] = sum(now - before.get(child, 0.0) for child, now in _tree_cpu(pid).items())
        seconds[LOAD_GENERATOR] = _reaped_children_cpu() - self._children_started
        seconds[HARNESS] = time.process_time() - self._own_started
        capacity_s = wall_s * (os.cpu_count() or 1)
        busy = sum(seconds.values()) / capacity_s
        return {"wall_s": wall_s, "capacity_s": capacity_s, "cpu_s": seconds, "busy": busy}


def per_order_us(cpu: Mapping[str, Any], orders: int) -> dict[str, float]:
    """CPU microseconds per accepted order, by group, plus the machine's idle share the same way."""
    if orders <= 0:
        return {}
    result = {name: seconds * 1e6 / orders for name, seconds in cpu["cpu_s"].items()}
    result["idle"] = max(cpu["capacity_s"] - sum(cpu["cpu_s"].values()), 0.0) * 1e6 / orders
    return result
