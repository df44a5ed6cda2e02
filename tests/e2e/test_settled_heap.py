"""Served processes settle their heap (rushgate/garbage.py): the first connection to a worker
freezes what start-up built and raises the young generation's threshold, under the server
configuration rushgate serve and the harness's comparison apps share."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from rushgate.embedded import free_port
from rushgate.garbage import YOUNG_THRESHOLD
from tests.processes import eventually

pytestmark = pytest.mark.slow


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with this worker's collector state."""
    if scope["type"] != "http":
        return
    body = json.dumps({"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def test_a_served_worker_settles_its_heap_on_its_first_connection(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "benchmarks.uvicorn_serve", "--port", str(port), "--workers", "2",
               "tests.e2e.test_settled_heap:app"]  # fmt: skip
    with open(log, "wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    answers: list[dict[str, int]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def answered() -> bool:
                assert server.poll() is None, log.read_text()[-2000:]
                try:
                    answers.append((await client.get("/")).json())
                except httpx.TransportError:
                    return False
                return True

            await eventually(answered, "the served app's first answer")
    finally:
        server.terminate()
        server.wait(30)
    assert answers[-1]["threshold"] == YOUNG_THRESHOLD
    assert answers[-1]["frozen"] > 1000  # the worker's modules and app, at least


def test_settle_freezes_the_heap_once_and_raises_the_young_threshold() -> None:
    probe = (
        "import gc; from rushgate.garbage import settle; before = gc.get_threshold();"
        "settle(); frozen = gc.get_freeze_count(); settle(); print(before[0], gc.get_threshold(),"
        " frozen > 1000, gc.get_freeze_count() == frozen)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split(maxsplit=1) == ["700", f"({YOUNG_THRESHOLD}, 10, 10) True True\n"]
