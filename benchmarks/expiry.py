"""Expiry phase: many unpaid holds reach their deadline; the real sweeper process releases them.

Holds are created straight through ``RedisStore.reserve`` (batches of ``BATCH_SIZE`` orders,
a few calls in flight), each with its own ``hold_ttl_ms`` so that the deadlines fall evenly
over ``spread_s`` seconds starting after the last hold is created: when the first deadline
passes, every hold is still outstanding. A spread of 0 gives them all the same deadline
(the worst burst). The release lag of an order is ``updated_ms - expires_ms`` of its
document in Redis once the sweeper has cancelled it: the same clock (the Redis host's
wall clock as seen by the sweeper) stamps both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.openloop import percentile
from intake.service import new_order_id
from reservation.outcomes import ReserveCode
from reservation.store import OrderRequest, RedisStore

BATCH_SIZE = 100
CALLS_IN_FLIGHT = 4
CALIBRATION_HOLDS = 2000
CALIBRATION_TTL_MS = 3_600_000
LEAD_S_MIN = 3.0
LEAD_FACTOR = 1.5
RELEASE_TIMEOUT_S = 120.0
READ_CHUNK = 1000
STREAM_LENGTH_MAX = 100_000_000
IDEMPOTENCY_TTL_MS = 86_400_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _request(run_id: str, number: int, sku: str, now_ms: int, hold_ttl_ms: int) -> OrderRequest:
    key = f"exp-{run_id}-{number}"
    return OrderRequest(
        order_id=new_order_id(now_ms),
        idempotency_key=key,
        fingerprint=key,
        customer_id=f"exp-{run_id}-{number}",
        region="eu",
        order_type="flash",
        hold_ttl_ms=hold_ttl_ms,
        allow_split=False,
        items=((sku, 1),),
    )


async def _reserve_batch(store: RedisStore, requests: Sequence[OrderRequest], now_ms: int) -> list[str]:
    results = await store.reserve(
        requests, now_ms=now_ms, stream_length_max=STREAM_LENGTH_MAX, idempotency_ttl_ms=IDEMPOTENCY_TTL_MS
    )
    refused = [result for result in results if result.code is not ReserveCode.ACCEPTED]
    assert not refused, f"expiry phase: {len(refused)} holds refused, first {refused[0]}"
    return [result.order.order_id for result in results if result.order is not None]


async def create_holds(
    store: RedisStore, *, run_id: str, sku: str, count: int, first_number: int, deadline_of: Callable[[int], int]
) -> tuple[list[str], int]:
    """Create count holds; deadline_of(index) gives each one's deadline. Returns (order ids, late holds)."""
    order_ids: list[str] = []
    late = 0
    index = 0
    while index < count:
        calls = []
        for _ in range(CALLS_IN_FLIGHT):
            if index >= count:
                break
            now_ms = wall_ms()
            requests = []
            for offset in range(index, min(index + BATCH_SIZE, count)):
                hold_ttl_ms = deadline_of(offset) - now_ms
                if hold_ttl_ms < 1:
                    late += 1
                    hold_ttl_ms = 1
                requests.append(_request(run_id, first_number + offset, sku, now_ms, hold_ttl_ms))
            index += len(requests)
            calls.append(_reserve_batch(store, requests, now_ms))
        for ids in await asyncio.gather(*calls):
            order_ids.extend(ids)
    return order_ids, late


async def run_expiry_phase(store: RedisStore, *, run_id: str, sku: str, holds: int, spread_s: float) -> dict[str, Any]:
    # Calibrate the creation rate with holds that do not expire during the phase.
    started = time.monotonic()
    await create_holds(
        store, run_id=run_id, sku=sku, count=CALIBRATION_HOLDS, first_number=0,
        deadline_of=lambda _: wall_ms() + CALIBRATION_TTL_MS,
    )  # fmt: skip
    rate = CALIBRATION_HOLDS / (time.monotonic() - started)
    lead_ms = int(max(LEAD_S_MIN, LEAD_FACTOR * holds / rate) * 1000)
    first_deadline_ms = wall_ms() + lead_ms
    spread_ms = int(spread_s * 1000)

    def deadline_of(index: int) -> int:
        return first_deadline_ms + (spread_ms * index // max(1, holds - 1) if holds > 1 else 0)

    created_at = time.monotonic()
    order_ids, late = await create_holds(
        store, run_id=run_id, sku=sku, count=holds, first_number=CALIBRATION_HOLDS, deadline_of=deadline_of
    )
    creation_s = time.monotonic() - created_at
    outstanding_before = await store.expiry_backlog()
    last_deadline_ms = deadline_of(holds - 1)
    await asyncio.sleep(max(0.0, (first_deadline_ms - wall_ms()) / 1000))
    outstanding_at_first_deadline = await store.expiry_backlog()
    cleared_ms = await _wait_until_swept(store, last_deadline_ms)
    return {
        "holds": holds,
        "spread_s": spread_s,
        "creation_s": creation_s,
        "creation_rate": holds / creation_s,
        "created_late": late,
        "outstanding_after_creation": outstanding_before,
        "outstanding_at_first_deadline": outstanding_at_first_deadline,
        "swept_s_after_last_deadline": None if cleared_ms is None else (cleared_ms - last_deadline_ms) / 1000,
        **(await release_lags(store, order_ids)),
    }


async def _wait_until_swept(store: RedisStore, last_deadline_ms: int) -> int | None:
    """Wall-clock ms when no hold due by last_deadline_ms is left in the expiry set; None on timeout."""
    expiry_key = store.keys.expiry
    while True:
        now_ms = wall_ms()
        if now_ms >= last_deadline_ms and await store.client.zcount(expiry_key, "-inf", last_deadline_ms) == 0:
            return now_ms
        if now_ms > last_deadline_ms + RELEASE_TIMEOUT_S * 1000:
            return None
        await asyncio.sleep(0.02)


async def release_lags(store: RedisStore, order_ids: Sequence[str]) -> dict[str, Any]:
    """Release lag (updated_ms - expires_ms) of every order the sweeper cancelled."""
    lags: list[int] = []
    not_released = 0
    for start in range(0, len(order_ids), READ_CHUNK):
        for order in await store.get_orders(order_ids[start : start + READ_CHUNK]):
            if order is not None and order.status == "cancelled" and order.cancel_reason == "payment_timeout":
                lags.append(order.updated_ms - order.expires_ms)
            else:
                not_released += 1
    lags.sort()
    as_float = [float(lag) for lag in lags]
    return {
        "released": len(lags),
        "not_released": not_released,
        "released_early": sum(1 for lag in lags if lag < 0),
        "lag_ms": {
            "p50": percentile(as_float, 50),
            "p99": percentile(as_float, 99),
            "p999": percentile(as_float, 99.9),
            "max": as_float[-1] if as_float else None,
            "mean": sum(as_float) / len(as_float) if as_float else None,
        },
    }
