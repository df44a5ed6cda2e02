"""The dependency rules of STYLE.md, checked by reading the imports of every source file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("intake", "reservation", "orders", "persistence", "rushgate")


def imported_modules(source: str, package: list[str]) -> set[str]:
    """Every module a file of `package` imports, anywhere in it (top level, functions, TYPE_CHECKING)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            if node.module:
                parts = [*parts, node.module]
            modules.add(".".join(parts))
    return modules


def source_files() -> dict[str, set[str]]:
    """Imported top-level names per source file, keyed by the path relative to the repository."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            modules = imported_modules(path.read_text(), list(relative.parent.parts))
            files[relative.as_posix()] = {module.split(".")[0] for module in modules}
    return files


SOURCES = source_files()


def importers_of(top_level: str) -> set[str]:
    return {path for path, imported in SOURCES.items() if top_level in imported}


def test_the_scan_sees_every_package_and_imports_made_inside_functions() -> None:
    assert {path.split("/")[0] for path in SOURCES} == set(PACKAGES)
    assert "reservation/store.py" in SOURCES and "orders/states.py" in SOURCES
    assert "litestar" in SOURCES["intake/app.py"]
    assert "persistence" in SOURCES["rushgate/cli.py"]  # imported lazily inside a command function


def test_relative_imports_are_resolved_to_their_package() -> None:
    # The scan must not miss `from ..persistence import x` style imports, so it resolves them.
    source = "from . import rules\nfrom .rules import table\nfrom ..persistence import writer\n"

    assert imported_modules(source, ["orders"]) == {"orders", "orders.rules", "persistence"}
    assert imported_modules(source, ["orders", "after_sales"]) == {
        "orders.after_sales",
        "orders.after_sales.rules",
        "orders.persistence",
    }


def test_imports_inside_functions_and_type_checking_blocks_are_seen() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import asyncpg\n"
        "def run() -> None:\n    import redis.asyncio\n    from litestar import Litestar\n"
    )

    assert imported_modules(source, ["orders"]) == {"typing", "asyncpg", "redis.asyncio", "litestar"}


def test_only_the_redis_adapter_imports_redis() -> None:
    assert importers_of("redis") == {"reservation/store.py", "reservation/pipelined.py"}  # the adapter


def test_only_persistence_imports_asyncpg() -> None:
    importers = importers_of("asyncpg")

    assert importers, "persistence talks to Postgres, so some file of it imports asyncpg"
    assert sorted(path for path in importers if not path.startswith("persistence/")) == []


def test_only_intake_and_the_asgi_composition_root_import_litestar() -> None:
    importers = importers_of("litestar")

    assert any(path.startswith("intake/") for path in importers)
    assert sorted(path for path in importers if not path.startswith("intake/") and path != "rushgate/asgi.py") == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("orders", {"intake", "reservation", "persistence", "rushgate"}),
        ("reservation", {"intake", "persistence", "rushgate"}),
        ("persistence", {"intake", "rushgate"}),
    ],
)
def test_a_package_imports_none_of_the_packages_above_it(package: str, forbidden: set[str]) -> None:
    offenders = {
        path: sorted(imported & forbidden) for path, imported in SOURCES.items() if path.startswith(f"{package}/")
    }

    assert {path: modules for path, modules in offenders.items() if modules} == {}
