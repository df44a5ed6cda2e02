"""`rushgate up` as a process: one per data dir, and nothing outlives it, even a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rushgate.embedded import free_port
from tests.processes import eventually, wait_ready

pytestmark = pytest.mark.slow


def start_up(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("RUSHGATE_") and name not in ("REDIS_URL", "DATABASE_URL")}  # fmt: skip
    with open(log, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "rushgate", "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def test_a_second_up_on_the_same_data_dir_refuses_and_a_killed_up_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    first = start_up(data_dir, port, tmp_path / "first.log")
    try:
        await wait_ready(f"http://127.0.0.1:{port}", first, tmp_path / "first.log")
        second = start_up(data_dir, free_port(), tmp_path / "second.log")
        assert second.wait(60) != 0
        assert "another `rushgate up` is running" in (tmp_path / "second.log").read_text()
        family = psutil.Process(first.pid).children(recursive=True)
        names = {child.name() for child in family}
        assert {"valkey-server", "postgres"} <= names, names
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)

    async def all_gone() -> bool:
        return not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in family)

    await eventually(all_gone, "every child of the killed `up` to exit")
    third = start_up(data_dir, port, tmp_path / "third.log")  # the data dir is free again
    try:
        await wait_ready(f"http://127.0.0.1:{port}", third, tmp_path / "third.log")
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0
