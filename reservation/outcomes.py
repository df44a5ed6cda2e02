"""Return codes of the Lua scripts, mirrored one for one (see each script's header).

Expected business outcomes are values, not exceptions: the caller decides how to
answer each one.
"""

from __future__ import annotations

from enum import IntEnum


class ReserveCode(IntEnum):
    """reserve.lua, per order."""

    ACCEPTED = 1
    REPLAYED = 2
    SOLD_OUT = 3
    PURCHASE_LIMIT = 4
    SALE_NOT_OPEN = 5
    CUSTOMER_BLOCKED = 6
    IDEMPOTENCY_KEY_REUSED = 7
    UNKNOWN_SKU = 8
    UNKNOWN_REGION = 9
    BACKLOG_FULL = 10
    MIXED_CURRENCY = 11
    RATE_LIMITED = 12
    COOLING_DOWN = 13


class CancelCode(IntEnum):
    """cancel.lua, per order."""

    CANCELLED = 1
    ALREADY_CANCELLED = 2
    NOT_DUE = 3
    NOT_FOUND = 4
    NOT_CANCELLABLE = 5


class PayCode(IntEnum):
    """pay.lua."""

    PAID = 1
    PAID_AFTER_EXPIRY = 2
    REFUND_PENDING = 3
    ALREADY_RECORDED = 4
    NOT_FOUND = 5
    AMOUNT_MISMATCH = 6
    ALREADY_PAID = 7
    PAYMENT_ID_REUSED = 8


class StockCode(IntEnum):
    """stock_adjust.lua."""

    CHANGED = 1
    UNKNOWN_SKU = 2
    UNKNOWN_WAREHOUSE = 3
    CONFLICT = 4
    BELOW_HELD = 5
    ABOVE_MAX = 6


class TransferCode(IntEnum):
    """stock_transfer.lua."""

    MOVED = 1
    UNKNOWN_SKU = 2
    UNKNOWN_WAREHOUSE = 3
    INSUFFICIENT = 4
    ABOVE_MAX = 5


class ShipCode(IntEnum):
    """ship.lua."""

    SHIPPED = 1
    ALREADY_SHIPPED = 2
    NOT_FOUND = 3
    NO_SUCH_SHIPMENT = 4
    NOT_PAID = 5


class TrackCode(IntEnum):
    """track.lua."""

    RECORDED = 1
    ALREADY_RECORDED = 2
    NOT_FOUND = 3
    NOT_SHIPPED = 4
    TRACK_FULL = 5


class ConfirmCode(IntEnum):
    """confirm.lua, per order."""

    COMPLETED = 1
    ALREADY_COMPLETED = 2
    NOT_DUE = 3
    NOT_FOUND = 4
    NOT_SHIPPED = 5


class WindowCode(IntEnum):
    """window_close.lua, per order."""

    CLOSED = 1
    UNCHANGED = 2
    NOT_FOUND = 3
    NOT_COMPLETED = 4


class CaseOpenCode(IntEnum):
    """case_open.lua."""

    OPENED = 1
    APPROVED = 2
    NOT_FOUND = 3
    NOT_ALLOWED = 4
    ITEMS_INVALID = 5
    WINDOW_CLOSED = 6
    CASE_ID_TAKEN = 7
    NOTHING_TO_REFUND = 8


class OrderRefundCode(IntEnum):
    """order_refund.lua."""

    REFUNDED = 1
    ALREADY_REFUNDED = 2
    NOT_FOUND = 3
    NOT_ALLOWED = 4


class CaseCode(IntEnum):
    """case_review.lua, case_return.lua, case_refund.lua, case_exchange_ship.lua."""

    DONE = 1
    NOT_FOUND = 2
    NOT_ALLOWED = 3
    UNKNOWN_WAREHOUSE = 4
