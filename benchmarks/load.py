"""Load generators run as child processes: wrk (closed loop) and benchmarks.openloop (open loop, C or Python).

Both print one JSON object that is parsed here; a generator that is still running when the
harness is interrupted is killed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, HarnessError
from benchmarks.openloop import native_command, usable_native_generator

WRK_DIR = Path(__file__).resolve().parent / "wrk"
ORDERS_SCRIPT = WRK_DIR / "orders.lua"
BATCH_SCRIPT = WRK_DIR / "batch.lua"
WRK_JSON_PREFIX = "WRK_JSON "
WRK_TIMEOUT_S = 10
GENERATOR_GRACE_S = 60.0


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise HarnessError(
            "wrk is not installed (needed for the closed-loop runs): `apt-get install wrk` "
            "(Debian/Ubuntu), `brew install wrk` (macOS), or build it from https://github.com/wg/wrk"
        )
    return path


async def _run(argv: list[str], env: Mapping[str, str], timeout_s: float) -> tuple[int, str, str]:
    """Run a generator to completion without blocking the event loop (the backlog sampler keeps going).

    The child is waited for in a worker thread by subprocess itself rather than through asyncio's
    child watchers; whatever stops the wait (timeout, cancellation, interrupt) kills the child.
    """
    process = subprocess.Popen(
        argv, env=dict(env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{argv[0]} did not finish within {timeout_s:.0f}s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def run_wrk(
    script: Path,
    base_url: str,
    *,
    duration_s: int,
    connections: int,
    threads: int,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """One wrk run; returns the script's WRK_JSON object plus rate and ok counts."""
    argv = [
        find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", f"{WRK_TIMEOUT_S}s",
        "-s", str(script), base_url,
    ]  # fmt: skip
    code, stdout, stderr = await _run(argv, env, duration_s + WRK_TIMEOUT_S + GENERATOR_GRACE_S)
    lines = [line for line in stdout.splitlines() if line.startswith(WRK_JSON_PREFIX)]
    if code != 0 or not lines:
        raise HarnessError(f"wrk failed (exit {code}): {stderr.strip() or stdout.strip()}")
    result: dict[str, Any] = json.loads(lines[-1][len(WRK_JSON_PREFIX) :])
    seconds = result["duration_us"] / 1_000_000
    result["duration_s"] = seconds
    result["socket_errors"] = sum(
        result[name] for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    result["ok"] = result["requests"] - result["non_2xx"]
    result["rate"] = result["requests"] / seconds
    result["ok_rate"] = result["ok"] / seconds
    return result


async def run_open_loop(
    url: str,
    *,
    token: str,
    rate: float,
    duration_s: float,
    warmup_s: float,
    connections: int,
    run_id: str,
    env: Mapping[str, str],
    engine: str = "auto",
    sku: str = "hot",
) -> dict[str, Any]:
    """benchmarks.openloop in its own process: its C engine, or its Python one (own interpreter and GIL)."""
    if engine == "c" or (engine == "auto" and await asyncio.to_thread(usable_native_generator) is not None):
        argv = native_command(
            url, sku=sku, rate=rate, duration_s=duration_s, warmup_s=warmup_s, connections=connections,
            run_id=run_id,
        )  # fmt: skip
    else:
        argv = [
            sys.executable, "-m", "benchmarks.openloop", "--url", url, "--rate", f"{rate:.1f}",
            "--duration", str(duration_s), "--warmup", str(warmup_s), "--connections", str(connections),
            "--run-id", run_id, "--sku", sku, "--json", "--engine", "python",
        ]  # fmt: skip
    generator_env = {**env, "GATEWAY_TOKEN": token}
    code, stdout, stderr = await _run(argv, generator_env, duration_s + warmup_s + GENERATOR_GRACE_S)
    if code != 0 or not stdout.strip():
        raise HarnessError(f"the open-loop generator failed (exit {code}): {stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report
