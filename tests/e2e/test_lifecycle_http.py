"""The lifecycle over HTTP: shipments, logistics events, receipt, and 409s that name the current status."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

from tests.conftest import admin_headers, gateway_headers
from tests.support import seed_over_http


async def paid_order(http: AsyncClient, key: str = "k1", qty: int = 1) -> dict[str, Any]:
    body = {"customer_id": "c1", "region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": qty}]}
    created = await http.post("/v1/orders", json=body, headers=gateway_headers(key))
    assert created.status_code == 201, created.text
    order = created.json()
    payment = {"payment_id": f"p-{key}", "amount": order["total"], "method": "card"}
    paid = await http.post(f"/v1/orders/{order['order_id']}/payment", json=payment, headers=gateway_headers())
    assert paid.status_code == 200, paid.text
    result: dict[str, Any] = paid.json()
    return result


async def test_an_order_ships_is_tracked_and_completed_over_http(http: AsyncClient) -> None:
    await seed_over_http(http, admin_headers(), on_hand=10)
    order = await paid_order(http, qty=2)
    order_id, shipment_id = order["order_id"], order["shipments"][0]["shipment_id"]
    assert "status" not in order["shipments"][0]  # unshipped: the intake body is unchanged

    shipped = await http.post(
        f"/v1/orders/{order_id}/shipments/{shipment_id}/ship",
        json={"carrier": "DHL", "tracking_number": "JD0001"},
        headers=gateway_headers(),
    )
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["status"] == "shipped"
    stock = (await http.get("/v1/stock/s1", headers=admin_headers())).json()["warehouses"][0]
    assert (stock["on_hand"], stock["committed"], stock["available"]) == (8, 0, 8)

    event = {"status": "delayed", "location": "Hub Leipzig", "occurred_at": "2030-01-01T08:00:00Z"}
    tracked = await http.post(
        f"/v1/orders/{order_id}/shipments/{shipment_id}/events", json=event, headers=gateway_headers()
    )
    assert tracked.status_code == 200, tracked.text
    current = (await http.get(f"/v1/orders/{order_id}", headers=gateway_headers())).json()
    (shipment,) = current["shipments"]
    assert (shipment["status"], shipment["carrier"], shipment["tracking_number"]) == ("shipped", "DHL", "JD0001")
    assert [(e["status"], e["location"]) for e in shipment["track"]] == [("delayed", "Hub Leipzig")]
    assert shipment["exception"] == "delayed"
    assert current["logistics_exceptions"] == [{"shipment_id": shipment_id, "status": "delayed"}]
    assert "auto_confirm_at" in current

    completed = await http.post(f"/v1/orders/{order_id}/confirm-receipt", headers=gateway_headers())
    assert completed.status_code == 200, completed.text
    assert (completed.json()["status"], completed.json()["completion"]) == ("completed", "customer")


async def test_an_illegal_transition_is_a_409_naming_the_current_status(http: AsyncClient) -> None:
    await seed_over_http(http, admin_headers(), on_hand=10)
    order = await paid_order(http)
    order_id = order["order_id"]

    early = await http.post(f"/v1/orders/{order_id}/confirm-receipt", headers=gateway_headers())
    assert early.status_code == 409
    problem = early.json()
    assert problem["type"] == "https://rushgate.dev/problems/invalid-transition"
    assert problem["current_status"] == "paid"
    assert problem["detail"] == "an order that is paid cannot confirm_receipt"
    assert early.headers["content-type"].startswith("application/problem+json")

    cancelled = await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "merchant"}, headers=gateway_headers())
    assert cancelled.status_code == 200
    ship = await http.post(
        f"/v1/orders/{order_id}/shipments/{order['shipments'][0]['shipment_id']}/ship",
        json={"carrier": "DHL", "tracking_number": "JD0001"},
        headers=gateway_headers(),
    )
    assert (ship.status_code, ship.json()["current_status"]) == (409, "cancelled")
    again = await http.post(f"/v1/orders/{order_id}/cancel", headers=gateway_headers())
    assert again.status_code == 200  # cancelling a cancelled order changes nothing


async def test_lifecycle_bodies_are_decoded_strictly(http: AsyncClient) -> None:
    await seed_over_http(http, admin_headers(), on_hand=10)
    order = await paid_order(http)
    path = f"/v1/orders/{order['order_id']}/shipments/{order['shipments'][0]['shipment_id']}"
    unknown = await http.post(
        f"{path}/ship", json={"carrier": "DHL", "tracking_number": "1", "x": 1}, headers=gateway_headers()
    )
    naive = await http.post(
        f"{path}/events",
        json={"status": "lost", "location": "A", "occurred_at": "2030-01-01T08:00:00"},
        headers=gateway_headers(),
    )
    assert (unknown.status_code, naive.status_code) == (400, 400)
