"""Plain ASGI helpers for the paths that answer without Litestar (auth refusals, the intake hot path)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar.types import Send


async def send_raw(send: Send, status: int, body: bytes, media_type: str, headers: Mapping[str, str]) -> None:
    """A whole response in two ASGI messages, without a framework in between."""
    raw_headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]
    start: Any = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
