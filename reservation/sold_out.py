"""Each worker's copy of the sold-out flags, refreshed on a short period.

reserve.lua flags a SKU when no warehouse has a sellable unit left; every script
that adds stock clears the flag. Workers read the set every ``refresh_ms``, so a
flag that clears in Redis clears here within one period; if Redis cannot be read
the copy empties, and every order goes to the script again (fail open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from reservation.store import RedisError, RedisStore

logger = logging.getLogger("rushgate.reservation")


class SoldOutFlags:
    def __init__(self, store: RedisStore, *, refresh_ms: int) -> None:
        self.store = store
        self.refresh_s = refresh_ms / 1000
        self.skus: frozenset[str] = frozenset()

    def first_sold_out(self, skus: Iterable[str]) -> str | None:
        if not self.skus:
            return None
        return next((sku for sku in skus if sku in self.skus), None)

    async def refresh(self) -> None:
        try:
            self.skus = await self.store.sold_out_skus()
        except RedisError as error:
            self.skus = frozenset()
            logger.warning("sold-out flags unavailable: %s", type(error).__name__)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh_s)
