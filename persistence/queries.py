"""Read models the API asks Postgres for: a customer's orders, newest first, one page at a time.

The API never waits on Postgres for an order's state (Redis answers that); Postgres is the
index of which orders a customer has, kept complete by the persister.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

OrderLookup = Callable[[str, str | None, str | None, int], Awaitable[list[str]]]
"""(customer_id, status or None, before order id or None, limit) -> order ids, newest first."""

POOL_SIZE_MAX = 4
QUERY_TIMEOUT_S = 5.0


async def customer_order_ids(
    connection: asyncpg.Connection, customer_id: str, status: str | None, before: str | None, limit: int
) -> list[str]:
    """Order ids are time-ordered, so "newest first" is order_id descending and the cursor is an id."""
    rows = await connection.fetch(
        "SELECT order_id FROM orders WHERE customer_id = $1 AND ($2::text IS NULL OR status = $2)"
        " AND ($3::text IS NULL OR order_id < $3) ORDER BY order_id DESC LIMIT $4",
        customer_id,
        status,
        before,
        limit,
        timeout=QUERY_TIMEOUT_S,
    )
    return [row["order_id"] for row in rows]


@asynccontextmanager
async def order_index(url: str) -> AsyncIterator[OrderLookup]:
    """customer_order_ids on a small pool of its own, for the API's order listing."""
    pool = await asyncpg.create_pool(url, min_size=0, max_size=POOL_SIZE_MAX, timeout=10)
    assert pool is not None

    async def lookup(customer_id: str, status: str | None, before: str | None, limit: int) -> list[str]:
        async with pool.acquire() as connection:
            return await customer_order_ids(connection, customer_id, status, before, limit)

    try:
        yield lookup
    finally:
        await pool.close()
