"""The shared event bus: listen-only subscribers follow a stream served by another replica.

Behind a load balancer the ``/v1/captions?session=ID`` (or ``?source=NAME``) subscriber and the
stream it follows can land on different daemons. With ``server.bus = "redis://..."`` every
replica publishes its hub's transcript and ``end`` events to Redis pub/sub (one channel per
subscription key) and relays what the other replicas publish to its own subscribers. Without a
bus the in-process hub is all there is, as before.

Redis pub/sub is fire-and-forget, which suits captions: an event published while Redis is down is
lost to remote subscribers (the stream's own client has everything), and the bus reconnects
with backoff instead of taking the daemon down. Resume tokens never travel on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Callable

log = logging.getLogger(__name__)

PREFIX = "streamer:"
ANNOUNCE = "live:"          # a key nobody subscribes to: "this session is live on some replica"
QUEUE_LIMIT = 1024          # events waiting for Redis before the oldest are dropped
SEEN_FOR = 600.0            # seconds a remotely announced session counts as known
CLOSE_WAIT = 2.0            # seconds shutdown waits for the Redis tasks and client to wind down
READ_SLICE = 1.0            # seconds one pub/sub read waits, so a closing bus is noticed without cancelling


class RedisBus:
    """Publishes local hub events to Redis and hands remote ones to ``deliver(key, message)``."""

    def __init__(self, url: str, deliver: Callable[[str, dict], None]) -> None:
        self.url, self.deliver = url, deliver
        self.origin = uuid.uuid4().hex[:12]   # this process: its own events come back and are skipped
        self.connected = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue(QUEUE_LIMIT)
        self._seen: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []
        self._client = None
        self._closing = False

    async def start(self) -> None:
        import redis.asyncio as redis  # the optional `bus` extra: only a daemon configured for it needs it

        self._client = redis.from_url(self.url, socket_connect_timeout=3, health_check_interval=10)
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._send())]
        log.info("event bus: %s (replica %s)", self.url, self.origin)

    async def close(self, flush: float = 2.0) -> None:
        """Send what is queued (the last ``end`` events) for up to ``flush`` seconds, then stop."""
        deadline = time.monotonic() + flush
        while not self._queue.empty() and self.connected.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._closing = True
        for task in self._tasks:
            task.cancel()
        # redis-py 8 can swallow a cancellation that lands in a pub/sub read (a CI run hung here for
        # 180 s): the listener also stops on ``_closing`` within READ_SLICE, and shutdown waits a bounded time
        _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_WAIT) if self._tasks else (set(), set())
        if stuck:
            log.warning("event bus: %d Redis task(s) did not stop within %.0f s; leaving them",
                        len(stuck), CLOSE_WAIT)
        if self._client is not None:
            with contextlib.suppress(Exception):  # TimeoutError included
                await asyncio.wait_for(self._client.aclose(), CLOSE_WAIT)

    # ------------------------------------------------------------- out
    def publish(self, keys, message: dict) -> None:
        """Queue an event for the other replicas; never blocks the event loop."""
        for key in keys:
            self._put(key, message)

    def announce(self, session_id: str) -> None:
        """A session went live here: remote ``?session=ID`` subscribers may subscribe before its first words."""
        self._put(ANNOUNCE + session_id, {})

    def _put(self, key: str, message: dict) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            log.warning("event bus backlog over %d events; dropping the oldest", QUEUE_LIMIT)
        self._queue.put_nowait((key, message))

    async def _send(self) -> None:
        while not self._closing:
            key, message = await self._queue.get()
            body = json.dumps({"o": self.origin, "m": message}, ensure_ascii=False)
            try:
                await self._client.publish(PREFIX + key, body)
            except Exception as exc:  # Redis down: captions for remote subscribers pause, serving does not
                log.warning("event bus publish failed (%s); event for %s dropped", exc, key)
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------- in
    def knows(self, session_id: str) -> bool:
        """Was this session announced (or heard from) by another replica recently?"""
        seen = self._seen.get(session_id)
        return seen is not None and time.monotonic() - seen < SEEN_FOR

    async def _listen(self) -> None:
        delay = 0.5
        while not self._closing:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(PREFIX + "*")
                self.connected.set()
                if delay > 0.5:
                    log.info("event bus reconnected")
                delay = 0.5
                while not self._closing:
                    item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_SLICE)
                    if item is not None:
                        self._relay(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                log.warning("event bus connection lost (%s); retrying in %.1f s", exc, delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _relay(self, item: dict) -> None:
        try:
            channel = item["channel"].decode() if isinstance(item["channel"], bytes) else str(item["channel"])
            data = json.loads(item["data"])
            if data.get("o") == self.origin:
                return
            key, message = channel[len(PREFIX):], data["m"]
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("event bus: ignoring a malformed message (%s)", exc)
            return
        if key.startswith(ANNOUNCE):
            self._seen[key[len(ANNOUNCE):]] = time.monotonic()
            if len(self._seen) > 1000:  # forget sessions not heard of for a while (bounded memory)
                cutoff = time.monotonic() - SEEN_FOR
                self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
            return
        if key.startswith("session:"):
            sid = key[len("session:"):]
            if message.get("type") == "end":
                self._seen.pop(sid, None)
            else:
                self._seen[sid] = time.monotonic()
        self.deliver(key, message)
