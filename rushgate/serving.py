"""How `rushgate serve` runs uvicorn: one listening socket per worker slot (SO_REUSEPORT).

uvicorn's own multi-worker mode binds one socket and lets every worker accept from it. A burst
of new connections (a gateway opening its pool, a load generator starting) is then taken by
whichever worker wakes first: uvloop accepts until the backlog is empty. Measured here with
128 keep-alive connections opened at once against 2 workers, one worker served nearly all of
them (60 % of a CPU against 2.5 %) while the other idled; with 64, one worker sometimes got none.

So the supervisor binds and listens one SO_REUSEPORT socket per worker slot, and the kernel
spreads new connections over them by a hash of the address pair. The supervisor is uvicorn's
own (signals, health checks that replace a hung worker, replacing dead workers, stopping on a
start-up failure); what changes is what each worker serves. Every worker is handed all the
slots' sockets and keeps the first slot whose lock file no live worker holds, closing the
others; the lock is released when the worker dies, so its replacement takes over its slot.
A worker also asks Linux for SIGTERM when the supervisor dies, so a SIGKILLed supervisor
leaves no worker behind.
The supervisor keeps every socket open, so connections queued on a dead worker's socket wait
there for the replacement instead of being reset. Before binding, the supervisor binds the
address once without SO_REUSEPORT, so a port held by another program (even one that sets
SO_REUSEPORT itself, such as a second rushgate) is refused rather than shared.

uvicorn's SIGHUP (restart every worker), SIGTTIN and SIGTTOU (one worker more or fewer) are
ignored with a warning: each needs a worker beside a full set of slots.

benchmarks.uvicorn_serve serves the bare and row-lock apps through :func:`serve_uvicorn` too,
so the benchmark ratios compare applications under the same server set-up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import tempfile
from functools import partial
from pathlib import Path
from typing import IO, Any, cast

from rushgate.embedded import die_with_parent
from rushgate.garbage import settle

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

logger = logging.getLogger("uvicorn.error")  # formatted and filtered like uvicorn's own messages

_slot_locks: list[IO[str]] = []
"""In a worker process: the lock file of its slot, held open (so locked) for the worker's life."""


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


def stop_with_supervisor(supervisor_pid: int, signal_number: int = signal.SIGTERM) -> None:
    """In a worker process: have Linux send it signal_number when its supervisor dies (and exit now
    if the supervisor died already), so a supervisor killed with SIGKILL leaves no worker serving."""
    set_parent_death_signal = die_with_parent(signal_number)
    if set_parent_death_signal is not None:
        set_parent_death_signal()
    if os.getppid() != supervisor_pid:  # it died before the signal was set
        raise SystemExit(f"the supervisor ({supervisor_pid}) is gone")


def claim_slot(lock_dir: str, sockets: list[socket.socket], supervisor_pid: int) -> socket.socket:
    """In a worker process: the socket of the first slot no live worker holds; the others are closed.

    It runs first thing in the worker, so it also has Linux stop the worker when the supervisor
    dies: a supervisor killed with SIGKILL (as `rushgate up` does to a server that does not stop)
    would otherwise leave its workers serving the port with no one to stop them.
    """
    stop_with_supervisor(supervisor_pid)
    for slot, sock in enumerate(sockets):
        lock = open(Path(lock_dir) / f"slot-{slot}", "a")  # noqa: SIM115 (held open on purpose)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _slot_locks.append(lock)
        for other in sockets:
            if other is not sock:
                other.close()
        return sock
    raise RuntimeError(f"every one of the {len(sockets)} worker slots is taken")


class SlotSockets:
    """Stands in for the listening socket in uvicorn's supervisor. Pickled into each worker
    (uvicorn spawns them), it carries every slot's socket and becomes the one slot socket that
    worker claimed (:func:`claim_slot`)."""

    def __init__(self, sockets: list[socket.socket], lock_dir: str) -> None:
        self.sockets = sockets
        self.lock_dir = lock_dir

    def __reduce__(self) -> tuple[Any, tuple[str, list[socket.socket], int]]:
        return claim_slot, (self.lock_dir, self.sockets, os.getpid())

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def serve_uvicorn(app: str, *, factory: bool, host: str, port: int, workers: int) -> int:
    """Run app (an import string) under uvicorn with UVICORN_OPTIONS until it is told to stop;
    the exit code for the process (STARTUP_FAILURE when a worker could not start)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if workers == 1 or port == 0 or not REUSE_PORT:  # port 0: each socket would get a port of its own
        uvicorn.run(app, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS)
        return 0

    class SlotMultiprocess(Multiprocess):
        """uvicorn's supervisor, told apart from a start-up failure when a signal stops it, and
        without the worker-count changes that slots cannot follow."""

        stopped_by_signal = False

        def handle_int(self) -> None:
            self.stopped_by_signal = True
            super().handle_int()

        def handle_term(self) -> None:
            self.stopped_by_signal = True
            super().handle_term()

        def handle_hup(self) -> None:
            logger.warning("SIGHUP ignored: rushgate serve gives each worker a socket of its own; restart it instead")

        def handle_ttin(self) -> None:
            logger.warning("SIGTTIN ignored: the number of workers is fixed (--workers)")

        def handle_ttou(self) -> None:
            logger.warning("SIGTTOU ignored: the number of workers is fixed (--workers)")

    config = uvicorn.Config(app, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS)
    config.bind_socket().close()  # the address must be free: exits with uvicorn's message if it is not
    lock_dir = tempfile.mkdtemp(prefix="rushgate-slots-")
    slots = SlotSockets([], lock_dir)
    try:
        for _ in range(workers):
            slots.sockets.append(listen_reuse_port(host, port, config.backlog))
        supervisor = SlotMultiprocess(config, sockets=[cast(socket.socket, slots)])
        supervisor.run()
    finally:
        slots.close()
        shutil.rmtree(lock_dir, ignore_errors=True)
    return 0 if supervisor.stopped_by_signal else STARTUP_FAILURE


GRANIAN_WORKERS_KILL_TIMEOUT_S = 15
"""How long the granian supervisor waits for a stopped worker before killing it (uvicorn's
graceful shutdown is UVICORN_OPTIONS["timeout_graceful_shutdown"]); granian waits forever by default."""


def serve_granian(app: str, *, factory: bool, host: str, port: int, workers: int) -> int:
    """Run app under granian (uvloop, HTTP/1.1) until it is told to stop; a failed worker is respawned.

    granian forks its workers while the supervisor's own SIGINT and SIGTERM handlers are installed;
    those only set a flag. A worker signalled before it installs its own handlers (while it loads
    the app, as a replacement does after a crash) would keep running and the supervisor would wait
    for it. In a worker, the supervisor's handler therefore stops the process as the default action
    would. Each worker also stops when the supervisor dies (:func:`stop_with_supervisor`, called
    by :func:`_load_in_granian_worker` before it loads the app)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.server import Server

    supervisor_pid = os.getpid()

    class Supervisor(Server):  # type: ignore[misc,valid-type]  # granian picks its class at import
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            if os.getpid() != supervisor_pid and args:
                signal.signal(args[0], signal.SIG_DFL)
                os.kill(os.getpid(), args[0])
                return
            super().signal_handler_interrupt(*args, **kwargs)

    Supervisor(
        app,
        factory=factory,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        backlog=4096,
        log_access=False,
        respawn_failed_workers=True,  # by default granian stops the whole server when one worker dies
        workers_kill_timeout=GRANIAN_WORKERS_KILL_TIMEOUT_S,
    ).serve(target_loader=partial(_load_in_granian_worker, supervisor_pid=supervisor_pid, factory=factory))
    return 0


def _load_in_granian_worker(target: str, *, supervisor_pid: int, factory: bool) -> Any:
    """granian's target loader, run in each worker: tie the worker to its supervisor, load the app."""
    from granian._internal import load_target

    if os.getpid() != supervisor_pid:  # free-threaded builds load the app in the supervisor's threads
        # SIGKILL, not SIGTERM: a granian worker can deadlock in its own SIGTERM handler (seen in CI:
        # the main thread blocked in granian's WorkerSignal.set, holding the GIL), and with its
        # supervisor gone nothing would be left to kill it. Requests in flight then fail like those
        # of a crashed worker: a retry with the same Idempotency-Key replays the order.
        stop_with_supervisor(supervisor_pid, signal.SIGKILL)
    app = load_target(target, factory=factory)
    settle()  # the app is built; what its lifespan makes later stays in the generations a collection walks
    return app
