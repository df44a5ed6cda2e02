"""The usual approach: reserve with a Postgres row lock, one transaction per order.

POST /v1/orders decodes the same ``OrderIn`` body, then in one transaction runs, for each
line (in SKU order, so two orders never deadlock)::

    UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2

and inserts the order row; it commits with the server's default ``synchronous_commit``
(on), so every order waits for its WAL flush while the hot SKU's row stays locked. A
line that does not fit rolls the transaction back and answers 409; a reused
Idempotency-Key answers the stored order (the unique index decides). The body is the
same ``OrderOut`` shape rushgate answers.

Environment: ``ROWLOCK_DATABASE_URL`` (required; its own database, the tables ``stock``
and ``orders`` are created at start-up), ``ROWLOCK_POOL_SIZE_MAX`` (connections per
worker, default 32), ``ROWLOCK_SEED`` (``sku:available`` pairs, comma-separated, inserted
when missing; default ``hot:1000000000``).

Run: ``ROWLOCK_DATABASE_URL=... python -m benchmarks.uvicorn_serve --port 8001 --workers 2``
``benchmarks.apps.rowlock:app``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import ClientException
from litestar.params import HeaderParameter, JSONBody

from intake.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    OrderIn,
    OrderItemOut,
    OrderOut,
    ShipmentItemOut,
    ShipmentOut,
)
from intake.service import from_ms, new_order_id

HOLD_TTL_MS = 1_800_000
SCHEMA_LOCK_ID = 0x726F776C  # "rowl": one worker creates the tables, the others wait
POOL_SIZE_MAX_DEFAULT = 32
SEED_DEFAULT = "hot:1000000000"

_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    sku           text    PRIMARY KEY,
    available     bigint  NOT NULL CHECK (available >= 0),
    unit_price    bigint  NOT NULL,
    currency      text    NOT NULL,
    warehouse_id  text    NOT NULL,
    merchant_id   text    NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id         text        PRIMARY KEY,
    idempotency_key  text        NOT NULL UNIQUE,
    customer_id      text        NOT NULL,
    region           text        NOT NULL,
    order_type       text        NOT NULL,
    status           text        NOT NULL,
    total            bigint      NOT NULL,
    currency         text        NOT NULL,
    body             bytea       NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);
"""

_RESERVE_LINE = """
UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2
RETURNING unit_price, currency, warehouse_id, merchant_id
"""

_INSERT_ORDER = """
INSERT INTO orders (order_id, idempotency_key, customer_id, region, order_type, status, total, currency, body,
                    created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, 'pending_payment', $6, $7, $8, $9, $10)
"""

_encoder = msgspec.json.Encoder()


class SoldOutError(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku


def _seed_rows(seed: str) -> list[tuple[str, int]]:
    rows = []
    for pair in seed.split(","):
        sku, _, available = pair.strip().partition(":")
        rows.append((sku, int(available)))
    return rows


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    url = os.environ["ROWLOCK_DATABASE_URL"]
    pool_size_max = int(os.environ.get("ROWLOCK_POOL_SIZE_MAX", POOL_SIZE_MAX_DEFAULT))
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_ID)
            await connection.execute(SCHEMA)
            await connection.executemany(
                "INSERT INTO stock VALUES ($1, $2, 49900, 'EUR', 'w1', 'm1') ON CONFLICT (sku) DO NOTHING",
                _seed_rows(os.environ.get("ROWLOCK_SEED", SEED_DEFAULT)),
            )
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(url, min_size=pool_size_max, max_size=pool_size_max)
    assert pool is not None
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


async def _reserve(pool: asyncpg.Pool, order: OrderIn, idempotency_key: str) -> tuple[bool, bytes]:
    """(created, response body); raises SoldOutError, or replays the order stored under the key."""
    now_ms = time.time_ns() // 1_000_000
    order_id = new_order_id(now_ms)
    async with pool.acquire() as connection:
        try:
            async with connection.transaction():
                lines: list[tuple[str, int, Any]] = []
                for item in sorted(order.items, key=lambda line: line.sku):
                    row = await connection.fetchrow(_RESERVE_LINE, item.sku, item.qty)
                    if row is None:
                        raise SoldOutError(item.sku)
                    lines.append((item.sku, item.qty, row))
                total = sum(qty * row["unit_price"] for _, qty, row in lines)
                body = _order_body(order, order_id, now_ms, total, lines)
                await connection.execute(
                    _INSERT_ORDER, order_id, idempotency_key, order.customer_id, order.region, order.order_type,
                    total, lines[0][2]["currency"], body, from_ms(now_ms), from_ms(now_ms + HOLD_TTL_MS),
                )  # fmt: skip
                return True, body
        except asyncpg.UniqueViolationError:
            stored = await connection.fetchval("SELECT body FROM orders WHERE idempotency_key = $1", idempotency_key)
            assert stored is not None, "a unique violation other than the idempotency key (order id collision)"
            return False, bytes(stored)


def _order_body(order: OrderIn, order_id: str, now_ms: int, total: int, lines: list[tuple[str, int, Any]]) -> bytes:
    shipments: dict[tuple[str, str], list[ShipmentItemOut]] = {}
    for sku, qty, row in lines:
        shipments.setdefault((row["merchant_id"], row["warehouse_id"]), []).append(ShipmentItemOut(sku, qty))
    out = OrderOut(
        order_id=order_id,
        status="pending_payment",
        customer_id=order.customer_id,
        region=order.region,
        order_type=order.order_type,
        created_at=from_ms(now_ms),
        expires_at=from_ms(now_ms + HOLD_TTL_MS),
        total=total,
        currency=lines[0][2]["currency"],
        items=[OrderItemOut(sku, qty, row["unit_price"]) for sku, qty, row in lines],
        shipments=[
            ShipmentOut(f"{order_id}-{number}", warehouse_id, merchant_id, items)
            for number, ((merchant_id, warehouse_id), items) in enumerate(shipments.items(), start=1)
        ],
    )
    return _encoder.encode(out)


@post("/v1/orders", status_code=201)
async def create_order(
    request: Request[Any, Any, Any],
    data: JSONBody[OrderIn],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
) -> Response[bytes]:
    if idempotency_key is None or not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ClientException("a valid Idempotency-Key header is required")
    if len({item.sku for item in data.items}) != len(data.items):
        raise ClientException("each sku may appear once per order")
    try:
        created, body = await _reserve(request.app.state.pool, data, idempotency_key)
    except SoldOutError as error:
        problem = {"type": "https://rushgate.dev/problems/sold-out", "title": "Sold out", "status": 409}
        return Response(_encoder.encode({**problem, "sku": error.sku}), status_code=409,
                        media_type="application/problem+json")  # fmt: skip
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return Response(body, status_code=201, media_type="application/json", headers=headers)


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> dict[str, str]:
    await request.app.state.pool.fetchval("SELECT 1")
    return {"status": "ok"}


app = Litestar(route_handlers=[create_order, healthz], lifespan=[lifespan], debug=False, openapi_config=None)
