"""The Lua scripts, read as package data and loaded with SCRIPT LOAD at start-up.

Loading every script when a client starts means a broken script fails the boot,
not the first order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources

SCRIPT_NAMES = (
    "reserve",
    "cancel",
    "pay",
    "stock_adjust",
    "stock_transfer",
    "config_put",
    "keys_exist",
    "ship",
    "track",
    "confirm",
    "window_close",
    "case_open",
    "case_review",
    "case_return",
    "case_refund",
    "case_exchange_ship",
    "order_refund",
)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def read_scripts() -> dict[str, Script]:
    """Every script of the package, by name."""
    folder = resources.files("reservation") / "lua"
    return {name: Script(name, (folder / f"{name}.lua").read_text()) for name in SCRIPT_NAMES}
