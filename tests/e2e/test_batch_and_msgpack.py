"""Batch intake, MessagePack bodies and strict decoding over HTTP."""

from __future__ import annotations

from typing import Any

import msgspec
from httpx import AsyncClient

from intake.schemas import OrderOut
from intake.service import CatalogService
from reservation.store import RedisStore
from tests.conftest import admin_headers, gateway_headers
from tests.support import add_sku, setup_region

MSGPACK = "application/msgpack"


async def seed(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "plenty", price=100, stock={"w1": 100})
    await add_sku(catalog, "last-two", price=700, stock={"w1": 2})


def order(key: str, customer: str, items: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "customer_id": customer,
        "region": "eu",
        "order_type": "flash",
        "items": [{"sku": sku, "qty": qty} for sku, qty in items.items()],
        **extra,
    }


def kind(result: dict[str, Any]) -> str:
    return str(result["problem"]["type"]).rsplit("/", 1)[1]


async def test_a_batch_with_good_bad_sold_out_and_replayed_orders_answers_once_per_order_in_order(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seed(catalog)
    first = await http.post(
        "/v1/orders",
        json={"customer_id": "c0", "region": "eu", "order_type": "flash", "items": [{"sku": "plenty", "qty": 1}]},
        headers=gateway_headers("earlier"),
    )
    assert first.status_code == 201
    orders = [
        order("b1", "c1", {"plenty": 2}),
        order("b2", "c2", {"last-two": 3}),  # sold out: only two left
        order("b3", "c3", {"plenty": 1, "last-two": 2}),
        order("b4", "c4", {"nope": 1}),  # unknown sku
        order("earlier", "c0", {"plenty": 1}),  # a retry of the single order above
        order("b6", "c6", {"last-two": 1}),  # sold out: b3 took the last two
        order("b1", "c1", {"plenty": 5}),  # the key of b1 with another body
    ]
    response = await http.post("/v1/orders:batch", json={"orders": orders}, headers=gateway_headers())
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 409, 201, 422, 201, 409, 422]
    assert kind(results[1]) == "sold-out" and results[1]["problem"]["sku"] == "last-two"
    assert kind(results[3]) == "invalid-request" and results[3]["problem"]["sku"] == "nope"
    assert results[4]["order"]["order_id"] == first.json()["order_id"]
    assert kind(results[5]) == "sold-out"
    assert kind(results[6]) == "idempotency-key-reused"
    assert [results[index]["order"]["customer_id"] for index in (0, 2)] == ["c1", "c3"]
    levels = await store.stock_levels("plenty")
    assert levels["w1"].reserved == 1 + 2 + 1
    assert (await store.stock_levels("last-two"))["w1"].available == 0


async def test_an_order_with_duplicate_sku_lines_fails_alone_inside_its_batch(
    http: AsyncClient, catalog: CatalogService
) -> None:
    await seed(catalog)
    duplicated = order("d1", "c1", {"plenty": 1})
    duplicated["items"].append({"sku": "plenty", "qty": 1})
    batch = {"orders": [duplicated, order("d2", "c2", {"plenty": 1})]}
    results = (await http.post("/v1/orders:batch", json=batch, headers=gateway_headers())).json()["results"]
    assert [result["status"] for result in results] == [422, 201]


async def test_a_malformed_batch_is_refused_whole_and_holds_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seed(catalog)
    batch = {"orders": [order("m1", "c1", {"plenty": 1}), order("m2", "c2", {"plenty": 0})]}
    response = await http.post("/v1/orders:batch", json=batch, headers=gateway_headers())
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    too_many = {"orders": [order(f"k{number}", "c", {"plenty": 1}) for number in range(1001)]}
    assert (await http.post("/v1/orders:batch", json=too_many, headers=gateway_headers())).status_code == 400
    assert (await store.stock_levels("plenty"))["w1"].reserved == 0


async def test_a_batch_needs_a_gateway_token(http: AsyncClient, catalog: CatalogService) -> None:
    await seed(catalog)
    response = await http.post("/v1/orders:batch", json={"orders": [order("a", "c", {"plenty": 1})]})
    assert response.status_code == 401


async def test_messagepack_and_json_give_the_same_outcomes(http: AsyncClient, catalog: CatalogService) -> None:
    await seed(catalog)
    outcomes = {}
    for encoding in ("json", "msgpack"):
        body = {"customer_id": f"c-{encoding}", "region": "eu", "order_type": "flash",
                "items": [{"sku": "last-two", "qty": 1}]}  # fmt: skip
        headers = gateway_headers(f"key-{encoding}")
        if encoding == "msgpack":
            headers |= {"Content-Type": MSGPACK, "Accept": MSGPACK}
            response = await http.post("/v1/orders", content=msgspec.msgpack.encode(body), headers=headers)
            assert response.headers["content-type"] == MSGPACK
            decoded = msgspec.msgpack.decode(response.content, type=OrderOut)
        else:
            response = await http.post("/v1/orders", json=body, headers=headers)
            decoded = msgspec.json.decode(response.content, type=OrderOut)
        assert response.status_code == 201
        outcomes[encoding] = msgspec.structs.replace(
            decoded,
            order_id="",
            customer_id="",
            shipments=[msgspec.structs.replace(shipment, shipment_id="") for shipment in decoded.shipments],
        )
    assert outcomes["msgpack"] == outcomes["json"]
    batch = {"orders": [order("mp-1", "c9", {"last-two": 1}), order("mp-2", "c9", {"last-two": 1})]}
    headers = gateway_headers() | {"Content-Type": MSGPACK, "Accept": MSGPACK}
    response = await http.post("/v1/orders:batch", content=msgspec.msgpack.encode(batch), headers=headers)
    results = msgspec.msgpack.decode(response.content)["results"]
    assert [result["status"] for result in results] == [409, 409]  # both units went above
    assert results[0]["problem"]["sku"] == "last-two"


async def test_bodies_are_decoded_strictly(http: AsyncClient, catalog: CatalogService) -> None:
    await seed(catalog)
    body = {"customer_id": "c1", "region": "eu", "order_type": "flash", "items": [{"sku": "plenty", "qty": "1"}]}
    response = await http.post("/v1/orders", json=body, headers=gateway_headers("strict"))
    assert response.status_code == 400
    assert "Expected `int`" in response.json()["detail"]
    headers = gateway_headers("strict") | {"Content-Type": "text/plain"}
    response = await http.post("/v1/orders", content=b"customer_id=c1", headers=headers)
    assert (response.status_code, response.json()["type"].rsplit("/", 1)[1]) == (415, "unsupported-media-type")
    garbage = gateway_headers("strict") | {"Content-Type": MSGPACK}
    assert (await http.post("/v1/orders", content=b"\xc1\xc1", headers=garbage)).status_code == 400


async def test_the_openapi_document_describes_the_batch_endpoint(http: AsyncClient) -> None:
    document = (await http.get("/schema/openapi.json", headers=admin_headers())).json()
    operation = document["paths"]["/v1/orders:batch"]["post"]
    assert operation["operationId"] == "createOrders"
    assert "requestBody" in operation
