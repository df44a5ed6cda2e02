"""The intake hot path (plain ASGI, intake/hot_path.py) answers exactly as Litestar's handlers do.

``/v1/orders`` and ``/v1/orders:batch`` are answered before Litestar's router; the same
operations spelled with a trailing slash go through Litestar's handlers, which call the same
functions. Each request below is sent both ways, against the same state, and must get the same
status, problem type, headers that matter and body (order ids aside).
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from httpx import AsyncClient

from intake.service import CatalogService
from tests.conftest import admin_headers, gateway_headers
from tests.support import add_sku, setup_region


def order(customer_id: str, sku: str = "tee", qty: int = 1) -> dict[str, Any]:
    return {"customer_id": customer_id, "region": "eu", "order_type": "flash", "items": [{"sku": sku, "qty": qty}]}


def comparable(response: httpx.Response) -> dict[str, Any]:
    """What must not differ between the two paths: status, media type, replay header, body without ids."""
    media_type = response.headers["content-type"].split(";")[0]
    if media_type == "application/msgpack":
        body: Any = msgspec.msgpack.decode(response.content)
    else:
        body = response.json()
    text = msgspec.json.encode(body).decode()
    for order_id in {result["order"]["order_id"] for result in body.get("results", []) if "order" in result} | (
        {body["order_id"]} if "order_id" in body else set()
    ):
        text = text.replace(order_id, "<order-id>")
    return {
        "status": response.status_code,
        "media_type": media_type,
        "replayed": response.headers.get("idempotent-replayed"),
        "retry_after": response.headers.get("retry-after"),
        "www_authenticate": response.headers.get("www-authenticate"),
        "body": msgspec.json.decode(text),
    }


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("a new order", "/v1/orders", {"Idempotency-Key": "k-{path}"}, msgspec.json.encode(order("c1"))),
    ("a replay", "/v1/orders", {"Idempotency-Key": "replayed"}, msgspec.json.encode(order("c2"))),
    ("a reused key", "/v1/orders", {"Idempotency-Key": "replayed"}, msgspec.json.encode(order("c3"))),
    ("sold out", "/v1/orders", {"Idempotency-Key": "big-{path}"}, msgspec.json.encode(order("c4", qty=99))),
    ("unknown sku", "/v1/orders", {"Idempotency-Key": "u-{path}"}, msgspec.json.encode(order("c5", sku="nope"))),
    ("no idempotency key", "/v1/orders", {}, msgspec.json.encode(order("c6"))),
    ("malformed json", "/v1/orders", {"Idempotency-Key": "m-{path}"}, b'{"customer_id":'),
    ("lenient qty refused", "/v1/orders", {"Idempotency-Key": "q-{path}"}, b'{"customer_id":"c7","region":"eu",'
     b'"order_type":"flash","items":[{"sku":"tee","qty":"1"}]}'),
    ("no token", "/v1/orders", {"Authorization": "", "Idempotency-Key": "t-{path}"}, msgspec.json.encode(order("c8"))),
    ("unknown token", "/v1/orders", {"Authorization": "Bearer wrong", "Idempotency-Key": "w-{path}"}, b"{}"),
    ("too large", "/v1/orders", {"Idempotency-Key": "l-{path}"}, b" " * 70_000),
    ("xml", "/v1/orders", {"Idempotency-Key": "x-{path}", "Content-Type": "application/xml"}, b"<order/>"),
    ("msgpack", "/v1/orders", {"Idempotency-Key": "p-{path}", "Content-Type": "application/msgpack",
     "Accept": "application/msgpack"}, msgspec.msgpack.encode(order("c9"))),
    ("a batch", "/v1/orders:batch", {}, msgspec.json.encode({"orders": [
        {**order("b1"), "idempotency_key": "b1-{path}"},
        {**order("b2", qty=99), "idempotency_key": "b2-{path}"},
        {**order("b3", sku="nope"), "idempotency_key": "b3-{path}"},
    ]})),
    ("an empty batch", "/v1/orders:batch", {}, b'{"orders":[]}'),
]  # fmt: skip


WORDED_BY_LITESTAR = {"no idempotency key": "idempotency-key", "too large": "large"}


@pytest.mark.parametrize(("case", "path", "headers", "body"), CASES, ids=[case[0] for case in CASES])
async def test_hot_path_and_litestar_handler_answer_alike(
    http: AsyncClient, catalog: CatalogService, case: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    await setup_region(catalog, "eu", ("w1",))
    await add_sku(catalog, "tee", price=1500, stock={"w1": 50})
    if case in ("a replay", "a reused key"):
        first = await http.post(
            "/v1/orders", content=msgspec.json.encode(order("c2")), headers=gateway_headers("replayed")
        )
        assert first.status_code == 201, first.text
    answers = []
    for spelling in (path, path + "/"):
        sent = {"Content-Type": "application/json", **gateway_headers()}
        sent |= {name: value.replace("{path}", spelling) for name, value in headers.items()}
        sent = {name: value for name, value in sent.items() if value}
        payload = body.replace(b"{path}", spelling.encode())
        answers.append(comparable(await http.post(spelling, content=payload, headers=sent)))
    hot, routed = answers
    if case in WORDED_BY_LITESTAR:  # Litestar checks these before its handler runs, in its own words
        word = WORDED_BY_LITESTAR[case]
        assert word in hot["body"].pop("detail").lower() and word in routed["body"].pop("detail").lower()
    assert hot == routed


async def test_admin_token_may_place_orders_on_the_hot_path(http: AsyncClient, catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ("w1",))
    await add_sku(catalog, "tee", price=1500, stock={"w1": 5})
    response = await http.post("/v1/orders", json=order("c1"), headers={**admin_headers(), "Idempotency-Key": "adm-1"})
    assert response.status_code == 201, response.text
