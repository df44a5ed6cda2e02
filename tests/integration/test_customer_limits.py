"""Per-customer attempt limits and the abnormal-behaviour cool-down, counted atomically in reserve.lua."""

from __future__ import annotations

import pytest
from httpx import ASGITransport, AsyncClient

from intake.problems import ProblemError
from intake.service import CatalogService, OrderService
from reservation.store import RedisStore
from tests.conftest import ManualClock, Services, admin_headers, gateway_headers, make_settings, running_app
from tests.support import add_sku, order_in, seed_over_http, setup_region


@pytest.fixture
async def stocked(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", stock={"w1": 1000})
    await add_sku(catalog, "gone", stock={"w1": 0})


def shop(services: Services, store: RedisStore, clock: ManualClock, **limits: str) -> OrderService:
    return OrderService(store, make_settings(services, **limits), clock)


async def refusal(orders: OrderService, customer: str, key: str, sku: str = "s1") -> ProblemError:
    with pytest.raises(ProblemError) as refused:
        await orders.place(order_in(customer, {sku: 1}), key)
    return refused.value


async def test_a_customer_over_the_attempt_limit_gets_429_until_the_window_ends(
    stocked: None, services: Services, store: RedisStore, clock: ManualClock
) -> None:
    orders = shop(services, store, clock, RUSHGATE_CUSTOMER_ATTEMPTS_MAX="3", RUSHGATE_CUSTOMER_WINDOW_MS="1000")
    await orders.place(order_in("c1", {"s1": 1}), "k1")
    assert (await refusal(orders, "c1", "k2", "gone")).kind == "sold-out"  # a refused try counts too
    await orders.place(order_in("c1", {"s1": 1}), "k3")
    limited = await refusal(orders, "c1", "k4")
    assert (limited.status, limited.kind, limited.headers["Retry-After"]) == (429, "rate-limited", "1")
    assert (await orders.place(order_in("c2", {"s1": 1}), "k5")).created  # others are not affected
    assert not (await orders.place(order_in("c1", {"s1": 1}), "k1")).created  # a replay is not a try
    clock.advance(1000)
    assert (await orders.place(order_in("c1", {"s1": 1}), "k6")).created
    assert (await store.stock_levels("s1"))["w1"].reserved == 4


async def test_abnormal_activity_pauses_the_customer_for_the_cooldown(
    stocked: None, services: Services, store: RedisStore, clock: ManualClock
) -> None:
    orders = shop(
        services, store, clock,
        RUSHGATE_ABNORMAL_ATTEMPTS_MAX="5", RUSHGATE_CUSTOMER_WINDOW_MS="1000", RUSHGATE_ABNORMAL_COOLDOWN_S="60",
    )  # fmt: skip
    for number in range(5):
        assert (await refusal(orders, "bot", f"k{number}", "gone")).kind == "sold-out"
    paused = await refusal(orders, "bot", "k5")
    assert (paused.status, paused.kind, paused.headers["Retry-After"]) == (429, "cooling-down", "60")
    clock.advance(30_000)
    assert (await refusal(orders, "bot", "k6")).headers["Retry-After"] == "30"
    clock.advance(30_000)
    assert (await orders.place(order_in("bot", {"s1": 1}), "k7")).created


async def test_without_limits_configured_nothing_is_counted(
    stocked: None, orders: OrderService, store: RedisStore
) -> None:
    for number in range(50):
        await orders.place(order_in("c1", {"s1": 1}), f"k{number}")
    assert await store.client.exists(store.keys.customer_rate("c1")) == 0


async def test_an_api_client_over_its_limit_gets_429_whatever_the_customers(
    services: Services, store: RedisStore, clock: ManualClock
) -> None:
    settings = make_settings(services, RUSHGATE_CLIENT_ATTEMPTS_MAX="3", RUSHGATE_CUSTOMER_WINDOW_MS="1000")
    async with (
        running_app(settings, clock) as app,
        AsyncClient(transport=ASGITransport(app=app), base_url="http://rushgate") as http,
    ):
        await seed_over_http(http, admin_headers(), on_hand=100)
        body = {"region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 1}]}
        statuses = [
            (await http.post("/v1/orders", json=body | {"customer_id": f"c{n}"}, headers=gateway_headers(f"k{n}")))
            for n in range(4)
        ]
        assert [response.status_code for response in statuses] == [201, 201, 201, 429]
        assert statuses[3].headers["retry-after"] == "1"
        assert statuses[3].json()["type"].endswith("/rate-limited")
        other = await http.post(
            "/v1/orders", json=body | {"customer_id": "c9"}, headers=admin_headers() | {"Idempotency-Key": "k9"}
        )  # another client: the admin token has its own window
        assert other.status_code == 201
        clock.advance(1000)
        again = await http.post("/v1/orders", json=body | {"customer_id": "c5"}, headers=gateway_headers("k5"))
        assert again.status_code == 201
