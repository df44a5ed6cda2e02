"""uvicorn's httptools protocol, with the writes of one event-loop turn sent in one system call.

uvicorn writes a response in two parts: the status line and headers when the app sends
``http.response.start``, the body on ``http.response.body``. Each ``transport.write`` on an
idle socket is a ``send`` at once, so every response took two system calls and two trips
through the kernel's TCP stack, the largest single cost a profile of an API worker showed.
Here the protocol sees the transport through a wrapper that gathers what is written during
one turn of the loop and sends it at the end of the turn (``call_soon``), as one buffer.
Nothing waits longer than that turn; closing or aborting the connection sends or drops what
is gathered first. Selected by ``rushgate serve`` (uvicorn's ``http=`` option).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rushgate.garbage import settle


class TurnBufferedTransport:
    """A transport whose writes of one loop turn leave together; everything else is the real one."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            # Even when closing: a peer that half-closed after its request (FIN) makes the transport
            # close itself, and it still sends what it is given before it has closed.
            with contextlib.suppress(RuntimeError):  # already closed: nobody left to send to
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class TurnBufferedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol over a TurnBufferedTransport.

    Its first connection settles the worker's heap (rushgate/garbage.py): uvicorn has no hook
    in a worker between loading the app and serving, and by the first connection the app and
    its lifespan's clients are built. Being the server's, it applies alike to every app served
    this way, the harness's comparison apps included."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        settle()
        # uvloop's TCPTransport quacks like asyncio.Transport without deriving from it.
        buffered: Any = TurnBufferedTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(buffered)
