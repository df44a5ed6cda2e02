"""The whole story over HTTP: intake, payment, shipments, tracking, receipt, a completed exchange,
a refund that closes the order, and Postgres matching Redis at the end."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

from persistence.database import connect
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.conftest import admin_headers, gateway_headers
from tests.support import assert_ledger_matches


async def call(http: AsyncClient, method: str, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
    headers = kwargs.pop("headers", gateway_headers())
    response = await http.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, (method, path, response.text)
    body: dict[str, Any] = response.json()
    return body


async def seed(http: AsyncClient) -> None:
    admin = {"headers": admin_headers()}
    await call(http, "PUT", "/v1/warehouses/w1", json={"region": "eu", "name": "Berlin"}, **admin)
    await call(http, "PUT", "/v1/warehouses/w2", json={"region": "eu", "name": "Leipzig"}, **admin)
    await call(http, "PUT", "/v1/dispatch/eu", json={"warehouses": ["w1", "w2"]}, **admin)
    for sku, merchant, price in (("phone", "m1", 49900), ("case", "m2", 1500)):
        body = {"name": sku, "merchant_id": merchant, "price": price, "currency": "EUR"}
        await call(http, "PUT", f"/v1/skus/{sku}", json=body, **admin)
    await call(http, "PUT", "/v1/stock/phone/w1", json={"on_hand": 3}, **admin)
    await call(http, "PUT", "/v1/stock/case/w2", json={"on_hand": 10}, **admin)


async def stock(http: AsyncClient, sku: str) -> dict[str, tuple[int, int, int, int]]:
    body = await call(http, "GET", f"/v1/stock/{sku}", headers=admin_headers())
    return {
        level["warehouse_id"]: (level["available"], level["reserved"], level["committed"], level["on_hand"])
        for level in body["warehouses"]
    }


async def test_from_intake_to_a_completed_exchange_and_a_closed_refund_with_postgres_matching(
    http: AsyncClient, store: RedisStore, settings: Settings, database: str
) -> None:
    await seed(http)
    order_body = {
        "customer_id": "c1", "region": "eu", "order_type": "normal",
        "items": [{"sku": "phone", "qty": 1}, {"sku": "case", "qty": 2}],
    }  # fmt: skip
    order = await call(http, "POST", "/v1/orders", 201, json=order_body, headers=gateway_headers("story-1"))
    order_id, total = order["order_id"], order["total"]
    assert total == 49900 + 2 * 1500
    payment = {"payment_id": "pay-story-1", "amount": total, "method": "card"}
    await call(http, "POST", f"/v1/orders/{order_id}/payment", json=payment)

    for number, shipment in enumerate(order["shipments"]):
        ship = {"carrier": "DHL", "tracking_number": f"JD{number}"}
        shipped = await call(http, "POST", f"/v1/orders/{order_id}/shipments/{shipment['shipment_id']}/ship", json=ship)
    assert shipped["status"] == "shipped"
    phone_shipment = order["shipments"][0]["shipment_id"]
    for status, location in (("in_transit", "Berlin hub"), ("delayed", "Leipzig hub"), ("delivered", "Home")):
        event = {"status": status, "location": location, "occurred_at": "2030-03-01T10:00:00Z"}
        await call(http, "POST", f"/v1/orders/{order_id}/shipments/{phone_shipment}/events", json=event)
    completed = await call(http, "POST", f"/v1/orders/{order_id}/confirm-receipt")
    assert completed["status"] == "completed"
    assert [e["status"] for e in completed["shipments"][0]["track"]] == ["in_transit", "delayed", "delivered"]
    assert await stock(http, "phone") == {"w1": (2, 0, 0, 2)}

    exchange_body = {"kind": "exchange", "items": [{"sku": "phone", "qty": 1}], "reason": "dead pixel"}
    exchange = await call(http, "POST", f"/v1/orders/{order_id}/after-sales", 201, json=exchange_body)
    case_path = f"/v1/after-sales/{exchange['case_id']}"
    assert (await call(http, "GET", f"/v1/orders/{order_id}"))["status"] == "after_sales"
    await call(http, "POST", f"{case_path}/approve", json={"note": "replace it"}, headers=admin_headers())
    received = await call(
        http,
        "POST",
        f"{case_path}/return-received",
        json={"warehouse_id": "w1", "damaged": True},
        headers=admin_headers(),
    )
    assert received["status"] == "exchange_shipping"
    assert received["replacement"] == [{"sku": "phone", "warehouse_id": "w1", "qty": 1}]
    assert await stock(http, "phone") == {"w1": (1, 0, 1, 2)}  # damaged: not restocked; replacement committed
    done = await call(
        http, "POST", f"{case_path}/exchange-shipped", json={"carrier": "UPS", "tracking_number": "1Z"},
        headers=admin_headers(),
    )  # fmt: skip
    assert done["status"] == "succeeded"
    assert (await call(http, "GET", f"/v1/orders/{order_id}"))["status"] == "completed"
    assert await stock(http, "phone") == {"w1": (1, 0, 0, 1)}

    refund_body = {"kind": "return_refund", "items": [{"sku": "case", "qty": 2}], "reason": "wrong colour"}
    refund_case = await call(http, "POST", f"/v1/orders/{order_id}/after-sales", 201, json=refund_body)
    refund_path = f"/v1/after-sales/{refund_case['case_id']}"
    await call(http, "POST", f"{refund_path}/approve", headers=admin_headers())
    await call(http, "POST", f"{refund_path}/return-received", json={"warehouse_id": "w2"}, headers=admin_headers())
    assert await stock(http, "case") == {"w2": (10, 0, 0, 10)}  # back on the shelf
    refunded = await call(http, "POST", f"{refund_path}/refund", headers=admin_headers())
    assert refunded["refund"] == {
        "refund_id": f"{refund_case['case_id']}-refund",
        "amount": 3000,
        "reason": "wrong colour",
        "status": "succeeded",
    }
    closed = await call(http, "GET", f"/v1/orders/{order_id}")
    assert (closed["status"], closed["refunded_amount"]) == ("closed", 3000)
    cases = (await call(http, "GET", f"/v1/orders/{order_id}/after-sales"))["cases"]
    assert [(case["kind"], case["status"]) for case in cases] == [
        ("exchange", "succeeded"),
        ("return_refund", "succeeded"),
    ]
    late = await http.post(f"/v1/orders/{order_id}/after-sales", json=refund_body, headers=gateway_headers())
    assert (late.status_code, late.json()["current_status"]) == (409, "closed")

    await drain(store, settings, database)
    await assert_ledger_matches(store, database, ["phone", "case"])
    connection = await connect(database)
    try:
        row = await connection.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
        shipments = await connection.fetch("SELECT status, carrier FROM shipments WHERE order_id = $1", order_id)
        track = await connection.fetchval("SELECT count(*) FROM shipment_events WHERE shipment_id = $1", phone_shipment)
        case_rows = await connection.fetch(
            "SELECT case_id, kind, status, amount, damaged FROM after_sales_cases WHERE order_id = $1 ORDER BY case_id",
            order_id,
        )
        refund_rows = await connection.fetch(
            "SELECT refund_id, amount, status FROM refunds WHERE order_id = $1", order_id
        )
        kinds = await connection.fetch(
            "SELECT kind, sum(qty) AS units FROM stock_movements WHERE order_id = $1 GROUP BY kind", order_id
        )
    finally:
        await connection.close()
    assert (row["status"], row["refunded_amount"], row["completion"], row["paid_amount"]) == (
        "closed", 3000, "customer", total,
    )  # fmt: skip
    assert row["version"] == (await store.get_order(order_id)).version  # type: ignore[union-attr]
    assert sorted((r["status"], r["carrier"]) for r in shipments) == [("shipped", "DHL"), ("shipped", "DHL")]
    assert track == 3
    assert [(r["case_id"], r["kind"], r["status"], r["amount"], r["damaged"]) for r in case_rows] == [
        (exchange["case_id"], "exchange", "succeeded", 0, True),
        (refund_case["case_id"], "return_refund", "succeeded", 3000, False),
    ]
    assert [(r["refund_id"], r["amount"], r["status"]) for r in refund_rows] == [
        (f"{refund_case['case_id']}-refund", 3000, "succeeded")
    ]
    assert {r["kind"]: r["units"] for r in kinds} == {"reserve": 4, "commit": 4, "ship": 4, "restock": 2}
