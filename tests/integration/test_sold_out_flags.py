"""The sold-out short-circuit: set when nothing is sellable anywhere, cleared when stock returns."""

from __future__ import annotations

import pytest

from intake.problems import ProblemError
from intake.schemas import AdjustmentIn, SkuIn, StockSetIn, TransferIn, WarehouseIn
from intake.service import CatalogService, OrderService
from reservation.sold_out import SoldOutFlags
from reservation.store import RedisStore
from reservation.sweeper import sweep_once
from rushgate.settings import Settings
from tests.conftest import ManualClock
from tests.support import add_sku, order_in, setup_region


@pytest.fixture
def flags(store: RedisStore) -> SoldOutFlags:
    return SoldOutFlags(store, refresh_ms=50)


@pytest.fixture
def shop(store: RedisStore, settings: Settings, clock: ManualClock, flags: SoldOutFlags) -> OrderService:
    return OrderService(store, settings, clock, flags)


@pytest.fixture
async def two_units(catalog: CatalogService) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "hot", stock={"w1": 1, "w2": 1})


async def sell_out(shop: OrderService) -> list[str]:
    return [(await shop.place(order_in(f"buyer-{n}", {"hot": 1}), f"sell-{n}")).order.order_id for n in range(2)]


async def refused_kind(shop: OrderService, customer: str, key: str) -> str:
    with pytest.raises(ProblemError) as refused:
        await shop.place(order_in(customer, {"hot": 1}), key)
    return refused.value.kind


async def test_taking_the_last_unit_anywhere_flags_the_sku(
    two_units: None, shop: OrderService, store: RedisStore
) -> None:
    await shop.place(order_in("c1", {"hot": 1}), "k1")
    assert await store.sold_out_skus() == frozenset()  # w2 still has one
    await shop.place(order_in("c2", {"hot": 1}), "k2")
    assert await store.sold_out_skus() == {"hot"}


async def test_a_flagged_sku_is_refused_without_calling_the_reserve_script(
    two_units: None, shop: OrderService, store: RedisStore, flags: SoldOutFlags
) -> None:
    await sell_out(shop)
    await flags.refresh()
    calls_before, events_before = shop.reservations.calls_sent, await store.stream_length()
    assert await refused_kind(shop, "late", "late-1") == "sold-out"
    assert shop.reservations.calls_sent == calls_before
    assert await store.stream_length() == events_before


async def test_a_retry_of_an_accepted_order_is_replayed_even_when_the_sku_is_flagged(
    two_units: None, shop: OrderService, flags: SoldOutFlags
) -> None:
    first, _ = await sell_out(shop)
    await flags.refresh()
    created, replayed = await shop.place(order_in("buyer-0", {"hot": 1}), "sell-0")
    assert (created, replayed.order_id) == (False, first)


async def test_the_flag_clears_when_an_order_is_cancelled(
    two_units: None, shop: OrderService, store: RedisStore, flags: SoldOutFlags
) -> None:
    first, _ = await sell_out(shop)
    await flags.refresh()
    await shop.cancel(first, "customer")
    assert await store.sold_out_skus() == frozenset()
    await flags.refresh()
    assert (await shop.place(order_in("next", {"hot": 1}), "next-1")).created


async def test_the_flag_clears_when_a_hold_expires(
    two_units: None, shop: OrderService, store: RedisStore, flags: SoldOutFlags, clock: ManualClock
) -> None:
    await sell_out(shop)
    await flags.refresh()
    clock.advance(shop.settings.flash_hold_ttl_ms)
    assert await sweep_once(store, now_ms=clock.now_ms, batch_size_max=10) == 2
    await flags.refresh()
    assert flags.skus == frozenset()
    assert (await shop.place(order_in("next", {"hot": 1}), "next-1")).created


@pytest.mark.parametrize("restock", ["adjust", "stocktake", "safety-stock-lowered"])
async def test_the_flag_clears_when_stock_comes_back(
    catalog: CatalogService, shop: OrderService, store: RedisStore, flags: SoldOutFlags, restock: str
) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "hot", safety_stock=1, stock={"w1": 2, "w2": 1})
    await shop.place(order_in("c1", {"hot": 1}), "k1")
    await flags.refresh()
    assert flags.skus == {"hot"}
    if restock == "adjust":
        await catalog.adjust_stock("hot", "w2", AdjustmentIn(delta=5, reason="delivery"))
    elif restock == "stocktake":
        await catalog.set_stock("hot", "w2", StockSetIn(on_hand=4))
    else:
        await catalog.put_sku("hot", SkuIn(name="Hot", merchant_id="m1", price=1000, currency="EUR", safety_stock=0))
    await flags.refresh()
    assert flags.skus == frozenset()
    assert (await shop.place(order_in("c2", {"hot": 1}), "k2")).created


async def test_a_transfer_clears_the_flag(
    catalog: CatalogService, shop: OrderService, store: RedisStore, flags: SoldOutFlags
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await catalog.put_warehouse("w9", WarehouseIn(region="us", name="far"))
    await add_sku(catalog, "hot", stock={"w1": 1, "w9": 0})
    await shop.place(order_in("c1", {"hot": 1}), "k1")
    assert await store.sold_out_skus() == {"hot"}
    await catalog.adjust_stock("hot", "w9", AdjustmentIn(delta=2, reason="found"))
    await catalog.transfer_stock(TransferIn(sku="hot", from_warehouse="w9", to_warehouse="w1", qty=1))
    await flags.refresh()
    assert flags.skus == frozenset()


async def test_stock_in_another_region_keeps_the_sku_unflagged(
    catalog: CatalogService, shop: OrderService, store: RedisStore
) -> None:
    await setup_region(catalog, "eu", ["w1"])
    await setup_region(catalog, "us", ["w9"])
    await add_sku(catalog, "hot", stock={"w1": 1, "w9": 3})
    await shop.place(order_in("c1", {"hot": 1}), "k1")
    assert await refused_kind(shop, "c2", "k2") == "sold-out"  # none left in eu
    assert await store.sold_out_skus() == frozenset()  # but the us still has three
    assert (await shop.place(order_in("c3", {"hot": 1}, region="us"), "k3")).created
