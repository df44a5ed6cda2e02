"""A Redis host crash with `appendfsync everysec`: loss bounded, reconcile names it, recover repairs it.

SIGKILL of the process keeps the page cache, so nothing is lost that way
(test_redis_outage.py). A host crash keeps only what reached the disk. This test
emulates one honestly: with orders flowing it copies the AOF directory (multi-part:
manifest, base, incr) as the last fsync would have left it, keeps taking orders —
some persisted by the persister, some not — then SIGKILLs Redis, puts the copy back
with a torn last command (what a crash mid-write leaves; `aof-load-truncated` is on
by default) and restarts Redis on the same port and data dir.

The persister runs only when the test says (an in-process drain), so the test knows
exactly which acknowledged changes Postgres has and which it never saw.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from intake.schemas import PaymentIn
from intake.service import CatalogService, OrderService
from reservation.records import OrderRecord
from reservation.store import RedisStore, StockLevels
from reservation.store import connect as connect_redis
from rushgate.embedded import EmbeddedRedis
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.conftest import Services, make_settings
from tests.processes import eventually, run_command
from tests.support import add_sku, assert_ledger_matches, assert_stock_invariants, order_in, setup_region

pytestmark = pytest.mark.slow

SKUS = ("s1", "s2")
State = tuple[str, int]  # status, version


@dataclass
class Ledger:
    """What the test's clients were told: every order's latest acknowledged document, by order id."""

    orders: OrderService
    rng: random.Random = field(default_factory=lambda: random.Random(20261130))
    documents: dict[str, OrderRecord] = field(default_factory=dict)
    keys: dict[str, tuple[str, str, dict[str, int]]] = field(default_factory=dict)  # order id -> key, customer, items
    count: int = 0

    async def place(self) -> None:
        self.count += 1
        customer, items = f"c{self.count % 37}", {self.rng.choice(SKUS): self.rng.randint(1, 3)}
        key = f"k{self.count}"
        placed = await self.orders.place(order_in(customer, items, allow_split=True), key)
        self.documents[placed.order.order_id] = placed.order
        self.keys[placed.order.order_id] = (key, customer, items)

    async def pay(self, order_id: str) -> None:
        total = self.documents[order_id].total
        payment = PaymentIn(payment_id=f"p-{order_id}", amount=total, method="card")
        self.documents[order_id] = await self.orders.pay(order_id, payment)

    async def cancel(self, order_id: str) -> None:
        self.documents[order_id] = await self.orders.cancel(order_id, "customer")

    def pending(self) -> list[str]:
        return [order_id for order_id, order in self.documents.items() if order.status == "pending_payment"]

    def paid(self) -> list[str]:
        return [order_id for order_id, order in self.documents.items() if order.status == "paid"]

    def states(self) -> dict[str, State]:
        return {order_id: (order.status, order.version) for order_id, order in self.documents.items()}

    async def flow(self, *, new: int, paid: int = 0, cancelled: int = 0, refunded: int = 0) -> None:
        """Concurrent traffic: new orders, payments and cancellations of pending ones, cancels of paid ones."""
        pending = self.rng.sample(self.pending(), paid + cancelled)
        work: list[Awaitable[None]] = [self.place() for _ in range(new)]
        work += [self.pay(order_id) for order_id in pending[:paid]]
        work += [self.cancel(order_id) for order_id in pending[paid:]]
        work += [self.cancel(order_id) for order_id in self.rng.sample(self.paid(), refunded)]
        await asyncio.gather(*work)


async def counters(store: RedisStore) -> dict[tuple[str, str], StockLevels]:
    return await assert_stock_invariants(store, SKUS)


async def aof_flushed(store: RedisStore) -> bool:
    """Every acknowledged write is in the AOF file (everysec may postpone a write while an fsync runs)."""
    info = await store.client.info("persistence")
    return int(info["aof_buffer_length"]) == 0 and int(info["aof_rewrite_in_progress"]) == 0


def incr_file(aof_dir: Path) -> Path:
    """The incremental file the manifest names last (multi-part AOF: base + incr files + manifest)."""
    names = [line.split()[1] for line in (aof_dir / "appendonly.aof.manifest").read_text().splitlines()
             if line.split()[-1] == "i"]  # fmt: skip
    return aof_dir / names[-1]


def purchase_counters(documents: Iterable[OrderRecord]) -> dict[str, dict[str, int]]:
    """Units per customer and SKU in pending and paid orders (what the purchase limit counts)."""
    bought: dict[str, dict[str, int]] = {}
    for order in documents:
        if order.status in ("pending_payment", "paid"):
            for line in order.lines:
                skus = bought.setdefault(order.customer_id, {})
                skus[line.sku] = skus.get(line.sku, 0) + line.qty
    return bought


def first_command_length(resp: bytes) -> int:
    """Bytes of the first RESP command (an array of bulk strings) in an AOF tail."""
    position = resp.index(b"\r\n")
    assert resp[:1] == b"*", resp[:20]
    for _ in range(int(resp[1:position])):
        end = resp.index(b"\r\n", position + 2)
        length = int(resp[position + 3 : end])
        position = end + 2 + length
    return position + 2


def expected_differences(
    at_copy: dict[str, State],
    persisted: dict[str, State],
    stock_at_copy: dict[tuple[str, str], StockLevels],
    stock_persisted: dict[tuple[str, str], StockLevels],
) -> list[tuple[str, str, Any, Any]]:
    """What reconcile must report: Redis as the copy left it against Postgres as the persister left it."""
    found: list[tuple[str, str, Any, Any]] = []
    for key in sorted(set(stock_at_copy) | set(stock_persisted)):
        before, after = stock_at_copy.get(key), stock_persisted.get(key)
        if before != after:
            assert before is not None and after is not None
            levels = ("available", "reserved", "committed", "on_hand")
            found.append(("stock", "/".join(key), {name: getattr(before, name) for name in levels},
                          {name: getattr(after, name) for name in levels}))  # fmt: skip

    def as_dict(state: State | None) -> dict[str, Any] | None:
        return {"status": state[0], "version": state[1]} if state else None

    live = {order_id for order_id, state in at_copy.items() if state[0] == "pending_payment"}
    live |= {order_id for order_id, state in persisted.items() if state[0] == "pending_payment"}
    for order_id in sorted(live):
        redis = at_copy.get(order_id) if at_copy.get(order_id, ("",))[0] == "pending_payment" else None
        if redis != persisted.get(order_id):
            found.append(("hold", order_id, as_dict(redis), as_dict(persisted.get(order_id))))
    for order_id in sorted(set(persisted) - live):
        if at_copy.get(order_id) != persisted[order_id]:
            found.append(("order", order_id, as_dict(at_copy.get(order_id)), as_dict(persisted[order_id])))
    return found


async def test_everysec_host_crash_loses_only_the_unsynced_tail_reconcile_names_it_and_recover_repairs_it(
    services: Services, database: str, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="everysec").start()
    own = Services(server.url, services.database_url)
    settings: Settings = make_settings(own)
    client = connect_redis(server.url, pool_size_max=64, timeout_ms=5000)
    store = RedisStore(client)
    try:
        await store.load_scripts()
        catalog, orders = CatalogService(store), OrderService(store, settings)
        await setup_region(catalog, "eu", ["w1", "w2"])
        await add_sku(catalog, "s1", price=700, stock={"w1": 40, "w2": 1000})
        await add_sku(catalog, "s2", price=1500, stock={"w1": 1000})
        ledger = Ledger(orders)

        await ledger.flow(new=120)
        await ledger.flow(new=60, paid=30, cancelled=15)
        await drain(store, settings, database)
        await ledger.flow(new=20, paid=5, cancelled=5)  # in Redis and its stream, not yet in Postgres
        await eventually(lambda: aof_flushed(store), "the AOF buffer to reach the file")
        copy = tmp_path / "aof-at-last-fsync"
        shutil.copytree(server.data_dir / "appendonlydir", copy)  # the disk as the last fsync left it
        at_copy, stock_at_copy = ledger.states(), await counters(store)
        copied_length = incr_file(copy).stat().st_size

        await ledger.flow(new=80, paid=25, cancelled=10, refunded=5)  # acknowledged after the last fsync ...
        await drain(store, settings, database)  # ... and persisted: Postgres knows, Redis will not
        persisted, stock_persisted = ledger.states(), await counters(store)
        bought_persisted = purchase_counters(ledger.documents.values())
        await assert_ledger_matches(store, database, SKUS)
        await ledger.flow(new=15, paid=5, cancelled=3)  # acknowledged, never persisted: lost for good
        never_persisted = {order_id for order_id in ledger.documents if order_id not in persisted}
        await eventually(lambda: aof_flushed(store), "the AOF buffer to reach the file")

        live_incr = incr_file(server.data_dir / "appendonlydir").read_bytes()
        server.kill()  # the host goes down: only the copied files survive
        assert (copy / "appendonly.aof.manifest").read_text() == (
            server.data_dir / "appendonlydir" / "appendonly.aof.manifest"
        ).read_text(), "no AOF rewrite may happen in between, or the copy would not be the live files' prefix"
        unsynced = live_incr[copied_length:]
        torn = unsynced[: first_command_length(unsynced) // 2]
        assert torn, "there must be writes after the copy"
        shutil.rmtree(server.data_dir / "appendonlydir")
        shutil.copytree(copy, server.data_dir / "appendonlydir")
        with incr_file(server.data_dir / "appendonlydir").open("ab") as tail:
            tail.write(torn)  # a command cut in half by the crash
        server.start()  # same port, same data dir
        assert "loaded anyway because aof-load-truncated is enabled" in (server.data_dir / "server.log").read_text()
        await orders.close()
        await client.aclose()  # its pooled connections died with the server
        client = connect_redis(server.url, pool_size_max=64, timeout_ms=5000)
        store = RedisStore(client)
        await store.load_scripts()
        assert await counters(store) == stock_at_copy
        assert await store.get_orders(sorted(never_persisted)) == [None] * len(never_persisted)

        reconciled = run_command(own, "reconcile", "--json")
        assert reconciled.returncode == 1, reconciled.stdout + reconciled.stderr
        report = json.loads(reconciled.stdout)["differences"]
        expected = expected_differences(at_copy, persisted, stock_at_copy, stock_persisted)
        assert [(item["kind"], item["key"], item["redis"], item["postgres"]) for item in report] == expected
        kinds = {kind for kind, _, _, _ in expected}
        assert kinds == {"stock", "hold", "order"}, kinds

        recovered = run_command(own, "recover", "--force")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        await store.load_scripts()
        after = run_command(own, "reconcile")
        assert after.returncode == 0, after.stdout + after.stderr
        assert "0 differences" in after.stdout
        await assert_ledger_matches(store, database, SKUS)
        assert await counters(store) == stock_persisted
        recovered_orders = await store.get_orders(sorted(persisted))
        assert {order.order_id: (order.status, order.version) for order in recovered_orders if order} == persisted
        assert await store.expiry_backlog() == sum(1 for state in persisted.values() if state[0] == "pending_payment")
        for customer in {order.customer_id for order in ledger.documents.values()}:
            found = await store.hash_get_all(store.keys.customer_counters(customer))
            assert {sku: int(units) for sku, units in found.items() if int(units)} == bought_persisted.get(customer, {})
        orders = OrderService(store, settings)
        for order_id in sorted(persisted)[:: len(persisted) // 20]:  # a retried order is replayed, not placed again
            key, customer, items = ledger.keys[order_id]
            replay = await orders.place(order_in(customer, items, allow_split=True), key)
            assert (replay.created, replay.order.order_id) == (False, order_id)
        await orders.close()
    finally:
        await client.aclose()
        server.stop()


def test_first_command_length_reads_one_resp_array() -> None:
    tail = b"*2\r\n$4\r\nINCR\r\n$1\r\nx\r\n*1\r\n$4\r\nEXEC\r\n"
    assert first_command_length(tail) == len(b"*2\r\n$4\r\nINCR\r\n$1\r\nx\r\n")
