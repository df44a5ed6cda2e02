"""`pip install .` into a fresh venv, then `rushgate up` on embedded defaults, twice on one data dir."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from rushgate.embedded import free_port
from tests.processes import eventually

REPOSITORY = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with rushgate installed the way a newcomer does it: a plain, non-editable install."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(REPOSITORY),
        ],
        check=True,
        cwd=venv,
    )
    return venv / "bin" / "rushgate"


def start_up(rushgate: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("RUSHGATE_") and name not in ("REDIS_URL", "DATABASE_URL")}  # fmt: skip
    with open(log, "wb") as log_file:
        return subprocess.Popen(
            [str(rushgate), "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
        )


async def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:

        async def ready() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, "rushgate up to answer /readyz", timeout_s=120)


def stop_up(process: subprocess.Popen[bytes], log: Path) -> None:
    family = psutil.Process(process.pid).children(recursive=True)
    assert len(family) >= 5, "persister, sweeper, API, embedded Redis and Postgres run under `up`"
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in family):
        assert time.monotonic() < deadline, [child for child in family if child.is_running()]
        time.sleep(0.05)


async def test_a_fresh_install_runs_up_on_embedded_servers_and_finds_its_data_again(
    installed: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    first_log = tmp_path / "first.log"
    first = start_up(installed, data_dir, port, first_log)
    try:
        await wait_until_ready(base_url, first, first_log)
        tokens = json.loads((data_dir / "tokens.json").read_text())
        admin = {"Authorization": f"Bearer {tokens['RUSHGATE_ADMIN_TOKEN']}"}
        gateway = {"Authorization": f"Bearer {tokens['RUSHGATE_GATEWAY_TOKEN']}", "Idempotency-Key": "first"}
        assert tokens["RUSHGATE_ADMIN_TOKEN"] in first_log.read_text()
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            for path, body in [
                ("/v1/warehouses/w1", {"region": "eu", "name": "Berlin"}),
                ("/v1/dispatch/eu", {"warehouses": ["w1"]}),
                ("/v1/skus/s1", {"name": "Phone", "merchant_id": "m1", "price": 100, "currency": "EUR"}),
                ("/v1/stock/s1/w1", {"on_hand": 10}),
            ]:
                assert (await client.put(path, json=body, headers=admin)).status_code == 200
            order_body = {
                "customer_id": "c1",
                "region": "eu",
                "order_type": "normal",
                "items": [{"sku": "s1", "qty": 3}],
            }
            created = await client.post("/v1/orders", json=order_body, headers=gateway)
            assert created.status_code == 201, created.text
            order_id = created.json()["order_id"]
        database_url = re.search(r"DATABASE_URL=(\S+)", first_log.read_text())
        assert database_url is not None
        await eventually(lambda: persisted(database_url.group(1), order_id), "the order to reach Postgres")
    finally:
        stop_up(first, first_log)
    assert "rushgate stopped" in first_log.read_text()

    second_log = tmp_path / "second.log"
    second = start_up(installed, data_dir, port, second_log)
    try:
        await wait_until_ready(base_url, second, second_log)
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            stock = await client.get("/v1/stock/s1", headers=admin)
            assert stock.json()["warehouses"] == [
                {"warehouse_id": "w1", "on_hand": 10, "available": 7, "reserved": 3, "committed": 0}
            ]
            order = await client.get(f"/v1/orders/{order_id}", headers=gateway)
            assert (order.status_code, order.json()["status"]) == (200, "pending_payment")
        second_url = re.search(r"DATABASE_URL=(\S+)", second_log.read_text())
        assert second_url is not None
        assert await persisted(second_url.group(1), order_id)
    finally:
        stop_up(second, second_log)


async def persisted(database_url: str, order_id: str) -> bool:
    from persistence.database import connect

    connection = await connect(database_url)
    try:
        return bool(await connection.fetchval("SELECT count(*) FROM orders WHERE order_id = $1", order_id))
    finally:
        await connection.close()
