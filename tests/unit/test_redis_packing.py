"""The Redis client's command packing: hiredis's bytes are redis-py's bytes."""

from __future__ import annotations

import redis.asyncio as redis_asyncio
from hypothesis import given
from hypothesis import strategies as st

from reservation.store import HiredisPackingConnection, HiredisPackingUnixConnection, connect

arguments = st.lists(
    st.one_of(
        st.binary(max_size=64), st.text(max_size=32), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False)
    ),
    max_size=12,
)


@given(name=st.sampled_from(["EVALSHA", "SCRIPT LOAD", b"CONFIG GET", b"XADD", "hset"]), rest=arguments)
def test_hiredis_packing_sends_the_bytes_redis_py_would(name: str | bytes, rest: list[object]) -> None:
    ours = b"".join(HiredisPackingConnection().pack_command(name, *rest))
    theirs = b"".join(redis_asyncio.Connection().pack_command(name, *rest))
    assert ours == theirs


def test_tcp_and_unix_socket_connections_pack_with_hiredis_and_tls_ones_do_not() -> None:
    tcp = connect("redis://127.0.0.1:6379/0", pool_size_max=1, timeout_ms=100)
    unix = connect("unix:///tmp/redis.sock", pool_size_max=1, timeout_ms=100)
    tls = connect("rediss://127.0.0.1:6379/0", pool_size_max=1, timeout_ms=100)
    assert tcp.connection_pool.connection_class is HiredisPackingConnection
    assert unix.connection_pool.connection_class is HiredisPackingUnixConnection
    assert tls.connection_pool.connection_class is redis_asyncio.SSLConnection
