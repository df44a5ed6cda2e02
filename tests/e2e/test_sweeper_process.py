"""The sweeper process, on the wall clock, releases an unpaid hold once its deadline passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.service import CatalogService, OrderService
from reservation.store import RedisStore
from tests.conftest import Services, make_settings
from tests.processes import eventually, running, service_environment
from tests.support import add_sku, order_in, setup_region

pytestmark = pytest.mark.slow


async def test_the_sweeper_process_releases_a_hold_after_its_deadline(
    services: Services, store: RedisStore, tmp_path: Path
) -> None:
    settings = make_settings(services, RUSHGATE_FLASH_HOLD_TTL_S="1")
    catalog, orders = CatalogService(store), OrderService(store, settings)  # wall clock, as in production
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", stock={"w1": 1})
    with running(["sweeper"], service_environment(services), tmp_path / "sweeper.log"):
        _, order = await orders.place(order_in("c1", {"s1": 1}), "k1")
        assert order.status == "pending_payment"

        async def released() -> bool:
            return (await store.stock_levels("s1"))["w1"].available == 1

        await eventually(released, "the sweeper to release the expired hold")
    expired = await orders.get(order.order_id)
    assert (expired.status, expired.cancel_reason) == ("cancelled", "payment_timeout")
    assert expired.updated_ms >= expired.expires_ms  # never released before the deadline
    print(f"released {expired.updated_ms - expired.expires_ms} ms after the deadline")
