"""Open-loop load: POST /v1/orders at a constant arrival rate, latency corrected for coordinated omission.

Request ``i`` is due at ``start + i / rate`` whatever happened before it. It goes out on an
idle keep-alive connection if there is one, else it waits in a queue for the next connection
to come free; its latency is measured from its *intended* send time to the end of its
response, so time spent waiting behind a slow response counts (a closed-loop tool such as
wrk would simply send fewer requests and report the good ones). The service time (from the
actual send) and the send lag (actual minus intended send) are reported too: a large send
lag means the server or this generator fell behind the schedule.

Two engines with the same schedule, requests and report: ``c`` (``openloop.c``, compiled on
first use with the system's C compiler into ``$XDG_CACHE_HOME/rushgate``; Linux) and
``python`` (asyncio Protocols on uvloop, raw HTTP/1.1, no per-request task). ``auto`` (the
default) takes ``c`` when a compiler is there (and falls back to ``python`` when it does not
build). The C engine used 7.5-11 % of a CPU where the Python one used 17 % (3,000 requests/s,
two sittings), and its timestamps are taken by a process that is rarely runnable for long: on a
2-core machine shared with the service, the Python engine's own scheduling delays showed up
as a tenfold p50 against a bare app (2.2 ms against 0.22 ms at 3,000 requests/s, both engines
in one sitting). Requests of the warm-up are sent but not counted. The Python engine's times
come from ``time.perf_counter()``: uvloop's ``loop.time()`` ticks in whole milliseconds.

Usage::

    python -m benchmarks.openloop --url http://127.0.0.1:8000/v1/orders --token $GATEWAY_TOKEN \\
        --rate 3000 --duration 15 --connections 128 [--engine auto|c|python]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import uvloop

RESPONSE_WAIT_S_MAX = 10.0
SCHEDULER_TICK_S = 0.001
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
ENGINES = ("auto", "c", "python")
NATIVE_SOURCE = Path(__file__).resolve().parent / "openloop.c"


class EngineUnavailable(RuntimeError):
    """The C engine was asked for and cannot be built here."""


def usable_native_generator() -> Path | None:
    """The C engine for ``auto``: None (the Python engine) without a compiler, or when it does not build."""
    try:
        return native_generator()
    except EngineUnavailable as error:
        print(f"openloop: {error}; using the Python engine", file=sys.stderr)
        return None


def native_generator() -> Path | None:
    """The C engine's executable, compiled once per source version; None without a C compiler or off Linux."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    source = NATIVE_SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rushgate"
    executable = cache / f"openloop-{hashlib.sha256(source).hexdigest()[:16]}"
    if executable.exists():
        return executable
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as building:
        built = Path(building) / "openloop"
        compiled = subprocess.run(
            [compiler, "-O2", "-o", str(built), str(NATIVE_SOURCE), "-lm"], check=False, capture_output=True, text=True
        )
        if compiled.returncode != 0:
            raise EngineUnavailable(f"{compiler} could not build {NATIVE_SOURCE.name}: {compiled.stderr.strip()}")
        built.replace(executable)  # atomic: a concurrent build leaves one complete file
    return executable


def native_command(
    url: str, *, sku: str, rate: float, duration_s: float, warmup_s: float, connections: int, run_id: str
) -> list[str]:
    """The argv that runs the C engine (building it if needed); it reads the token from $GATEWAY_TOKEN."""
    executable = native_generator()
    if executable is None:
        raise EngineUnavailable("the C engine needs a C compiler (cc, or $CC) on Linux")
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname, f"need an http:// URL, got {url}"
    return [
        str(executable), socket.gethostbyname(parts.hostname), str(parts.port or 80), parts.path or "/", sku,
        run_id, f"{rate:.3f}", str(duration_s), str(warmup_s), str(connections),
    ]  # fmt: skip


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values) / 100 - 1e-9))  # 99.9 % of 1000: rank 999 (binary floats)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(values_s: list[float]) -> dict[str, float]:
    ordered = sorted(values_s)
    summary = {name: percentile(ordered, q) * 1000 for name, q in PERCENTILES.items()}
    summary["max"] = (ordered[-1] if ordered else math.nan) * 1000
    summary["mean"] = (sum(ordered) / len(ordered) if ordered else math.nan) * 1000
    return summary


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Target:
    host: str
    port: int
    path: str
    token: str
    sku: str
    run_id: str

    def request(self, number: int) -> bytes:
        body = (
            f'{{"customer_id":"ol{self.run_id}-{number}","region":"eu","order_type":"flash",'
            f'"items":[{{"sku":"{self.sku}","qty":1}}]}}'
        ).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: ol-{self.run_id}-{number}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body


@dataclass
class Results:
    latency_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.intended = 0.0
        self.sent = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.generator.connection_ready(self)

    def send(self, number: int, intended: float) -> None:
        assert self.transport is not None and not self.busy
        self.busy = True
        self.intended = intended
        self.sent = time.perf_counter()
        self.transport.write(self.generator.target.request(number))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        header_end = self.buffer.find(b"\r\n\r\n")
        if header_end < 0:
            return
        head = bytes(self.buffer[:header_end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            self.generator.protocol_error(self, "response without content-length")
            return
        end = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : end if end >= 0 else len(head)])
        if len(self.buffer) < header_end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[: header_end + 4 + length]
        self.busy = False
        self.generator.response_done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.connection_lost(self)


class Generator:
    def __init__(self, target: Target, *, rate: float, duration_s: float, warmup_s: float, connections: int) -> None:
        self.target = target
        self.rate = rate
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        self.connection_count = connections
        self.loop = asyncio.get_running_loop()
        self.idle: list[Connection] = []
        self.queued: deque[tuple[int, float]] = deque()
        self.results = Results()
        self.measure_from = 0.0
        self.in_flight = 0
        self.all_done = asyncio.Event()
        self.scheduled_all = False
        self.reconnects: set[asyncio.Task[Any]] = set()
        self.cpu_fraction = 0.0
        self.measured_scheduled = 0
        self.closing = False

    async def open(self) -> None:
        await asyncio.gather(*(self._connect() for _ in range(self.connection_count)))

    async def _connect(self) -> None:
        await self.loop.create_connection(lambda: Connection(self), self.target.host, self.target.port)

    def connection_ready(self, connection: Connection) -> None:
        self._next(connection)

    def connection_lost(self, connection: Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.busy:
            connection.busy = False
            if connection.intended >= self.measure_from:  # counted like responses: measured requests only
                self.results.connection_errors += 1
            self._finished_one()
        if not self.closing:
            task = self.loop.create_task(self._connect())
            self.reconnects.add(task)
            task.add_done_callback(self.reconnects.discard)

    def protocol_error(self, connection: Connection, message: str) -> None:
        print(f"openloop: {message}", file=sys.stderr)
        assert connection.transport is not None
        connection.transport.close()

    def dispatch(self, number: int, intended: float) -> None:
        self.in_flight += 1
        if intended >= self.measure_from:
            self.measured_scheduled += 1
        if self.idle:
            self.idle.pop().send(number, intended)
        else:
            self.queued.append((number, intended))

    def response_done(self, connection: Connection, status: int) -> None:
        now = time.perf_counter()
        if connection.intended >= self.measure_from:
            results = self.results
            results.latency_s.append(now - connection.intended)
            results.service_s.append(now - connection.sent)
            results.send_lag_s.append(connection.sent - connection.intended)
            results.statuses[status] += 1
        self._finished_one()
        self._next(connection)

    def _finished_one(self) -> None:
        self.in_flight -= 1
        if self.scheduled_all and self.in_flight == 0:
            self.all_done.set()

    def _next(self, connection: Connection) -> None:
        if self.queued:
            connection.send(*self.queued.popleft())
        else:
            self.idle.append(connection)

    async def run(self) -> dict[str, Any]:
        await self.open()
        cpu_started = _cpu_seconds()
        start = time.perf_counter() + 0.05
        self.measure_from = start + self.warmup_s
        total = int(self.rate * (self.warmup_s + self.duration_s))
        interval = 1 / self.rate
        number = 0
        while number < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * self.rate) + 1)
            while number < due:
                self.dispatch(number, start + number * interval)
                number += 1
            next_due = start + number * interval
            # Never shorter than a tick: uvloop's timers have 1 ms resolution, so a shorter sleep
            # returns at once and the loop spins. A request sent up to a tick late is charged for it.
            await asyncio.sleep(max(SCHEDULER_TICK_S, next_due - time.perf_counter()))
        schedule_end = time.perf_counter()
        self.cpu_fraction = (_cpu_seconds() - cpu_started) / max(1e-9, schedule_end - start)
        self.scheduled_all = True
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_done.wait(), RESPONSE_WAIT_S_MAX)
        self.closing = True
        for connection in self.idle:
            assert connection.transport is not None
            connection.transport.close()
        return self.report(start + self.warmup_s + self.duration_s, schedule_end)

    def report(self, intended_end: float, schedule_end: float) -> dict[str, Any]:
        results = self.results
        completed = sum(results.statuses.values())
        return {
            "engine": "python",
            "rate_target": self.rate,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "connections": self.connection_count,
            "requests_scheduled": self.measured_scheduled,
            "requests_completed": completed,
            "rate_completed": completed / self.duration_s,
            "unfinished": self.in_flight,
            "connection_errors": results.connection_errors,
            "non_2xx": sum(count for status, count in results.statuses.items() if not 200 <= status < 300),
            "statuses": {str(status): count for status, count in sorted(results.statuses.items())},
            "schedule_overrun_ms": max(0.0, schedule_end - intended_end) * 1000,
            "generator_cpu_fraction": self.cpu_fraction,
            "latency_ms": summarize_ms(results.latency_s),
            "service_time_ms": summarize_ms(results.service_s),
            "send_lag_ms": summarize_ms(results.send_lag_s),
        }


async def run_open_loop(
    url: str, *, token: str, sku: str, rate: float, duration_s: float, warmup_s: float, connections: int, run_id: str
) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname, f"need an http:// URL, got {url}"
    target = Target(parts.hostname, parts.port or 80, parts.path or "/", token, sku, run_id)
    generator = Generator(target, rate=rate, duration_s=duration_s, warmup_s=warmup_s, connections=connections)
    return await generator.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openloop", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000/v1/orders")
    parser.add_argument("--token", default=os.environ.get("GATEWAY_TOKEN", ""), help="bearer token ($GATEWAY_TOKEN)")
    parser.add_argument("--sku", default="hot")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent at the rate before measuring")
    parser.add_argument("--connections", type=int, default=128, help="keep-alive connections (default 128)")
    parser.add_argument("--run-id", default=str(time.time_ns()), help="makes idempotency keys unique")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="c, python, or auto: c when it builds")
    arguments = parser.parse_args(argv)
    assert arguments.rate > 0 and arguments.duration > 0 and arguments.connections > 0
    if arguments.engine == "c" or (arguments.engine == "auto" and usable_native_generator() is not None):
        command = native_command(
            arguments.url, sku=arguments.sku, rate=arguments.rate, duration_s=arguments.duration,
            warmup_s=arguments.warmup, connections=arguments.connections, run_id=arguments.run_id,
        )  # fmt: skip
        environ = {**os.environ, "GATEWAY_TOKEN": arguments.token}
        finished = subprocess.run(command, check=False, stdout=subprocess.PIPE, env=environ)
        if finished.returncode != 0:
            return finished.returncode
        report = json.loads(finished.stdout)
    else:
        report = uvloop.run(
            run_open_loop(
                arguments.url,
                token=arguments.token,
                sku=arguments.sku,
                rate=arguments.rate,
                duration_s=arguments.duration,
                warmup_s=arguments.warmup,
                connections=arguments.connections,
                run_id=arguments.run_id,
            )
        )
    if arguments.json:
        print(json.dumps(report))
    else:
        latency = report["latency_ms"]
        print(
            f"{report['requests_completed']} requests at {report['rate_target']:.0f}/s target "
            f"({report['rate_completed']:.0f}/s completed): p50 {latency['p50']:.2f} ms  p99 {latency['p99']:.2f} ms  "
            f"p99.9 {latency['p999']:.2f} ms  max {latency['max']:.2f} ms; non-2xx {report['non_2xx']}, "
            f"connection errors {report['connection_errors']}, unfinished {report['unfinished']}; "
            f"this generator ({report['engine']}) used {report['generator_cpu_fraction']:.0%} of a CPU"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
