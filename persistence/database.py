"""Connections to Postgres and the migration runner: the only place that imports asyncpg."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources

import asyncpg

logger = logging.getLogger("rushgate.persistence")

MIGRATION_LOCK_ID = 0x72757368  # "rush": one migrator at a time across processes
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0

PostgresError = asyncpg.PostgresError
Connection = asyncpg.Connection
InterfaceError = asyncpg.InterfaceError


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S)


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    folder = resources.files("persistence") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    found.sort()
    versions = [version for version, _, _ in found]
    # Unique, not contiguous: branches reserve numbers (0005 audit log, 0006 lifecycle) and merge in any order.
    assert len(set(versions)) == len(versions), f"migration numbers must be unique, got {versions}"
    return found


async def migrate(url: str) -> list[str]:
    """Apply every migration not applied yet, each in its own transaction. Returns their names."""
    connection = await connect(url)
    applied_now = []
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in applied:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            logger.info("applied migration %s", name)
            applied_now.append(name)
    finally:
        await connection.close()
    return applied_now


@asynccontextmanager
async def readiness_check(url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A probe that runs SELECT 1 on a one-connection pool."""
    pool = await asyncpg.create_pool(url, min_size=0, max_size=1, timeout=CONNECT_TIMEOUT_S)
    assert pool is not None

    async def check() -> None:
        await pool.fetchval("SELECT 1")

    try:
        yield check
    finally:
        await pool.close()
