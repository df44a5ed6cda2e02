"""The HTTP contract of DESIGN.md §5, in-process over ASGI against real Redis.

Every refusal is an RFC 9457 problem with a stable ``type``; every bad input leaves
stock, the event stream and the idempotency records exactly as they were.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import httpx
import pytest
from httpx import AsyncClient

from intake.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from intake.schemas import ORDER_ITEMS_MAX, QTY_MAX
from intake.service import CatalogService
from reservation.store import RedisStore
from tests.conftest import START_MS, ManualClock, admin_headers, gateway_headers
from tests.support import add_sku, assert_stock_invariants, setup_region

SKUS = ("tee", "cap")
TEE_PRICE = 1500
CAP_PRICE = 700
MISSING_ORDER_ID = "000000000000deadbeef0000"


async def seeded(catalog: CatalogService) -> None:
    """Region eu (w1 before w2); tee: 10 in w1 + 5 in w2; cap: 3 in w1."""
    await setup_region(catalog, "eu", ("w1", "w2"))
    await add_sku(catalog, "tee", price=TEE_PRICE, stock={"w1": 10, "w2": 5})
    await add_sku(catalog, "cap", price=CAP_PRICE, stock={"w1": 3})


def order_body(
    items: dict[str, int] | None = None,
    *,
    customer_id: str = "c1",
    region: str = "eu",
    order_type: str = "flash",
) -> dict[str, Any]:
    lines = items if items is not None else {"tee": 2}
    return {
        "customer_id": customer_id,
        "region": region,
        "order_type": order_type,
        "items": [{"sku": sku, "qty": qty} for sku, qty in lines.items()],
    }


async def post_order(http: AsyncClient, body: dict[str, Any], key: str) -> httpx.Response:
    return await http.post("/v1/orders", json=body, headers=gateway_headers(key))


async def stock_view(http: AsyncClient, sku: str) -> dict[str, dict[str, int]]:
    """GET /v1/stock/{sku} as {warehouse_id: counters}."""
    response = await http.get(f"/v1/stock/{sku}", headers=admin_headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sku"] == sku
    return {level.pop("warehouse_id"): level for level in body["warehouses"]}


async def stock_snapshot(http: AsyncClient, store: RedisStore) -> dict[str, Any]:
    """Everything a refused order must leave alone: counters (checked for §3) and the event stream."""
    await assert_stock_invariants(store, SKUS)
    return {
        "stock": {sku: await stock_view(http, sku) for sku in SKUS},
        "stream_length": await store.stream_length(),
    }


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_MEDIA_TYPE
    problem: dict[str, Any] = response.json()
    assert problem["type"] == PROBLEM_BASE + kind
    assert problem["type"].endswith("/" + kind)
    assert problem["status"] == status
    assert problem["title"]
    return problem


async def assert_key_is_unused(http: AsyncClient, key: str) -> dict[str, Any]:
    """A valid order with this key is created afresh: no idempotency record was left behind."""
    response = await post_order(http, order_body({"tee": 1}, customer_id="later"), key)
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
    created: dict[str, Any] = response.json()
    assert created["status"] == "pending_payment"
    return created


# -- 1. bad input on POST /v1/orders ------------------------------------------------------------------


class BadBody(NamedTuple):
    """A request body POST /v1/orders must refuse, and the problem it must answer."""

    body: bytes
    status: int
    kind: str


def bad(body: dict[str, Any], status: int = 400) -> BadBody:
    return BadBody(json.dumps(body).encode(), status, "invalid-request")


def with_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {**order_body(), "items": items}


BAD_BODIES: dict[str, BadBody] = {
    "malformed-json": BadBody(b'{"customer_id": "c1", "region": "eu", "items": [', 400, "invalid-request"),
    "unknown-field": bad({**order_body(), "coupon": "FREE"}),
    "unknown-field-in-line": bad(with_items([{"sku": "tee", "qty": 1, "gift": True}])),
    "missing-customer": bad({key: value for key, value in order_body().items() if key != "customer_id"}),
    "qty-zero": bad(order_body({"tee": 0})),
    "qty-negative": bad(order_body({"tee": -3})),
    "qty-above-max": bad(order_body({"tee": QTY_MAX + 1})),
    "too-many-items": bad(with_items([{"sku": f"sku{index}", "qty": 1} for index in range(ORDER_ITEMS_MAX + 1)])),
    "empty-items": bad(with_items([])),
    "order-type-express": bad(order_body(order_type="express")),
    "duplicate-sku-lines": bad(with_items([{"sku": "tee", "qty": 1}, {"sku": "tee", "qty": 2}]), 422),
    "unknown-region": bad(order_body(region="mars"), 422),
}


@pytest.mark.parametrize("case", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_order_body_is_a_problem_and_changes_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, case: BadBody
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    headers = {**gateway_headers("bad-body-key"), "Content-Type": "application/json"}

    response = await http.post("/v1/orders", content=case.body, headers=headers)

    assert_problem(response, case.status, case.kind)
    assert await stock_snapshot(http, store) == before
    await assert_key_is_unused(http, "bad-body-key")


async def test_missing_idempotency_key_is_a_400_problem_and_holds_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)

    response = await http.post("/v1/orders", json=order_body(), headers=gateway_headers())

    problem = assert_problem(response, 400, "invalid-request")
    assert "Idempotency-Key" in problem["detail"]
    assert await stock_snapshot(http, store) == before
    await assert_key_is_unused(http, "after-missing-key")


@pytest.mark.parametrize(
    "key", ["has a space", "k" * 129, "", "ключ"], ids=["space", "129-chars", "empty", "non-ascii"]
)
async def test_malformed_idempotency_key_is_a_400_problem_and_holds_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, key: str
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    headers = {**gateway_headers(), "Idempotency-Key": key.encode()}

    response = await http.post("/v1/orders", json=order_body(), headers=headers)  # type: ignore[arg-type]

    assert_problem(response, 400, "invalid-request")
    assert await stock_snapshot(http, store) == before
    await assert_key_is_unused(http, "after-malformed-key")


async def test_idempotency_key_of_exactly_128_printable_characters_is_accepted(
    http: AsyncClient, catalog: CatalogService
) -> None:
    await seeded(catalog)
    key = "!~" * 64

    response = await post_order(http, order_body(), key)

    assert response.status_code == 201, response.text


async def test_unknown_sku_is_a_422_problem_naming_the_sku_and_holds_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)

    response = await post_order(http, order_body({"tee": 1, "ghost": 1}), "unknown-sku-key")

    problem = assert_problem(response, 422, "invalid-request")
    assert problem["sku"] == "ghost"
    assert await stock_snapshot(http, store) == before
    await assert_key_is_unused(http, "unknown-sku-key")


async def test_mixed_currencies_across_lines_is_a_422_problem_and_holds_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    await add_sku(catalog, "mug", price=900, currency="USD", stock={"w1": 4})
    before = await stock_snapshot(http, store)
    mug_before = await stock_view(http, "mug")

    response = await post_order(http, order_body({"tee": 1, "mug": 1}), "mixed-key")

    problem = assert_problem(response, 422, "invalid-request")
    assert problem["sku"] == "mug"
    assert await stock_snapshot(http, store) == before
    assert await stock_view(http, "mug") == mug_before
    await assert_key_is_unused(http, "mixed-key")


async def test_body_larger_than_the_limit_is_a_413_problem_and_holds_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    # A valid order padded with insignificant whitespace to ~100 KB (the limit is 64 KiB).
    body = json.dumps(order_body()).encode() + b" " * 100_000
    headers = {**gateway_headers("too-big-key"), "Content-Type": "application/json"}

    response = await http.post("/v1/orders", content=body, headers=headers)

    assert_problem(response, 413, "payload-too-large")
    assert await stock_snapshot(http, store) == before
    await assert_key_is_unused(http, "too-big-key")


# -- 2. business outcomes ------------------------------------------------------------------------------


async def test_sold_out_second_line_is_a_409_naming_that_sku_and_the_first_line_is_untouched(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)

    response = await post_order(http, order_body({"tee": 2, "cap": 4}), "sold-out-key")

    problem = assert_problem(response, 409, "sold-out")
    assert problem["sku"] == "cap"
    assert await stock_snapshot(http, store) == before
    assert (await stock_view(http, "tee"))["w1"] == {"on_hand": 10, "available": 10, "reserved": 0, "committed": 0}
    await assert_key_is_unused(http, "sold-out-key")


async def test_purchase_limit_counts_across_the_customers_orders(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    await add_sku(catalog, "tee", price=TEE_PRICE, per_customer_limit=3, stock={"w1": 10})

    first = await post_order(http, order_body({"tee": 2}), "limit-1")
    second = await post_order(http, order_body({"tee": 1}), "limit-2")
    assert (first.status_code, second.status_code) == (201, 201)
    before = await stock_snapshot(http, store)

    refused = await post_order(http, order_body({"tee": 1}), "limit-3")

    problem = assert_problem(refused, 409, "purchase-limit")
    assert problem["sku"] == "tee"
    assert await stock_snapshot(http, store) == before
    other_customer = await post_order(http, order_body({"tee": 3}, customer_id="c2"), "limit-other")
    assert other_customer.status_code == 201, other_customer.text


async def test_cancelled_units_no_longer_count_against_the_purchase_limit(
    http: AsyncClient, catalog: CatalogService
) -> None:
    await seeded(catalog)
    await add_sku(catalog, "tee", price=TEE_PRICE, per_customer_limit=2, stock={"w1": 10})
    order_id = (await post_order(http, order_body({"tee": 2}), "freed-1")).json()["order_id"]
    assert_problem(await post_order(http, order_body({"tee": 1}), "freed-2"), 409, "purchase-limit")

    cancelled = await http.post(f"/v1/orders/{order_id}/cancel", headers=gateway_headers())
    assert cancelled.status_code == 200, cancelled.text
    again = await post_order(http, order_body({"tee": 2}), "freed-3")

    assert again.status_code == 201, again.text


async def test_sale_not_open_is_a_409_before_the_start_and_after_the_end_of_the_window(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, clock: ManualClock
) -> None:
    await seeded(catalog)
    now = datetime.fromtimestamp(START_MS / 1000, tz=UTC)
    sku_body = {
        "name": "Launch tee",
        "merchant_id": "m1",
        "price": TEE_PRICE,
        "currency": "EUR",
        "sale_starts_at": (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "sale_ends_at": (now + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
    }
    put = await http.put("/v1/skus/tee", json=sku_body, headers=admin_headers())
    assert put.status_code == 200, put.text
    before = await stock_snapshot(http, store)

    early = await post_order(http, order_body({"tee": 1}), "early-key")

    problem = assert_problem(early, 409, "sale-not-open")
    assert problem["sku"] == "tee"
    assert await stock_snapshot(http, store) == before
    clock.advance(3_600_000)
    on_time = await post_order(http, order_body({"tee": 1}), "early-key")
    assert on_time.status_code == 201, on_time.text
    clock.advance(3_600_000)
    late = await post_order(http, order_body({"tee": 1}), "late-key")
    assert assert_problem(late, 409, "sale-not-open")["sku"] == "tee"


async def test_blocked_customer_is_a_403_and_is_accepted_again_after_unblock(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    block = await http.put("/v1/blocklist/c1", json={"reason": "chargebacks"}, headers=admin_headers())
    assert block.status_code == 200, block.text
    assert block.json() == {"customer_id": "c1", "blocked": True, "reason": "chargebacks"}
    before = await stock_snapshot(http, store)

    refused = await post_order(http, order_body(), "blocked-key")

    assert_problem(refused, 403, "customer-blocked")
    assert await stock_snapshot(http, store) == before
    unblock = await http.post("/v1/blocklist/c1/unblock", headers=admin_headers())
    assert unblock.status_code == 200, unblock.text
    assert unblock.json()["blocked"] is False
    accepted = await post_order(http, order_body(), "blocked-key")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["customer_id"] == "c1"


# -- 3. idempotency ---------------------------------------------------------------------------------------


async def test_same_key_and_same_body_replays_the_same_201_and_reserves_once(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)

    first = await post_order(http, order_body({"tee": 2, "cap": 1}), "replay-key")
    after_first = await stock_snapshot(http, store)
    second = await post_order(http, order_body({"tee": 2, "cap": 1}), "replay-key")

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert await stock_snapshot(http, store) == after_first
    assert (await stock_view(http, "tee"))["w1"]["reserved"] == 2
    assert (await stock_view(http, "cap"))["w1"]["reserved"] == 1


async def test_same_key_with_the_lines_in_another_order_is_the_same_order(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)

    first = await post_order(http, order_body({"tee": 2, "cap": 1}), "reorder-key")
    after_first = await stock_snapshot(http, store)
    second = await post_order(http, order_body({"cap": 1, "tee": 2}), "reorder-key")

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["order_id"] == first.json()["order_id"]
    assert await stock_snapshot(http, store) == after_first


async def test_replay_after_the_order_was_cancelled_answers_the_original_201_and_holds_nothing_again(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    first = await post_order(http, order_body({"tee": 2}), "replay-cancelled")
    cancelled = await http.post(f"/v1/orders/{first.json()['order_id']}/cancel", headers=gateway_headers())
    assert cancelled.status_code == 200, cancelled.text
    after_cancel = await stock_snapshot(http, store)

    replay = await post_order(http, order_body({"tee": 2}), "replay-cancelled")

    assert replay.status_code == 201, replay.text
    assert replay.json() == first.json()
    assert await stock_snapshot(http, store) == after_cancel
    assert after_cancel["stock"] == before["stock"]


async def test_same_key_with_a_different_body_is_a_422_idempotency_key_reused(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    first = await post_order(http, order_body({"tee": 2}), "reused-key")
    assert first.status_code == 201, first.text
    after_first = await stock_snapshot(http, store)

    second = await post_order(http, order_body({"tee": 3}), "reused-key")

    problem = assert_problem(second, 422, "idempotency-key-reused")
    assert problem["order_id"] == first.json()["order_id"]
    assert await stock_snapshot(http, store) == after_first


# -- 4. auth -------------------------------------------------------------------------------------------------


async def test_no_authorization_header_is_a_401_problem_with_a_bearer_challenge(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)

    response = await http.post("/v1/orders", json=order_body(), headers={"Idempotency-Key": "no-auth-key"})

    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert await stock_snapshot(http, store) == before
    await assert_key_is_unused(http, "no-auth-key")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-known-token-0123456789", "Basic YWRtaW46YWRtaW4=", "Bearer "],
    ids=["unknown-token", "basic-scheme", "empty-token"],
)
async def test_wrong_token_is_a_401_problem(http: AsyncClient, catalog: CatalogService, authorization: str) -> None:
    await seeded(catalog)

    on_data_plane = await http.get(f"/v1/orders/{MISSING_ORDER_ID}", headers={"Authorization": authorization})
    on_control_plane = await http.get("/v1/stock/tee", headers={"Authorization": authorization})

    assert_problem(on_data_plane, 401, "unauthorized")
    assert_problem(on_control_plane, 401, "unauthorized")
    assert on_data_plane.headers["www-authenticate"] == "Bearer"
    assert on_control_plane.headers["www-authenticate"] == "Bearer"


async def test_gateway_token_on_the_control_plane_is_a_403_and_changes_nothing(http: AsyncClient) -> None:
    sku_body = {"name": "X", "merchant_id": "m1", "price": 100, "currency": "EUR"}

    response = await http.put("/v1/skus/x", json=sku_body, headers=gateway_headers())

    assert_problem(response, 403, "forbidden")
    lookup = await http.get("/v1/skus/x", headers=admin_headers())
    assert_problem(lookup, 404, "not-found")


async def test_admin_token_works_on_the_data_plane(http: AsyncClient, catalog: CatalogService) -> None:
    await seeded(catalog)

    created = await http.post("/v1/orders", json=order_body(), headers={**admin_headers(), "Idempotency-Key": "adm"})
    assert created.status_code == 201, created.text
    fetched = await http.get(f"/v1/orders/{created.json()['order_id']}", headers=admin_headers())

    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == created.json()


async def test_healthz_needs_no_token(http: AsyncClient) -> None:
    response = await http.get("/healthz")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


# -- 5. reading and cancelling orders ---------------------------------------------------------------------


async def test_get_order_right_after_intake_returns_the_same_order(
    http: AsyncClient, catalog: CatalogService, clock: ManualClock
) -> None:
    await seeded(catalog)

    created = await post_order(http, order_body({"tee": 2, "cap": 1}), "ryw-key")
    fetched = await http.get(f"/v1/orders/{created.json()['order_id']}", headers=gateway_headers())

    assert created.status_code == 201, created.text
    assert fetched.status_code == 200, fetched.text
    order = fetched.json()
    assert order == created.json()
    assert order["status"] == "pending_payment"
    assert order["total"] == 2 * TEE_PRICE + CAP_PRICE
    assert order["currency"] == "EUR"
    assert sorted((item["sku"], item["qty"], item["unit_price"]) for item in order["items"]) == [
        ("cap", 1, CAP_PRICE),
        ("tee", 2, TEE_PRICE),
    ]
    shipped = sorted((s["warehouse_id"], i["sku"], i["qty"]) for s in order["shipments"] for i in s["items"])
    assert shipped == [("w1", "cap", 1), ("w1", "tee", 2)]
    created_at = datetime.fromisoformat(order["created_at"])
    assert created_at == datetime.fromtimestamp(clock.now_ms / 1000, tz=UTC)
    assert datetime.fromisoformat(order["expires_at"]) > created_at


async def test_unknown_order_is_a_404_not_found_problem(http: AsyncClient) -> None:
    response = await http.get(f"/v1/orders/{MISSING_ORDER_ID}", headers=gateway_headers())

    problem = assert_problem(response, 404, "not-found")
    assert problem["order_id"] == MISSING_ORDER_ID


async def test_cancelled_order_reads_back_cancelled_by_customer_and_its_stock_is_released(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    created = await post_order(http, order_body({"tee": 2, "cap": 1}), "cancel-key")
    order_id = created.json()["order_id"]

    cancelled = await http.post(f"/v1/orders/{order_id}/cancel", headers=gateway_headers())
    fetched = await http.get(f"/v1/orders/{order_id}", headers=gateway_headers())

    assert cancelled.status_code == 200, cancelled.text
    assert fetched.json() == cancelled.json()
    assert fetched.json()["status"] == "cancelled"
    assert fetched.json()["cancel_reason"] == "customer"
    assert (await stock_snapshot(http, store))["stock"] == before["stock"]


async def test_cancelling_twice_is_idempotent_and_releases_the_stock_once(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    order_id = (await post_order(http, order_body({"tee": 2}), "cancel-twice")).json()["order_id"]

    first = await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "customer"}, headers=gateway_headers())
    second = await http.post(f"/v1/orders/{order_id}/cancel", json={"reason": "customer"}, headers=gateway_headers())

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert second.json()["status"] == "cancelled"
    assert (await stock_snapshot(http, store))["stock"] == before["stock"]


# -- 6. payment ---------------------------------------------------------------------------------------------


async def test_payment_of_the_exact_total_marks_the_order_paid_and_commits_the_stock(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    order = (await post_order(http, order_body({"tee": 2}), "pay-key")).json()
    payment = {"payment_id": "pay-1", "amount": order["total"], "method": "card"}

    response = await http.post(f"/v1/orders/{order['order_id']}/payment", json=payment, headers=gateway_headers())

    assert response.status_code == 200, response.text
    paid = response.json()
    assert paid["status"] == "paid"
    assert paid["payment"]["payment_id"] == "pay-1"
    assert paid["payment"]["amount"] == 2 * TEE_PRICE
    assert (await stock_view(http, "tee"))["w1"] == {"on_hand": 10, "available": 8, "reserved": 0, "committed": 2}
    await assert_stock_invariants(store, SKUS)


@pytest.mark.parametrize("difference", [-1, 1], ids=["short", "over"])
async def test_payment_of_a_wrong_amount_is_a_422_amount_mismatch_and_changes_nothing(
    http: AsyncClient, catalog: CatalogService, store: RedisStore, difference: int
) -> None:
    await seeded(catalog)
    order = (await post_order(http, order_body({"tee": 2}), "mismatch-key")).json()
    before = await stock_snapshot(http, store)
    payment = {"payment_id": "pay-short", "amount": order["total"] + difference, "method": "card"}

    response = await http.post(f"/v1/orders/{order['order_id']}/payment", json=payment, headers=gateway_headers())

    problem = assert_problem(response, 422, "amount-mismatch")
    assert problem["order_id"] == order["order_id"]
    assert await stock_snapshot(http, store) == before
    fetched = await http.get(f"/v1/orders/{order['order_id']}", headers=gateway_headers())
    assert fetched.json()["status"] == "pending_payment"


async def test_the_same_payment_twice_is_200_both_times_and_commits_once(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    order = (await post_order(http, order_body({"tee": 2}), "pay-twice")).json()
    payment = {"payment_id": "pay-2", "amount": order["total"], "method": "card"}
    path = f"/v1/orders/{order['order_id']}/payment"

    first = await http.post(path, json=payment, headers=gateway_headers())
    after_first = await stock_snapshot(http, store)
    second = await http.post(path, json=payment, headers=gateway_headers())

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert second.json()["status"] == "paid"
    assert await stock_snapshot(http, store) == after_first
    assert (await stock_view(http, "tee"))["w1"]["committed"] == 2


# -- 7. control plane ----------------------------------------------------------------------------------------


async def test_stocktake_with_a_stale_expected_on_hand_is_a_409_with_the_current_value(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)

    response = await http.put("/v1/stock/tee/w1", json={"on_hand": 50, "expected_on_hand": 7}, headers=admin_headers())

    problem = assert_problem(response, 409, "stock-conflict")
    assert problem["current_on_hand"] == 10
    assert await stock_snapshot(http, store) == before
    matching = await http.put("/v1/stock/tee/w1", json={"on_hand": 50, "expected_on_hand": 10}, headers=admin_headers())
    assert matching.status_code == 200, matching.text
    assert matching.json()["on_hand"] == 50


async def test_adjustment_below_the_held_units_is_a_409_stock_conflict(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    assert (await post_order(http, order_body({"tee": 8}), "held-key")).status_code == 201
    before = await stock_snapshot(http, store)

    response = await http.post(
        "/v1/stock/tee/w1/adjustments", json={"delta": -5, "reason": "damaged"}, headers=admin_headers()
    )

    problem = assert_problem(response, 409, "stock-conflict")
    assert problem["current_on_hand"] == 10
    assert await stock_snapshot(http, store) == before


async def test_transfer_of_more_than_is_available_is_a_409_insufficient_stock(
    http: AsyncClient, catalog: CatalogService, store: RedisStore
) -> None:
    await seeded(catalog)
    before = await stock_snapshot(http, store)
    transfer = {"sku": "tee", "from_warehouse": "w2", "to_warehouse": "w1", "qty": 6}

    response = await http.post("/v1/stock/transfers", json=transfer, headers=admin_headers())

    assert_problem(response, 409, "insufficient-stock")
    assert await stock_snapshot(http, store) == before


async def test_dispatch_rule_naming_an_unknown_warehouse_is_a_422_and_keeps_the_old_rule(
    http: AsyncClient, catalog: CatalogService
) -> None:
    await seeded(catalog)

    response = await http.put("/v1/dispatch/eu", json={"warehouses": ["w1", "w9"]}, headers=admin_headers())

    problem = assert_problem(response, 422, "invalid-request")
    assert "w9" in problem["detail"]
    rule = await http.get("/v1/dispatch/eu", headers=admin_headers())
    assert rule.json() == {"region": "eu", "warehouses": ["w1", "w2"]}


async def test_get_sku_round_trips_the_put_body_with_times_in_rfc3339_utc(http: AsyncClient) -> None:
    sku_body = {
        "name": "Limited hoodie",
        "merchant_id": "m7",
        "price": 4999,
        "currency": "EUR",
        "per_customer_limit": 2,
        "sale_starts_at": "2030-03-17T18:00:00Z",
        "sale_ends_at": "2030-03-18T18:00:00Z",
        "safety_stock": 3,
    }

    put = await http.put("/v1/skus/hoodie", json=sku_body, headers=admin_headers())
    fetched = await http.get("/v1/skus/hoodie", headers=admin_headers())

    assert put.status_code == 200, put.text
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == {"sku": "hoodie", **sku_body}
    assert put.json() == fetched.json()


async def test_sale_times_with_an_offset_are_answered_in_utc(http: AsyncClient) -> None:
    sku_body = {
        "name": "Hoodie",
        "merchant_id": "m7",
        "price": 4999,
        "currency": "EUR",
        "sale_starts_at": "2030-03-17T20:00:00+02:00",
    }

    put = await http.put("/v1/skus/hoodie", json=sku_body, headers=admin_headers())

    assert put.status_code == 200, put.text
    assert put.json()["sale_starts_at"] == "2030-03-17T18:00:00Z"


# -- 8. OpenAPI ----------------------------------------------------------------------------------------------


async def test_openapi_document_lists_the_order_paths_and_create_order(http: AsyncClient) -> None:
    response = await http.get("/schema/openapi.json")

    assert response.status_code == 200, response.text
    document = response.json()
    assert "/v1/orders" in document["paths"]
    assert "/v1/orders/{order_id}" in document["paths"]
    operation_ids = {
        operation.get("operationId")
        for path in document["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict)
    }
    assert "createOrder" in operation_ids
    assert document["paths"]["/v1/orders"]["post"]["operationId"] == "createOrder"
