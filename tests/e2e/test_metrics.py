"""GET /v1/metrics: Prometheus text an operator can scrape."""

from __future__ import annotations

from httpx import AsyncClient

from tests.conftest import admin_headers, gateway_headers
from tests.support import seed_over_http

ORDER = {"region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 1}]}


async def test_metrics_count_decided_orders_by_outcome_and_show_the_backlogs(http: AsyncClient) -> None:
    await seed_over_http(http, admin_headers(), on_hand=3)
    for number in range(2):
        await http.post("/v1/orders", json=ORDER | {"customer_id": f"c{number}"}, headers=gateway_headers(f"k{number}"))
    too_many = {"region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 2}], "customer_id": "c2"}
    await http.post("/v1/orders", json=too_many, headers=gateway_headers("k2"))  # one unit left: sold out, not flagged
    await http.post("/v1/orders", json=ORDER | {"customer_id": "c0"}, headers=gateway_headers("k0"))  # a replay
    response = await http.get("/v1/metrics", headers=admin_headers())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    assert {
        'rushgate_orders_total{outcome="accepted"} 2',
        'rushgate_orders_total{outcome="sold_out"} 1',
        'rushgate_orders_total{outcome="replayed"} 1',
        "rushgate_holds_outstanding 2",
        "rushgate_sold_out_skus 0",
    } <= lines
    assert any(line.startswith("rushgate_stream_backlog ") for line in lines)
    assert (await http.get("/v1/metrics")).status_code == 401
