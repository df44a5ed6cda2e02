"""The instruction counter of the benchmarks (valkey under callgrind) measures the script it is given."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.lua_instructions import measure

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("valgrind", "callgrind_control", "callgrind_annotate")),
    reason="needs valgrind (Debian package)",
)

CANCEL = Path(__file__).resolve().parents[2] / "lua" / "cancel.lua"
SPIN = 20_000


@pytest.mark.parametrize("sweep", [False, True], ids=["reserve", "sweep"])
def test_a_script_that_does_more_is_counted_as_costing_more(tmp_path: Path, sweep: bool) -> None:
    """Each call of the spinning copy runs SPIN more loop iterations (several instructions each):
    the counter must see at least that much more, so it measures the script it was given, and only
    the measured calls (a sweep must also release every hold, or measure fails)."""
    original = CANCEL if sweep else CANCEL.with_name("reserve.lua")
    spinning = tmp_path / original.name
    spinning.write_text(f"for _ = 1, {SPIN} do end\n" + original.read_text())
    calls = 2
    plain = measure(4, calls, str(original), tmp_path / "plain", sweep)
    spun = measure(4, calls, str(spinning), tmp_path / "spun", sweep)
    assert plain > 0
    assert spun - plain >= SPIN * calls
