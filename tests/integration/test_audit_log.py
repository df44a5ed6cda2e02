"""The audit log: every control-plane change once, with who, before and after; filters and pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, get_args

import msgspec
from httpx import ASGITransport, AsyncClient

from intake.app import create_app
from intake.schemas import AdjustmentIn, AuditAction, AuditTargetType, SkuIn
from intake.service import CatalogService
from persistence.audit import audit_reader
from persistence.clients import create_client, revoke_client, scopes_reader
from persistence.database import connect
from persistence.writer import decode_entries, write_events
from reservation.audit import AUDIT_ACTIONS, AUDIT_TARGET_TYPES
from reservation.clock import moment_of
from reservation.store import RedisStore
from rushgate.reconcile import drain
from rushgate.settings import Settings
from tests.conftest import ManualClock, Services, admin_headers, gateway_headers
from tests.processes import run_command
from tests.support import add_sku, count_rows, setup_region

PRICE = {"name": "Phone", "merchant_id": "m1", "price": 100, "currency": "EUR"}


@asynccontextmanager
async def audited_api(settings: Settings, clock: ManualClock, database: str) -> AsyncIterator[AsyncClient]:
    """The real app with the audit reader and the client list from Postgres, over ASGI."""
    application = create_app(
        settings,
        clock=clock,
        audit_reader=lambda: audit_reader(database),
        client_source=lambda: scopes_reader(database),
    )
    async with (
        application.lifespan(),
        AsyncClient(transport=ASGITransport(app=application), base_url="http://rushgate") as client,
    ):
        yield client


async def audit(http: AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/v1/audit", params=params, headers=admin_headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def summary(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["action"], entry["target_id"], entry["actor"], entry["before"], entry["after"])


def levels(on_hand: int, available: int, reserved: int = 0, committed: int = 0) -> dict[str, int]:
    return {"on_hand": on_hand, "available": available, "reserved": reserved, "committed": committed}


async def test_every_kind_of_control_plane_change_leaves_exactly_one_row_with_actor_before_and_after(
    store: RedisStore, database: str, settings: Settings, clock: ManualClock
) -> None:
    async with audited_api(settings, clock, database) as http:
        changes = [
            ("PUT", "/v1/warehouses/w1", {"region": "eu", "name": "Berlin"}),
            ("PUT", "/v1/warehouses/w1", {"region": "eu", "name": "Berlin Nord"}),
            ("PUT", "/v1/warehouses/w2", {"region": "eu", "name": "Hamburg"}),
            ("PUT", "/v1/dispatch/eu", {"warehouses": ["w1"]}),
            ("PUT", "/v1/dispatch/eu", {"warehouses": ["w2", "w1"]}),
            ("PUT", "/v1/skus/s1", PRICE),
            ("PUT", "/v1/skus/s1", PRICE | {"price": 120, "per_customer_limit": 2}),
            ("PUT", "/v1/stock/s1/w1", {"on_hand": 100}),
            ("PUT", "/v1/stock/s1/w1", {"on_hand": 100}),  # nothing changes: no row
            ("PUT", "/v1/stock/s1/w1", {"on_hand": 7, "expected_on_hand": 99}),  # refused: no row
        ]
        for method, path, body in changes:
            response = await http.request(method, path, json=body, headers=admin_headers())
            assert response.status_code in (200, 409), response.text
        order = {"customer_id": "c1", "region": "eu", "order_type": "flash", "items": [{"sku": "s1", "qty": 2}]}
        placed = await http.post("/v1/orders", json=order, headers=gateway_headers("k1"))  # data plane: no row
        assert placed.status_code == 201, placed.text
        adjusted = await http.post(
            "/v1/stock/s1/w1/adjustments", json={"delta": -5, "reason": "damaged"}, headers=admin_headers()
        )
        assert adjusted.status_code == 200, adjusted.text
        transfer = {"sku": "s1", "from_warehouse": "w1", "to_warehouse": "w2", "qty": 10}
        assert (await http.post("/v1/stock/transfers", json=transfer, headers=admin_headers())).status_code == 200
        assert (await http.put("/v1/blocklist/c9", json={"reason": "fraud"}, headers=admin_headers())).is_success
        assert (await http.post("/v1/blocklist/c9/unblock", headers=admin_headers())).is_success
        await drain(store, settings, database)
        connection = await connect(database)
        try:  # clients live in Postgres: their rows are written at once, in the same transaction
            client_id, secret = await create_client(connection, "psp", ("payments", "read"), actor="cli:ops")
            assert await revoke_client(connection, client_id, actor="cli:ops")
        finally:
            await connection.close()
        entries = (await audit(http, limit=100))["entries"]

    sku_before = {"name": "Phone", "merchant_id": "m1", "price": 100, "currency": "EUR", "safety_stock": 0,
                  "per_customer_limit": None, "sale_starts_at": None, "sale_ends_at": None}  # fmt: skip
    client_state = {"name": "psp", "scopes": ["payments", "read"]}
    assert [summary(entry) for entry in reversed(entries)] == [
        ("warehouse.put", "w1", "admin", None, {"region": "eu", "name": "Berlin"}),
        ("warehouse.put", "w1", "admin", {"region": "eu"}, {"region": "eu", "name": "Berlin Nord"}),
        ("warehouse.put", "w2", "admin", None, {"region": "eu", "name": "Hamburg"}),
        ("dispatch.put", "eu", "admin", None, {"warehouses": ["w1"]}),
        ("dispatch.put", "eu", "admin", {"warehouses": ["w1"]}, {"warehouses": ["w2", "w1"]}),
        ("sku.put", "s1", "admin", None, sku_before),
        ("sku.put", "s1", "admin", sku_before, sku_before | {"price": 120, "per_customer_limit": 2}),
        ("stock.set", "s1", "admin", {"w1": levels(0, 0)}, {"w1": levels(100, 100)}),
        ("stock.adjust", "s1", "admin", {"w1": levels(100, 98, 2)}, {"w1": levels(95, 93, 2)}),
        ("stock.transfer", "s1", "admin",
         {"w1": levels(95, 93, 2), "w2": levels(0, 0)}, {"w1": levels(85, 83, 2), "w2": levels(10, 10)}),
        ("customer.block", "c9", "admin", {"blocked": False, "reason": None}, {"blocked": True, "reason": "fraud"}),
        ("customer.unblock", "c9", "admin", {"blocked": True, "reason": "fraud"}, {"blocked": False, "reason": None}),
        ("client.create", client_id, "cli:ops", None, client_state | {"active": True}),
        ("client.revoke", client_id, "cli:ops", client_state | {"active": True}, client_state | {"active": False}),
    ]  # fmt: skip
    by_action = {entry["action"]: entry for entry in entries}
    assert by_action["stock.adjust"]["reason"] == "damaged"
    assert by_action["stock.transfer"]["warehouse_ids"] == ["w1", "w2"]
    assert by_action["stock.set"]["request_id"]
    assert [entry["audit_id"] for entry in entries] == sorted((entry["audit_id"] for entry in entries), reverse=True)
    dump = str(entries)
    assert secret not in dump and secret.removeprefix("rg_") not in dump


async def test_replaying_the_whole_stream_adds_no_audit_row(
    store: RedisStore, database: str, settings: Settings, catalog: CatalogService
) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])
    await add_sku(catalog, "s1", stock={"w1": 5})
    await drain(store, settings, database)
    rows = await count_rows(database, "SELECT count(*) FROM audit_log")
    assert rows == 5  # two warehouses, a dispatch rule, a SKU, a stocktake
    events = [event for entry_id, fields in await store.client.xrange(
        store.keys.stream) for event in decode_entries(0, entry_id.decode(), fields)]  # fmt: skip
    connection = await connect(database)
    try:
        await write_events(connection, list(reversed(events)))
        await write_events(connection, events[1:3])
    finally:
        await connection.close()
    assert await count_rows(database, "SELECT count(*) FROM audit_log") == rows


async def test_filters_combine_and_cursor_pages_walk_every_entry_exactly_once(
    store: RedisStore, database: str, settings: Settings, clock: ManualClock, catalog: CatalogService
) -> None:
    await setup_region(catalog, "eu", ["w1", "w2"])  # actor "system"
    start = clock.now_ms
    for number in range(12):
        clock.advance(1000)
        actor = "c_alice" if number % 3 else "c_bob"
        await add_sku(catalog, f"s{number % 4}", price=100 + number)
        await catalog.put_sku(f"s{number % 4}", catalog_sku(number), actor)
        await catalog.adjust_stock(f"s{number % 4}", "w1" if number % 2 else "w2", adjustment(number), actor)
    await drain(store, settings, database)

    async with audited_api(settings, clock, database) as http:
        everything = (await audit(http, limit=500))["entries"]
        walked: list[int] = []
        cursor: str | None = None
        while True:
            page = await audit(http, limit=7, **({"cursor": cursor} if cursor else {}))
            walked += [entry["audit_id"] for entry in page["entries"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert walked == [entry["audit_id"] for entry in everything]
        assert len(walked) == len(set(walked)) == 3 + 12 * 3

        async def ids(**params: Any) -> list[int]:
            found, cursor = [], None
            while True:
                page = await audit(http, limit=5, **params, **({"cursor": cursor} if cursor else {}))
                found += [entry["audit_id"] for entry in page["entries"]]
                if (cursor := page["next_cursor"]) is None:
                    return found

        def expected(keep: Any) -> list[int]:
            return [entry["audit_id"] for entry in everything if keep(entry)]

        assert await ids(actor="c_bob") == expected(lambda entry: entry["actor"] == "c_bob")
        assert len(await ids(actor="c_bob")) == 4 * 2
        assert await ids(action="stock.adjust", actor="c_alice") == expected(
            lambda entry: entry["action"] == "stock.adjust" and entry["actor"] == "c_alice"
        )
        assert await ids(target_type="sku", target_id="s1") == expected(
            lambda entry: entry["target_type"] == "sku" and entry["target_id"] == "s1"
        )
        assert await ids(warehouse_id="w2") == expected(lambda entry: "w2" in entry["warehouse_ids"])
        window = {"since": iso(start + 3000), "until": iso(start + 6000)}  # changes 3, 4 and 5 of the loop
        in_window = await ids(**window)
        assert in_window == expected(lambda entry: window["since"] <= entry["occurred_at"] < window["until"])
        assert len(in_window) == 3 * 3
        assert await ids(actor="nobody") == []


def iso(milliseconds: int) -> str:
    return moment_of(milliseconds).isoformat().replace("+00:00", "Z")


def catalog_sku(number: int) -> SkuIn:
    return SkuIn(name=f"Product {number}", merchant_id="m1", price=200 + number, currency="EUR")


def adjustment(number: int) -> AdjustmentIn:
    return AdjustmentIn(delta=number + 1, reason=f"delivery {number}")


async def test_only_the_admin_scope_reads_the_audit_log_and_bad_queries_are_400(
    store: RedisStore, database: str, settings: Settings, clock: ManualClock
) -> None:
    connection = await connect(database)
    try:
        _, reader = await create_client(connection, "dashboard", ("read", "gateway", "payments"), actor="cli:ops")
    finally:
        await connection.close()
    async with audited_api(settings, clock, database) as http:
        assert (await http.get("/v1/audit")).status_code == 401
        assert (await http.get("/v1/audit", headers=gateway_headers())).status_code == 403
        refused = await http.get("/v1/audit", headers={"Authorization": f"Bearer {reader}"})
        assert (refused.status_code, refused.json()["type"].rsplit("/", 1)[1]) == (403, "forbidden")
        for params in ({"cursor": "bm90LWEtY3Vyc29y"}, {"since": "2030-01-01T00:00:00"}, {"limit": "501"}):
            response = await http.get("/v1/audit", params=params, headers=admin_headers())
            assert response.status_code == 400, (params, response.text)


def test_the_wire_lists_the_actions_and_target_types_the_log_writes() -> None:
    assert get_args(AuditAction) == AUDIT_ACTIONS
    assert get_args(AuditTargetType) == AUDIT_TARGET_TYPES


async def test_the_cli_records_its_operator_for_client_changes_and_reconcile_fixes(
    services: Services, store: RedisStore, database: str, settings: Settings, catalog: CatalogService
) -> None:
    created = run_command(services, "clients", "create", "--name", "dashboard", "--scope", "read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.rsplit(" ", 1)[1].strip()
    await setup_region(catalog, "eu", ["w1"])
    await add_sku(catalog, "s1", stock={"w1": 5})
    await store.client.hincrby(store.keys.stock("s1"), "a:w1", 2)  # units appear behind the service's back
    await store.client.hincrby(store.keys.stock("s1"), "h:w1", 2)
    fixed = run_command(services, "reconcile", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    connection = await connect(database)
    try:
        rows = await connection.fetch(
            "SELECT actor, action, before::text, after::text FROM audit_log"
            " WHERE action IN ('client.create', 'stock.reconcile') ORDER BY audit_id"
        )
    finally:
        await connection.close()
    assert [(row["action"], row["actor"].startswith("cli:")) for row in rows] == [
        ("client.create", True),
        ("stock.reconcile", True),
    ]
    assert secret not in rows[0]["after"]
    level = {"available": 5, "reserved": 0, "committed": 0, "on_hand": 5}
    assert msgspec.json.decode(rows[1]["before"]) == {"w1": level}
    assert msgspec.json.decode(rows[1]["after"]) == {"w1": level | {"available": 7, "on_hand": 7}}
