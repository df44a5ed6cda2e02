"""The Lua scripts, read as package data and loaded with SCRIPT LOAD at start-up.

Loading every script when a client starts means a broken script fails the boot,
not the first order.
"""

from __future__ import annotations

import hashlib
import re
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
    "ack",
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


INCLUDE = re.compile(r"^--!include (\w+)$", re.MULTILINE)
"""A script's line naming a piece of lua/lib/ to put in its place: Redis scripts cannot load
code, so what several scripts share is spliced in here, before the SHA is taken."""


def with_includes(text: str) -> str:
    """A script's text with each ``--!include`` line replaced by that piece of lua/lib/."""
    library = resources.files("reservation") / "lua" / "lib"
    return INCLUDE.sub(lambda match: (library / f"{match.group(1)}.lua").read_text().rstrip("\n"), text)


def read_scripts() -> dict[str, Script]:
    """Every script of the package, by name, with its includes spliced in."""
    folder = resources.files("reservation") / "lua"
    return {name: Script(name, with_includes((folder / f"{name}.lua").read_text())) for name in SCRIPT_NAMES}
