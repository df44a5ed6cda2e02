"""Child processes, server command lines and small HTTP helpers for the end-to-end harness.

Every child runs in its own session (process group), so stopping it also reaches the worker
processes its server forked: SIGTERM to the leader first (uvicorn and granian stop their
workers gracefully), SIGKILL to whatever is left of the group after a timeout.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 90.0
LOG_TAIL_CHARS = 3000
SERVERS = ("uvicorn", "granian")
ASGI_BACKLOG = 4096  # what `rushgate serve` passes to uvicorn; every app gets the same


class HarnessError(RuntimeError):
    """The harness cannot go on; the message says why and where the logs are."""


class Child:
    """A process we started, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise HarnessError(f"{self.name} exited with {self.process.returncode}; log {self.log}:\n{self.log_tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        group = process.pid  # start_new_session: the leader's pid is the group id
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it", file=sys.stderr)
        _kill_group_leftovers(group)
        if process.poll() is None:
            process.wait()


def _kill_group_leftovers(group: int) -> None:
    """SIGKILL whatever still runs in the group (workers that outlived their master)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return


def python_module(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def asgi_server_argv(server: str, target: str, *, port: int, workers: int, factory: bool = False) -> list[str]:
    """The command line every app is served with: the same flags for all of them."""
    if server == "uvicorn":
        # Exactly as `rushgate serve` runs uvicorn (rushgate.serving.UVICORN_OPTIONS: uvloop, the turn-buffered
        # httptools protocol, no access log, backlog 4096); uvicorn's own CLI cannot name the protocol.
        arguments = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        return python_module("benchmarks.uvicorn_serve", *arguments, *(["--factory"] if factory else []), target)
    assert server == "granian", server
    arguments = [
        "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "1", "--backlog", str(ASGI_BACKLOG), "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    return python_module("granian", *arguments, *(["--factory"] if factory else []), target)


def http_request(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout_s: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one plain HTTP/1.1 request."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
    finally:
        connection.close()


def wait_ready(child: Child, url: str, timeout_s: float = READY_TIMEOUT_S) -> dict[str, str]:
    """Poll url until it answers 200; returns its headers. Fails early if the child exits."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            status, headers, body = http_request("GET", url, timeout_s=2)
            if status == 200:
                return headers
            last_error = f"HTTP {status}: {body[:200]!r}"
        except OSError as error:
            last_error = str(error)
        time.sleep(0.1)
    raise HarnessError(f"{child.name} not ready at {url} after {timeout_s:.0f}s ({last_error}); log {child.log}")
