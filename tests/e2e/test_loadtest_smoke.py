"""The locust suite in loadtests/ runs its documented headless command against real processes, and its gates bite.

The smoke run is short (about 15 s, 50 buyers) with a 2 s hold so abandoned orders expire during
it. The fault run commits a unit behind the service's back and expects exit code 1; the unit
checks feed the gate functions inconsistent inputs directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from loadtests.gates import ABANDONED, PAID, AcceptedOrder, Level, check_ledger, check_persisted_orders, check_stock
from reservation.store import RedisStore
from tests.conftest import ADMIN_TOKEN, GATEWAY_TOKEN, Services
from tests.processes import eventually, running, serve_command, service_environment, wait_ready

ROOT = Path(__file__).resolve().parents[2]
LOCUST_TIMEOUT_S = 120
HOLD_TTL_S = "2"


def locust_command(base_url: str, report: Path) -> list[str]:
    """The headless command of loadtests/README.md, with the HTML report in the test's directory."""
    return [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--config", "loadtests/locust.conf",
            "--host", base_url, "--html", str(report)]  # fmt: skip


def locust_environment(services: Services, gate_report: Path, **knobs: str) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith(("RUSHGATE_", "LOADTEST_", "LOCUST_"))}  # fmt: skip
    environ.update(
        RUSHGATE_ADMIN_TOKEN=ADMIN_TOKEN,
        RUSHGATE_GATEWAY_TOKEN=GATEWAY_TOKEN,
        DATABASE_URL=services.database_url,
        LOADTEST_GATE_REPORT=str(gate_report),
        **knobs,
    )
    return environ


async def run_locust(command: list[str], environ: dict[str, str], log: Path) -> tuple[int, str]:
    with open(log, "wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=environ, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            returncode = await asyncio.wait_for(process.wait(), LOCUST_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    return returncode, log.read_text()


@asynccontextmanager
async def rushgate_running(services: Services, tmp_path: Path) -> AsyncIterator[str]:
    """API, persister and sweeper against the suite's servers, with a short hold; yields the base URL."""
    command, port = serve_command(workers=1)
    environ = service_environment(services, RUSHGATE_FLASH_HOLD_TTL_S=HOLD_TTL_S)
    logs = {name: tmp_path / f"{name}.log" for name in ("serve", "persister", "sweeper")}
    with (
        running(command, environ, logs["serve"]) as server,
        running(["persister"], environ, logs["persister"]) as persister,
        running(["sweeper"], environ, logs["sweeper"]) as sweeper,
    ):
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, server, logs["serve"])
        yield base_url
        for name, process in (("serve", server), ("persister", persister), ("sweeper", sweeper)):
            assert process.poll() is None, f"rushgate {name} exited during the run: {logs[name].read_text()[-2000:]}"


@pytest.mark.slow
async def test_the_flash_sale_scenario_passes_its_gates_and_writes_the_html_report(
    services: Services, store: RedisStore, database: str, tmp_path: Path
) -> None:
    report, gate_report = tmp_path / "report.html", tmp_path / "gates.json"
    knobs = {"LOADTEST_TIME_SCALE": "0.25", "LOADTEST_PEAK_USERS": "50", "LOADTEST_HOT_SKUS": "2",
             "LOADTEST_STOCK_PER_SKU": "30"}  # fmt: skip
    async with rushgate_running(services, tmp_path) as base_url:
        command, environ = locust_command(base_url, report), locust_environment(services, gate_report, **knobs)
        returncode, output = await run_locust(command, environ, tmp_path / "locust.log")

    print(output[output.find("==== rushgate") :])
    assert returncode == 0, output[-4000:]
    assert "RESULT: PASS (exit code 0)" in output
    assert report.stat().st_size > 10_000 and "/v1/orders" in report.read_text()
    gates: dict[str, Any] = json.loads(gate_report.read_text())
    verdicts = {verdict["gate"]: verdict for verdict in gates["verdicts"]}
    assert gates["passed"] and all(verdict["passed"] for verdict in verdicts.values()), verdicts
    assert "skipped" not in verdicts["Postgres agrees"]["detail"]
    orders = gates["orders"]
    # The run went through every path: sold out, paid, cancelled, and abandoned orders expiring mid-run.
    assert min(orders["sold-out"], orders["paid"], orders["cancelled"], orders["expired"]) > 0, orders


@pytest.mark.slow
async def test_a_unit_committed_without_a_paid_order_fails_the_run(
    services: Services, store: RedisStore, database: str, tmp_path: Path
) -> None:
    report, gate_report = tmp_path / "report.html", tmp_path / "gates.json"
    knobs = {
        "LOADTEST_TIME_SCALE": "0.1",
        "LOADTEST_PEAK_USERS": "20",
        "LOADTEST_HOT_SKUS": "1",
        "LOADTEST_STOCK_PER_SKU": "30",
        "LOADTEST_RUN_ID": "fault",
        "LOADTEST_SETTLE_TIMEOUT_S": "2",
    }  # fmt: skip  (Postgres never agrees here: do not wait a minute)
    stock_key, warehouse_id = store.keys.stock("lt-fault-sku1"), "lt-fault-w1"
    async with rushgate_running(services, tmp_path) as base_url:
        command, environ = locust_command(base_url, report), locust_environment(services, gate_report, **knobs)
        locust = asyncio.create_task(run_locust(command, environ, tmp_path / "locust.log"))

        async def seeded() -> bool:
            assert not locust.done(), (await locust)[1][-2000:]
            return bool(await store.client.hexists(stock_key, f"h:{warehouse_id}"))

        await eventually(seeded, "the load test to seed its SKU")
        # The bug being simulated: one unit moves from available to committed with no order paying for it.
        async with store.client.pipeline(transaction=True) as pipeline:
            pipeline.hincrby(stock_key, f"a:{warehouse_id}", -1).hincrby(stock_key, f"c:{warehouse_id}", 1)
            await pipeline.execute()
        returncode, output = await locust

    print(output[output.find("==== rushgate") :])
    assert returncode == 1, output[-4000:]
    assert "RESULT: FAIL (exit code 1)" in output
    verdicts = {verdict["gate"]: verdict for verdict in json.loads(gate_report.read_text())["verdicts"]}
    assert not verdicts["no oversell (Redis counters)"]["passed"]
    assert "units of paid orders" in verdicts["no oversell (Redis counters)"]["detail"]
    assert not verdicts["Postgres agrees"]["passed"]  # the ledger has no movement for that unit
    assert verdicts["failure ratio"]["passed"] and verdicts["p95"]["passed"]  # the failure is the oversell alone


SKU, W1, W2 = "hot", "w1", "w2"


def test_the_oversell_gate_fails_on_counters_that_disagree_with_the_orders() -> None:
    initial = {(SKU, W1): 10, (SKU, W2): 5}
    paid = AcceptedOrder("o-paid", 2000, {(SKU, W1): 6}, PAID)
    pending = AcceptedOrder("o-pending", 1000, {(SKU, W1): 3}, ABANDONED)
    expired = AcceptedOrder("o-expired", 1000, {(SKU, W2): 2}, ABANDONED)
    orders = [paid, pending, expired]
    statuses = {"o-paid": "paid", "o-pending": "pending_payment", "o-expired": "cancelled"}
    consistent = {(SKU, W1): Level(10, 1, 3, 6), (SKU, W2): Level(5, 5, 0, 0)}
    assert check_stock(initial, consistent, orders, statuses) == []

    oversold = {(SKU, W1): Level(10, -1, 5, 6), (SKU, W2): Level(5, 5, 0, 0)}
    violations = check_stock(initial, oversold, orders, statuses)
    assert any("available is -1" in violation for violation in violations), violations
    assert any("OVERSOLD, 11 units held of 10" in violation for violation in violations), violations
    assert any("reserved 5 != 3" in violation for violation in violations), violations

    phantom_commit = {(SKU, W1): Level(10, 0, 3, 7), (SKU, W2): Level(5, 5, 0, 0)}
    assert check_stock(initial, phantom_commit, orders, statuses) == ["hot@w1: committed 7 != 6 units of paid orders"]
    not_adding_up = {(SKU, W1): Level(10, 2, 3, 6), (SKU, W2): Level(5, 5, 0, 0)}
    assert check_stock(initial, not_adding_up, orders, statuses) == [
        "hot@w1: available 2 + reserved 3 + committed 6 != on_hand 10"
    ]
    live_orders_over_stock = [*orders, AcceptedOrder("o-more", 1000, {(SKU, W2): 6}, PAID)]
    violations = check_stock(initial, consistent, live_orders_over_stock, {**statuses, "o-more": "paid"})
    assert "hot@w2: OVERSOLD, live orders hold 6 of 5" in violations, violations
    assert check_stock(initial, consistent, orders, {**statuses, "o-paid": "cancelled"})  # the service lost a payment


def test_the_postgres_gate_fails_on_missing_extra_or_stale_rows_and_a_ledger_off_by_one() -> None:
    paid = AcceptedOrder("o-paid", 2000, {(SKU, W1): 6}, PAID)
    pending = AcceptedOrder("o-pending", 1000, {(SKU, W1): 3}, ABANDONED)
    statuses = {"o-paid": "paid", "o-pending": "pending_payment"}
    rows = {"o-paid": "paid", "o-pending": "cancelled"}  # expired after the snapshot: fine
    assert check_persisted_orders([paid, pending], rows, statuses) == []
    assert check_persisted_orders([paid, pending], {"o-paid": "paid"}, statuses)
    assert check_persisted_orders([paid, pending], {**rows, "o-stranger": "paid"}, statuses)
    assert check_persisted_orders([paid, pending], {**rows, "o-paid": "pending_payment"}, statuses)

    counters = {(SKU, W1): Level(10, 1, 3, 6)}
    assert check_ledger(counters, {(SKU, W1): Level(10, 1, 3, 6)}) == []
    assert check_ledger(counters, {(SKU, W1): Level(10, 2, 3, 5)})
    assert check_ledger(counters, {})
