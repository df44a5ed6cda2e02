"""Signed payment callbacks: HMAC over timestamp and body, a tolerance, replays change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from httpx import ASGITransport, AsyncClient

from intake.callbacks import sign
from intake.service import CatalogService
from reservation.store import RedisStore
from reservation.sweeper import sweep_once
from tests.conftest import ManualClock, Services, gateway_headers, make_settings, running_app
from tests.support import add_sku, setup_region

SECRET = b"whsec_provider_secret_0123456789"


@pytest.fixture
async def http(services: Services, store: RedisStore, clock: ManualClock) -> AsyncIterator[AsyncClient]:
    settings = make_settings(
        services, RUSHGATE_PAYMENT_PROVIDERS=f"acme:{SECRET.decode()},other:another_secret_0123456789"
    )
    async with (
        running_app(settings, clock) as app,
        AsyncClient(transport=ASGITransport(app=app), base_url="http://rushgate") as client,
    ):
        yield client


async def place(http: AsyncClient, catalog: CatalogService, key: str = "k1") -> dict[str, Any]:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", price=700, stock={"w1": 1})
    body = {"customer_id": "c1", "region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 1}]}
    response = await http.post("/v1/orders", json=body, headers=gateway_headers(key))
    assert response.status_code == 201
    return dict(response.json())


def callback(order_id: str, payment_id: str = "pay-1", amount: int = 700) -> bytes:
    return msgspec.json.encode({"order_id": order_id, "payment_id": payment_id, "amount": amount, "method": "card"})


def signed(body: bytes, timestamp_s: int, secret: bytes = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Rushgate-Timestamp": str(timestamp_s),
        "Rushgate-Signature": sign(secret, timestamp_s, body),
    }


async def test_a_signed_callback_pays_the_order_and_its_replay_changes_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, clock: ManualClock
) -> None:
    order = await place(http, catalog)
    body, now_s = callback(order["order_id"]), clock.now_ms // 1000
    paid = await http.post("/v1/payments/callbacks/acme", content=body, headers=signed(body, now_s))
    assert (paid.status_code, paid.json()["status"], paid.json()["payment"]["payment_id"]) == (200, "paid", "pay-1")
    events = await store.stream_length()
    replayed = await http.post("/v1/payments/callbacks/acme", content=body, headers=signed(body, now_s + 5))
    assert (replayed.status_code, replayed.json()["status"]) == (200, "paid")
    assert await store.stream_length() == events
    assert (await store.stock_levels("s1"))["w1"].committed == 1


@pytest.mark.parametrize("tampering", ["bad-signature", "other-provider-secret", "body-changed", "stale", "future",
                                       "unknown-provider", "no-headers"])  # fmt: skip
async def test_a_callback_that_is_not_properly_signed_is_refused_and_changes_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, clock: ManualClock, tampering: str
) -> None:
    order = await place(http, catalog)
    body, now_s, provider = callback(order["order_id"]), clock.now_ms // 1000, "acme"
    headers = signed(body, now_s)
    if tampering == "bad-signature":
        headers["Rushgate-Signature"] = "v1=" + "0" * 64
    elif tampering == "other-provider-secret":
        headers = signed(body, now_s, b"another_secret_0123456789")
    elif tampering == "body-changed":
        body = callback(order["order_id"], amount=1)
    elif tampering == "stale":
        headers = signed(body, now_s - 301)
    elif tampering == "future":
        headers = signed(body, now_s + 301)
    elif tampering == "unknown-provider":
        provider = "nobody"
    else:
        headers = {"Content-Type": "application/json"}
    events = await store.stream_length()
    response = await http.post(f"/v1/payments/callbacks/{provider}", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["type"].endswith("/invalid-signature")
    assert SECRET.decode() not in response.text
    assert await store.stream_length() == events
    assert (await store.stock_levels("s1"))["w1"].reserved == 1


async def test_a_late_callback_follows_the_late_payment_policy(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, clock: ManualClock
) -> None:
    order = await place(http, catalog)
    clock.advance(30 * 60 * 1000)
    assert await sweep_once(store, now_ms=clock.now_ms, batch_size_max=10) == 1
    body = callback(order["order_id"])
    response = await http.post("/v1/payments/callbacks/acme", content=body, headers=signed(body, clock.now_ms // 1000))
    assert (response.status_code, response.json()["status"]) == (200, "paid")  # the unit was still there
