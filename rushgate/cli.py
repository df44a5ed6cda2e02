"""``rushgate`` command line: up, serve, persister, sweeper, migrate."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import getpass
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rushgate.serving import serve_granian, serve_uvicorn
from rushgate.settings import Settings, SettingsError, load_settings, require_services

if TYPE_CHECKING:
    from reservation.store import RedisStore

logger = logging.getLogger("rushgate")

CHILD_STOP_TIMEOUT_S = 15.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rushgate", description="Flash-sale order intake and stock reservation.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run everything; embedded Redis and Postgres unless the URLs are set")
    up.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    up.add_argument("--data-dir", type=Path, default=Path(".rushgate"), help="embedded servers' data (.rushgate)")
    up.add_argument("--workers", type=int, default=None, help="API worker processes (default 1)")

    serve = commands.add_parser("serve", help="the HTTP API (needs REDIS_URL and DATABASE_URL)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None)
    serve.add_argument("--server", choices=["uvicorn", "granian"], default=None, help="ASGI server (default uvicorn)")

    commands.add_parser("persister", help="stream -> Postgres writer")
    commands.add_parser("sweeper", help="releases expired holds")
    commands.add_parser("migrate", help="apply the SQL migrations to DATABASE_URL")
    reconcile = commands.add_parser(
        "reconcile", help="drain the stream, compare Redis counters and live holds with the Postgres ledger"
    )
    reconcile.add_argument("--json", action="store_true", help="print the differences as JSON")
    reconcile.add_argument("--fix", action="store_true", help="write movements that bring the ledger to Redis")
    clients = commands.add_parser("clients", help="API clients with scopes (gateway, payments, admin, read)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    create = client_commands.add_parser("create", help="create a client; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, choices=["gateway", "payments", "admin", "read"])
    client_commands.add_parser("list", help="every client, active or revoked")
    revoke = client_commands.add_parser("revoke", help="refuse a client's secret from now on (within 1 s)")
    revoke.add_argument("client_id")
    recover = commands.add_parser("recover", help="rebuild Redis from Postgres after Redis lost its data")
    recover.add_argument(
        "--force",
        action="store_true",
        help="Redis still holds data (e.g. back from an AOF that missed its last writes): drain the stream,"
        " then replace Redis's state with Postgres's",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    overrides = {
        "RUSHGATE_HOST": getattr(arguments, "host", None),
        "RUSHGATE_PORT": getattr(arguments, "port", None),
        "RUSHGATE_WORKERS": getattr(arguments, "workers", None),
        "RUSHGATE_SERVER": getattr(arguments, "server", None),
    }
    environ = dict(os.environ)
    environ.update({name: str(value) for name, value in overrides.items() if value is not None})
    try:
        settings = load_settings(environ)
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        if arguments.command == "up":
            return run_up(settings, environ, arguments.data_dir)
        if arguments.command == "serve":
            return run_serve(settings, environ)
        if arguments.command == "migrate":
            return run_migrate(settings)
        if arguments.command == "reconcile":
            return run_reconcile(settings, as_json=arguments.json, fix=arguments.fix)
        if arguments.command == "clients":
            return run_clients(settings, arguments)
        if arguments.command == "recover":
            return run_recover(settings, force=arguments.force)
        return run_worker(settings, arguments.command)
    except SettingsError as error:
        print(f"rushgate: invalid settings: {error}", file=sys.stderr)
        return 2


def run_migrate(settings: Settings) -> int:
    from persistence.database import migrate

    if settings.database_url is None:
        raise SettingsError("DATABASE_URL must be set")
    applied = asyncio.run(migrate(settings.database_url))
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
    return 0


APP_FACTORY = "rushgate.asgi:create_app_from_environment"


def run_serve(settings: Settings, environ: dict[str, str]) -> int:
    require_services(settings)
    if not settings.admin_token and not settings.gateway_tokens:
        raise SettingsError("set RUSHGATE_ADMIN_TOKEN and RUSHGATE_GATEWAY_TOKEN (or use `rushgate up`)")
    os.environ.update(environ)  # worker processes read their settings from the environment
    serve = serve_granian if settings.server == "granian" else serve_uvicorn
    return serve(APP_FACTORY, factory=True, host=settings.host, port=settings.port, workers=settings.workers)


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[RedisStore]:
    """A store with its scripts loaded, closed on the way out."""
    from rushgate.workers import open_store

    store = open_store(settings)
    try:
        await store.load_scripts()
        yield store
    finally:
        await store.client.aclose()


def run_reconcile(settings: Settings, *, as_json: bool, fix: bool) -> int:
    """Exit 0 when nothing differs (or everything found was compensated), 1 otherwise, 3 if not drained."""
    from rushgate.reconcile import NotDrained, reconcile, render_table

    require_services(settings)

    async def work() -> int:
        try:
            async with _store(settings) as store:
                report = await reconcile(store, settings, fix=fix, actor=operator_actor())
        except NotDrained as error:
            print(f"rushgate reconcile: {error}", file=sys.stderr)
            return 3
        if as_json:
            print(json.dumps({
                "differences": [difference.as_dict() for difference in report.differences],
                "compensated": [difference.as_dict() for difference in report.fixed],
            }, indent=2))  # fmt: skip
        else:
            print(render_table(report))
        return 1 if report.remaining else 0

    return asyncio.run(work())


def operator_actor() -> str:
    """Who runs a command, for the audit log: the operating-system user ("cli:<user>")."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (e.g. in a bare container)
        return f"cli:uid-{os.getuid()}"


def run_clients(settings: Settings, arguments: argparse.Namespace) -> int:
    from persistence.clients import create_client, list_clients, revoke_client
    from persistence.database import connect as connect_database

    if settings.database_url is None:
        raise SettingsError("DATABASE_URL must be set")
    database_url = settings.database_url

    actor = operator_actor()

    async def work() -> int:
        connection = await connect_database(database_url)
        try:
            if arguments.clients_command == "create":
                client_id, secret = await create_client(connection, arguments.name, tuple(arguments.scope), actor=actor)
                print(f"client {client_id} ({', '.join(sorted(set(arguments.scope)))})\nsecret (shown once): {secret}")
                return 0
            if arguments.clients_command == "revoke":
                if await revoke_client(connection, arguments.client_id, actor=actor):
                    print(f"revoked {arguments.client_id}")
                    return 0
                print(f"rushgate clients: no active client {arguments.client_id}", file=sys.stderr)
                return 1
            for client in await list_clients(connection):
                state = f"revoked {client.revoked_at:%Y-%m-%d %H:%M}" if client.revoked_at else "active"
                print(f"{client.client_id}  {client.name:<24} {','.join(client.scopes):<28} {state}")
            return 0
        finally:
            await connection.close()

    return asyncio.run(work())


def run_recover(settings: Settings, *, force: bool) -> int:
    from rushgate.recover import RedisNotEmpty, recover

    require_services(settings)

    async def work() -> int:
        try:
            async with _store(settings) as store:
                recovered = await recover(store, settings, force=force)
        except RedisNotEmpty as error:
            print(f"rushgate recover: {error}", file=sys.stderr)
            return 1
        print(
            f"recovered {recovered.skus} SKUs, stock at {recovered.stock_places} places, {recovered.orders} orders "
            f"({recovered.live_holds} awaiting payment), {recovered.idempotency_records} idempotency records"
        )
        return 0

    return asyncio.run(work())


def run_worker(settings: Settings, command: str) -> int:
    import uvloop

    from rushgate.garbage import settle
    from rushgate.workers import Persister, Sweeper

    require_services(settings)

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        async with _store(settings) as store:
            worker = Persister(store, settings) if command == "persister" else Sweeper(store, settings)
            logger.info("%s started", command)
            settle()  # rushgate/garbage.py
            await worker.run(stop)
        logger.info("%s stopped", command)

    if command == "persister" and settings.persister_nice:
        os.nice(settings.persister_nice)
    # uvloop, as the API workers use: profiled, the persister spent a seventh of its time in
    # asyncio's pure-Python socket transport.
    uvloop.run(work())
    return 0


def _tokens(data_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """Tokens from the environment, else the ones generated on a first `up`, kept in the data dir."""
    path = data_dir / "tokens.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    tokens = {
        "RUSHGATE_ADMIN_TOKEN": environ.get("RUSHGATE_ADMIN_TOKEN") or stored.get("RUSHGATE_ADMIN_TOKEN"),
        "RUSHGATE_GATEWAY_TOKEN": environ.get("RUSHGATE_GATEWAY_TOKEN") or stored.get("RUSHGATE_GATEWAY_TOKEN"),
    }
    generated = {name: secrets.token_urlsafe(24) for name, value in tokens.items() if not value}
    if generated:
        stored.update(generated)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others
        with os.fdopen(descriptor, "w") as file:
            json.dump(stored, file)
    return {name: value or generated[name] for name, value in tokens.items()}


def _lock_data_dir(data_dir: Path) -> TextIO:
    """Hold an exclusive lock on the data dir for the life of this process: one `up` per data dir."""
    lock_file = open(data_dir / ".lock", "w")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise SettingsError(f"another `rushgate up` is running on {data_dir}") from None
    return lock_file


def run_up(settings: Settings, environ: dict[str, str], data_dir: Path) -> int:
    from persistence.database import migrate
    from rushgate.embedded import (
        EmbeddedPostgres,
        EmbeddedRedis,
        EmbeddedServerError,
        StartInterrupted,
        die_with_parent,
    )

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(data_dir)
    redis_server = postgres_server = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def request_stop(signal_number: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    for signal_number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signal_number, request_stop)
    try:
        if settings.redis_url is None:
            redis_server = EmbeddedRedis(
                data_dir / "redis", auto_rewrite=settings.redis_rewrites_aof, unix_socket=True
            ).start(interrupted=lambda: stopping)
            environ["REDIS_URL"] = redis_server.url
        if settings.database_url is None:
            postgres_server = EmbeddedPostgres(data_dir / "postgres", unix_socket=True).start(
                interrupted=lambda: stopping
            )
            environ["DATABASE_URL"] = postgres_server.url
        environ.update(_tokens(data_dir, environ))
        settings = load_settings(environ)
        _, database_url = require_services(settings)
        asyncio.run(migrate(database_url))
        for command in ("persister", "sweeper", "serve"):
            if stopping:
                return 0
            children[command] = subprocess.Popen(
                [sys.executable, "-m", "rushgate", command],
                env=environ,
                preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - only prctl runs before exec
            )
        print(
            f"rushgate is up on http://{settings.host}:{settings.port}\n"
            f"  REDIS_URL={environ['REDIS_URL']}\n  DATABASE_URL={environ['DATABASE_URL']}\n"
            f"  admin token:   {environ['RUSHGATE_ADMIN_TOKEN']}\n"
            f"  gateway token: {environ['RUSHGATE_GATEWAY_TOKEN']}\n"
            f"  OpenAPI: http://{settings.host}:{settings.port}/schema   (Ctrl-C stops everything)",
            flush=True,
        )
        while not stopping:
            exited = [command for command, child in children.items() if child.poll() is not None]
            if exited:
                logger.error("`rushgate %s` exited; stopping everything", exited[0])
                return 1
            time.sleep(0.2)
        return 0
    except StartInterrupted:
        return 0
    except EmbeddedServerError as error:
        print(f"rushgate: an embedded server did not start: {error}", file=sys.stderr)
        return 1
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(CHILD_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if redis_server is not None:
            redis_server.stop()
        if postgres_server is not None:
            postgres_server.stop()
        lock.close()
        print("rushgate stopped", flush=True)
