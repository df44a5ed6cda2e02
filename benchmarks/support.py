"""Helpers of the pytest-benchmark suites: running coroutines on an owned loop, order requests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from intake.service import new_order_id
from reservation.store import OrderRequest, RedisStore, ReserveResult

T = TypeVar("T")

STREAM_LENGTH_MAX = 100_000_000
IDEMPOTENCY_TTL_MS = 86_400_000
HOLD_TTL_MS = 1_800_000


def run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the benchmark's own loop."""
    return loop.run_until_complete(coroutine)


def order_requests(
    sku: str, now_ms: int, numbers: Iterator[int], count: int, hold_ttl_ms: int = HOLD_TTL_MS
) -> list[OrderRequest]:
    """count single-line orders with fresh idempotency keys and customers."""
    requests = []
    for number in itertools.islice(numbers, count):
        key = f"bench-{number}"
        request = OrderRequest(
            order_id=new_order_id(now_ms), idempotency_key=key, fingerprint=key, customer_id=f"c-{number}",
            region="eu", order_type="flash", hold_ttl_ms=hold_ttl_ms, allow_split=False, items=((sku, 1),),
        )  # fmt: skip
        requests.append(request)
    return requests


async def reserve(store: RedisStore, requests: list[OrderRequest], now_ms: int) -> list[ReserveResult]:
    return await store.reserve(
        requests, now_ms=now_ms, stream_length_max=STREAM_LENGTH_MAX, idempotency_ttl_ms=IDEMPOTENCY_TTL_MS
    )
