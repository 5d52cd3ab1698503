"""Per-connection send queues, and the small interface every event receiver implements.

The session host fans events out to :class:`Subscriber` objects: an :class:`Outbox` for a
websocket, a terminal renderer for ``streamer mic``, an adapter for another protocol. Only the
outbox knows about sockets: it queues JSON text, drains it on its own task, and applies the
slow-reader policy (a client that stops reading is dropped at a bound instead of growing
memory).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Iterable, Protocol, runtime_checkable

from aiohttp import web

from streamer.daemon.metrics import Metrics
from streamer.protocol import Close, CloseCode, Outgoing

log = logging.getLogger(__name__)


@runtime_checkable
class Subscriber(Protocol):
    """Receives a session's messages in order; ``close`` ends the subscription."""

    def put(self, message: dict) -> None: ...

    def close(self, close: Close) -> None: ...


def put_all(subscriber: Subscriber, items: Iterable[Outgoing]) -> None:
    """Hand a session's output to a subscriber: messages, and a close if one came."""
    for item in items:
        if isinstance(item, Close):
            subscriber.close(item)
        else:
            subscriber.put(item)


BYTES_PER_MESSAGE = 8 * 1024  # the unsent-bytes bound is this times the message bound


class Outbox:
    """A bounded queue of messages for one websocket, drained by its own task.

    A client that stops reading fills the socket buffers, the transport's write buffer, then
    this queue; past ``limit`` queued messages, or ``limit`` x 8 KiB unsent in the transport, it
    is dropped (close 1008) instead of letting memory grow. A :class:`Close` item is sent after
    everything queued before it.
    """

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, limit: int,
                 metrics: Metrics | None = None) -> None:
        self.ws = ws
        self.transport = transport
        self.limit = limit
        self.metrics = metrics
        self.closing: Close | None = None
        self.override: Close | None = None  # replaces the next close, e.g. 1001 during shutdown
        self._items: deque[str | Close] = deque()
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, message: dict) -> None:
        if self.closing is not None:
            return
        if len(self._items) >= self.limit or self._unsent_bytes() > self.limit * BYTES_PER_MESSAGE:
            self._overflow()
            return
        self._items.append(json.dumps(message, ensure_ascii=False))
        self._ready.set()

    def close(self, close: Close) -> None:
        """Send what is queued, then close with ``close`` (the first close wins)."""
        if self.closing is None:
            self.closing = self.override or close
            self._items.append(self.closing)
            self._ready.set()

    def _overflow(self) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.warning("client %s is not reading (%d messages queued): dropping it", peer, len(self._items))
        self.closing = Close(CloseCode.POLICY, "slow reader: send queue full")
        if self.metrics:
            self.metrics.errors.labels(code="slow_reader").inc()
        self._items.clear()
        self._task.cancel()
        self._abort()  # it does not read, so a close handshake would only wait

    async def _run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                while self._items:
                    item = self._items.popleft()
                    if isinstance(item, Close):
                        await self.ws.close(code=item.code, message=item.reason.encode())
                        return
                    await self.ws.send_str(item)
                self._ready.clear()
        except (ConnectionError, RuntimeError):  # the peer is gone: nothing left to deliver
            pass

    async def finish(self, timeout: float = 10.0) -> None:
        """Flush and close (normal close unless one was already asked for); abort if the peer stalls.

        aiohttp's close reads and drops whatever the client still sends until its close frame
        arrives, so a client that keeps sending cannot block the handshake.
        """
        self.close(Close(CloseCode.NORMAL, ""))
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            self._abort()

    def _unsent_bytes(self) -> int:
        """Bytes the transport has accepted but the peer has not read (aiohttp does not bound it)."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def done(self) -> bool:
        return self._task.done()
