"""`rushgate serve --workers N`: every worker listens on a socket of its own (SO_REUSEPORT), so a
burst of new connections is spread over the workers instead of landing on whichever wakes first;
a port another program holds is still refused."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.conftest import Services
from tests.faults.test_worker_killed import connections_on
from tests.processes import eventually, run_command, running, serve_command, service_environment, wait_ready

pytestmark = pytest.mark.slow

CONNECTIONS = 64


def _workers(server: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [  # uvicorn also starts multiprocessing's resource tracker: not a worker
        child
        for child in psutil.Process(server.pid).children()
        if not any("resource_tracker" in part for part in child.cmdline())
    ]


def _listening_on(process: psutil.Process, port: int) -> int:
    return sum(
        1
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    )


async def test_a_burst_of_new_connections_is_spread_over_the_workers(services: Services, tmp_path: Path) -> None:
    command, port = serve_command(workers=2)
    log = tmp_path / "serve.log"
    with running(command, service_environment(services), log) as server:
        await wait_ready(f"http://127.0.0.1:{port}", server, log)
        workers = _workers(server)
        assert len(workers) == 2, [child.cmdline() for child in psutil.Process(server.pid).children()]

        async def each_worker_listens() -> bool:  # a worker may still be starting when another answers
            return [_listening_on(worker, port) for worker in workers] == [1, 1]

        await eventually(each_worker_listens, "a listening socket in each worker")
        assert _listening_on(psutil.Process(server.pid), port) == 0, "the supervisor accepts nothing"

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


def test_a_port_in_use_is_refused(services: Services) -> None:
    command, port = serve_command(workers=2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_command(services, *command)
    assert result.returncode != 0
    assert "address already in use" in (result.stdout + result.stderr).lower(), result.stderr[-2000:]
