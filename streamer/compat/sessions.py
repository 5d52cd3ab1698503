"""What every compatibility adapter does with the session host: open a stream, hear its events.

An adapter translates another protocol's messages into calls here and protocol v1 events back
into that protocol. The sessions are ordinary host sessions: same scheduler, same model, same
limits and metrics as ``/v1/listen``, and ``/v1/captions?session=ID`` can watch them.
"""

from __future__ import annotations

import asyncio
from typing import Union

from streamer.config import StreamConfig
from streamer.daemon.host import SessionHost, session_keys
from streamer.daemon.session import Session
from streamer.protocol import Close, StartParams

Event = Union[dict, Close]


class QueueSink:
    """A :class:`~streamer.daemon.outbox.Subscriber` that queues a session's output for an adapter.

    Unbounded on purpose: a session produces a few small messages per decode, and the adapter's
    own writer (an :class:`~streamer.daemon.outbox.Outbox` or a TCP stream) bounds what it sends.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, message: dict) -> None:
        self.queue.put_nowait(message)

    def close(self, close: Close) -> None:
        self.queue.put_nowait(close)

    async def get(self) -> Event:
        return await self.queue.get()


async def open_session(host: SessionHost, params: StartParams, *, stream: StreamConfig | None = None,
                       prefix: str = "") -> tuple[Session, QueueSink]:
    """Start a host session with ``params`` (already checked with ``host.check_start``).

    Its ``ready`` and later events arrive on the returned sink, in order."""
    session = host.new_session(params, prefix=prefix, stream=stream)
    sink = QueueSink()
    host.register(session, sink, session_keys(session.id))
    host.deliver(session.id, await host.scheduler.call(session.start, params.message()))
    return session, sink
