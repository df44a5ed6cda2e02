"""Shapes of the audit log, shared by its writer and reader (persistence) and the API (intake).

The facts of a change (who, what it replaced) are captured by the scripts in the same call
that makes the change (``reservation.records.ConfigAudit`` / ``StockAudit``); these are the
rows the persister makes of them, and the questions the API may ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

AUDIT_ACTIONS = (
    "warehouse.put",
    "dispatch.put",
    "sku.put",
    "stock.set",
    "stock.adjust",
    "stock.transfer",
    "stock.reconcile",
    "customer.block",
    "customer.unblock",
    "client.create",
    "client.revoke",
)
AUDIT_TARGET_TYPES = ("warehouse", "dispatch", "sku", "stock", "customer", "client")
AUDIT_PAGE_SIZE_MAX = 500


class AuditUnavailable(RuntimeError):
    """The audit log's store could not answer (Postgres away or too slow)."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters (None: any) and the page wanted: entries older than ``before_audit_id``, newest first."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    warehouse_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_audit_id: int | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        assert 1 <= self.limit <= AUDIT_PAGE_SIZE_MAX, f"limit {self.limit} out of bounds"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    warehouse_ids: tuple[str, ...]
    request_id: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    has_more: bool
