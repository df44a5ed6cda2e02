"""Coalescing: concurrent requests of one worker share one batch-native script call.

A Redis call costs the client tens of microseconds whatever it carries, while one
more order in a call costs a few; so requests that arrive while a call is in flight
wait for it and then leave together. Bounds, all settings:

- at most ``batch_size_max`` orders per call;
- at most ``calls_in_flight_max`` calls in flight before new requests start waiting;
- no request waits longer than ``wait_us_max`` before its call is sent — a lone
  request on an idle worker is sent on the next turn of the event loop.

Each item in a batch is still decided on its own by the script; results are
matched to their requests by position, so one customer's outcome never reaches
another. Used for reservations and for the idempotency look-ups of the sold-out
short-circuit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        call: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        batch_size_max: int,
        calls_in_flight_max: int,
        wait_us_max: int,
    ) -> None:
        assert batch_size_max >= 1 and calls_in_flight_max >= 1 and wait_us_max >= 0
        self._batch_call = call
        self.batch_size_max = batch_size_max
        self.calls_in_flight_max = calls_in_flight_max
        self.wait_s_max = wait_us_max / 1_000_000
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._calls_in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls_sent = 0
        self.items_sent = 0

    async def submit(self, item: Item) -> Result:
        """The result of item, decided in a batch with whatever else waits."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= self.batch_size_max:
            self._send()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            if self._calls_in_flight < self.calls_in_flight_max:
                self._timer = loop.call_soon(self._send)
            else:
                self._timer = loop.call_later(self.wait_s_max, self._send)
        return await future

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            batch, self._waiting = self._waiting[: self.batch_size_max], self._waiting[self.batch_size_max :]
            self._calls_in_flight += 1
            task = asyncio.get_running_loop().create_task(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        self.calls_sent += 1
        self.items_sent += len(batch)
        try:
            results = await self._batch_call([item for item, _ in batch])
        except BaseException as error:  # every waiter must learn of the failure, then it propagates
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        finally:
            self._calls_in_flight -= 1
            if self._waiting and self._calls_in_flight < self.calls_in_flight_max:
                self._send()
        assert len(results) == len(batch), "one result per item"
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its client may have gone away
                future.set_result(result)

    async def close(self) -> None:
        """Send what waits and let every call in flight finish."""
        if self._waiting:
            self._send()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
