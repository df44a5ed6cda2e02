"""How `rushgate serve` runs uvicorn: one listening socket per worker slot (SO_REUSEPORT).

uvicorn's own multi-worker mode binds one socket and lets every worker accept from it. A burst
of new connections (a gateway opening its pool, a load generator starting) is then taken by
whichever worker wakes first: uvloop accepts until the backlog is empty. Measured here with
128 keep-alive connections opened at once against 2 workers, one worker served nearly all of
them (60 % of a CPU against 2.5 %) while the other idled; with 64, one worker sometimes got none.

So the supervisor here binds and listens one SO_REUSEPORT socket per worker slot, and the
kernel spreads new connections over them by a hash of the address pair. Worker *i* serves
slot *i*'s socket only. The supervisor keeps every socket open: when a worker dies, the
connections queued on its socket wait there for its replacement, which gets the same socket,
instead of being reset. Before binding, the supervisor binds the address once without
SO_REUSEPORT, so a port another program holds fails with uvicorn's usual error instead of
being shared. A worker that exits with uvicorn's start-up failure code stops the whole server
(restarting it would fail the same way); any other exit is replaced.

Each worker is uvicorn's own server, started the way uvicorn starts its workers (spawn,
logging configured in the child). SIGINT and SIGTERM stop the workers gracefully; uvicorn's
SIGHUP / SIGTTIN / SIGTTOU worker management is not offered. benchmarks.uvicorn_serve serves the
bare and row-lock apps through :func:`serve_uvicorn` too, so the benchmark ratios compare
applications under the same server set-up.
"""

from __future__ import annotations

import functools
import logging
import signal
import socket
import threading
from multiprocessing.process import BaseProcess
from typing import Any

UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "rushgate.http_protocol:TurnBufferedHttpToolsProtocol",  # httptools, one send per response
    "log_level": "warning",
    "access_log": False,
    "proxy_headers": False,  # nothing here reads the client address; the middleware cost ~1% per request
    "backlog": 4096,
    "timeout_graceful_shutdown": 10,
}
"""How `rushgate serve` configures uvicorn (benchmarks.uvicorn_serve serves the comparison apps alike)."""

REUSE_PORT = hasattr(socket, "SO_REUSEPORT")
STARTUP_FAILURE = 3  # uvicorn's exit code for a server that could not start (uvicorn.config.STARTUP_FAILURE)
SUPERVISE_INTERVAL_S = 0.5

logger = logging.getLogger("uvicorn.error")  # formatted and filtered like uvicorn's own messages


def listen_reuse_port(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket listening on host:port with SO_REUSEPORT, one of a group the kernel balances."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn's Config.bind_socket
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _serve(config: Any, sockets: list[socket.socket]) -> None:
    """A worker process: uvicorn's server on the socket of its slot."""
    import uvicorn

    uvicorn.Server(config).run(sockets=sockets)


class Supervisor:
    """Worker processes, one per listening socket; a dead worker's replacement takes over its socket."""

    def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.processes: list[BaseProcess] = []
        self.stopping = threading.Event()

    def _start(self, slot: int) -> BaseProcess:
        from uvicorn._subprocess import get_subprocess  # spawn, stdin and logging as uvicorn's workers

        process = get_subprocess(self.config, functools.partial(_serve, self.config), [self.sockets[slot]])
        process.start()
        return process

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM (0) or until a worker cannot start (STARTUP_FAILURE)."""
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, lambda *_: self.stopping.set())
        exit_code = 0
        try:
            self.processes = [self._start(slot) for slot in range(len(self.sockets))]
            while not self.stopping.wait(SUPERVISE_INTERVAL_S):
                exit_code = self.replace_dead_workers()
        finally:
            for process in self.processes:
                if process.is_alive():
                    process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
            for process in self.processes:
                process.join()
            for sock in self.sockets:
                sock.close()
        return exit_code

    def replace_dead_workers(self) -> int:
        for slot, process in enumerate(self.processes):
            if process.is_alive():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker %s could not start: stopping the server", process.pid)
                self.stopping.set()
                return STARTUP_FAILURE
            logger.warning("worker %s exited (%s): starting another on its socket", process.pid, process.exitcode)
            self.processes[slot] = self._start(slot)
        return 0


def serve_uvicorn(app: str, *, factory: bool, host: str, port: int, workers: int) -> int:
    """Run app (an import string) under uvicorn with UVICORN_OPTIONS until it is told to stop;
    the exit code for the process."""
    import uvicorn

    if workers == 1 or port == 0 or not REUSE_PORT:  # port 0: each socket would get a port of its own
        uvicorn.run(app, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS)
        return 0
    config = uvicorn.Config(app, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS)
    config.bind_socket().close()  # the address must be free: exits with uvicorn's message if it is not
    sockets: list[socket.socket] = []
    try:
        for _ in range(workers):
            sockets.append(listen_reuse_port(host, port, config.backlog))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return Supervisor(config, sockets).run()
