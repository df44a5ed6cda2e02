"""Redis key layout.

Every key of one script call carries the hash tag of one partition, ``{p<N>}``, so
every script runs unchanged on Redis Cluster. A SKU lives in partition
``crc32(sku) mod partition_count``; configuration that an order needs (dispatch
rules, warehouses, blocklist) is kept in every partition so an order's call never
leaves its partition. Today the service runs one partition (DESIGN.md §4).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

KEY_PREFIX = "rg"
PERSISTER_GROUP = "persister"  # the consumer group that feeds Postgres from each partition's stream


def partition_of(sku: str, partition_count: int) -> int:
    """The partition that holds a SKU's stock, counters and events."""
    assert partition_count >= 1
    return zlib.crc32(sku.encode()) % partition_count


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """Names of the keys of one partition."""

    partition: int
    # The prefix of every key, made once: a batch of orders names several keys per order.
    tag: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", f"{KEY_PREFIX}:{{p{self.partition}}}")

    @property
    def stream(self) -> str:
        return f"{self.tag}:events"

    @property
    def expiry(self) -> str:
        return f"{self.tag}:expiry"

    @property
    def dispatch(self) -> str:
        return f"{self.tag}:dispatch"

    @property
    def warehouses(self) -> str:
        return f"{self.tag}:warehouses"

    @property
    def blocklist(self) -> str:
        return f"{self.tag}:blocklist"

    @property
    def sold_out(self) -> str:
        return f"{self.tag}:sold-out"

    @property
    def metrics(self) -> str:
        return f"{self.tag}:metrics"

    @property
    def confirm_due(self) -> str:
        """Shipped orders scored by when their receipt is confirmed automatically."""
        return f"{self.tag}:confirm-due"

    @property
    def window_due(self) -> str:
        """Completed orders scored by when their after-sales window closes."""
        return f"{self.tag}:window-due"

    @property
    def sweeper_lock(self) -> str:
        return f"{self.tag}:sweeper-lock"

    def sku_config(self, sku: str) -> str:
        return f"{self.tag}:sku:{sku}"

    def stock(self, sku: str) -> str:
        return f"{self.tag}:stock:{sku}"

    def order(self, order_id: str) -> str:
        return f"{self.tag}:order:{order_id}"

    def customer_counters(self, customer_id: str) -> str:
        return f"{self.tag}:bought:{customer_id}"

    def customer_rate(self, customer_id: str) -> str:
        return f"{self.tag}:rate:{customer_id}"

    def client_rate(self, client_id: str) -> str:
        return f"{self.tag}:client-rate:{client_id}"

    def idempotency(self, idempotency_key: str) -> str:
        """A string: the accepted order document. Named idem2, not idem, since earlier builds kept
        a hash under idem: an old and a new API worker never meet on one key (a hash read as a
        string, or the reverse, fails a script half-way)."""
        return f"{self.tag}:idem2:{idempotency_key}"

    def payment(self, payment_id: str) -> str:
        return f"{self.tag}:payment:{payment_id}"

    def case(self, case_id: str) -> str:
        """An after-sales case; its id starts with its order's id, so it lives in the order's partition."""
        return f"{self.tag}:case:{case_id}"


class KeyTable:
    """Collects the keys of one script call, each once, and hands out 1-based indexes."""

    __slots__ = ("_index", "keys")

    def __init__(self, fixed: list[str]) -> None:
        self.keys: list[str] = list(fixed)
        self._index: dict[str, int] = {key: position + 1 for position, key in enumerate(fixed)}

    def index(self, key: str) -> int:
        position = self._index.get(key)
        if position is None:
            self.keys.append(key)
            position = len(self.keys)
            self._index[key] = position
        return position
