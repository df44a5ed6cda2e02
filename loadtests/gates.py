"""Pass/fail gates of the flash-sale load test: pure functions over what the run saw.

No locust, no network here: the locustfile gathers the inputs (its record of accepted
orders, the stock counters from GET /v1/stock, rows from Postgres) and these functions
say what is wrong with them. Each check returns a list of violations; empty means pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Where an accepted order ended, as far as the load test knows.
PAID = "paid"  # the payment answered 200 and the order is paid: its units are committed
CANCELLED = "cancelled"  # the cancel answered 200: its units went back
REFUND_PENDING = "refund_pending"  # paid after its hold expired and the units were gone: nothing held
ABANDONED = "abandoned"  # nobody paid or cancelled it: held until it expires, then released

Place = tuple[str, str]  # (sku, warehouse_id)


@dataclass(frozen=True)
class Level:
    """Stock counters of one (sku, warehouse), as GET /v1/stock or the ledger reports them."""

    on_hand: int
    available: int
    reserved: int
    committed: int


@dataclass
class AcceptedOrder:
    """An order the service answered 201 to, with the units it holds per (sku, warehouse)."""

    order_id: str
    total: int
    units: dict[Place, int]
    outcome: str = ABANDONED


@dataclass(frozen=True)
class Verdict:
    gate: str
    passed: bool
    detail: str


@dataclass
class GateReport:
    verdicts: list[Verdict] = field(default_factory=list)

    def add(self, gate: str, violations: list[str], passed_detail: str) -> Verdict:
        detail = passed_detail if not violations else "; ".join(violations[:8])
        if len(violations) > 8:
            detail += f"; … {len(violations) - 8} more"
        verdict = Verdict(gate, not violations, detail)
        self.verdicts.append(verdict)
        return verdict

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(verdict.passed for verdict in self.verdicts)


def check_failure_ratio(failures: int, requests: int, ratio_max: float) -> list[str]:
    if requests == 0:
        return ["no request was made"]
    ratio = failures / requests
    if ratio > ratio_max:
        return [f"failure ratio {ratio:.2%} ({failures} of {requests}) exceeds {ratio_max:.2%}"]
    return []


def check_p95(p95_ms: float, p95_ms_max: float) -> list[str]:
    if p95_ms > p95_ms_max:
        return [f"p95 {p95_ms:.0f} ms exceeds {p95_ms_max:.0f} ms"]
    return []


def held_units(
    orders: Iterable[AcceptedOrder], server_status: Mapping[str, str]
) -> tuple[Counter[Place], Counter[Place]]:
    """Units the orders should hold now: (committed by paid orders, reserved by unexpired abandoned ones).

    server_status maps order id to the status GET /v1/orders/{id} reported in the same snapshot as
    the counters; only abandoned orders need it (they may have expired).
    """
    committed: Counter[Place] = Counter()
    reserved: Counter[Place] = Counter()
    for order in orders:
        if order.outcome == PAID:
            committed.update(order.units)
        elif order.outcome == ABANDONED and server_status.get(order.order_id) == "pending_payment":
            reserved.update(order.units)
    return committed, reserved


def check_order_statuses(orders: Iterable[AcceptedOrder], server_status: Mapping[str, str]) -> list[str]:
    """The service's word on each order agrees with what the load test did to it."""
    allowed = {
        PAID: {"paid"},
        CANCELLED: {"cancelled"},
        REFUND_PENDING: {"cancelled"},
        ABANDONED: {"pending_payment", "cancelled"},
    }
    violations = []
    for order in orders:
        status = server_status.get(order.order_id)
        if status not in allowed[order.outcome]:
            violations.append(f"order {order.order_id} ({order.outcome}) is {status or 'missing'} on the service")
    return violations


def check_stock(
    initial: Mapping[Place, int],
    levels: Mapping[Place, Level],
    orders: Iterable[AcceptedOrder],
    server_status: Mapping[str, str],
) -> list[str]:
    """The oversell gate: counters are sane, add up, and match exactly the units the orders hold.

    For every seeded (sku, warehouse): no counter is negative; available + reserved + committed ==
    on_hand == the stock seeded (nothing else changes on_hand during the run); committed equals
    the units of the orders paid; reserved equals the units of abandoned orders still pending;
    and reserved + committed never exceeds the stock (that would be an oversell).
    """
    orders = list(orders)
    committed, reserved = held_units(orders, server_status)
    violations = check_order_statuses(orders, server_status)
    for place in sorted(set(committed) | set(reserved) | set(levels)):
        if place not in initial:
            violations.append(f"{place[0]}@{place[1]}: stock or orders in a warehouse the test never stocked")
    for place, stock in sorted(initial.items()):
        name = f"{place[0]}@{place[1]}"
        level = levels.get(place)
        if level is None:
            violations.append(f"{name}: no counters reported")
            continue
        for counter in ("available", "reserved", "committed"):
            if getattr(level, counter) < 0:
                violations.append(f"{name}: {counter} is {getattr(level, counter)} < 0")
        if level.available + level.reserved + level.committed != level.on_hand:
            violations.append(
                f"{name}: available {level.available} + reserved {level.reserved} + committed {level.committed}"
                f" != on_hand {level.on_hand}"
            )
        if level.on_hand != stock:
            violations.append(f"{name}: on_hand {level.on_hand} != {stock} seeded")
        if level.reserved + level.committed > stock:
            violations.append(f"{name}: OVERSOLD, {level.reserved + level.committed} units held of {stock}")
        if committed[place] + reserved[place] > stock:
            violations.append(f"{name}: OVERSOLD, live orders hold {committed[place] + reserved[place]} of {stock}")
        if level.committed != committed[place]:
            violations.append(f"{name}: committed {level.committed} != {committed[place]} units of paid orders")
        if level.reserved != reserved[place]:
            violations.append(f"{name}: reserved {level.reserved} != {reserved[place]} units of pending orders")
    return violations


def check_persisted_orders(
    orders: Iterable[AcceptedOrder], rows: Mapping[str, str], server_status: Mapping[str, str]
) -> list[str]:
    """Postgres has every accepted order, no other order of the run's SKUs, each in its final status.

    rows maps order id to its `orders.status`. An abandoned order may still be pending in the snapshot
    and expire afterwards, so either status is accepted for it unless the service said cancelled.
    """
    expected = {order.order_id: order for order in orders}
    violations = [
        f"order {order_id} is in Postgres but was never accepted" for order_id in sorted(set(rows) - set(expected))
    ]
    missing = sorted(set(expected) - set(rows))
    if missing:
        violations.append(f"{len(missing)} accepted orders not in Postgres (e.g. {missing[0]})")
    for order_id in sorted(set(rows) & set(expected)):
        order = expected[order_id]
        allowed = {PAID: {"paid"}, CANCELLED: {"cancelled"}, REFUND_PENDING: {"cancelled"}}.get(order.outcome)
        if allowed is None:
            allowed = {"cancelled"} if server_status.get(order_id) == "cancelled" else {"pending_payment", "cancelled"}
        if rows[order_id] not in allowed:
            violations.append(f"order {order_id} ({order.outcome}) is {rows[order_id]} in Postgres")
    return violations


def check_ledger(counters: Mapping[Place, Level], ledger: Mapping[Place, Level]) -> list[str]:
    """Reconciliation: the stock movements in Postgres sum to the Redis counters, place by place."""
    violations = []
    zero = Level(0, 0, 0, 0)
    for place in sorted(set(counters) | set(ledger)):
        redis_level, ledger_level = counters.get(place, zero), ledger.get(place, zero)
        if redis_level != ledger_level:
            violations.append(f"{place[0]}@{place[1]}: ledger {ledger_level} != counters {redis_level}")
    return violations
