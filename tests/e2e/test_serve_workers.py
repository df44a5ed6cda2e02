"""`rushgate serve --workers N`: every worker serves a listening socket of its own (SO_REUSEPORT),
so a burst of new connections is spread over the workers instead of landing on whichever wakes
first; the supervisor keeps the sockets, so connections queued on a dead worker's socket are
served by its replacement; a port another program holds is still refused; a stop that meets a
worker still starting up stops it, under uvicorn and granian alike."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rushgate.serving import STARTUP_FAILURE
from tests.conftest import Services
from tests.processes import (
    WAIT_TIMEOUT_S,
    connections_on,
    eventually,
    run_command,
    running,
    serve_command,
    service_environment,
    wait_ready,
)

pytestmark = pytest.mark.slow

CONNECTIONS = 64


def _workers(server: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [  # uvicorn also starts multiprocessing's resource tracker: not a worker
        child
        for child in psutil.Process(server.pid).children()
        if not any("resource_tracker" in part for part in child.cmdline())
    ]


def _listening_on(process: psutil.Process, port: int) -> set[str]:
    """The listening sockets a process holds on the port, by inode (``socket:[n]``)."""
    return {
        os.readlink(f"/proc/{process.pid}/fd/{connection.fd}")
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


async def _started(port: int, server: subprocess.Popen[bytes], log: Path) -> list[psutil.Process]:
    await wait_ready(f"http://127.0.0.1:{port}", server, log)
    workers = _workers(server)
    assert len(workers) == 2, [child.cmdline() for child in psutil.Process(server.pid).children()]
    return workers


def _accept_queue(socket_link: str) -> int:
    """Connections waiting to be accepted on a listening IPv4 socket (its rx_queue in /proc/net/tcp)."""
    inode = socket_link.removeprefix("socket:[").removesuffix("]")
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[9] == inode:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no IPv4 socket with inode {inode}")


def _answer(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    client.settimeout(WAIT_TIMEOUT_S)
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


async def test_a_burst_of_new_connections_is_spread_over_the_workers(services: Services, tmp_path: Path) -> None:
    command, port = serve_command(workers=2)
    log = tmp_path / "serve.log"
    with running(command, service_environment(services), log) as server:
        workers = await _started(port, server, log)
        first, second = (_listening_on(worker, port) for worker in workers)
        assert first != second, "each worker serves a socket of its own"
        assert first | second == _listening_on(psutil.Process(server.pid), port), "the supervisor keeps them all"

        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]  # all at once
        try:

            async def all_accepted() -> bool:
                return sum(connections_on(worker, port) for worker in workers) == CONNECTIONS

            await eventually(all_accepted, "every connection accepted by a worker")
            counts = [connections_on(worker, port) for worker in workers]
        finally:
            for client in clients:
                client.close()
    # The kernel hashes each connection's address pair onto a worker's socket: 64 connections
    # split about evenly (fewer than 16 on one side has a probability below 1e-4). With one
    # shared socket the first worker to wake took nearly all of them.
    assert min(counts) >= CONNECTIONS // 4, counts


@pytest.mark.parametrize("fate", ["killed", "hung"])
async def test_connections_queued_on_a_lost_workers_socket_are_served_by_its_replacement(
    services: Services, tmp_path: Path, fate: str
) -> None:
    """A killed worker is replaced at once; a hung one (stopped) when it fails uvicorn's health check."""
    command, port = serve_command(workers=2)
    log = tmp_path / "serve.log"
    with running(command, service_environment(services), log) as server:
        workers = await _started(port, server, log)
        doomed = workers[0]
        doomed.suspend()  # it accepts nothing more: connections hashed onto its socket queue there
        request = b"GET /healthz HTTP/1.1\r\nHost: rushgate\r\nConnection: close\r\n\r\n"
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        try:
            for client in clients:
                client.sendall(request)
            (doomed_socket,) = _listening_on(doomed, port)
            queued = _accept_queue(doomed_socket)  # every connect() returned: each sits in one accept queue
            if fate == "killed":
                doomed.kill()
            answers = [_answer(client) for client in clients]
        finally:
            for client in clients:
                client.close()
        replacements = [worker for worker in _workers(server) if worker.pid != doomed.pid]
        if doomed.is_running():
            doomed.kill()
    assert queued > 0, "some connections must have waited on the dead worker's socket for the test to mean anything"
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), [answer[:40] for answer in answers]
    assert len(replacements) == 2, "the dead worker was replaced"


def test_a_port_in_use_is_refused(services: Services) -> None:
    command, port = serve_command(workers=2)
    with socket.socket() as holder:  # SO_REUSEPORT as a second rushgate would set it: only the check refuses
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_command(services, *command)
    assert result.returncode != 0
    assert "address already in use" in (result.stdout + result.stderr).lower(), result.stderr[-2000:]


def test_a_worker_that_cannot_start_stops_the_server_instead_of_being_restarted(services: Services) -> None:
    command, _ = serve_command(workers=2)
    with socket.socket() as probe:  # a port nothing listens on: every worker's start-up fails
        probe.bind(("127.0.0.1", 0))
        environ = service_environment(services, REDIS_URL=f"redis://127.0.0.1:{probe.getsockname()[1]}/0")
        result = subprocess.run(
            [sys.executable, "-m", "rushgate", *command], env=environ, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
    assert result.returncode == STARTUP_FAILURE, result.stderr[-2000:]
    assert "failed to start" in result.stderr


@pytest.mark.parametrize("server_name", ["uvicorn", "granian"])
async def test_workers_stop_when_their_supervisor_is_killed(
    services: Services, tmp_path: Path, server_name: str
) -> None:
    """As `rushgate up` does to a server that will not stop: SIGKILL leaves no worker serving the port."""
    command, port = serve_command(workers=2)
    command += ["--server", server_name]
    log = tmp_path / "serve.log"
    with running(command, service_environment(services), log) as server:
        workers = await _started(port, server, log)
        server.kill()
        server.wait()

        async def workers_gone() -> bool:
            return not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)

        await eventually(workers_gone, "the workers of a killed supervisor exit")

    async def port_free() -> bool:
        """Nothing listens on the port. A worker's main thread shows as a zombie while its other
        threads, which may still hold the socket, finish exiting: hence eventually."""
        with socket.socket() as probe:
            # SO_REUSEADDR: connections the killed workers left in TIME_WAIT do not count; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    await eventually(port_free, "nothing listens on the port of a killed supervisor")


@pytest.mark.parametrize("server_name", ["uvicorn", "granian"])
async def test_a_stop_while_a_replacement_worker_starts_stops_the_server(
    services: Services, tmp_path: Path, server_name: str
) -> None:
    """SIGTERM reaching a worker that is still loading the app (a replacement just forked) stops it.

    granian forks its workers with the supervisor's own SIGTERM handler installed, which only sets a
    flag; a worker signalled before it installs its own handler used to keep running, and the
    supervisor waited for it forever."""
    command, port = serve_command(workers=2)
    command += ["--server", server_name]
    log = tmp_path / "serve.log"
    with running(command, service_environment(services), log) as server:
        workers = await _started(port, server, log)
        known = {child.pid for child in psutil.Process(server.pid).children()}
        workers[0].kill()
        replacements: list[int] = []

        async def replacement_forked() -> bool:
            # The killed worker lingers as a zombie until reaped; only a new pid counts.
            replacements.extend(child.pid for child in psutil.Process(server.pid).children() if child.pid not in known)
            return bool(replacements)

        await eventually(replacement_forked, "a replacement worker is forked")
        server.terminate()
        server.wait(WAIT_TIMEOUT_S)  # raises TimeoutExpired (failing the test) on a hang
    text = log.read_text()
    if server_name == "granian":  # it logs "Spawning worker-N with PID: P", and "Killing worker-N ..." on a kill
        slots = {pid: number for number, pid in re.findall(r"Spawning worker-(\d+) with PID: (\d+)", text)}
        number = slots.get(str(replacements[0]))
        assert number is not None, text[-2000:]
        assert f"Killing worker-{number} " not in text, "the replacement stopped on SIGTERM; it was not killed"
