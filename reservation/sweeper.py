"""Timers: bounded sweeps over the partition's deadline sets.

Unpaid holds expire (the expiry set); shipped orders nobody confirmed are confirmed
automatically (confirm-due); completed orders' after-sales windows close (window-due).

Each sweep takes at most ``batch_size_max`` due orders and handles them in one
script call that re-checks every order (status and deadline), so a payment that
lands between the read and the call wins, and two sweepers never release twice.
A lock keeps concurrent sweepers from doing the same work; the script keeps them
correct even if the lock is lost.
"""

from __future__ import annotations

from reservation.outcomes import CancelCode, ConfirmCode, WindowCode
from reservation.store import RedisStore


async def sweep_once(store: RedisStore, *, now_ms: int, batch_size_max: int) -> int:
    """Cancel up to batch_size_max orders whose hold has expired; returns how many."""
    due_ids = await store.due_order_ids(now_ms=now_ms, count_max=batch_size_max)
    if not due_ids:
        return 0
    orders = await store.get_orders(due_ids)
    found = [order for order in orders if order is not None]
    missing = [order_id for order_id, order in zip(due_ids, orders, strict=True) if order is None]
    if missing:
        await store.forget_expiry(missing)
    if not found:
        return 0
    codes = await store.expire(found, now_ms=now_ms)
    return sum(1 for code in codes if code is CancelCode.CANCELLED)


async def confirm_due_once(store: RedisStore, *, now_ms: int, window_ms: int, batch_size_max: int) -> int:
    """Confirm receipt of up to batch_size_max shipped orders whose automatic confirmation is due."""
    due_ids = await store.due_members(store.keys.confirm_due, now_ms=now_ms, count_max=batch_size_max)
    if not due_ids:
        return 0
    changes = await store.confirm(due_ids, window_ms=window_ms, now_ms=now_ms, due_only=True)
    return sum(1 for change in changes if change.code is ConfirmCode.COMPLETED)


async def close_windows_once(store: RedisStore, *, now_ms: int, batch_size_max: int) -> int:
    """Close the after-sales window of up to batch_size_max completed orders whose window ended."""
    due_ids = await store.due_members(store.keys.window_due, now_ms=now_ms, count_max=batch_size_max)
    if not due_ids:
        return 0
    changes = await store.close_windows(due_ids, now_ms=now_ms)
    return sum(1 for change in changes if change.code is WindowCode.CLOSED)


async def sweep_until_clear(store: RedisStore, *, now_ms: int, batch_size_max: int) -> int:
    """Sweep repeatedly until no due order is left; returns how many were cancelled."""
    released = 0
    while True:
        count = await sweep_once(store, now_ms=now_ms, batch_size_max=batch_size_max)
        released += count
        if count == 0 and not await store.due_order_ids(now_ms=now_ms, count_max=1):
            return released
