"""End-to-end benchmark: rushgate against a bare-Litestar ceiling and a Postgres row-lock floor, in one run.

``python -m benchmarks.e2e [--duration 20] [--rounds 3] [--workers 2] [--connections 64]
[--server uvicorn|granian] [--skip-bare] [--skip-rowlock] [--skip-batch] [--skip-openloop]
[--skip-expiry] [--openloop-engine auto|c|python] [--json PATH]``

Starts embedded Redis (valkey, AOF everysec) and Postgres (fsync on), migrates, and runs
`rushgate serve --workers N`, `rushgate persister` and `rushgate sweeper`, plus the two
comparison apps (benchmarks/apps) under the same ASGI server and worker count. Then:

1. closed loop: wrk (benchmarks/wrk/orders.lua, fresh idempotency keys, one hot SKU) drives
   the apps alternately, every app once per round, the order rotating between rounds; the
   persister's backlog is sampled during every rushgate run and its drain timed after it;
2. open loop: benchmarks.openloop (its C engine when a C compiler is there) at 80 % of
   rushgate's mean closed-loop rate, right after it, then at 30 % and 50 % (--openloop-sweep)
   to show up to which rate the p99 target holds;
3. batch intake: POST /v1/orders:batch with 100 orders per request (skipped when absent);
4. expiry: 100,000 holds reach their deadlines (spread at rushgate's closed-loop rate), the
   sweeper process releases them.

It prints req/s, both ratios, latencies, non-2xx counts, persister lag and release lag, and for
each of rushgate's phases its wall-clock span and whether Redis forked during it (an AOF rewrite
or RDB save: benchmarks/housekeeping.py), since such a fork shows in the tails.
Load generator and servers share the machine: compare ratios from one run, not absolute
figures from different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.backlog import BacklogSampler, drain_seconds
from benchmarks.cpu import CpuMeter, per_order_us
from benchmarks.expiry import run_expiry_phase
from benchmarks.harness import (
    SERVERS,
    Child,
    HarnessError,
    asgi_server_argv,
    http_request,
    python_module,
    wait_ready,
)
from benchmarks.housekeeping import (
    PhaseWatch,
    await_lull_rewrite,
    describe,
    describe_scripts,
    overlapped,
    rewrite_and_wait,
)
from benchmarks.load import BATCH_SCRIPT, ORDERS_SCRIPT, find_wrk, run_open_loop, run_wrk
from benchmarks.openloop import ENGINES
from benchmarks.profiling import Recorder, merged, py_spy_executable
from benchmarks.profiling import render as render_profile
from persistence.database import PostgresError
from reservation.aof_rewrite import RewriteLimits
from reservation.store import RedisStore, ResponseError, connect
from rushgate.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from rushgate.settings import SettingsError, load_settings
from rushgate.workers import rewrite_limits

HOT_SKU = "hot"
EXPIRY_SKU = "expiry"
STOCK_ON_HAND = 1_000_000_000
ROWLOCK_DATABASE = "rowlock"
TARGET_BARE_RATIO = 0.85
TARGET_ROWLOCK_RATIO = 10.0
TARGET_P99_MS = 10.0
TARGET_BACKLOG_S = 1.0
TARGET_RELEASE_LAG_MS = 1000.0
OPEN_LOOP_FRACTION = 0.8
OPEN_LOOP_SWEEP = "0.3,0.5"
APP_NAMES = ("bare", "rushgate", "rowlock")
SCRIPT_FIELDS = ("orders_decided", "redis_script_calls", "redis_script_usec")  # a PhaseWatch's, summed over rounds
LULL_REWRITE_START_TIMEOUT_S = 30.0  # beyond the quiet time, for the sweeper to start a due AOF rewrite
SERVER_NOTES = {"uvicorn": "uvloop, httptools, one send per response", "granian": "uvloop, HTTP/1"}


@dataclass
class App:
    name: str
    child: Child
    base_url: str
    command: list[str]
    ready_path: str


@dataclass
class Environment:
    """Everything started for one harness run."""

    data_dir: Path
    redis_url: str
    database_url: str
    gateway_token: str
    admin_token: str
    child_env: dict[str, str]
    apps: dict[str, App] = field(default_factory=dict)
    workers: list[Child] = field(default_factory=list)
    rushgate_command_note: str = ""
    server_pids: dict[str, int] = field(default_factory=dict)
    rewrite_limits: RewriteLimits | None = None  # None: Redis's own trigger rewrites the AOF (aof_rewrite=redis)
    transport: str = ""  # how rushgate reaches Redis and Postgres, for the report

    def cpu_groups(self) -> dict[str, int]:
        """Process trees whose CPU a rushgate run is charged with, by name."""
        groups = {"api workers": self.apps["rushgate"].child.pid}
        groups |= {child.name: child.pid for child in self.workers}
        return groups | self.server_pids


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e", description=(__doc__ or "").split("\n\n")[0].strip()
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per closed-loop run (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, every app once per round (3)")
    parser.add_argument("--workers", type=int, default=2, help="ASGI worker processes per app (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--server", choices=SERVERS, default="uvicorn", help="ASGI server for every app")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk per app before the rounds (2)")
    parser.add_argument("--batch-duration", type=int, default=None, help="seconds of batch intake (--duration)")
    parser.add_argument("--batch-size", type=int, default=100, help="orders per batch request (default 100)")
    parser.add_argument("--openloop-duration", type=float, default=15.0, help="open-loop seconds (default 15)")
    parser.add_argument("--openloop-connections", type=int, default=128, help="open-loop connections (128)")
    parser.add_argument("--openloop-engine", choices=ENGINES, default="auto",
                        help="open-loop generator: c (built with cc), python, or auto (c when it builds)")  # fmt: skip
    parser.add_argument("--openloop-fraction", type=float, default=OPEN_LOOP_FRACTION, help="of peak (0.8)")
    parser.add_argument(
        "--openloop-peak", type=float, default=None, metavar="REQ_PER_S",
        help="the rate the open loop's fractions are of (default: rushgate's closed-loop mean in this run); "
        "fixed, it compares settings that move the peak at the same arrival rates",
    )  # fmt: skip
    parser.add_argument(
        "--openloop-sweep", type=_fractions, default=_fractions(OPEN_LOOP_SWEEP), metavar="F,F,...",
        help=f"then these fractions of peak, to find up to which rate p99 meets the target "
        f"({OPEN_LOOP_SWEEP}; '': none)",
    )  # fmt: skip
    parser.add_argument("--expiry-holds", type=int, default=100_000, help="holds in the expiry phase (100000)")
    parser.add_argument(
        "--expiry-spread",
        type=float,
        default=None,
        help="seconds the deadlines span; 0: one burst (default: holds / rushgate's closed-loop rate)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="max seconds to wait for the persister")
    for phase in ("bare", "rowlock", "batch", "openloop", "expiry"):
        parser.add_argument(f"--skip-{phase}", action="store_true", help=f"skip the {phase} part")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a rushgate setting for its API, persister and sweeper, e.g. --set persister_nice=5 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-config", action="append", default=[], type=_config_pair, metavar="NAME=VALUE",
        help="CONFIG SET for the embedded Redis once it started, e.g. --redis-config auto-aof-rewrite-percentage=100 "
             "(Redis's own rewrite trigger on beside the sweeper's; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres-config", action="append", default=[], type=_config_pair, metavar="NAME=VALUE",
        help="ALTER SYSTEM SET for the embedded Postgres once it started, then a reload, e.g. --postgres-config "
             "max_wal_size=1GB (only settings a reload applies; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--tcp", action="store_true",
        help="reach Redis and Postgres over 127.0.0.1 TCP instead of their Unix sockets (as `rushgate up` does)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", metavar="DIR", type=Path,
        help="record rushgate's API workers, persister and sweeper with py-spy during its measured phases, write "
        "the recordings (collapsed stacks) to DIR and print where their CPU went; py-spy's own sampling perturbs "
        "the figures (benchmarks/profiling.py)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH ('-': stdout)")
    parser.add_argument("--keep-data", action="store_true", help="keep the servers' data and logs")
    return parser


def _fractions(text: str) -> list[float]:
    """A comma-separated list of fractions of peak, each in (0, 1], ascending; '' is none."""
    try:
        fractions = sorted(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions such as 0.3,0.5") from None
    if any(not 0 < fraction <= 1 for fraction in fractions):
        raise argparse.ArgumentTypeError(f"{text!r}: every fraction must be above 0 and at most 1")
    return fractions


# -- start-up -------------------------------------------------------------------------------------


def _base_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RUSHGATE_")}
    python_path = [str(Path(__file__).resolve().parents[1]), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    return env


def _settings_env(assignments: list[str]) -> dict[str, str]:
    """--set name=value, as the RUSHGATE_NAME variables rushgate reads its settings from."""
    env = {}
    for assignment in assignments:
        name, separator, value = assignment.partition("=")
        if not separator or not name.strip():
            raise HarnessError(f"--set {assignment!r}: expected NAME=VALUE, e.g. persister_nice=5")
        env[f"RUSHGATE_{name.strip().upper()}"] = value
    return env


def _config_pair(text: str) -> tuple[str, str]:
    """--redis-config or --postgres-config name=value."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE, e.g. auto-aof-rewrite-percentage=0")
    return name.strip(), value


async def configure_redis(client: Any, pairs: list[tuple[str, str]]) -> None:
    """CONFIG SET each pair: a setting Redis refuses (unknown, or a bad value) stops the run before any phase."""
    for name, value in pairs:
        try:
            await client.config_set(name, value)
        except ResponseError as error:
            raise HarnessError(f"--redis-config {name}={value}: Redis refused it: {error}") from error


async def _configure_redis_at(redis_url: str, pairs: list[tuple[str, str]]) -> None:
    client = connect(redis_url, pool_size_max=1, timeout_ms=10_000)
    try:
        await configure_redis(client, pairs)
    finally:
        await client.aclose()


async def configure_postgres(connection: Any, pairs: list[tuple[str, str]]) -> None:
    """ALTER SYSTEM SET each pair and reload: an unknown setting, a bad value or one that only a restart
    applies stops the run before any phase."""
    for name, value in pairs:
        context = await connection.fetchval("SELECT context FROM pg_settings WHERE name = $1", name)
        if context is None:
            raise HarnessError(f"--postgres-config {name}={value}: Postgres has no such setting")
        if context in ("internal", "postmaster"):
            raise HarnessError(f"--postgres-config {name}={value}: only a restart applies it ({context})")
        try:
            quoted = value.replace("'", "''")  # SET takes no parameters; the name is a known setting's
            await connection.execute(f"ALTER SYSTEM SET {name} = '{quoted}'")
        except PostgresError as error:
            raise HarnessError(f"--postgres-config {name}={value}: Postgres refused it: {error}") from error
    await connection.execute("SELECT pg_reload_conf()")


async def _prepare_databases(database_url: str, postgres_config: list[tuple[str, str]]) -> None:
    """Migrate rushgate's database and create the row-lock app's own."""
    from persistence.database import connect as connect_postgres
    from persistence.database import migrate

    await migrate(database_url)
    connection = await connect_postgres(database_url)
    try:
        await configure_postgres(connection, postgres_config)
        await connection.execute(f"CREATE DATABASE {ROWLOCK_DATABASE}")
    finally:
        await connection.close()


def _rushgate_command(server: str, port: int, workers: int) -> tuple[list[str], dict[str, str], str]:
    """(argv, extra env, note) for rushgate under the chosen server, named explicitly (the defaults may differ)."""
    serve = python_module("rushgate", "serve", "--port", str(port), "--workers", str(workers), "--server", server)
    return serve, {}, f"rushgate serve --server {server}"


def _start_app(
    stack: ExitStack, environment: Environment, name: str, argv: list[str], env: dict[str, str], ready_path: str
) -> App:
    log = environment.data_dir / "logs" / f"{name}.log"
    child = Child(name, argv, env, log).start()
    stack.callback(child.stop)
    port = int(argv[argv.index("--port") + 1])
    app = App(name, child, f"http://127.0.0.1:{port}", argv, ready_path)
    environment.apps[name] = app
    return app


def start_everything(stack: ExitStack, arguments: argparse.Namespace, data_dir: Path) -> Environment:
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    print(f"starting embedded Redis and Postgres under {data_dir}", flush=True)
    settings_env = _settings_env(arguments.set)
    try:
        settings = load_settings(settings_env)
    except SettingsError as error:
        raise HarnessError(f"--set: {error}") from None
    # As `rushgate up` does: Redis's own rewrite trigger only where the sweeper does not rewrite.
    # Over Unix sockets, as under `rushgate up` (--tcp: loopback TCP); the row-lock app reaches Postgres the same way.
    unix_socket = not arguments.tcp
    redis_server = EmbeddedRedis(
        data_dir / "redis", auto_rewrite=settings.redis_rewrites_aof, unix_socket=unix_socket
    ).start()
    stack.callback(redis_server.stop)
    if arguments.redis_config:
        asyncio.run(_configure_redis_at(redis_server.url, arguments.redis_config))
    postgres_server = EmbeddedPostgres(data_dir / "postgres", unix_socket=unix_socket).start()
    stack.callback(postgres_server.stop)
    asyncio.run(_prepare_databases(postgres_server.url, arguments.postgres_config))
    rowlock_url = postgres_server.database_url(ROWLOCK_DATABASE)

    admin_token, gateway_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    base = _base_env()
    rushgate_env = {
        **base,
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": postgres_server.url,
        "RUSHGATE_ADMIN_TOKEN": admin_token,
        "RUSHGATE_GATEWAY_TOKEN": gateway_token,
        "RUSHGATE_LOG_LEVEL": "WARNING",
        **settings_env,
    }
    environment = Environment(
        data_dir, redis_server.url, postgres_server.url, gateway_token, admin_token, child_env=base
    )
    environment.server_pids = {"redis": redis_server.pid, "postgres": postgres_server.pid}
    # A socket each was asked for unless --tcp; a data directory too deep for a socket path gets TCP.
    redis_way = "a Unix socket" if redis_server.socket_path is not None else "TCP"
    postgres_way = "a Unix socket" if postgres_server.socket_dir is not None else "TCP"
    environment.transport = f"Redis over {redis_way}, Postgres over {postgres_way}"
    environment.rewrite_limits = None if settings.redis_rewrites_aof else rewrite_limits(settings)
    for command in ("persister", "sweeper"):
        child = Child(command, python_module("rushgate", command), rushgate_env, data_dir / "logs" / f"{command}.log")
        stack.callback(child.start().stop)
        environment.workers.append(child)

    server, workers = arguments.server, arguments.workers
    argv, extra_env, note = _rushgate_command(server, free_port(), workers)
    environment.rushgate_command_note = note
    _start_app(stack, environment, "rushgate", argv, {**rushgate_env, **extra_env}, "/readyz")
    if not arguments.skip_bare:
        bare_argv = asgi_server_argv(server, "benchmarks.apps.bare:app", port=free_port(), workers=workers)
        _start_app(stack, environment, "bare", bare_argv, base, "/healthz")
    if not arguments.skip_rowlock:
        rowlock_argv = asgi_server_argv(server, "benchmarks.apps.rowlock:app", port=free_port(), workers=workers)
        rowlock_env = {**base, "ROWLOCK_DATABASE_URL": rowlock_url, "ROWLOCK_SEED": f"{HOT_SKU}:{STOCK_ON_HAND}"}
        _start_app(stack, environment, "rowlock", rowlock_argv, rowlock_env, "/healthz")

    print(f"starting {', '.join(environment.apps)} ({server}, {workers} workers each)", flush=True)
    for app in environment.apps.values():
        headers = wait_ready(app.child, app.base_url + app.ready_path)
        _check_server(app, headers, server)
    for child in environment.workers:
        child.check_alive()
    seed_catalog(environment.apps["rushgate"].base_url, admin_token)
    return environment


def _check_server(app: App, headers: dict[str, str], server: str) -> None:
    """The app must really run under the chosen server (uvicorn and granian name themselves)."""
    answered_by = headers.get("server", "")
    if answered_by and answered_by != server:
        raise HarnessError(f"{app.name} answered from server {answered_by!r}, expected {server!r}: {app.command}")


def seed_catalog(base_url: str, admin_token: str) -> None:
    """One region, one warehouse, the hot SKU and the expiry SKU with huge stock, via the admin API."""
    headers = {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/v1/warehouses/w1", {"region": "eu", "name": "Benchmark warehouse"}),
        ("/v1/dispatch/eu", {"warehouses": ["w1"]}),
    ]
    for sku in (HOT_SKU, EXPIRY_SKU):
        calls.append((f"/v1/skus/{sku}", {"name": f"Product {sku}", "merchant_id": "m1", "price": 49_900,
                                          "currency": "EUR"}))  # fmt: skip
        calls.append((f"/v1/stock/{sku}/w1", {"on_hand": STOCK_ON_HAND}))
    for path, body in calls:
        status, _, answer = http_request("PUT", base_url + path, json.dumps(body).encode(), headers)
        if status != 200:
            raise HarnessError(f"seeding PUT {path} answered {status}: {answer[:300]!r}")


# -- phases ------------------------------------------------------------------------------------------


def _rotation(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


class Phases:
    def __init__(self, environment: Environment, arguments: argparse.Namespace, store: RedisStore) -> None:
        self.environment = environment
        self.arguments = arguments
        self.store = store
        self.run_id = secrets.token_hex(4)
        self.runs = 0
        self.lull_rewrites: list[dict[str, Any]] = []  # the sweeper's, waited for between phases
        self.recordings: dict[str, dict[str, Any]] = {}  # --profile: phase -> py-spy's CPU, recordings per group

    async def after_rushgate_phase(self, label: str) -> None:
        """Let the sweeper's lull rewrite, if one is due, run now rather than into the next phase."""
        limits = self.environment.rewrite_limits
        if limits is None:
            return
        waited = await await_lull_rewrite(self.store, limits, start_timeout_s=LULL_REWRITE_START_TIMEOUT_S)
        if waited["waited_s"]:
            what = "the sweeper's AOF rewrite" if waited["rewrites"] else "Redis's fork child to finish"
            print(f"  after {label}: waited {waited['waited_s']:.1f} s for {what}", flush=True)
            self.lull_rewrites.append({"after": label, **waited})

    def _wrk_env(self, **extra: str) -> dict[str, str]:
        self.runs += 1
        return {
            **self.environment.child_env,
            "GATEWAY_TOKEN": self.environment.gateway_token,
            "SKU": HOT_SKU,
            "RUN_ID": f"{self.run_id}r{self.runs}",
            **extra,
        }

    def _check_children(self) -> None:
        for app in self.environment.apps.values():
            app.child.check_alive()
        for child in self.environment.workers:
            child.check_alive()

    async def _phase(
        self,
        load: Awaitable[dict[str, Any]],
        rushgate_phase: str | None = None,
        *,
        orders: Callable[[dict[str, Any]], int] = lambda result: 0,
        rate: Callable[[dict[str, Any]], float] = lambda result: 0.0,
        profile_as: str | None = None,
    ) -> dict[str, Any]:
        """Run one phase's load under a PhaseWatch (every app's: a fork during a comparator's run shows too).
        For one of rushgate's phases (named by rushgate_phase) also sample the persister's backlog and meter
        the CPU per order (orders(result) of them, persister lag at rate(result)), wait for the drain, and let
        a due lull rewrite run before the next phase. With --profile, a phase named by profile_as is recorded
        with py-spy, its recordings kept under that name (the rounds of one name are summarised together)."""
        watch = PhaseWatch(self.store)
        sampler = BacklogSampler(self.store) if rushgate_phase else None
        meter = CpuMeter(self.environment.cpu_groups()) if rushgate_phase else None
        recorders = self._recorders(profile_as)
        try:
            for recorder in recorders.values():
                await recorder.wait_sampling()
            await watch.start()
            if sampler is not None and meter is not None:
                sampler.start()
                meter.start()
            result = await load
            result["redis"] = await watch.stop()
            if meter is not None:
                result["cpu"] = meter.stop()  # before py-spy is reaped: its CPU is not charged to the load generator
            if recorders:
                assert profile_as is not None
                recordings = self.recordings.setdefault(profile_as, {"py-spy cpu_s": 0.0, "groups": {}})
                for group, recorder in recorders.items():
                    recordings["groups"].setdefault(group, []).append(recorder.stop())
                    recordings["py-spy cpu_s"] += recorder.cpu_s
        finally:
            for recorder in recorders.values():
                recorder.abandon()  # a phase that failed leaves no py-spy behind
        if rushgate_phase and sampler is not None and meter is not None:
            result["cpu_us_per_order"] = per_order_us(result["cpu"], orders(result))
            samples = await sampler.stop()
            result["persister"] = samples.summary(rate(result))
            result["persister"]["drain_s"] = await drain_seconds(self.store, self.arguments.drain_timeout)
            await self.after_rushgate_phase(rushgate_phase)
        self._check_children()
        return result

    def _recorders(self, profile_as: str | None) -> dict[str, Recorder]:
        """With --profile, py-spy started on rushgate's API workers (the server and its forks), persister and
        sweeper, each recording into the profile directory."""
        directory = self.arguments.profile
        if directory is None or profile_as is None:
            return {}
        targets = {"api workers": (self.environment.apps["rushgate"].child.pid, True)}
        targets |= {child.name: (child.pid, False) for child in self.environment.workers}
        self.runs += 1
        stem = "-".join(re.findall(r"[a-z0-9]+", profile_as.lower()))
        return {
            group: Recorder(pid, directory / f"{self.run_id}-{self.runs:02d}-{stem}-{group.replace(' ', '-')}.txt",
                            subprocesses=subprocesses).start()
            for group, (pid, subprocesses) in targets.items()
        }  # fmt: skip

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Every profiled phase's recordings, summarised per process group (Profile.summary), and py-spy's CPU."""
        return {
            phase: {
                "py-spy cpu_s": recordings["py-spy cpu_s"],
                "groups": {group: merged(paths).summary() for group, paths in recordings["groups"].items()},
            }
            for phase, recordings in self.recordings.items()
        }

    async def closed_loop_run(self, name: str, duration_s: int, *, measured: bool = True) -> dict[str, Any]:
        app = self.environment.apps[name]
        arguments = self.arguments
        load = run_wrk(
            ORDERS_SCRIPT, app.base_url, duration_s=duration_s, connections=arguments.connections,
            threads=arguments.threads, env=self._wrk_env(),
        )  # fmt: skip
        label = f"a {duration_s} s closed-loop run" if name == "rushgate" else None
        return await self._phase(
            load, label, orders=lambda result: result["ok"], rate=lambda result: result["ok_rate"],
            profile_as="the closed loop" if label and measured else None,
        )  # fmt: skip

    async def closed_loop(self) -> dict[str, Any]:
        arguments = self.arguments
        names = [name for name in APP_NAMES if name in self.environment.apps]
        print(f"warm-up: {arguments.warmup}s of wrk per app", flush=True)
        for name in names:
            await self.closed_loop_run(name, arguments.warmup, measured=False)
        rounds: list[dict[str, Any]] = []
        for round_index in range(arguments.rounds):
            results: dict[str, Any] = {}
            for name in _rotation(names, round_index):
                result = await self.closed_loop_run(name, arguments.duration)
                results[name] = result
                print(f"  round {round_index + 1}: {name:8} {_closed_loop_line(result)}", flush=True)
            rounds.append(results)
        return {"rounds": rounds, "summary": summarize_closed_loop(rounds, names)}

    async def batch(self) -> dict[str, Any]:
        arguments = self.arguments
        base_url = self.environment.apps["rushgate"].base_url
        probe = {"orders": [{"idempotency_key": f"probe-{self.run_id}", "customer_id": "probe", "region": "eu",
                             "order_type": "flash", "items": [{"sku": HOT_SKU, "qty": 1}]}]}  # fmt: skip
        headers = {"Authorization": f"Bearer {self.environment.gateway_token}", "Content-Type": "application/json"}
        status, _, body = http_request("POST", base_url + "/v1/orders:batch", json.dumps(probe).encode(), headers)
        if status in (404, 405):
            return {"skipped": f"POST /v1/orders:batch answered {status}: the batch endpoint is not there"}
        if not 200 <= status < 300:
            return {"skipped": f"POST /v1/orders:batch probe answered {status}: {body[:300]!r}"}
        duration_s = arguments.batch_duration or arguments.duration
        load = run_wrk(
            BATCH_SCRIPT, base_url, duration_s=duration_s, connections=arguments.connections,
            threads=arguments.threads, env=self._wrk_env(ORDERS_PER_REQUEST=str(arguments.batch_size)),
        )  # fmt: skip

        def orders_rate(result: dict[str, Any]) -> float:
            return float(result["accepted_orders"] / result["duration_s"])

        result = await self._phase(
            load, "batch intake", orders=lambda result: result["accepted_orders"], rate=orders_rate,
            profile_as="batch intake",
        )  # fmt: skip
        result["orders_rate"] = orders_rate(result)
        return result

    async def open_loop(self, peak_rate: float, fraction: float) -> dict[str, Any]:
        arguments = self.arguments
        rate = peak_rate * fraction
        self.runs += 1
        load = run_open_loop(
            self.environment.apps["rushgate"].base_url + "/v1/orders",
            token=self.environment.gateway_token, rate=rate, duration_s=arguments.openloop_duration,
            warmup_s=2.0, connections=arguments.openloop_connections, run_id=f"{self.run_id}o{self.runs}",
            env=self.environment.child_env, engine=arguments.openloop_engine, sku=HOT_SKU,
        )  # fmt: skip
        # CPU per order decided (the generator's warm-up included, as in the CPU figures), not per request counted.
        result = await self._phase(
            load, f"the open loop at {fraction:.0%}",
            orders=lambda result: result["redis"]["orders_decided"], rate=lambda result: rate,
            profile_as=f"the open loop at {fraction:.0%}",
        )  # fmt: skip
        result["peak_rate"] = peak_rate
        result["fraction_of_peak"] = fraction
        return result

    async def expiry(self, spread_s: float) -> dict[str, Any]:
        arguments = self.arguments
        # With the sweeper's policy, rewrite first, as a sale's lull would have (rewrite_and_wait).
        rewrite_s = None if self.environment.rewrite_limits is None else await rewrite_and_wait(self.store)
        result = await self._phase(
            run_expiry_phase(
                self.store, run_id=self.run_id, sku=EXPIRY_SKU, holds=arguments.expiry_holds, spread_s=spread_s
            ),
            profile_as="the expiry phase",
        )
        result["aof_rewrite_before_s"] = rewrite_s
        return result


def summarize_closed_loop(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {"apps": {}}
    for name in names:
        runs = [results[name] for results in rounds]
        summary["apps"][name] = {
            "rate_mean": statistics.fmean(run["rate"] for run in runs),
            "rate_per_round": [run["rate"] for run in runs],
            **{key: statistics.median(run[key] for run in runs) for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms")},
            "non_2xx": sum(run["non_2xx"] for run in runs),
            "socket_errors": sum(run["socket_errors"] for run in runs),
            "requests": sum(run["requests"] for run in runs),
        }
    apps = summary["apps"]
    for other, key in (("bare", "rushgate_over_bare"), ("rowlock", "rushgate_over_rowlock")):
        if other in apps:
            summary[key] = apps["rushgate"]["rate_mean"] / apps[other]["rate_mean"]
            summary[f"{key}_per_round"] = [results["rushgate"]["rate"] / results[other]["rate"] for results in rounds]
    costs = [results["rushgate"]["cpu_us_per_order"] for results in rounds]
    summary["cpu_us_per_order"] = {group: statistics.median(cost[group] for cost in costs) for group in costs[0]}
    summary["cpu_busy"] = statistics.median(results["rushgate"]["cpu"]["busy"] for results in rounds)
    persister = [results["rushgate"]["persister"] for results in rounds]
    drains = [item["drain_s"] for item in persister]
    summary["persister"] = {
        "entries_max": max(item["entries_max"] for item in persister),
        "seconds_of_orders_max": max(item["seconds_of_orders_max"] or 0 for item in persister),
        "oldest_age_ms_max": max(item["oldest_age_ms_max"] for item in persister),
        "drain_s_max": None if None in drains else max(drains),
    }
    return summary


async def run_phases(environment: Environment, arguments: argparse.Namespace) -> dict[str, Any]:
    client = connect(environment.redis_url, pool_size_max=8, timeout_ms=10_000)
    store = RedisStore(client)
    report: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for signal_number in (signal.SIGINT, signal.SIGTERM):  # cancel cleanly instead of raising mid-await
        loop.add_signal_handler(signal_number, main_task.cancel)
    try:
        phases = Phases(environment, arguments, store)
        print(f"closed loop: {arguments.rounds} round(s) of {arguments.duration}s per app", flush=True)
        report["closed_loop"] = await phases.closed_loop()
        peak = arguments.openloop_peak or report["closed_loop"]["summary"]["apps"]["rushgate"]["rate_mean"]
        # The open loop right after the peak it is a fraction of, in the same state: not after the batch
        # phase, when Redis and Postgres have just taken a million more orders.
        if arguments.skip_openloop:
            report["open_loop"] = {"skipped": "--skip-openloop"}
        else:
            given = " (--openloop-peak)" if arguments.openloop_peak else ""
            print(f"open loop: {arguments.openloop_fraction:.0%} of {peak:,.0f} req/s{given}", flush=True)
            report["open_loop"] = await phases.open_loop(peak, arguments.openloop_fraction)
            # Then the sweep's rates (lower ones by default), to find up to which rate the p99 target holds.
            report["open_loop_sweep"] = []
            for fraction in (item for item in arguments.openloop_sweep if item != arguments.openloop_fraction):
                print(f"open loop: {fraction:.0%} of {peak:,.0f} req/s{given}", flush=True)
                report["open_loop_sweep"].append(await phases.open_loop(peak, fraction))
        if arguments.skip_batch:
            report["batch"] = {"skipped": "--skip-batch"}
        else:
            print("batch intake", flush=True)
            report["batch"] = await phases.batch()
        if arguments.skip_expiry:
            report["expiry"] = {"skipped": "--skip-expiry"}
        else:
            # By default the holds expire at the rate rushgate took them in: a sale at peak, nobody paying.
            spread_s = arguments.expiry_spread if arguments.expiry_spread is not None else arguments.expiry_holds / peak
            print(f"expiry: {arguments.expiry_holds:,} holds, deadlines over {spread_s:.1f} s", flush=True)
            report["expiry"] = await phases.expiry(spread_s)
        report["lull_rewrites"] = phases.lull_rewrites
        report["profiles"] = phases.profiles()
    finally:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)
        await client.aclose(close_connection_pool=True)
    return report


# -- report ------------------------------------------------------------------------------------------


def _closed_loop_line(run: dict[str, Any]) -> str:
    line = (
        f"{run['rate']:>9,.0f} req/s  p50 {run['p50_ms']:6.2f}  p99 {run['p99_ms']:6.2f}  "
        f"p99.9 {run['p999_ms']:6.2f} ms  non-2xx {run['non_2xx']}  socket errors {run['socket_errors']}"
    )
    persister = run.get("persister")
    if persister:
        drain = persister["drain_s"]
        line += (
            f"  | persister backlog max {persister['entries_max']:,} ({persister['seconds_of_orders_max'] or 0:.2f} s "
            f"of orders), oldest {persister['oldest_age_ms_max'] / 1000:.2f} s, drained in "
            + ("TIMEOUT" if drain is None else f"{drain:.2f} s")
        )
    return line


def _verdict(value: float | None, target: float, *, at_least: bool) -> str:
    if value is None:
        return "n/a"
    met = value >= target if at_least else value <= target
    return "met" if met else "MISSED"


def render(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        "",
        "rushgate end-to-end benchmark",
        f"  machine: {config['cpus']} CPUs, {config['platform']}, Python {config['python']}",
        f"  server: {config['server']} ({SERVER_NOTES[config['server']]}), "
        f"{config['workers']} workers per app; rushgate as {config['rushgate_command']}"
        + (f" with {', '.join(config['settings'])}" if config.get("settings") else ""),
        f"  load: wrk -t{config['threads']} -c{config['connections']}, {config['duration']} s per run, "
        f"{config['rounds']} round(s), warm-up {config['warmup']} s; one hot SKU, fresh idempotency keys",
        f"  {config.get('transport', 'Redis over TCP, Postgres over TCP')}; Redis AOF appendfsync everysec"
        + "".join(f", {name} {value}" for name, value in config.get("redis_config", []))
        + "; Postgres fsync on, synchronous_commit on (defaults)"
        + "".join(f", {name} {value}" for name, value in config.get("postgres_config", [])),
    ]
    closed = report["closed_loop"]
    summary = closed["summary"]
    apps = summary["apps"]
    lines += ["", "closed loop (wrk), req/s per round:"]
    names = list(apps)
    lines.append("  round " + "".join(f"{name:>12}" for name in names))
    for index, results in enumerate(closed["rounds"], start=1):
        lines.append(f"  {index:<5} " + "".join(f"{results[name]['rate']:>12,.0f}" for name in names))
    lines.append("  mean  " + "".join(f"{apps[name]['rate_mean']:>12,.0f}" for name in names))
    lines += ["", "latency (wrk, closed loop; median over rounds), ms:"]
    lines.append(
        f"  {'app':10}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'non-2xx':>10}{'sock err':>10}{'requests':>11}"
    )
    for name in names:
        app = apps[name]
        lines.append(
            f"  {name:10}{app['p50_ms']:9.2f}{app['p99_ms']:9.2f}{app['p999_ms']:9.2f}{app['max_ms']:9.2f}"
            f"{app['non_2xx']:>10,}{app['socket_errors']:>10,}{app['requests']:>11,}"
        )
    lines.append("")
    for key, label, target in (
        ("rushgate_over_bare", "rushgate/bare   ", TARGET_BARE_RATIO),
        ("rushgate_over_rowlock", "rushgate/rowlock", TARGET_ROWLOCK_RATIO),
    ):
        if key in summary:
            per_round = ", ".join(f"{value:.2f}" for value in summary[f"{key}_per_round"])
            lines.append(
                f"ratio {label} {summary[key]:6.2f}  (target >= {target:g}: "
                f"{_verdict(summary[key], target, at_least=True)}; per round {per_round})"
            )
    persister = summary["persister"]
    drain = persister["drain_s_max"]
    lines.append(
        f"persister during rushgate runs: backlog max {persister['entries_max']:,} events = "
        f"{persister['seconds_of_orders_max']:.2f} s of orders at the measured rate (target < {TARGET_BACKLOG_S:g} s: "
        f"{_verdict(persister['seconds_of_orders_max'], TARGET_BACKLOG_S, at_least=False)}); oldest unpersisted "
        f"entry max {persister['oldest_age_ms_max'] / 1000:.2f} s; drained "
        + ("TIMEOUT" if drain is None else f"{drain:.2f} s after the run (worst round)")
    )
    lines.append(_render_redis_rounds(closed["rounds"]))
    lines.append(_render_lull_rewrites(report))
    lines += ["", *_render_cpu(summary, closed["rounds"], report["batch"])]
    lines += ["", *_render_batch(report["batch"]), *_render_open_loop(report["open_loop"])]
    lines += _render_open_loop_sweep(report["open_loop"], report.get("open_loop_sweep", []))
    lines += _render_expiry(report["expiry"])
    for phase, profiled in report.get("profiles", {}).items():
        lines += ["", *render_profile(phase, profiled["groups"], profiled["py-spy cpu_s"])]
    if report.get("profiles"):
        lines.append(f"py-spy recordings (collapsed stacks, for flamegraph.pl or speedscope): {config['profile']}")
    lines.append(f"\ntotal {report['elapsed_s']:.0f} s; logs and data: {report['data_dir']}")
    return "\n".join(lines)


def _render_redis_rounds(rounds: list[dict[str, Any]]) -> str:
    """Whether Redis forked (AOF rewrite, RDB save) during any app's closed-loop runs."""
    forked = [
        f"round {index} {name}: {describe(result['redis'])}"
        for index, results in enumerate(rounds, start=1)
        for name, result in results.items()
        if "redis" in result and overlapped(result["redis"])  # reports before every app was watched: rushgate's
    ]
    if not forked:
        return "Redis did not fork (no AOF rewrite, no RDB save) during the closed-loop runs"
    return "Redis during the closed-loop runs: " + "; ".join(forked)


def _render_lull_rewrites(report: dict[str, Any]) -> str:
    """Who rewrote the AOF: Redis's own trigger, or the sweeper at the lulls between phases."""
    if report["config"].get("aof_rewrite", "redis") == "redis":
        return "AOF rewrites: Redis's own trigger (aof_rewrite=redis)"
    lulls = report.get("lull_rewrites", [])
    rewrites, waited_s = sum(item["rewrites"] for item in lulls), sum(item["waited_s"] for item in lulls)
    own_trigger = [
        value for name, value in report["config"].get("redis_config", []) if name == "auto-aof-rewrite-percentage"
    ]
    return (
        f"AOF rewrites: the sweeper's, at lulls; {rewrites} ran between phases (the harness waited {waited_s:.0f} s"
        " in all for them to start and finish before the next phase)"
        + ("; Redis's own trigger is on too (--redis-config)" if own_trigger and own_trigger[-1] != "0" else "")
    )


def _render_cpu(summary: dict[str, Any], rounds: list[dict[str, Any]], batch: dict[str, Any]) -> list[str]:
    """CPU microseconds per accepted order by process group: closed loop (median of rounds) and batch; and
    the orders per script call in each (closed loop: all rounds together)."""
    closed = summary["cpu_us_per_order"]
    batched = batch.get("cpu_us_per_order", {})
    lines = [f"CPU per accepted order, us (machine busy: closed loop {summary['cpu_busy']:.0%}"
             + (f", batch {batch['cpu']['busy']:.0%}" if batched else "") + "):",
             f"  {'process group':18}{'closed loop':>13}" + (f"{'batch':>10}" if batched else "")]  # fmt: skip
    for group in closed:
        line = f"  {group:18}{closed[group]:13.1f}"
        if batched:
            line += f"{batched.get(group, float('nan')):10.1f}"
        lines.append(line)
    watches = [results["rushgate"]["redis"] for results in rounds]
    closed_scripts = describe_scripts({key: sum(watch.get(key, 0) for watch in watches) for key in SCRIPT_FIELDS})
    for label, scripts in (("closed loop", closed_scripts), ("batch", describe_scripts(batch.get("redis", {})))):
        if scripts:
            lines.append(f"  {label}: {scripts}")
    return lines


def _render_batch(batch: dict[str, Any]) -> list[str]:
    if "skipped" in batch:
        return [f"batch intake: skipped ({batch['skipped']})"]
    persister = batch["persister"]
    drain = persister["drain_s"]
    backlog_s = persister["seconds_of_orders_max"] or 0
    oldest_s = persister["oldest_age_ms_max"] / 1000
    return [
        f"batch intake ({batch['orders_per_request']} orders per request): {batch['orders_rate']:,.0f} orders/s "
        f"accepted (target >= 100,000), {batch['rate']:,.0f} req/s; request p50 {batch['p50_ms']:.2f}  "
        f"p99 {batch['p99_ms']:.2f}  p99.9 {batch['p999_ms']:.2f} ms; non-2xx {batch['non_2xx']}, "
        f"socket errors {batch['socket_errors']}",
        f"  persister: backlog max {persister['entries_max']:,} events ({backlog_s:.2f} s of orders), "
        f"oldest {oldest_s:.2f} s; " + ("drain TIMEOUT" if drain is None else f"drained {drain:.2f} s after"),
        f"  {describe(batch['redis'])}",
    ]


def _render_open_loop(result: dict[str, Any]) -> list[str]:
    if "skipped" in result:
        return [f"open loop: skipped ({result['skipped']})"]
    latency, service, lag = result["latency_ms"], result["service_time_ms"], result["send_lag_ms"]
    verdict = _verdict(latency["p99"], TARGET_P99_MS, at_least=False)
    return [
        f"open loop: {result['rate_target']:,.0f} req/s ({result['fraction_of_peak']:.0%} of "
        f"{result['peak_rate']:,.0f}) for {result['duration_s']:g} s over {result['connections']} connections; "
        f"{result['requests_completed']:,} completed of {result['requests_scheduled']:,}, non-2xx "
        f"{result['non_2xx']}, connection errors {result['connection_errors']}, unfinished {result['unfinished']}",
        f"  latency from intended send: p50 {latency['p50']:.2f}  p99 {latency['p99']:.2f}  "
        f"p99.9 {latency['p999']:.2f}  max {latency['max']:.2f} ms (target p99 <= {TARGET_P99_MS:g} ms: {verdict})",
        f"  service time: p50 {service['p50']:.2f}  p99 {service['p99']:.2f} ms; send lag p99 {lag['p99']:.2f}  "
        f"max {lag['max']:.2f} ms; the generator ({result.get('engine', 'python')}) used "
        f"{result['generator_cpu_fraction']:.0%} of a CPU",
        f"  {describe(result['redis'])}",
        *_scripts_and_cpu(result),
    ]


def _scripts_and_cpu(result: dict[str, Any]) -> list[str]:
    """A phase's orders per script call and CPU per order decided, when it recorded them."""
    lines = []
    scripts = describe_scripts(result["redis"])
    if scripts:
        lines.append(f"  {scripts}")
    costs = result.get("cpu_us_per_order")
    if costs:
        groups = ", ".join(f"{group} {value:.1f}" for group, value in costs.items())
        lines.append(f"  CPU per order decided, us: {groups}")
    return lines


def _render_open_loop_sweep(target: dict[str, Any], sweep: list[dict[str, Any]]) -> list[str]:
    """The sweep's rates, and the highest measured rate whose p99 met the target."""
    if "skipped" in target or not sweep:
        return []
    lines = ["  the same at other rates (latency from intended send, ms):"]
    for result in sorted(sweep, key=lambda item: item["fraction_of_peak"]):
        latency = result["latency_ms"]
        forked = "; Redis forked during it" if overlapped(result["redis"]) else ""
        lines.append(
            f"    {result['fraction_of_peak']:4.0%} {result['rate_target']:>8,.0f} req/s: p50 {latency['p50']:7.2f}  "
            f"p99 {latency['p99']:7.2f}  p99.9 {latency['p999']:7.2f}  non-2xx {result['non_2xx']}{forked}"
        )
        lines += [f"  {line}" for line in _scripts_and_cpu(result)]
    met = [
        result for result in [*sweep, target]
        if result["latency_ms"]["p99"] <= TARGET_P99_MS
        and not (result["non_2xx"] or result["connection_errors"] or result["unfinished"])
    ]  # fmt: skip
    if met:
        best = max(met, key=lambda item: item["fraction_of_peak"])
        lines.append(
            f"  p99 <= {TARGET_P99_MS:g} ms up to {best['rate_target']:,.0f} req/s ({best['fraction_of_peak']:.0%} of "
            "peak) of the rates measured"
        )
    else:
        lines.append(f"  p99 <= {TARGET_P99_MS:g} ms at none of the rates measured")
    return lines


def _render_expiry(result: dict[str, Any]) -> list[str]:
    if "skipped" in result:
        return [f"expiry: skipped ({result['skipped']})"]
    lag = result["lag_ms"]
    swept = result["swept_s_after_last_deadline"]
    worst = lag["max"] if lag["max"] is not None else float("nan")
    verdict = _verdict(lag["max"], TARGET_RELEASE_LAG_MS, at_least=False)
    return [
        f"expiry: {result['holds']:,} holds created in {result['creation_s']:.1f} s, deadlines over "
        f"{result['spread_s']:.1f} s ({result['holds'] / max(result['spread_s'], 0.001):,.0f} per s), "
        f"{result['outstanding_at_first_deadline']:,} holds outstanding at the first deadline",
        f"  release lag (updated_ms - expires_ms): p50 {lag['p50']:.0f}  p99 {lag['p99']:.0f}  "
        f"p99.9 {lag['p999']:.0f}  max {worst:.0f} ms (target max <= {TARGET_RELEASE_LAG_MS:g} ms: {verdict})",
        f"  released {result['released']:,}, not released {result['not_released']:,}, released early "
        f"{result['released_early']}, created after their deadline {result['created_late']}; "
        + ("sweep TIMEOUT" if swept is None else f"last one released {swept:.2f} s after the last deadline"),
        f"  {describe(result['redis'])}"
        + (
            f"; the AOF was rewritten just before the phase ({result['aof_rewrite_before_s']:.1f} s), as a sale's "
            "lull would have, so that its own holds make no lull rewrite due during it"
            if result.get("aof_rewrite_before_s") is not None
            else ""
        ),
    ]


# -- main --------------------------------------------------------------------------------------------


def _interrupt(signal_number: int, _: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signal_number}")


@contextlib.contextmanager
def _data_dir(keep: bool) -> Iterator[Path]:
    """A fresh directory for the servers' data and the logs; kept with --keep-data or when the harness failed."""
    path = Path(tempfile.mkdtemp(prefix="rushgate-bench-"))
    failed = False
    try:
        yield path
    except HarnessError:
        failed = True
        raise
    finally:
        if keep or failed:
            print(f"servers' data and logs kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.openloop_peak is not None and not arguments.openloop_peak > 0:
        print("benchmarks.e2e: --openloop-peak must be a rate above 0", file=sys.stderr)
        return 2
    if arguments.rounds < 1 or arguments.duration < 1 or arguments.workers < 1 or arguments.connections < 1:
        print("benchmarks.e2e: --rounds, --duration, --workers and --connections must be >= 1", file=sys.stderr)
        return 2
    try:
        find_wrk()
    except HarnessError as error:
        print(f"benchmarks.e2e: {error}", file=sys.stderr)
        return 2
    if arguments.profile is not None and py_spy_executable() is None:
        print("benchmarks.e2e: --profile needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    if not _importable(arguments.server):
        print(f"benchmarks.e2e: {arguments.server} is not installed in this environment", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        with _data_dir(arguments.keep_data) as data_dir, ExitStack() as stack:
            environment = start_everything(stack, arguments, data_dir)
            report = asyncio.run(run_phases(environment, arguments))
            report["config"] = {
                "cpus": os.cpu_count(),
                "platform": platform.platform(terse=True),
                "python": platform.python_version(),
                "server": arguments.server,
                "workers": arguments.workers,
                "connections": arguments.connections,
                "threads": arguments.threads,
                "duration": arguments.duration,
                "rounds": arguments.rounds,
                "warmup": arguments.warmup,
                "rushgate_command": environment.rushgate_command_note,
                "settings": arguments.set,
                "redis_config": arguments.redis_config,
                "postgres_config": arguments.postgres_config,
                "aof_rewrite": "redis" if environment.rewrite_limits is None else "quiet",
                "transport": environment.transport,
                "profile": str(arguments.profile) if arguments.profile else None,
                "commands": {name: app.command for name, app in environment.apps.items()},
            }
            report["data_dir"] = str(data_dir) if arguments.keep_data else "(removed)"
            print("stopping every process", flush=True)
        report["elapsed_s"] = time.monotonic() - started
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nbenchmarks.e2e: interrupted; every child process was stopped", file=sys.stderr)
        return 130
    except HarnessError as error:
        print(f"\nbenchmarks.e2e: {error}", file=sys.stderr)
        return 1
    if arguments.json:
        text = json.dumps(report, indent=2)
        if arguments.json == "-":
            print(text)
        else:
            Path(arguments.json).write_text(text + "\n")
    print(render(report))
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
