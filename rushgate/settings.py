"""Settings, read once from the environment and checked before anything starts.

Every setting is ``RUSHGATE_<NAME>`` except the two connection URLs, which keep
their conventional names ``REDIS_URL`` and ``DATABASE_URL``. A bad value refuses
to start with a message naming the variable. Nothing here is cached globally:
``load_settings`` takes the environment mapping, so tests pass their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

DAY_MS = 86_400_000


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    redis_url: str | None = None
    database_url: str | None = None
    gateway_tokens: tuple[str, ...] = ()
    payment_providers: tuple[str, ...] = ()  # "name:secret" pairs that sign payment callbacks
    callback_tolerance_s: Annotated[int, msgspec.Meta(ge=10, le=3600)] = 300
    admin_token: str = ""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1

    flash_hold_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=7 * 86400)] = 1800
    normal_hold_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] = 86400
    idempotency_ttl_s: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] = 86400

    server: Literal["uvicorn", "granian"] = "uvicorn"

    request_body_bytes_max: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    batch_body_bytes_max: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    coalesce_batch_size_max: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 128
    coalesce_wait_us_max: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 2000
    coalesce_calls_in_flight_max: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    sold_out_refresh_ms: Annotated[int, msgspec.Meta(ge=5, le=1000)] = 50
    clients_refresh_ms: Annotated[int, msgspec.Meta(ge=50, le=1000)] = 500
    customer_attempts_max: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    customer_window_ms: Annotated[int, msgspec.Meta(ge=10, le=3_600_000)] = 1000
    client_attempts_max: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 0
    abnormal_attempts_max: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    abnormal_cooldown_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 300
    stream_length_max: Annotated[int, msgspec.Meta(ge=1000, le=100_000_000)] = 2_000_000
    redis_pool_size_max: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 128
    redis_timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 2000

    persister_batch_size_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    persister_block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 200
    # Postgres connections the persister writes with: 2 writes two batches of a backlog at once.
    persister_connections: Annotated[int, msgspec.Meta(ge=1, le=2)] = 2
    # After a batch under a quarter full, wait this long before reading the next, so batches grow
    # under a steady load (every Postgres transaction has a fixed cost: a round trip, a commit).
    persister_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 50
    persister_claim_idle_ms: Annotated[int, msgspec.Meta(ge=100, le=3_600_000)] = 15_000
    persister_retry_ms_max: Annotated[int, msgspec.Meta(ge=10, le=600_000)] = 5000
    # Added to the persister's nice value: under a burst the API workers come first, the persister
    # catches up in the gaps (the stream is its buffer, bounded by stream_length_max).
    persister_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10

    sweeper_interval_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 100
    sweeper_batch_size_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    sweeper_lock_ttl_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 5000

    # "quiet": the sweeper rewrites Redis's AOF at a lull in intake (orders decided a second at or
    # under aof_rewrite_quiet_orders_per_s for aof_rewrite_quiet_s) once it doubled and grew by at
    # least aof_rewrite_growth_mb_min, and whatever the load once it grew by
    # aof_rewrite_growth_mb_max; `rushgate up` then turns Redis's own trigger off. "redis": Redis's
    # own trigger decides (it fires on growth alone, so at a sale's peak).
    aof_rewrite: Literal["quiet", "redis"] = "quiet"
    aof_rewrite_quiet_orders_per_s: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 100
    aof_rewrite_quiet_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 10
    aof_rewrite_growth_mb_min: Annotated[int, msgspec.Meta(ge=1, le=1_048_576)] = 64
    aof_rewrite_growth_mb_max: Annotated[int, msgspec.Meta(ge=1, le=1_048_576)] = 2048

    auto_confirm_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 7
    after_sales_window_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = 15
    track_length_max: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100

    @property
    def provider_secrets(self) -> dict[str, bytes]:
        return {name: secret.encode() for name, _, secret in (item.partition(":") for item in self.payment_providers)}

    @property
    def redis_rewrites_aof(self) -> bool:
        """Whether an embedded Redis keeps its own AOF rewrite trigger (off when the sweeper rewrites)."""
        return self.aof_rewrite == "redis"

    @property
    def flash_hold_ttl_ms(self) -> int:
        return self.flash_hold_ttl_s * 1000

    @property
    def normal_hold_ttl_ms(self) -> int:
        return self.normal_hold_ttl_s * 1000

    @property
    def idempotency_ttl_ms(self) -> int:
        return self.idempotency_ttl_s * 1000

    @property
    def auto_confirm_ms(self) -> int:
        return self.auto_confirm_days * DAY_MS

    @property
    def after_sales_window_ms(self) -> int:
        return self.after_sales_window_days * DAY_MS


_URL_VARIABLES = {"redis_url": "REDIS_URL", "database_url": "DATABASE_URL"}
_LIST_FIELDS = {"gateway_tokens": "RUSHGATE_GATEWAY_TOKEN", "payment_providers": "RUSHGATE_PAYMENT_PROVIDERS"}
_TOKEN_LENGTH_MIN = 16


def variable_name(field: str) -> str:
    return _URL_VARIABLES.get(field) or _LIST_FIELDS.get(field) or f"RUSHGATE_{field.upper()}"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from an environment mapping; SettingsError names what is wrong."""
    known = {variable_name(field.name) for field in msgspec.structs.fields(Settings)}
    unknown = sorted(name for name in environ if name.startswith("RUSHGATE_") and name not in known)
    if unknown:
        raise SettingsError(f"unknown setting {', '.join(unknown)} (a typo?); see README.md#settings")
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(Settings):
        value = environ.get(variable_name(field.name))
        if value is None or value == "":
            continue
        if field.name in _LIST_FIELDS:
            raw[field.name] = tuple(token.strip() for token in value.split(",") if token.strip())
        else:
            raw[field.name] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        message = str(error)
        field_name = message.rpartition("`$.")[2].rstrip("`").split("[")[0]
        raise SettingsError(f"{variable_name(field_name)}: {message.partition(' - at')[0]}") from None
    short = [token for token in settings.gateway_tokens if len(token) < _TOKEN_LENGTH_MIN]
    if short:
        raise SettingsError(f"RUSHGATE_GATEWAY_TOKEN: each token must be at least {_TOKEN_LENGTH_MIN} characters")
    for provider in settings.payment_providers:
        name, _, secret = provider.partition(":")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name) or len(secret) < _TOKEN_LENGTH_MIN:
            raise SettingsError(
                "RUSHGATE_PAYMENT_PROVIDERS: comma-separated name:secret pairs, names of a-z 0-9 _ -, "
                f"secrets of at least {_TOKEN_LENGTH_MIN} characters"
            )
    if settings.admin_token and len(settings.admin_token) < _TOKEN_LENGTH_MIN:
        raise SettingsError(f"RUSHGATE_ADMIN_TOKEN: must be at least {_TOKEN_LENGTH_MIN} characters")
    if settings.aof_rewrite_growth_mb_min > settings.aof_rewrite_growth_mb_max:
        raise SettingsError(
            "RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN: must not exceed RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX"
            f" ({settings.aof_rewrite_growth_mb_min} > {settings.aof_rewrite_growth_mb_max})"
        )
    if settings.redis_url is not None and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("REDIS_URL: must start with redis://, rediss:// or unix://")
    if settings.database_url is not None and not settings.database_url.startswith(("postgres://", "postgresql://")):
        raise SettingsError("DATABASE_URL: must start with postgresql:// or postgres://")
    return settings


def require_services(settings: Settings) -> tuple[str, str]:
    """The two URLs a production piece needs; SettingsError when one is unset."""
    missing = [name for field, name in _URL_VARIABLES.items() if getattr(settings, field) is None]
    if missing:
        raise SettingsError(f"{' and '.join(missing)} must be set (or use `rushgate up` for embedded servers)")
    assert settings.redis_url is not None and settings.database_url is not None
    return settings.redis_url, settings.database_url
