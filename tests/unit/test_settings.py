"""Settings come from an environment mapping; every bad value is refused naming its variable."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rushgate.settings import Settings, SettingsError, load_settings, require_services

TOKEN = "t" * 16
REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE_URL = "postgresql://rushgate@127.0.0.1:5432/rushgate"


def integer_bounds() -> dict[str, tuple[int, int]]:
    """(ge, le) of every integer setting, read from the Struct so new settings are covered too."""
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    bounds = {}
    for field in info.fields:
        if isinstance(field.type, msgspec.inspect.IntType):
            assert field.type.ge is not None and field.type.le is not None, field.name
            bounds[field.name] = (field.type.ge, field.type.le)
    return bounds


INTEGER_BOUNDS = integer_bounds()
# Settings checked against each other: the partner set so that any value of the field is consistent.
PARTNERS = {
    "aof_rewrite_growth_mb_min": {
        "RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX": str(INTEGER_BOUNDS["aof_rewrite_growth_mb_max"][1])
    },
    "aof_rewrite_growth_mb_max": {
        "RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN": str(INTEGER_BOUNDS["aof_rewrite_growth_mb_min"][0])
    },
}


def alone(field: str, value: int) -> dict[str, str]:
    """The environment setting field to value, with its partner (if any) out of the way."""
    return {variable_of(field): str(value), **PARTNERS.get(field, {})}


def variable_of(field: str) -> str:
    return f"RUSHGATE_{field.upper()}"


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    return str(caught.value)


def test_every_integer_setting_has_bounds_so_the_bound_tests_cover_something() -> None:
    assert {"port", "workers", "flash_hold_ttl_s", "sweeper_lock_ttl_ms"} <= INTEGER_BOUNDS.keys()


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.redis_url is None
    assert settings.database_url is None
    assert settings.gateway_tokens == ()
    assert settings.admin_token == ""
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert (settings.flash_hold_ttl_s, settings.normal_hold_ttl_s, settings.idempotency_ttl_s) == (1800, 86400, 86400)
    assert settings.request_body_bytes_max == 64 * 1024
    assert settings.stream_length_max == 2_000_000


def test_every_default_lies_within_its_own_bounds() -> None:
    defaults = msgspec.to_builtins(Settings())

    assert msgspec.convert(defaults, Settings) == Settings()


def test_hold_and_idempotency_times_are_also_given_in_milliseconds() -> None:
    settings = load_settings(
        {"RUSHGATE_FLASH_HOLD_TTL_S": "90", "RUSHGATE_NORMAL_HOLD_TTL_S": "3600", "RUSHGATE_IDEMPOTENCY_TTL_S": "120"}
    )

    assert settings.flash_hold_ttl_ms == 90_000
    assert settings.normal_hold_ttl_ms == 3_600_000
    assert settings.idempotency_ttl_ms == 120_000


def test_empty_variables_mean_the_default() -> None:
    environ = {variable_of(field): "" for field in INTEGER_BOUNDS}
    environ |= {"REDIS_URL": "", "DATABASE_URL": "", "RUSHGATE_GATEWAY_TOKEN": "", "RUSHGATE_HOST": ""}

    assert load_settings(environ) == Settings()


def test_variables_outside_the_settings_are_ignored() -> None:
    assert load_settings({"PATH": "/usr/bin", "HOME": "/root", "RUSHGATE": "x"}) == Settings()


@pytest.mark.parametrize(
    ("variable", "text", "field", "value"),
    [
        ("RUSHGATE_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("RUSHGATE_PORT", "9090", "port", 9090),
        ("RUSHGATE_WORKERS", "8", "workers", 8),
        ("RUSHGATE_FLASH_HOLD_TTL_S", "600", "flash_hold_ttl_s", 600),
        ("RUSHGATE_NORMAL_HOLD_TTL_S", "7200", "normal_hold_ttl_s", 7200),
        ("RUSHGATE_IDEMPOTENCY_TTL_S", "60", "idempotency_ttl_s", 60),
        ("RUSHGATE_REQUEST_BODY_BYTES_MAX", "2048", "request_body_bytes_max", 2048),
        ("RUSHGATE_STREAM_LENGTH_MAX", "5000", "stream_length_max", 5000),
        ("RUSHGATE_REDIS_POOL_SIZE_MAX", "16", "redis_pool_size_max", 16),
        ("RUSHGATE_REDIS_TIMEOUT_MS", "250", "redis_timeout_ms", 250),
        ("RUSHGATE_PERSISTER_BATCH_SIZE_MAX", "50", "persister_batch_size_max", 50),
        ("RUSHGATE_PERSISTER_BLOCK_MS", "10", "persister_block_ms", 10),
        ("RUSHGATE_PERSISTER_LINGER_MS", "0", "persister_linger_ms", 0),
        ("RUSHGATE_PERSISTER_CONNECTIONS", "1", "persister_connections", 1),
        ("RUSHGATE_PERSISTER_CLAIM_IDLE_MS", "500", "persister_claim_idle_ms", 500),
        ("RUSHGATE_PERSISTER_RETRY_MS_MAX", "100", "persister_retry_ms_max", 100),
        ("RUSHGATE_SWEEPER_INTERVAL_MS", "20", "sweeper_interval_ms", 20),
        ("RUSHGATE_SWEEPER_BATCH_SIZE_MAX", "10", "sweeper_batch_size_max", 10),
        ("RUSHGATE_SWEEPER_LOCK_TTL_MS", "1000", "sweeper_lock_ttl_ms", 1000),
        ("RUSHGATE_ADMIN_TOKEN", TOKEN, "admin_token", TOKEN),
        ("REDIS_URL", REDIS_URL, "redis_url", REDIS_URL),
        ("DATABASE_URL", DATABASE_URL, "database_url", DATABASE_URL),
    ],
)
def test_a_variable_overrides_its_setting_parsed_from_a_string(
    variable: str, text: str, field: str, value: object
) -> None:
    settings = load_settings({variable: text})

    assert getattr(settings, field) == value
    assert msgspec.structs.replace(settings, **{field: getattr(Settings(), field)}) == Settings()


@pytest.mark.parametrize("url", ["redis://localhost", "rediss://cache.example:6380/1", "unix:///run/redis.sock"])
def test_redis_urls_with_a_redis_scheme_are_accepted(url: str) -> None:
    assert load_settings({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url", ["postgresql://u@localhost/db", "postgres://u@localhost/db"])
def test_database_urls_with_a_postgres_scheme_are_accepted(url: str) -> None:
    assert load_settings({"DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("RUSHGATE_WORKERS", "0"),
        ("RUSHGATE_WORKERS", "65"),
        ("RUSHGATE_WORKERS", "-3"),
        ("RUSHGATE_WORKERS", "many"),
        ("RUSHGATE_WORKERS", "1.5"),
        ("RUSHGATE_PORT", "70000"),
        ("RUSHGATE_PORT", "0"),
        ("RUSHGATE_FLASH_HOLD_TTL_S", "abc"),
        ("RUSHGATE_NORMAL_HOLD_TTL_S", "0"),
        ("RUSHGATE_IDEMPOTENCY_TTL_S", "59"),
        ("RUSHGATE_REQUEST_BODY_BYTES_MAX", "1023"),
        ("RUSHGATE_SWEEPER_LOCK_TTL_MS", "ten"),
        ("RUSHGATE_PERSISTER_CONNECTIONS", "3"),
        ("RUSHGATE_PERSISTER_CONNECTIONS", "0"),
        ("REDIS_URL", "http://x"),
        ("REDIS_URL", "localhost:6379"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "sqlite:///rushgate.db"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(variable: str, text: str) -> None:
    message = refusal({variable: text})

    assert variable in message


@pytest.mark.parametrize("field", sorted(INTEGER_BOUNDS))
def test_each_integer_setting_accepts_its_bounds_and_refuses_just_beyond_them(field: str) -> None:
    low, high = INTEGER_BOUNDS[field]
    variable = variable_of(field)

    assert getattr(load_settings(alone(field, low)), field) == low
    assert getattr(load_settings(alone(field, high)), field) == high
    assert variable in refusal(alone(field, low - 1))
    assert variable in refusal(alone(field, high + 1))


def test_a_quiet_rewrite_growth_above_the_forced_one_is_refused_naming_both() -> None:
    message = refusal({"RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN": "512", "RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX": "256"})

    assert "RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN" in message and "RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX" in message
    assert "512 > 256" in message
    both = {"RUSHGATE_AOF_REWRITE_GROWTH_MB_MIN": "256", "RUSHGATE_AOF_REWRITE_GROWTH_MB_MAX": "256"}
    assert load_settings(both).aof_rewrite_growth_mb_min == 256


def test_only_the_redis_rewrite_policy_leaves_redis_its_own_trigger() -> None:
    assert load_settings({}).aof_rewrite == "quiet"
    assert not load_settings({}).redis_rewrites_aof
    assert load_settings({"RUSHGATE_AOF_REWRITE": "redis"}).redis_rewrites_aof
    assert "RUSHGATE_AOF_REWRITE" in refusal({"RUSHGATE_AOF_REWRITE": "never"})


@pytest.mark.parametrize("variable", ["RUSHGATE_ADMIN_TOKEN", "RUSHGATE_GATEWAY_TOKEN"])
def test_a_token_shorter_than_16_characters_is_refused(variable: str) -> None:
    refusal({variable: "t" * 15})

    assert load_settings({variable: "t" * 16}) != Settings()


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("RUSHGATE_ADMIN_TOKEN", "short"),
        ("RUSHGATE_GATEWAY_TOKEN", "short"),
        ("RUSHGATE_GATEWAY_TOKEN", f"{TOKEN},short"),
    ],
)
def test_a_short_token_is_refused_naming_its_variable(variable: str, text: str) -> None:
    message = refusal({variable: text})

    assert variable in message


def test_comma_separated_gateway_tokens_give_a_tuple_in_order() -> None:
    first, second, third = "a" * 16, "b" * 20, "c" * 32

    settings = load_settings({"RUSHGATE_GATEWAY_TOKEN": f"{first}, {second} ,,{third},"})

    assert settings.gateway_tokens == (first, second, third)


def test_a_single_gateway_token_gives_a_one_element_tuple() -> None:
    assert load_settings({"RUSHGATE_GATEWAY_TOKEN": TOKEN}).gateway_tokens == (TOKEN,)


def test_require_services_returns_both_urls_when_set() -> None:
    settings = load_settings({"REDIS_URL": REDIS_URL, "DATABASE_URL": DATABASE_URL})

    assert require_services(settings) == (REDIS_URL, DATABASE_URL)


@pytest.mark.parametrize(
    ("environ", "missing", "present"),
    [
        ({"DATABASE_URL": DATABASE_URL}, ["REDIS_URL"], ["DATABASE_URL"]),
        ({"REDIS_URL": REDIS_URL}, ["DATABASE_URL"], ["REDIS_URL"]),
        ({}, ["REDIS_URL", "DATABASE_URL"], []),
    ],
)
def test_require_services_names_each_missing_url_and_only_those(
    environ: dict[str, str], missing: list[str], present: list[str]
) -> None:
    with pytest.raises(SettingsError) as caught:
        require_services(load_settings(environ))

    message = str(caught.value)
    assert all(name in message for name in missing)
    assert not any(name in message for name in present)


@given(st.integers(min_value=1, max_value=64))
def test_any_worker_count_within_bounds_round_trips(workers: int) -> None:
    assert load_settings({"RUSHGATE_WORKERS": str(workers)}).workers == workers


@given(st.integers(max_value=0) | st.integers(min_value=65))
def test_any_worker_count_outside_bounds_is_refused_naming_the_variable(workers: int) -> None:
    assert "RUSHGATE_WORKERS" in refusal({"RUSHGATE_WORKERS": str(workers)})


@given(st.data())
def test_any_integer_setting_within_its_bounds_round_trips(data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(INTEGER_BOUNDS)))
    low, high = INTEGER_BOUNDS[field]
    value = data.draw(st.integers(min_value=low, max_value=high))

    assert getattr(load_settings(alone(field, value)), field) == value
