"""Key layout: every key of one partition lands in one Redis Cluster slot."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reservation.keys import KeyTable, PartitionKeys, partition_of

CLUSTER_SLOTS = 16384


def crc16_xmodem(data: bytes) -> int:
    """CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def cluster_slot(key: str) -> int:
    """HASH_SLOT of the Redis Cluster spec: only the first non-empty {...} is hashed, if there is one."""
    data = key.encode()
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc16_xmodem(data) % CLUSTER_SLOTS


def always(key: str) -> Callable[[str], str]:
    return lambda _argument: key


def key_makers(keys: PartitionKeys) -> dict[str, Callable[[str], str]]:
    """Every key name PartitionKeys can produce, found by inspection so a new key is covered too."""
    makers: dict[str, Callable[[str], str]] = {}
    for name, member in vars(PartitionKeys).items():
        if name.startswith("_") or name == "tag":
            continue
        if isinstance(member, property):
            makers[name] = always(getattr(keys, name))
        elif callable(member):
            makers[name] = getattr(keys, name)
    return makers


def all_keys(partition: int, argument: str = "x-1") -> dict[str, str]:
    keys = PartitionKeys(partition)
    return {name: make(argument) for name, make in key_makers(keys).items()}


def test_the_crc16_matches_the_check_value_of_the_redis_cluster_spec() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_xmodem(b"") == 0


def test_the_slot_function_follows_the_hash_tag_rules_of_the_spec() -> None:
    assert cluster_slot("foo") == 12182  # the spec's and CLUSTER KEYSLOT's example
    assert cluster_slot("{user1000}.following") == cluster_slot("{user1000}.followers") == cluster_slot("user1000")
    assert cluster_slot("foo{}{bar}") == crc16_xmodem(b"foo{}{bar}") % CLUSTER_SLOTS  # empty tag: whole key
    assert cluster_slot("foo{{bar}}zap") == cluster_slot("{bar")
    assert cluster_slot("foo{bar}{zap}") == cluster_slot("bar")


def test_the_inspection_finds_every_kind_of_key() -> None:
    expected = {"stream", "expiry", "dispatch", "warehouses", "blocklist", "sold_out", "metrics", "sweeper_lock"}
    expected |= {"confirm_due", "window_due"}
    expected |= {
        "sku_config",
        "stock",
        "order",
        "customer_counters",
        "customer_rate",
        "client_rate",
        "idempotency",
        "payment",
        "case",
    }

    assert set(key_makers(PartitionKeys(0))) == expected


@pytest.mark.parametrize("partition", [0, 1, 7, 15, 1023])
def test_every_key_of_a_partition_carries_its_hash_tag_exactly_once(partition: int) -> None:
    tag = f"{{p{partition}}}"

    for name, key in all_keys(partition).items():
        assert key.count(tag) == 1, name
        assert key.count("{") == 1 and key.count("}") == 1, name
        assert key.startswith(f"rg:{tag}:"), name


@pytest.mark.parametrize("partition", [0, 1, 7, 15, 1023])
def test_every_key_of_a_partition_maps_to_the_slot_of_its_tag(partition: int) -> None:
    slot = crc16_xmodem(f"p{partition}".encode()) % CLUSTER_SLOTS

    assert {cluster_slot(key) for key in all_keys(partition).values()} == {slot}


def test_keys_of_different_kinds_never_coincide() -> None:
    keys = all_keys(0, "same")

    assert len(set(keys.values())) == len(keys)


def test_keys_of_different_partitions_never_coincide() -> None:
    assert set(all_keys(0).values()).isdisjoint(all_keys(1).values())
    assert set(all_keys(1).values()).isdisjoint(all_keys(10).values())


@given(partition=st.integers(min_value=0, max_value=4095), argument=st.text(max_size=80))
def test_no_sku_or_id_can_move_a_key_out_of_its_partition_slot(partition: int, argument: str) -> None:
    slot = crc16_xmodem(f"p{partition}".encode()) % CLUSTER_SLOTS

    assert {cluster_slot(key) for key in all_keys(partition, argument).values()} == {slot}


@given(sku=st.text(max_size=64), partition_count=st.integers(min_value=1, max_value=4096))
def test_partition_of_is_stable_and_in_range(sku: str, partition_count: int) -> None:
    partition = partition_of(sku, partition_count)

    assert 0 <= partition < partition_count
    assert partition_of(sku, partition_count) == partition


@given(sku=st.text(max_size=64))
def test_one_partition_holds_every_sku(sku: str) -> None:
    assert partition_of(sku, 1) == 0


@pytest.mark.parametrize(
    ("sku", "partition_count", "partition"),
    [("sku-1", 16, 14), ("sku-1", 1024, 366), ("iphone-15", 16, 3), ("iphone-15", 1024, 499), ("A", 16, 11)],
)
def test_partition_of_does_not_change_between_processes(sku: str, partition_count: int, partition: int) -> None:
    # Pinned values: a per-process hash (Python's hash()) would move stock between restarts.
    assert partition_of(sku, partition_count) == partition


def test_partition_of_refuses_a_partition_count_below_one() -> None:
    with pytest.raises(AssertionError):
        partition_of("sku-1", 0)


def test_a_key_table_starts_with_the_fixed_keys_at_indexes_one_to_n() -> None:
    table = KeyTable(["stream", "expiry", "dispatch"])

    assert table.keys == ["stream", "expiry", "dispatch"]
    assert [table.index("stream"), table.index("expiry"), table.index("dispatch")] == [1, 2, 3]
    assert table.keys == ["stream", "expiry", "dispatch"]


def test_a_key_table_appends_a_new_key_after_the_fixed_ones_and_gives_it_the_next_index() -> None:
    table = KeyTable(["stream", "expiry"])

    assert table.index("stock:a") == 3
    assert table.index("stock:b") == 4
    assert table.keys == ["stream", "expiry", "stock:a", "stock:b"]


def test_a_key_table_lists_each_key_once_and_repeats_its_index() -> None:
    table = KeyTable(["stream"])

    first = [table.index(key) for key in ["a", "b", "a", "stream", "b", "c", "a"]]

    assert first == [2, 3, 2, 1, 3, 4, 2]
    assert table.keys == ["stream", "a", "b", "c"]


@given(st.lists(st.text(max_size=8), max_size=40), st.lists(st.text(max_size=8), max_size=8, unique=True))
def test_every_index_a_key_table_hands_out_points_back_to_its_key(requested: list[str], fixed: list[str]) -> None:
    table = KeyTable(fixed)

    indexes = [table.index(key) for key in requested]

    assert table.keys[: len(fixed)] == fixed
    assert len(set(table.keys)) == len(table.keys)
    assert all(table.keys[index - 1] == key for index, key in zip(indexes, requested, strict=True))
    assert set(table.keys) == set(fixed) | set(requested)


def test_a_key_table_does_not_alias_the_list_it_was_given() -> None:
    fixed = ["stream"]
    table = KeyTable(fixed)

    table.index("other")

    assert fixed == ["stream"]
