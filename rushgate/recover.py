"""`rushgate recover`: rebuild Redis from Postgres after Redis lost its data."""

from __future__ import annotations

from dataclasses import dataclass

from persistence.database import connect as connect_database
from persistence.recovery import load_snapshot
from reservation.clock import wall_clock_ms
from reservation.keys import PERSISTER_GROUP
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import Settings, require_services


class RedisNotEmpty(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Recovered:
    skus: int
    stock_places: int
    orders: int
    live_holds: int
    idempotency_records: int


async def recover(store: RedisStore, settings: Settings, *, force: bool) -> Recovered:
    """Write back configuration, counters, orders, holds, purchase counters, idempotency and payments.

    Into a Redis that still holds data (``force``: it came back from an AOF that missed its last
    writes), the stream is drained first, so Postgres has everything Redis knows, then the
    partition's state is replaced, not merged: a key Postgres would not write (a purchase counter
    of an order cancelled since, a deadline of an order paid since) must not survive. The event
    stream, with the persister's group, and the outcome counters are kept.
    """
    _, database_url = require_services(settings)
    if await store.holds_any_key():
        if not force:
            raise RedisNotEmpty("Redis still holds rushgate data; use reconcile, or --force to overwrite it")
        await drain(store, settings, database_url)
        await store.clear_partition(keep=[store.keys.stream, store.keys.metrics])
    connection = await connect_database(database_url)
    try:
        snapshot = await load_snapshot(
            connection, now_ms=wall_clock_ms(), idempotency_ttl_ms=settings.idempotency_ttl_ms
        )
    finally:
        await connection.close()
    await store.restore(
        warehouses=snapshot.warehouses,
        dispatch=snapshot.dispatch,
        skus=snapshot.skus,
        blocklist=snapshot.blocklist,
        stock=snapshot.stock,
        orders=snapshot.orders,
        bought=snapshot.bought,
        idempotency=snapshot.idempotency,
        payments=snapshot.payments,
        cases=snapshot.cases,
    )
    await store.ensure_group(PERSISTER_GROUP)
    return Recovered(
        skus=len(snapshot.skus),
        stock_places=len(snapshot.stock),
        orders=len(snapshot.orders),
        live_holds=sum(1 for order in snapshot.orders if order.status == "pending_payment"),
        idempotency_records=len(snapshot.idempotency),
    )
