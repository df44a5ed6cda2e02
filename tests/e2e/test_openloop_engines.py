"""The open-loop generator's two engines (benchmarks/openloop.c and the Python one) send the same
schedule of distinct orders and count the same outcomes: measured requests only, non-2xx answers,
connections the server dropped mid-request (the generator reconnects and goes on)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from benchmarks.openloop import native_generator, percentile

RATE, DURATION_S, WARMUP_S, CONNECTIONS = 200, 1.0, 0.5, 8
RUN_ID = "t1"
REFUSED_EVERY, DROPPED_EVERY = 7, 50


def _number(key: str) -> int:
    prefix = f"ol-{RUN_ID}-"
    assert key.startswith(prefix), key
    return int(key[len(prefix) :])


class Recorder(BaseHTTPRequestHandler):
    """Answers 201, 409 for every REFUSED_EVERY-th order and no answer at all (the connection is
    closed) for every DROPPED_EVERY-th; remembers what it was sent."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.seen.append((self.path, dict(self.headers), body))
        number = _number(self.headers["Idempotency-Key"])
        if number % DROPPED_EVERY == 0:
            self.close_connection = True
            return
        status = 409 if number % REFUSED_EVERY == 0 else 201
        payload = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run(engine: str, port: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.openloop", "--url", f"http://127.0.0.1:{port}/v1/orders",
         "--token", "secret", "--sku", "hot", "--rate", str(RATE), "--duration", str(DURATION_S),
         "--warmup", str(WARMUP_S), "--connections", str(CONNECTIONS), "--run-id", RUN_ID, "--json",
         "--engine", engine],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


@pytest.mark.parametrize("engine", ["c", "python"])
def test_engines_send_the_schedule_and_count_outcomes(engine: str, server: ThreadingHTTPServer) -> None:
    if engine == "c" and (shutil.which("cc") is None or not sys.platform.startswith("linux")):
        pytest.skip("the C engine needs cc on Linux")
    report = _run(engine, server.server_address[1])

    sent = Recorder.seen
    total = int(RATE * (WARMUP_S + DURATION_S))
    numbers = sorted(_number(headers["Idempotency-Key"]) for _, headers, _ in sent)
    assert numbers == list(range(total))  # every request of the schedule, once, warm-up included
    for path, headers, body in sent:
        assert path == "/v1/orders"
        assert headers["Authorization"] == "Bearer secret"
        assert headers["Content-Type"] == "application/json"
        assert body == {
            "customer_id": f"ol{RUN_ID}-{_number(headers['Idempotency-Key'])}",
            "region": "eu",
            "order_type": "flash",
            "items": [{"sku": "hot", "qty": 1}],
        }

    measured = range(int(RATE * WARMUP_S), total)
    dropped = [n for n in measured if n % DROPPED_EVERY == 0]
    refused = [n for n in measured if n % REFUSED_EVERY == 0 and n % DROPPED_EVERY != 0]
    assert report["engine"] == engine
    assert report["requests_scheduled"] == len(measured)
    assert report["connection_errors"] == len(dropped)
    assert report["requests_completed"] == len(measured) - len(dropped)
    assert report["statuses"] == {"201": len(measured) - len(dropped) - len(refused), "409": len(refused)}
    assert report["non_2xx"] == len(refused)
    assert report["unfinished"] == 0
    for name in ("p50", "p90", "p99", "p999", "max"):  # latency = service time + send lag, request by request
        assert report["latency_ms"][name] >= report["service_time_ms"][name] >= 0
        assert report["send_lag_ms"][name] >= 0


def test_engines_report_the_same_fields(server: ThreadingHTTPServer) -> None:
    if native_generator() is None:
        pytest.skip("the C engine needs cc on Linux")
    port = server.server_address[1]
    native, python = _run("c", port), _run("python", port)
    assert native.keys() == python.keys()
    for name in ("latency_ms", "service_time_ms", "send_lag_ms"):
        assert native[name].keys() == python[name].keys()


def test_auto_takes_the_python_engine_when_the_c_one_does_not_build(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    broken = {**os.environ, "CC": "false", "XDG_CACHE_HOME": str(tmp_path)}  # `false` compiles nothing
    assert _run("auto", server.server_address[1], broken)["engine"] == "python"


def test_percentiles_are_nearest_rank() -> None:
    values = [float(number) for number in range(1, 1001)]
    assert [percentile(values, q) for q in (50.0, 90.0, 99.0, 99.9)] == [500.0, 900.0, 990.0, 999.0]
    assert percentile([7.0], 99.9) == 7.0
