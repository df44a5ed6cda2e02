"""Listing a customer's orders (Postgres merged with what is not persisted yet), refunds of
cancelled orders, and the order-timeouts settings read, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient

from intake.app import create_app
from persistence.queries import order_index
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.conftest import ManualClock, admin_headers, gateway_headers
from tests.support import seed_over_http


@pytest.fixture
async def indexed_http(
    store: RedisStore, settings: Settings, clock: ManualClock, database: str
) -> AsyncIterator[AsyncClient]:
    """The app with its Postgres order index, lifespan running in one task."""
    application = create_app(settings, clock=clock, order_index=lambda: order_index(database))
    started, finished = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        async with application.lifespan():
            started.set()
            await finished.wait()

    lifespan = asyncio.create_task(run_lifespan())
    await asyncio.wait_for(started.wait(), 30)
    try:
        async with AsyncClient(transport=ASGITransport(app=application), base_url="http://rushgate") as client:
            yield client
    finally:
        finished.set()
        await lifespan


async def place(http: AsyncClient, key: str, customer_id: str = "c1") -> dict[str, Any]:
    body = {"customer_id": customer_id, "region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 1}]}
    response = await http.post("/v1/orders", json=body, headers=gateway_headers(key))
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def pay(http: AsyncClient, order: dict[str, Any]) -> None:
    body = {"payment_id": f"p-{order['order_id']}", "amount": order["total"], "method": "card"}
    response = await http.post(f"/v1/orders/{order['order_id']}/payment", json=body, headers=gateway_headers())
    assert response.status_code == 200, response.text


async def listing(http: AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/v1/orders", params=params, headers=gateway_headers())
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_a_customer_pages_through_persisted_and_not_yet_persisted_orders_newest_first(
    indexed_http: AsyncClient, store: RedisStore, settings: Settings, database: str, clock: ManualClock
) -> None:
    http = indexed_http
    await seed_over_http(http, admin_headers(), on_hand=20)
    placed = []
    for number in range(3):
        placed.append(await place(http, f"k{number}"))
        clock.advance(1)
    await place(http, "other", customer_id="c2")
    await drain(store, settings, database)
    for number in range(3, 5):  # made after the persister ran: only in Redis and the stream
        placed.append(await place(http, f"k{number}"))
        clock.advance(1)
    await pay(http, placed[0])  # paid after persisting: Postgres still says pending_payment

    seen, cursor, pages = [], None, 0
    while True:
        page = await listing(http, customer_id="c1", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [order["order_id"] for order in page["orders"]]
        pages += 1
        cursor = page.get("next_cursor")
        if cursor is None:
            break
    assert seen == [order["order_id"] for order in reversed(placed)]
    assert pages == 3

    paid = await listing(http, customer_id="c1", status="paid")
    assert [order["order_id"] for order in paid["orders"]] == [placed[0]["order_id"]]
    assert paid["orders"][0]["status"] == "paid"
    pending = await listing(http, customer_id="c1", status="pending_payment")
    assert {order["order_id"] for order in pending["orders"]} == {order["order_id"] for order in placed[1:]}
    assert (await listing(http, customer_id="nobody"))["orders"] == []


async def test_listing_parameters_are_checked(indexed_http: AsyncClient) -> None:
    for params in ({}, {"customer_id": "c1", "status": "lost"}, {"customer_id": "c1", "limit": 0}):
        response = await indexed_http.get("/v1/orders", params=params, headers=gateway_headers())
        assert response.status_code == 400, (params, response.text)


async def test_an_api_without_an_order_index_answers_503(http: AsyncClient) -> None:
    response = await http.get("/v1/orders", params={"customer_id": "c1"}, headers=gateway_headers())
    assert response.status_code == 503
    assert response.json()["type"].endswith("/dependency-unavailable")


async def test_a_merchant_cancel_of_a_paid_order_records_a_refund_that_closes_it_when_paid_out(
    indexed_http: AsyncClient,
) -> None:
    http = indexed_http
    await seed_over_http(http, admin_headers(), on_hand=5)
    order = await place(http, "k1")
    unpaid = await http.post(f"/v1/orders/{order['order_id']}/refund", headers=gateway_headers())
    assert (unpaid.status_code, unpaid.json()["current_status"]) == (409, "pending_payment")
    await pay(http, order)
    cancelled = await http.post(
        f"/v1/orders/{order['order_id']}/cancel", json={"reason": "merchant"}, headers=gateway_headers()
    )
    body = cancelled.json()
    assert (body["status"], body["cancel_reason"], body["refund"]) == (
        "cancelled", "merchant", {"status": "refund_pending", "amount": order["total"]},
    )  # fmt: skip

    refunded = await http.post(f"/v1/orders/{order['order_id']}/refund", headers=admin_headers())
    again = await http.post(f"/v1/orders/{order['order_id']}/refund", headers=admin_headers())

    assert refunded.status_code == 200, refunded.text
    assert (refunded.json()["status"], refunded.json()["refund"]["status"]) == ("closed", "refunded")
    assert refunded.json()["refunded_amount"] == order["total"]
    assert again.json() == refunded.json()
    stock = (await http.get("/v1/stock/s1", headers=admin_headers())).json()["warehouses"][0]
    assert (stock["available"], stock["committed"]) == (5, 0)


async def test_the_order_timeouts_are_readable(http: AsyncClient, settings: Settings) -> None:
    response = await http.get("/v1/settings/order-timeouts", headers=admin_headers())
    assert response.status_code == 200
    assert response.json() == {
        "flash_hold_ttl_s": settings.flash_hold_ttl_s,
        "normal_hold_ttl_s": settings.normal_hold_ttl_s,
        "auto_confirm_days": 7,
        "after_sales_window_days": 15,
    }
    assert (await http.get("/v1/settings/order-timeouts", headers=gateway_headers())).status_code == 200  # scope read
    assert (await http.get("/v1/settings/order-timeouts")).status_code == 401
