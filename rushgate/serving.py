"""How `rushgate serve` runs uvicorn: one listening socket per worker process (SO_REUSEPORT).

uvicorn's own multi-worker mode binds one socket in the supervisor and lets every worker
accept from it. A burst of new connections (a load balancer or gateway opening its pool, a
load generator starting) is then taken by whichever worker wakes first: uvloop accepts in
a loop until the backlog is empty. Measured here with 128 keep-alive connections opened at
once against 2 workers: one worker served nearly all of them (60 % of a CPU against 2.5 %),
so it queued while the other idled. With SO_REUSEPORT every worker listens on a socket of
its own and the kernel spreads new connections over them by a hash of the address pair.

The supervisor is still uvicorn's (restarts of dead workers, signals, graceful shutdown).
Each worker binds its own socket when it starts: the supervisor hands it a placeholder that
becomes a freshly bound socket when the worker process unpickles it. Before the workers
start, the supervisor binds the address once without SO_REUSEPORT and closes it again, so a
port that another program holds still fails with uvicorn's usual error instead of being
shared silently.

benchmarks.uvicorn_serve runs the bare and row-lock apps through :func:`serve_uvicorn` too,
so the benchmark ratios compare applications under the same server set-up.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, cast

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


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (not yet listening: the server's loop does that)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class ReusePortListener:
    """Stands in for the listening socket in uvicorn's supervisor: pickled into each worker
    process (uvicorn spawns them), it arrives there as a socket that worker bound itself."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return bind_reuse_port, (self.host, self.port)


def serve_uvicorn(app: str, *, factory: bool, host: str, port: int, workers: int) -> None:
    """Run app (an import string) under uvicorn with UVICORN_OPTIONS until it is told to stop."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if workers == 1 or port == 0 or not REUSE_PORT:  # port 0: each worker would get a port of its own
        uvicorn.run(app, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS)
        return
    config = uvicorn.Config(app, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS)
    config.bind_socket().close()  # the address must be free: exits with uvicorn's message if it is not
    listener = cast(socket.socket, ReusePortListener(host, port))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C is a normal way to stop
        Multiprocess(config, sockets=[listener]).run()
