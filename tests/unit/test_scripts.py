"""The scripts as loaded: includes spliced in, each script whole."""

from __future__ import annotations

from reservation.scripts import INCLUDE, read_scripts


def test_every_include_line_is_replaced_by_the_library_it_names() -> None:
    scripts = read_scripts()
    assert all(INCLUDE.search(script.source) is None for script in scripts.values())
    for name in ("ship", "case_open", "order_refund"):
        assert scripts[name].source.count("local function extend(document)") == 1, name
    for name in ("case_review", "case_exchange_ship"):
        assert scripts[name].source.count("local function resume_previous_status(") == 1, name


def test_a_script_s_sha_covers_what_was_spliced_into_it() -> None:
    import hashlib

    ship = read_scripts()["ship"]
    assert ship.sha == hashlib.sha1(ship.source.encode()).hexdigest()
    assert "order_document.lua" in ship.source
