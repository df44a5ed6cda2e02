"""One pipelined RESP connection for script calls: the Redis adapter's hot path (with store.py).

redis-py's asyncio client spends 65-75 µs of CPU per call on this machine, whatever the call
carries (measured: ``EVALSHA`` of a one-line script, one or two calls in flight), most of it
around the socket: pool check-out and check-in, the retry wrapper, the timeout context, a
``StreamReader`` read per reply. RESP answers the commands of one connection in the order they
were sent, so a call here is a hiredis pack, one ``write`` and a future; replies are parsed by
a hiredis ``Reader`` in ``data_received`` and handed to the futures in order: ~15 µs a call.
Under a steady (open-loop) arrival rate the coalescer's calls carry two or three orders, so
this per-call cost was a quarter of an intake worker's CPU.

Failures keep redis-py's meaning, so callers see no difference:

- an error reply raises the exception redis-py raises for it (``NoScriptError`` for NOSCRIPT,
  ``ResponseError`` for a script's ``error_reply``, ...);
- a lost connection fails every call in flight with ``ConnectionError``; the next call
  reconnects (calls are never retried here: the caller decides, as with redis-py);
- a call unanswered after ``timeout_s`` fails with ``TimeoutError`` and closes the connection
  with every call still in flight (a late reply would be matched to the wrong call);
- an argument hiredis cannot pack (None, a bool) raises ``DataError`` before anything is sent.

A caller that is cancelled leaves its reply to be read and dropped: positions stay aligned.
TLS (``rediss://``) is not handled here: such clients keep redis-py for every call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _parse_error(message: str) -> Exception:
    error: Exception = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


class _ReplyError(Exception):
    """What hiredis makes of an error reply; turned into redis-py's exception for it."""


class _Protocol(asyncio.Protocol):
    def __init__(self, channel: PipelinedChannel) -> None:
        self.channel = channel
        self.reader = hiredis.Reader(replyError=_ReplyError)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()  # when each call in pending must have its reply
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        reader, pending, deadlines = self.reader, self.pending, self.deadlines
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as error:
                self.abort(RedisConnectionError(f"Redis sent a malformed reply: {error}"))
                return
            if reply is False:  # incomplete (RESP2 has no boolean replies)
                return
            if not pending:
                self.abort(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            future = pending.popleft()
            deadlines.popleft()
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, _ReplyError):
                future.set_exception(_parse_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection to Redis lost: {exc}" if exc else "Connection to Redis closed"))

    def fail(self, error: Exception) -> None:
        self.lost = True
        pending, self.pending = self.pending, deque()
        self.deadlines = deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)
        self.channel._forget(self)

    def abort(self, error: Exception) -> None:
        """Fail every call in flight with error and drop the connection."""
        self.fail(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, packed: bytes, timeout_s: float) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.lost:  # lost after its caller got it: nothing would ever answer or time this out
            future.set_exception(RedisConnectionError("Connection to Redis lost"))
            return future
        self.pending.append(future)
        self.deadlines.append(asyncio.get_running_loop().time() + timeout_s)
        self.transport.write(packed)
        return future


class PipelinedChannel:
    """Commands over one connection, many in flight; connects on first use and after a loss."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    def from_connection_kwargs(cls, kwargs: dict[str, Any]) -> PipelinedChannel:
        """A channel to where a redis-py pool with these connection kwargs connects."""
        timeout_s = kwargs.get("socket_timeout") or 5.0
        return cls(
            host=kwargs.get("host", "localhost"),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path"),
            db=int(kwargs.get("db") or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            timeout_s=timeout_s,
            connect_timeout_s=kwargs.get("socket_connect_timeout") or timeout_s,
        )

    @property
    def where(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes, int, list...) or raise redis-py's error."""
        try:
            packed = hiredis.pack_command(args)
        except TypeError as error:
            raise DataError(f"cannot send {args[0]!r}: {error}") from None
        protocol = self._protocol
        if protocol is None:
            protocol = await self._connect()
        elif self._closed:
            raise RedisConnectionError("the Redis client was closed")
        future = protocol.send(packed, self.timeout_s)
        if self._watchdog is None and not future.done():  # done: refused at once, the connection is lost
            self._arm(protocol.deadlines[-1])
        return await future

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        protocol = self._protocol
        if protocol is not None:
            protocol.fail(RedisConnectionError("the Redis client was closed"))
            if protocol.transport is not None:
                protocol.transport.close()

    def _forget(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def _arm(self, when: float) -> None:
        self._watchdog = asyncio.get_running_loop().call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        """One timer for all calls: it fires at the oldest call's deadline, and re-arms for the next."""
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or not protocol.deadlines:
            return
        oldest = protocol.deadlines[0]
        if oldest <= asyncio.get_running_loop().time():
            protocol.abort(RedisTimeoutError(f"Timeout reading from {self.where}"))
        else:
            self._arm(oldest)

    async def _connect(self) -> _Protocol:
        """The connection, opened by one attempt that every caller waiting for it shares: each
        waits at most the connect timeout, however many queue up while Redis does not answer."""
        if self._closed:
            raise RedisConnectionError("the Redis client was closed")
        attempt = self._connecting
        if attempt is None or attempt.done():
            attempt = self._connecting = asyncio.ensure_future(self._open())
            attempt.add_done_callback(_retrieve)
        return await asyncio.shield(attempt)  # a cancelled caller leaves the attempt to the others

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.path:
                    _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), self.path)
                else:
                    _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout connecting to {self.where}") from None
        except OSError as error:
            raise RedisConnectionError(f"Error connecting to {self.where}: {error}") from None
        handshake = []
        if self.password:
            credentials = (self.username, self.password) if self.username else (self.password,)
            auth: tuple[Any, ...] = ("AUTH", *credentials)
            handshake.append(protocol.send(hiredis.pack_command(auth), self.connect_timeout_s))
        if self.db:
            select: tuple[Any, ...] = ("SELECT", self.db)
            handshake.append(protocol.send(hiredis.pack_command(select), self.connect_timeout_s))
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                answers = await asyncio.gather(*handshake, return_exceptions=True)
        except BaseException as error:
            protocol.abort(RedisConnectionError(f"the connection set-up was interrupted: {error!r}"))
            if isinstance(error, TimeoutError):
                raise RedisTimeoutError(f"Timeout setting up the connection to {self.where}") from None
            raise
        refusals = [answer for answer in answers if isinstance(answer, BaseException)]
        if refusals:  # a wrong password, a database that does not exist: redis-py's error for it
            protocol.abort(RedisConnectionError("Redis refused the connection set-up"))
            raise refusals[0]
        if protocol.lost:
            raise RedisConnectionError(f"Connection to {self.where} lost while setting it up")
        if self._closed:  # closed while this attempt ran: keep nothing open
            protocol.abort(RedisConnectionError("the Redis client was closed"))
            raise RedisConnectionError("the Redis client was closed")
        self._protocol = protocol
        return protocol


def _retrieve(attempt: asyncio.Future[Any]) -> None:
    """Mark a failed attempt's error as seen: its callers may all have been cancelled."""
    if not attempt.cancelled():
        attempt.exception()
