"""The instruction counter of the benchmarks (valkey under callgrind) measures the script it is given,
over the measured calls only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.lua_instructions import measure

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("valgrind", "callgrind_control", "callgrind_annotate")),
    reason="needs valgrind (Debian package)",
)

LUA = Path(__file__).resolve().parents[2] / "lua"
SPIN = 50_000  # loop iterations added to every call: ~40 instructions each, far above run-to-run noise (~25k)


@pytest.mark.parametrize("sweep", [False, True], ids=["reserve", "sweep"])
def test_the_counter_sees_what_a_script_adds_to_each_measured_call(tmp_path: Path, sweep: bool) -> None:
    """A copy of the script that spins SPIN times per call costs more by an amount proportional to the
    measured calls: twice the calls, twice the difference. Were --script ignored there would be no
    difference; were the warm-up calls counted too, 4 calls would not cost twice what 2 do."""
    original = LUA / ("cancel.lua" if sweep else "reserve.lua")
    spinning = tmp_path / original.name
    spinning.write_text(f"for _ = 1, {SPIN} do end\n" + original.read_text())
    added = {}
    for calls in (2, 4):
        plain = measure(4, calls, str(original), tmp_path / f"plain-{calls}", sweep)
        spun = measure(4, calls, str(spinning), tmp_path / f"spun-{calls}", sweep)
        added[calls] = spun - plain
    assert added[2] >= 10 * SPIN * 2
    assert 1.8 <= added[4] / added[2] <= 2.2
