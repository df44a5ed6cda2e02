"""API clients: scoped bearer secrets, stored as SHA-256 digests, revocable."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.audit import record_direct_change

SCOPES = ("gateway", "payments", "admin", "read")
SECRET_PREFIX = "rg_"


def digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


async def create_client(
    connection: asyncpg.Connection, name: str, scopes: tuple[str, ...], *, actor: str
) -> tuple[str, str]:
    """(client id, secret); the secret exists only in this return value, never in the audit log."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    client_id = "c_" + secrets.token_hex(8)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    kept_scopes = sorted(set(scopes))
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO api_clients (client_id, name, scopes, secret_sha256) VALUES ($1, $2, $3, $4)",
            client_id,
            name,
            kept_scopes,
            digest(secret),
        )
        await record_direct_change(
            connection, actor=actor, action="client.create", target_type="client", target_id=client_id,
            before=None, after={"name": name, "scopes": kept_scopes, "active": True},
        )  # fmt: skip
    return client_id, secret


async def list_clients(connection: asyncpg.Connection) -> list[Client]:
    rows = await connection.fetch(
        "SELECT client_id, name, scopes, created_at, revoked_at FROM api_clients ORDER BY created_at"
    )
    return [
        Client(row["client_id"], row["name"], tuple(row["scopes"]), row["created_at"], row["revoked_at"])
        for row in rows
    ]


async def revoke_client(connection: asyncpg.Connection, client_id: str, *, actor: str) -> bool:
    """True if the client existed and was active; the revocation and its audit row commit together."""
    async with connection.transaction():
        row = await connection.fetchrow(
            "UPDATE api_clients SET revoked_at = now() WHERE client_id = $1 AND revoked_at IS NULL"
            " RETURNING name, scopes",
            client_id,
        )
        if row is None:
            return False
        state = {"name": row["name"], "scopes": list(row["scopes"])}
        await record_direct_change(
            connection, actor=actor, action="client.revoke", target_type="client", target_id=client_id,
            before=state | {"active": True}, after=state | {"active": False},
        )  # fmt: skip
    return True


async def active_scopes(connection: asyncpg.Connection) -> dict[bytes, tuple[str, frozenset[str]]]:
    """Digest of every active client's secret, with its id and scopes."""
    rows = await connection.fetch("SELECT secret_sha256, client_id, scopes FROM api_clients WHERE revoked_at IS NULL")
    return {bytes(row["secret_sha256"]): (row["client_id"], frozenset(row["scopes"])) for row in rows}


@asynccontextmanager
async def scopes_reader(
    url: str,
) -> AsyncIterator[Callable[[], Awaitable[dict[bytes, tuple[str, frozenset[str]]]]]]:
    """A reader of active_scopes on its own one-connection pool, for the API's refresh loop."""
    pool = await asyncpg.create_pool(url, min_size=0, max_size=1, timeout=10)
    assert pool is not None

    async def read() -> dict[bytes, tuple[str, frozenset[str]]]:
        async with pool.acquire() as connection:
            return await active_scopes(connection)

    try:
        yield read
    finally:
        await pool.close()
