"""The API's HTTP protocol: a response leaves in one write, and nothing written is lost or reordered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from rushgate.http_protocol import TurnBufferedHttpToolsProtocol, TurnBufferedTransport


class Collector:
    """A local TCP server keeping every byte it receives, and whether the peer closed."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.received += chunk
        self.closed.set()
        writer.close()


class Counting:
    """The real transport, counting the writes that reach it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@pytest.fixture
async def connection() -> AsyncIterator[tuple[Collector, Counting, TurnBufferedTransport]]:
    collector = Collector()
    server = await asyncio.start_server(collector.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    counting = Counting(transport)  # type: ignore[arg-type]
    yield collector, counting, TurnBufferedTransport(counting, loop)  # type: ignore[arg-type]
    transport.close()
    server.close()
    await server.wait_closed()


async def test_the_writes_of_one_loop_turn_leave_in_one_write(
    connection: tuple[Collector, Counting, TurnBufferedTransport],
) -> None:
    collector, counting, buffered = connection
    buffered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    buffered.write(b"ok")
    assert counting.writes == []  # nothing leaves before the turn ends
    await asyncio.sleep(0)  # one turn of the loop: the flush scheduled by the first write runs
    assert counting.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    buffered.write(b"next")
    await asyncio.sleep(0)
    assert counting.writes[1:] == [b"next"]
    buffered.close()
    await collector.closed.wait()
    assert bytes(collector.received) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\noknext"


async def test_closing_sends_what_was_gathered_first(
    connection: tuple[Collector, Counting, TurnBufferedTransport],
) -> None:
    collector, counting, buffered = connection
    buffered.write(b"last ")
    buffered.write(b"words")
    buffered.close()
    assert counting.writes == [b"last words"]
    await collector.closed.wait()
    assert bytes(collector.received) == b"last words"
    await asyncio.sleep(0)  # the flush scheduled earlier finds nothing left and writes nothing
    assert counting.writes == [b"last words"]


async def test_aborting_drops_what_was_gathered(
    connection: tuple[Collector, Counting, TurnBufferedTransport],
) -> None:
    collector, counting, buffered = connection
    buffered.write(b"never sent")
    buffered.abort()
    await collector.closed.wait()
    assert counting.writes == []
    assert bytes(collector.received) == b""


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = scope["path"].encode() + b":" + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def test_uvicorn_over_the_protocol_answers_pipelined_requests_in_order() -> None:
    config = uvicorn.Config(
        echo_app, host="127.0.0.1", port=0, http=TurnBufferedHttpToolsProtocol, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # the server sets this flag when it listens; poll it turn by turn
        await asyncio.sleep(0)
    port = server.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = b"".join(
        b"POST /%d HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (n, len(body), body)
        for n, body in enumerate([b"first", b"", b"third"])
    )
    writer.write(requests + b"GET /close HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    received = await reader.read()  # until the server closes after the last response
    writer.close()
    server.should_exit = True
    await serving
    responses = received.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [response.split(b"\r\n\r\n", 1)[1] for response in responses] == [
        b"/0:first",
        b"/1:",
        b"/2:third",
        b"/close:",
    ]
