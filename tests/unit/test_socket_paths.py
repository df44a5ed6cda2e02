"""Which data directories get a Unix socket from the embedded servers: a path that fits in sun_path with room
to spare and can be written into a URL as it is; anything else keeps TCP (rushgate/embedded.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rushgate.embedded import SOCKET_PATH_MAX, socket_path_usable


def path_of_length(length: int) -> Path:
    return Path("/" + "d" * (length - len("/") - len("/x.sock")) + "/x.sock")


def test_the_longest_usable_path_is_the_bound() -> None:
    assert len(str(path_of_length(SOCKET_PATH_MAX))) == SOCKET_PATH_MAX
    assert socket_path_usable(path_of_length(SOCKET_PATH_MAX))
    assert not socket_path_usable(path_of_length(SOCKET_PATH_MAX + 1))


@pytest.mark.parametrize(
    "path",
    ["/srv/my shop/.rushgate/redis/redis.sock", "/srv/shop?/redis.sock", "/srv/50%/redis.sock",
     "/srv/shop#1/redis.sock", "/srv/café/redis.sock", "relative/redis.sock"],
)  # fmt: skip
def test_a_path_a_url_would_have_to_quote_keeps_tcp(path: str) -> None:
    assert not socket_path_usable(Path(path))


def test_an_ordinary_data_directory_gets_a_socket() -> None:
    assert socket_path_usable(Path("/home/shop/.rushgate/postgres/.s.PGSQL.54321.lock"))
