"""The cyclic garbage collector's settings for rushgate's long-running processes.

CPython collects its youngest generation whenever the count of container objects allocated
and not yet freed passes 700, and each full collection walks every object of the process,
the ~70,000 of an API worker's modules and app included. Measured with ``gc.callbacks`` in
each API worker through one harness run of closed loop and batch intake (2026-12-01,
``python -m benchmarks.e2e --skip-bare --skip-rowlock --skip-openloop --skip-expiry
--rounds 1 --duration 15``): 1,549 young, 141 middle and 13 full collections, 2.4 s of a
worker's CPU, the full ones up to ~150 ms each. A batch request alone makes ~1,500 objects
that live as long as the request. With the start-up heap frozen, full collections took
0.1-0.2 s; with the young generation's threshold at 10,000 as well, the whole run made
three collections in all (a request's objects are freed by reference counting before the
count reaches it). Draining 50,000 stream entries, the persister spent 4 us an order in
the collector before, 0.4 after, and 23 instead of 28 us an order in all.

Cyclic garbage still gets collected, 10,000 container objects later than by default.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations, net of frees, that start a collection of the youngest generation (CPython: 700)."""


def settle() -> None:
    """Once a process has built what it keeps (modules, app, clients): collect, move every
    object left to the permanent generation, which no collection walks again, and raise the
    young generation's threshold. Later calls do nothing."""
    young, middle, old = gc.get_threshold()
    if young == YOUNG_THRESHOLD:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
