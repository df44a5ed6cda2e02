"""The persister lingers after a batch that was not full, and only then (rushgate/workers.py)."""

from __future__ import annotations

from rushgate.settings import load_settings
from rushgate.workers import persister_linger_s


def test_it_lingers_after_a_small_batch_only() -> None:
    settings = load_settings({"RUSHGATE_PERSISTER_BATCH_SIZE_MAX": "100", "RUSHGATE_PERSISTER_LINGER_MS": "50"})
    assert persister_linger_s(1, settings) == 0.05
    assert persister_linger_s(24, settings) == 0.05
    assert persister_linger_s(25, settings) == 0.0  # a quarter full or more: a backlog builds, read on
    assert persister_linger_s(100, settings) == 0.0
    assert persister_linger_s(0, settings) == 0.0  # nothing came: XREADGROUP's BLOCK already waited


def test_batches_of_one_never_linger() -> None:
    settings = load_settings({"RUSHGATE_PERSISTER_BATCH_SIZE_MAX": "1", "RUSHGATE_PERSISTER_LINGER_MS": "50"})
    assert persister_linger_s(1, settings) == 0.0  # every batch is full


def test_zero_switches_it_off() -> None:
    settings = load_settings({"RUSHGATE_PERSISTER_LINGER_MS": "0"})
    assert persister_linger_s(1, settings) == 0.0
