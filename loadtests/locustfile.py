"""Flash sale against rushgate: a spike of buyers on a few hot SKUs, with pass/fail gates.

Black-box: talks to the service only over its public HTTP API (and, for the final check, reads
Postgres), and imports nothing of rushgate. The headless command and every knob are in
loadtests/README.md.

A run seeds its own catalog on test_start (a region, two warehouses, hot SKUs named after the
run id, so reruns never collide). Each user is a place in the crowd, taken by one shopper after
another; a shopper orders a hot SKU with a fresh Idempotency-Key a few times, then leaves. Of the
orders accepted, some are paid, some cancelled, the rest abandoned and left to expire. Sold-out
and purchase-limit answers are a flash sale working as intended and count as successes;
anything else unexpected is a failure.

At the end the gates decide the exit code: failure ratio, p95, and no oversell — the stock
counters must equal exactly the units held by the orders this run knows it paid or left
pending, and Postgres must hold every accepted order and a ledger summing to the counters.

Helpers: gates.py (the verdicts, pure functions) and blackbox.py (seeding and the end-of-run
reads). They are imported as top-level modules: locust puts this file's directory on sys.path.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent
from blackbox import Catalog, Service, ServiceError, read_postgres
from gates import (
    ABANDONED,
    CANCELLED,
    PAID,
    REFUND_PENDING,
    AcceptedOrder,
    GateReport,
    Level,
    Place,
    check_failure_ratio,
    check_ledger,
    check_p95,
    check_persisted_orders,
    check_stock,
)
from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

logger = logging.getLogger("loadtests")

EXPECTED_REFUSALS = ("sold-out", "purchase-limit")
SHOPPER_ATTEMPTS_MAX = 4  # a shopper retries a few times (sold out, limit reached), then leaves
READY_TIMEOUT_S = 30.0
POLL_S = 0.25


def add_options(parser: Any) -> None:
    """Knobs of the scenario: each is a flag, a key in locust.conf, and a LOADTEST_* variable."""
    knobs: list[tuple[str, type, object, str]] = [
        ("hot-skus", int, 3, "number of hot SKUs on sale"),
        ("stock-per-sku", int, 150, "units of each SKU, split 60/40 over the region's two warehouses"),
        ("per-customer-limit", int, 2, "per_customer_limit of every SKU"),
        ("qty-max", int, 2, "a buyer orders 1..qty-max units"),
        ("pay-ratio", float, 0.6, "share of accepted orders that are paid"),
        ("cancel-ratio", float, 0.15, "share that are cancelled; the rest are abandoned and expire"),
        ("decide-time-max-s", float, 1.0, "a buyer pays or cancels 0..this many seconds after the 201"),
        ("think-time-max-s", float, 1.0, "pause between a buyer's attempts"),
        ("peak-users", int, 200, "buyers at the spike; the tail keeps a fifth of them"),
        ("time-scale", float, 1.0, "multiplies the shape's 5 s ramp, 30 s spike and 25 s tail"),
        ("failure-ratio-max", float, 0.01, "gate: largest acceptable share of failed requests"),
        ("p95-ms-max", float, 500.0, "gate: largest acceptable p95 over all requests, in ms"),
        ("settle-timeout-s", float, 60.0, "how long the end check waits for Postgres to catch up"),
        ("gate-report", str, "", "also write the gate verdicts as JSON to this path"),
        ("run-id", str, "", "names the run's SKUs, region and customers (default: time + random)"),
    ]
    for name, kind, default, help_text in knobs:
        env_var = "LOADTEST_" + name.upper().replace("-", "_")
        parser.add_argument(f"--{name}", type=kind, default=default, env_var=env_var, help=f"{help_text} [{env_var}]")


events.init_command_line_parser.add_listener(add_options)


@dataclass(frozen=True)
class Attempt:
    """A request whose outcome the run did not learn (timeout, 5xx, buyer stopped mid-request)."""

    kind: str  # "order" | "payment" | "cancel"
    path: str
    body: dict[str, Any]
    idempotency_key: str | None = None
    order_id: str | None = None


@dataclass
class Run:
    """Everything one test run did, in this process."""

    catalog: Catalog
    service: Service
    options: Any
    orders: dict[str, AcceptedOrder] = field(default_factory=dict)
    unsettled: dict[str, Attempt] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    server_status: dict[str, str] = field(default_factory=dict)


RUNS: list[Run] = []  # one per test_start (the web UI can start several); the last is current
REPORT = GateReport()
SUMMARY: dict[str, Any] = {}
CUSTOMER_NUMBERS = itertools.count(1)


def current_run() -> Run:
    assert RUNS, "test_start seeds the catalog before any buyer starts"
    return RUNS[-1]


def body_of(content: bytes | str | None) -> dict[str, Any]:
    """A JSON object body, or {} for anything else (an empty body, HTML from a proxy, a list)."""
    try:
        answer = json.loads(content or b"{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def problem_kind(answer: dict[str, Any]) -> str:
    """The kind of an RFC 9457 problem: the last segment of its type ("" when it is none)."""
    return str(answer.get("type", "")).rsplit("/", 1)[-1]


def accepted_order(answer: dict[str, Any], body: dict[str, Any], catalog: Catalog) -> AcceptedOrder:
    """The 201 body, checked against the request: one line, the seeded price, shipments adding up."""
    (line,) = body["items"]
    sku, qty = line["sku"], line["qty"]
    price = catalog.prices[sku]
    if answer.get("status") != "pending_payment":
        raise ValueError(f"201 with status {answer.get('status')}")
    if answer.get("items") != [{"sku": sku, "qty": qty, "unit_price": price}] or answer.get("total") != qty * price:
        raise ValueError(f"201 with items {answer.get('items')} total {answer.get('total')}")
    units: Counter[tuple[str, str]] = Counter()
    for shipment in answer["shipments"]:
        for item in shipment["items"]:
            units[(item["sku"], shipment["warehouse_id"])] += item["qty"]
    if sum(units.values()) != qty or any(place not in catalog.initial for place in units):
        raise ValueError(f"201 with shipments {answer['shipments']}")
    return AcceptedOrder(answer["order_id"], answer["total"], dict(units))


class FlashSaleBuyer(FastHttpUser):
    """One customer at the sale: keeps trying for a hot SKU, then pays, cancels or walks away."""

    def wait_time(self) -> float:
        return random.uniform(0, current_run().options.think_time_max_s)

    def on_start(self) -> None:
        self.gateway = {"Authorization": current_run().service.gateway["Authorization"]}
        self.next_shopper()

    def next_shopper(self) -> None:
        """A new customer takes this place in the crowd and will try a few times before leaving."""
        self.customer_id = f"{current_run().catalog.run_id}-c{next(CUSTOMER_NUMBERS)}"
        self.attempts_left = random.randint(1, SHOPPER_ATTEMPTS_MAX)

    @task
    def buy(self) -> None:
        run = current_run()
        skus = run.catalog.skus
        sku = random.choices(skus, weights=[1 / rank for rank in range(1, len(skus) + 1)])[0]
        body = {"customer_id": self.customer_id, "region": run.catalog.region, "order_type": "flash",
                "items": [{"sku": sku, "qty": random.randint(1, run.options.qty_max)}]}  # fmt: skip
        self.attempts_left -= 1
        order = self.place(run, body)
        if self.attempts_left == 0:
            self.next_shopper()
        if order is None:
            return
        choice = random.random()
        if choice >= run.options.pay_ratio + run.options.cancel_ratio:
            return
        gevent.sleep(random.uniform(0, run.options.decide_time_max_s))
        if choice < run.options.pay_ratio:
            self.pay(run, order)
        else:
            self.cancel(run, order)

    def place(self, run: Run, body: dict[str, Any]) -> AcceptedOrder | None:
        key = uuid.uuid4().hex
        run.unsettled[key] = Attempt("order", "/v1/orders", body, idempotency_key=key)
        headers = {**self.gateway, "Idempotency-Key": key}
        with self.client.post("/v1/orders", json=body, headers=headers, catch_response=True) as response:
            status, answer = response.status_code, body_of(response.content)
            kind = problem_kind(answer)
            if status == 201:
                try:
                    order = accepted_order(answer, body, run.catalog)
                except (ValueError, KeyError, TypeError) as error:
                    response.failure(f"unexpected 201 body: {error}")
                    return None
                del run.unsettled[key]
                run.orders[order.order_id] = order
                response.success()
                return order
            if 0 < status < 500:
                del run.unsettled[key]  # a refused order stores nothing
            if status == 409 and kind in EXPECTED_REFUSALS:
                run.counts[kind] += 1
                response.success()
            else:
                response.failure(f"{status} {kind}".strip())
        return None

    def pay(self, run: Run, order: AcceptedOrder) -> None:
        payment_id = uuid.uuid4().hex
        path = f"/v1/orders/{order.order_id}/payment"
        body = {"payment_id": payment_id, "amount": order.total, "method": "card"}
        run.unsettled[payment_id] = Attempt("payment", path, body, order_id=order.order_id)
        name = "/v1/orders/[id]/payment"
        with self.client.post(path, json=body, headers=self.gateway, name=name, catch_response=True) as response:
            status, answer = response.status_code, body_of(response.content)
            kind = problem_kind(answer)
            if 0 < status < 500:
                del run.unsettled[payment_id]
            if status == 200 and answer.get("status") == "paid":
                order.outcome = PAID
                response.success()
            elif status == 409 and kind == "refund-pending":  # paid after the hold expired and sold again
                order.outcome = REFUND_PENDING
                response.success()
            else:
                response.failure(f"{status} {kind}".strip())

    def cancel(self, run: Run, order: AcceptedOrder) -> None:
        path = f"/v1/orders/{order.order_id}/cancel"
        body = {"reason": "customer"}
        run.unsettled[f"cancel-{order.order_id}"] = Attempt("cancel", path, body, order_id=order.order_id)
        name = "/v1/orders/[id]/cancel"
        with self.client.post(path, json=body, headers=self.gateway, name=name, catch_response=True) as response:
            status, answer = response.status_code, body_of(response.content)
            kind = problem_kind(answer)
            if 0 < status < 500:
                del run.unsettled[f"cancel-{order.order_id}"]
            if status == 200 and answer.get("status") == "cancelled":
                order.outcome = CANCELLED
                response.success()
            else:
                response.failure(f"{status} {kind}".strip())


class FlashSaleShape(LoadTestShape):
    """Doors open: a short ramp to the peak, the spike, then a tail of stragglers; then stop."""

    ramp_s, spike_s, tail_s = 5.0, 30.0, 25.0

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None and self.runner.environment.parsed_options is not None
        options = self.runner.environment.parsed_options
        scale, peak = options.time_scale, options.peak_users
        ramp_end = self.ramp_s * scale
        spike_end = ramp_end + self.spike_s * scale
        elapsed = self.get_run_time()
        if elapsed < spike_end:
            return peak, peak / max(ramp_end, 0.1)
        if elapsed < spike_end + self.tail_s * scale:
            return max(1, peak // 5), min(float(peak), 100.0)
        return None


@events.init.add_listener
def refuse_distributed_runs(environment: Environment, **_: Any) -> None:
    # The oversell gate compares the counters with every accepted order; in a distributed run the
    # orders are spread over the workers, and locust stops listening to them before they could all
    # report back. One process with FastHttpUser drives a few thousand requests per second.
    if isinstance(environment.runner, MasterRunner | WorkerRunner):
        sys.exit("loadtests: run in one process (no --processes/--master/--worker): the gates need every order")


@events.test_start.add_listener
def seed_catalog(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    assert options is not None, "run through the locust command line"
    admin_token = os.environ.get("RUSHGATE_ADMIN_TOKEN", "")
    gateway_token = os.environ.get("RUSHGATE_GATEWAY_TOKEN", "").split(",")[0].strip() or admin_token
    run_id = options.run_id or time.strftime("%m%d%H%M%S") + secrets.token_hex(2)
    catalog = Catalog.plan(run_id, options.hot_skus, options.stock_per_sku)
    service = Service(environment.host or "", admin_token, gateway_token)
    RUNS.append(Run(catalog, service, options))
    try:
        if not admin_token or not environment.host:
            raise ServiceError("set RUSHGATE_ADMIN_TOKEN (and RUSHGATE_GATEWAY_TOKEN) and --host")
        if min(options.pay_ratio, options.cancel_ratio) < 0 or options.pay_ratio + options.cancel_ratio > 1:
            raise ServiceError("pay-ratio and cancel-ratio must be >= 0 and add up to at most 1")
        service.wait_ready(READY_TIMEOUT_S)
        service.seed(catalog, options.per_customer_limit)
    except (ServiceError, OSError) as error:
        REPORT.add("seed the catalog", [str(error)], "")
        logger.error("cannot seed the catalog: %s", error)
        assert environment.runner is not None
        gevent.spawn(environment.runner.quit)
        return
    logger.info("run %s: %d hot SKUs x %d units in region %s", run_id, len(catalog.skus), options.stock_per_sku,
                catalog.region)  # fmt: skip


def settle(run: Run) -> list[str]:
    """Send again every request whose outcome is unknown (same idempotency key / payment id)."""
    problems = []
    if run.unsettled:
        kinds = Counter(attempt.kind for attempt in run.unsettled.values())
        logger.info("replaying %d requests whose outcome is unknown: %s", len(run.unsettled), dict(kinds))
    for attempt in list(run.unsettled.values()):
        method_path = f"POST {attempt.path}"
        response = run.service.replay("POST", attempt.path, attempt.body, attempt.idempotency_key)
        answer = body_of(response.content)
        kind = problem_kind(answer)
        if attempt.kind == "order" and response.status_code == 201:
            order = accepted_order(answer, attempt.body, run.catalog)
            run.orders[order.order_id] = order
        elif attempt.kind == "order" and 400 <= response.status_code < 500:
            pass  # refused now, so it was refused then: a refused order stores nothing
        elif attempt.kind == "payment" and response.status_code == 200 and answer.get("status") == "paid":
            assert attempt.order_id is not None
            run.orders[attempt.order_id].outcome = PAID
        elif attempt.kind == "payment" and response.status_code == 409 and kind == "refund-pending":
            assert attempt.order_id is not None
            run.orders[attempt.order_id].outcome = REFUND_PENDING
        elif attempt.kind == "cancel" and response.status_code == 200 and answer.get("status") == "cancelled":
            assert attempt.order_id is not None
            run.orders[attempt.order_id].outcome = CANCELLED
        else:
            problems.append(f"outcome of {method_path} still unknown: replay answered {response.status_code} {kind}")
    run.counts["replayed"] = len(run.unsettled)
    return problems


def snapshot(run: Run) -> tuple[dict[Place, Level], dict[str, str]]:
    """Counters and order statuses from one quiet moment: the counters did not move while orders were read.

    After the buyers stopped only the sweeper changes these SKUs, by expiring abandoned orders, and
    every expiry changes a counter. Paid and cancelled orders are final, so they are read once.
    """
    skus = run.catalog.skus
    abandoned = {order_id for order_id, order in run.orders.items() if order.outcome == ABANDONED}
    final = run.service.order_statuses(order_id for order_id in run.orders if order_id not in abandoned)
    deadline = time.monotonic() + run.options.settle_timeout_s
    while True:
        before = run.service.stock(skus)
        statuses = run.service.order_statuses(abandoned)
        after = run.service.stock(skus)
        if before == after:
            return after, {**final, **statuses}
        if time.monotonic() > deadline:
            raise ServiceError(f"orders kept expiring for {run.options.settle_timeout_s:.0f} s: no quiet moment")
        gevent.sleep(POLL_S)


def check_postgres(run: Run, database_url: str) -> tuple[list[str], str]:
    """Poll (bounded) until Postgres has caught up: every accepted order, none other, ledger == counters."""
    started = time.monotonic()
    orders = list(run.orders.values())
    while True:
        counters = run.service.stock(run.catalog.skus)
        rows, ledger = read_postgres(database_url, run.catalog.skus)
        violations = check_persisted_orders(orders, rows, run.server_status) + check_ledger(counters, ledger)
        waited_s = time.monotonic() - started
        if not violations:
            return [], f"{len(rows)} orders persisted, none extra; ledger = counters at {len(ledger)} places" \
                       f" (caught up after {waited_s:.1f} s)"  # fmt: skip
        if waited_s > run.options.settle_timeout_s:
            return [f"after {waited_s:.0f} s: {violation}" for violation in violations], ""
        gevent.sleep(POLL_S)


@events.test_stop.add_listener
def check_oversell(environment: Environment, **_: Any) -> None:
    run = RUNS[-1] if RUNS else None
    if run is None or any(verdict.gate == "seed the catalog" for verdict in REPORT.verdicts):
        return
    try:
        problems = settle(run)
        levels, run.server_status = snapshot(run)
    except (ServiceError, OSError, ValueError, KeyError, TypeError) as error:
        REPORT.add("no oversell (Redis counters)", [f"cannot read the service: {error}"], "")
        return
    violations = problems + check_stock(run.catalog.initial, levels, run.orders.values(), run.server_status)
    held = sum(level.reserved + level.committed for level in levels.values())
    stock = sum(run.catalog.initial.values())
    expired = sum(1 for order in run.orders.values() if order.outcome == ABANDONED
                  and run.server_status.get(order.order_id) == "cancelled")  # fmt: skip
    run.counts["expired"] = expired
    REPORT.add(
        "no oversell (Redis counters)",
        violations,
        f"{len(levels)} places add up; committed = paid units, reserved = units of unexpired abandoned orders;"
        f" {held} of {stock} units held at the end",
    )
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        REPORT.add("Postgres agrees", [], "skipped: DATABASE_URL not set")
        return
    try:
        violations, detail = check_postgres(run, database_url)
    except (ServiceError, OSError) as error:
        violations, detail = [f"cannot read Postgres or the service: {error}"], ""
    REPORT.add("Postgres agrees", violations, detail)


@events.quitting.add_listener
def apply_gates(environment: Environment, **_: Any) -> None:
    assert environment.runner is not None
    environment.runner.stop()  # no-op after a normal end; after Ctrl-C it stops the buyers and runs test_stop
    options = environment.parsed_options
    assert options is not None, "run through the locust command line"
    total = environment.stats.total
    p95_ms = total.get_response_time_percentile(0.95) or 0.0
    REPORT.add(
        "failure ratio",
        check_failure_ratio(total.num_failures, total.num_requests, options.failure_ratio_max),
        f"{total.fail_ratio:.2%} of {total.num_requests} requests <= {options.failure_ratio_max:.2%}",
    )
    REPORT.add("p95", check_p95(p95_ms, options.p95_ms_max), f"{p95_ms:.0f} ms <= {options.p95_ms_max:.0f} ms")
    exceptions = [f"{error['count']}x {error['msg']}" for error in environment.runner.exceptions.values()]
    REPORT.add("no errors in the locustfile", exceptions, "none")
    environment.process_exit_code = 0 if REPORT.passed else 1
    print_summary(environment.process_exit_code)
    if options.gate_report:
        with open(options.gate_report, "w") as report_file:
            json.dump({**SUMMARY, "passed": REPORT.passed, "verdicts": [asdict(v) for v in REPORT.verdicts]},
                      report_file, indent=2)  # fmt: skip


def print_summary(exit_code: int) -> None:
    run = RUNS[-1] if RUNS else None
    lines = [f"==== rushgate flash-sale gates{f' (run {run.catalog.run_id})' if run else ''} ===="]
    lines += [f"{'PASS' if v.passed else 'FAIL'}  {v.gate:<30} {v.detail}" for v in REPORT.verdicts]
    if run is not None:
        counts = run.counts + Counter(order.outcome for order in run.orders.values())
        counts["accepted"] = len(run.orders)
        SUMMARY.update(run_id=run.catalog.run_id, orders=dict(counts))
        lines.append(
            f"orders: {counts['accepted']} accepted -> {counts[PAID]} paid, {counts[CANCELLED]} cancelled,"
            f" {counts[REFUND_PENDING]} refund pending, {counts[ABANDONED]} abandoned"
            f" ({counts['expired']} of them expired by the end); refused: {counts['sold-out']} sold out,"
            f" {counts['purchase-limit']} at the purchase limit; {counts['replayed']} unknown outcomes replayed"
        )
    lines.append(f"RESULT: {'PASS' if exit_code == 0 else 'FAIL'} (exit code {exit_code})")
    print("\n".join(lines), flush=True)
