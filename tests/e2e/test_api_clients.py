"""API clients with scopes, managed by `rushgate clients`, enforced by every worker, revocable."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from intake.auth import required_scopes, secret_digest
from persistence.clients import digest
from reservation.store import RedisStore
from tests.conftest import Services, admin_headers
from tests.processes import eventually, run_command, running, serve_command, service_environment, wait_ready
from tests.support import seed_over_http

ORDER = {"customer_id": "c1", "region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 1}]}


def clients(services: Services, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_command(services, "clients", *arguments)


def create(services: Services, name: str, *scopes: str) -> tuple[str, str]:
    result = clients(services, "create", "--name", name, *[part for scope in scopes for part in ("--scope", scope)])
    assert result.returncode == 0, result.stderr
    found = re.search(r"client (\S+) .*\nsecret \(shown once\): (\S+)", result.stdout)
    assert found is not None, result.stdout
    return found.group(1), found.group(2)


def bearer(secret: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@pytest.mark.slow
async def test_scoped_clients_get_what_their_scopes_allow_and_a_revoked_one_is_refused(
    services: Services, store: RedisStore, database: str, tmp_path: Path
) -> None:
    shop_id, shop = create(services, "shop", "gateway")
    _, reader = create(services, "dashboard", "read")
    _, payer = create(services, "psp", "payments")
    command, port = serve_command(workers=2)
    with running(command, service_environment(services), tmp_path / "serve.log") as server:
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, server, tmp_path / "serve.log")
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            await seed_over_http(http, admin_headers(), on_hand=10)
            created = await http.post("/v1/orders", json=ORDER, headers=bearer(shop, "k1"))
            assert created.status_code == 201, created.text
            order_id = created.json()["order_id"]
            assert (await http.post("/v1/orders", json=ORDER, headers=bearer(reader, "k2"))).status_code == 403
            assert (await http.get(f"/v1/orders/{order_id}", headers=bearer(reader))).status_code == 200
            assert (await http.get("/v1/stock/s1", headers=bearer(reader))).status_code == 200
            assert (await http.put("/v1/stock/s1/w1", json={"on_hand": 1}, headers=bearer(reader))).status_code == 403
            assert (await http.post("/v1/orders", json=ORDER, headers=bearer(payer, "k3"))).status_code == 403
            payment = {"payment_id": "p1", "amount": 100, "method": "card"}
            paid = await http.post(f"/v1/orders/{order_id}/payment", json=payment, headers=bearer(payer))
            assert (paid.status_code, paid.json()["status"]) == (200, "paid")
            unknown = await http.get(f"/v1/orders/{order_id}", headers=bearer("rg_not-a-real-secret"))
            assert unknown.status_code == 401

            assert clients(services, "revoke", shop_id).returncode == 0

            async def refused() -> bool:
                # Both workers must refuse: ask with a fresh connection each time.
                answers = [
                    (
                        await http.get(f"/v1/orders/{order_id}", headers=bearer(shop) | {"Connection": "close"})
                    ).status_code
                    for _ in range(4)
                ]
                return answers == [401] * 4

            await eventually(refused, "every worker to refuse the revoked client", timeout_s=5)
    listed = clients(services, "list").stdout
    assert re.search(rf"{shop_id}\s+shop\s+gateway\s+revoked", listed), listed
    assert clients(services, "revoke", shop_id).returncode == 1  # already revoked


def test_the_api_and_the_store_digest_secrets_alike() -> None:
    assert secret_digest(b"rg_example") == digest("rg_example")


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("POST", "/v1/orders", {"gateway", "admin"}),
        ("POST", "/v1/orders:batch", {"gateway", "admin"}),
        ("GET", "/v1/orders/o1", {"gateway", "read", "admin"}),
        ("POST", "/v1/orders/o1/payment", {"payments", "gateway", "admin"}),
        ("POST", "/v1/orders/o1/cancel", {"gateway", "admin"}),
        ("GET", "/v1/orders", {"gateway", "read", "admin"}),
        ("POST", "/v1/orders/o1/shipments/o1-1/ship", {"gateway", "admin"}),
        ("POST", "/v1/orders/o1/confirm-receipt", {"gateway", "admin"}),
        ("POST", "/v1/orders/o1/after-sales", {"gateway", "admin"}),
        ("POST", "/v1/orders/o1/refund", {"payments", "gateway", "admin"}),
        ("GET", "/v1/after-sales/o1-r1", {"gateway", "read", "admin"}),
        ("POST", "/v1/after-sales/o1-r1/approve", {"admin"}),
        ("POST", "/v1/after-sales/o1-r1/refund", {"payments", "admin"}),
        ("GET", "/v1/settings/order-timeouts", {"admin", "read"}),
        ("PUT", "/v1/skus/s1", {"admin"}),
        ("GET", "/v1/stock/s1", {"admin", "read"}),
        ("GET", "/v1/audit", {"admin"}),
        ("POST", "/v1/payments/callbacks/acme", None),  # signed by the provider instead
        ("GET", "/healthz", None),
        ("GET", "/schema/openapi.json", None),
    ],
)
def test_each_path_asks_for_the_documented_scopes(method: str, path: str, scopes: set[str] | None) -> None:
    assert required_scopes(method, path) == (frozenset(scopes) if scopes is not None else None)
