"""The service seen from outside, for the two ends of a run: seeding the catalog and checking it.

Plain HTTP (requests) against the public API and plain SQL against Postgres: nothing of
rushgate is imported, so the load test sees only what any client or operator could see.
None of these calls is counted in locust's statistics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gevent.pool
import requests
from gates import Level, Place
from requests.adapters import HTTPAdapter

HTTP_TIMEOUT_S = 10.0
HTTP_CONCURRENCY = 32


class ServiceError(Exception):
    """The service answered something the load test cannot work with."""


def raise_unless(response: requests.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise ServiceError(f"{response.request.method} {response.request.path_url} -> {response.status_code}: "
                           f"{response.text[:300]}")  # fmt: skip
    return response.json() if response.content else None


@dataclass(frozen=True)
class Catalog:
    """What one run sells: a region of its own with two warehouses, and its hot SKUs."""

    run_id: str
    region: str
    warehouses: tuple[str, ...]
    skus: tuple[str, ...]
    prices: dict[str, int]
    initial: dict[Place, int]

    @classmethod
    def plan(cls, run_id: str, hot_skus: int, stock_per_sku: int) -> Catalog:
        region = f"lt-{run_id}"
        warehouses = (f"lt-{run_id}-w1", f"lt-{run_id}-w2")
        skus = tuple(f"lt-{run_id}-sku{index}" for index in range(1, hot_skus + 1))
        first = stock_per_sku * 3 // 5  # the first warehouse in the dispatch order holds the larger part
        initial = {}
        for sku in skus:
            initial[(sku, warehouses[0])] = first
            initial[(sku, warehouses[1])] = stock_per_sku - first
        prices = {sku: 4_990 + 1_000 * index for index, sku in enumerate(skus)}
        return cls(run_id, region, warehouses, skus, prices, initial)


class Service:
    """Admin-side HTTP client of one rushgate deployment."""

    def __init__(self, base_url: str, admin_token: str, gateway_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=HTTP_CONCURRENCY)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.gateway = {"Authorization": f"Bearer {gateway_token}"}

    def request(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> requests.Response:
        return self.session.request(method, self.base_url + path, headers=headers, json=body, timeout=HTTP_TIMEOUT_S)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.request("GET", "/readyz", {}).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.base_url}/readyz did not answer 200 within {timeout_s:.0f} s")
            gevent.sleep(0.2)

    def seed(self, catalog: Catalog, per_customer_limit: int) -> None:
        """Warehouses, the region's dispatch rule, the SKUs and their stock: all PUTs, so a rerun may repeat them."""
        body: dict[str, Any]
        for warehouse_id in catalog.warehouses:
            body = {"region": catalog.region, "name": f"load test {warehouse_id}"}
            raise_unless(self.request("PUT", f"/v1/warehouses/{warehouse_id}", self.admin, body), 200)
        body = {"warehouses": list(catalog.warehouses)}
        raise_unless(self.request("PUT", f"/v1/dispatch/{catalog.region}", self.admin, body), 200)
        for sku in catalog.skus:
            body = {"name": f"Hot item {sku}", "merchant_id": "lt-merchant", "price": catalog.prices[sku],
                    "currency": "EUR", "per_customer_limit": per_customer_limit}  # fmt: skip
            raise_unless(self.request("PUT", f"/v1/skus/{sku}", self.admin, body), 200)
        for (sku, warehouse_id), on_hand in catalog.initial.items():
            body = {"on_hand": on_hand}
            raise_unless(self.request("PUT", f"/v1/stock/{sku}/{warehouse_id}", self.admin, body), 200)

    def stock(self, skus: Iterable[str]) -> dict[Place, Level]:
        levels = {}
        for sku in skus:
            answer = raise_unless(self.request("GET", f"/v1/stock/{sku}", self.admin), 200)
            for row in answer["warehouses"]:
                place = (sku, row["warehouse_id"])
                levels[place] = Level(row["on_hand"], row["available"], row["reserved"], row["committed"])
        return levels

    def order_statuses(self, order_ids: Iterable[str]) -> dict[str, str]:
        """GET /v1/orders/{id} for each order, concurrently; absent ones map to 'missing'."""

        def fetch(order_id: str) -> tuple[str, str]:
            response = self.request("GET", f"/v1/orders/{order_id}", self.gateway)
            if response.status_code == 404:
                return order_id, "missing"
            return order_id, raise_unless(response, 200)["status"]

        pool = gevent.pool.Pool(HTTP_CONCURRENCY)
        return dict(pool.imap_unordered(fetch, list(order_ids)))

    def replay(self, method: str, path: str, body: Any, idempotency_key: str | None) -> requests.Response:
        """Send a request whose outcome the run did not learn again, with the same keys."""
        headers = dict(self.gateway)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self.request(method, path, headers, body)


async def _read_postgres(database_url: str, skus: list[str]) -> tuple[dict[str, str], dict[Place, Level]]:
    import asyncpg  # only the Postgres check needs it; a run without DATABASE_URL never imports it

    try:
        connection = await asyncpg.connect(database_url, timeout=HTTP_TIMEOUT_S)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise ServiceError(f"cannot connect to Postgres: {error}") from error
    try:
        orders = await connection.fetch(
            "SELECT order_id, status FROM orders WHERE order_id IN"
            " (SELECT order_id FROM order_items WHERE sku = ANY($1::text[]))",
            skus,
        )
        ledger = await connection.fetch(
            "SELECT sku, warehouse_id, sum(on_hand_delta) AS h, sum(available_delta) AS a,"
            " sum(reserved_delta) AS r, sum(committed_delta) AS c"
            " FROM stock_movements WHERE sku = ANY($1::text[]) GROUP BY sku, warehouse_id",
            skus,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise ServiceError(f"cannot read Postgres: {error}") from error
    finally:
        await connection.close()
    statuses = {row["order_id"]: row["status"] for row in orders}
    levels = {(row["sku"], row["warehouse_id"]): Level(int(row["h"]), int(row["a"]), int(row["r"]), int(row["c"]))
              for row in ledger}  # fmt: skip
    return statuses, levels


def read_postgres(database_url: str, skus: Iterable[str]) -> tuple[dict[str, str], dict[Place, Level]]:
    """Order statuses of every order holding one of the SKUs, and the stock ledger summed per place."""
    return asyncio.run(_read_postgres(database_url, list(skus)))
