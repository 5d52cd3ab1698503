"""``LiveSession``: stream audio to ``/v1/listen`` as one continuous transcript, whatever the network does.

A dropped connection, a daemon killed or restarted, or a replica draining for a rolling restart
(``reconnect`` + close 1012) must not cost the user words or repeat them (dictation types every
committed word, so a repeat is a visible bug). The session therefore keeps the audio the server
has not committed yet (:class:`~streamer_clients.resume.RetainedAudio`), remembers the latest
signed resume token, and on a new connection -- to the same daemon or any replica sharing
``server.resume_secret`` -- claims the stream back and replays only that audio. The server continues
the same session: same id, ``seq`` going on, word times on the original timeline.

If a resume is refused (an expired token, a replica with another secret) the retained audio
starts a new session instead, its word times shifted onto the client's timeline: nothing the
server had not yet committed is lost, and nothing already committed is sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from streamer.protocol import LISTEN_PATH, StartParams
from streamer_clients.client import (Backoff, DaemonError, Endpoint, State, StateCallback, Transcript, Word,
                                     is_fatal, open_ws)
from streamer_clients.resume import ResumePoint, RetainedAudio

log = logging.getLogger("streamer.client")

DEFAULT_MAX_BUFFER = 30.0  # seconds of uncommitted audio kept for a resume (the server's default limit)


class Interrupted(ConnectionError):
    """The connection ended before the stream did (closed without ``end``): resume it."""


class LiveSession:
    """Stream audio chunks to ``/v1/listen`` and fold the events into one ``Transcript``.

    ``max_retries`` bounds consecutive failed connections (None: retry forever, as a live mic
    wants); ``max_buffer`` bounds the retained audio in seconds. ``resumes`` counts streams
    continued from a token, ``sessions`` lists every session id the stream was served under.
    """

    def __init__(self, endpoint: Endpoint, params: StartParams,
                 on_update: Callable[[Transcript, list[Word]], None] | None = None,
                 on_state: StateCallback | None = None, backoff: Backoff | None = None,
                 reconnect: bool = True, max_retries: int | None = None,
                 source: str | None = None, max_buffer: float = DEFAULT_MAX_BUFFER) -> None:
        self.endpoint, self.params = endpoint, params
        self.source = source  # also publish to /v1/captions?source=NAME listeners (an overlay, a page)
        self.max_retries = max_retries
        self.on_update = on_update or (lambda t, w: None)
        self.on_state = on_state or (lambda s, d: None)
        self.backoff = backoff or Backoff()
        self.reconnect = reconnect
        self.transcript = Transcript()
        self.retained = RetainedAudio(params.bytes_per_second, max_buffer, params.frame_bytes)
        self.point = ResumePoint()
        self.offset = 0.0          # client-timeline seconds where the current server session's clock is 0
        self.sessions: list[str] = []
        self.resumes = 0
        self.end_event: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self._tokens = True        # the daemon issues resume tokens (False: an older daemon; replay nothing)
        self._last_seq = 0
        self._exhausted = False    # the audio source ran out; every connection from now on sends ``stop``

    @property
    def sent_seconds(self) -> float:
        """All audio sent so far, in seconds (the client's timeline)."""
        return self.retained.end

    async def run(self, chunks: AsyncIterator[bytes]) -> Transcript:
        """Send every chunk, then ``stop``; return the full transcript once the daemon says ``end``."""
        iterator = aiter(chunks)
        while True:
            try:
                await self._one_connection(iterator)
                break
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException,
                    DaemonError) as exc:
                gave_up = self.max_retries is not None and self.backoff.attempt >= self.max_retries
                if is_fatal(exc) or not self.reconnect or gave_up:
                    self.on_state(State.CLOSED, str(exc))
                    raise
                self.transcript.finish_segment()
                delay = self.backoff.next_delay()
                log.info("session lost (%s); reconnecting in %.1fs with %.1f s of uncommitted audio",
                         exc, delay, self.retained.seconds)
                self.on_state(State.RECONNECTING, f"retry in {delay:.1f}s")
                await asyncio.sleep(delay)
        self.on_state(State.CLOSED, "")
        return self.transcript

    async def _one_connection(self, chunks: AsyncIterator[bytes]) -> None:
        """One websocket: start (or resume), replay what is uncommitted, stream on, stop, ``end``."""
        self.on_state(State.CONNECTING if not self.sessions else State.RECONNECTING, self.endpoint.url)
        async with await open_ws(self.endpoint, LISTEN_PATH, source=self.source) as ws:
            start = self.params.message()
            resuming = bool(self.point.token) and self.retained.complete
            if resuming:
                # context before the stream's own start does not exist on the server's timeline
                self.retained.drop_context(keep=self.point.committed_until)
                start["resume"] = self.point.claim(self.retained.seconds, self.retained.context_seconds)
            await ws.send(json.dumps(start))
            ready = await self._expect_ready(ws)
            self._begin(ready, resuming)
            self.on_state(State.CONNECTED, str(ready.get("session", "")))
            self.backoff.reset()
            receiver = asyncio.create_task(self._receive(ws))
            try:
                await self._send(ws, self.retained.bytes(), receiver, keep=False)  # the replay
                if not self._exhausted:
                    async for chunk in chunks:
                        await self._send(ws, chunk, receiver)
                    self._exhausted = True
                await ws.send(json.dumps({"type": "stop"}))
                await receiver
            finally:
                receiver.cancel()
                if receiver.done() and not receiver.cancelled():
                    receiver.exception()  # already surfaced through _send, or moot after end

    def _begin(self, ready: dict[str, Any], resuming: bool) -> None:
        """Set the timeline up for this connection: the same session continued, or a new one."""
        session = str(ready.get("session", ""))
        self.sessions.append(session)
        self._tokens = bool(ready.get("resume"))
        if ready.get("resumed"):
            self.resumes += 1
            self.point.update(ready)
            self._last_seq = self.point.seq
            log.info("session %s resumed at %.2f s (seq %d); replaying %.1f s", session,
                     self.point.committed_until, self.point.seq, self.retained.seconds)
        else:
            self.retained.drop_context()  # a new session would commit the context's words again
            if resuming:
                log.warning("resume refused; continuing as new session %s from %.2f s", session, self.retained.start)
            if not self._tokens:  # no acknowledgements from this daemon: what was sent is done with
                self.retained.ack(self.retained.end)
            self.point.clear()
            self.point.update(ready)
            self.offset = self.retained.start
            self._last_seq = 0
        self.transcript.offset = self.offset

    async def _expect_ready(self, ws: ClientConnection) -> dict[str, Any]:
        """The ``ready``; a refused resume's error comes first and is noted, not fatal."""
        while True:
            event = json.loads(await ws.recv())
            kind = event.get("type")
            if kind == "error" and str(event.get("code", "")).startswith("resume_"):
                self.last_error = event
                log.warning("daemon refused the resume (%s): %s", event.get("code"), event.get("message"))
                continue
            if kind == "error":
                raise DaemonError(f"{event.get('code')}: {event.get('message')}", str(event.get("code", "")))
            if kind != "ready":
                raise DaemonError(f"expected ready, got {kind}")
            return event

    async def _send(self, ws: ClientConnection, chunk: bytes, receiver: asyncio.Task[None],
                    keep: bool = True) -> None:
        """Send audio in frames the daemon accepts, keeping it (first) until it is committed."""
        if receiver.done():  # the daemon closed on us, or ended the session on its side
            receiver.result()
            raise Interrupted("the daemon ended the stream before this client stopped it")
        if keep:
            self.retained.append(chunk)
            if not self._tokens:
                self.retained.ack(self.retained.end)
        step = 1 << 16
        for i in range(0, len(chunk), step):
            await ws.send(chunk[i:i + step])

    async def _receive(self, ws: ClientConnection) -> None:
        """Fold events in until ``end``; a close without it is an interruption to resume from."""
        async for message in ws:
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            kind = event.get("type")
            if kind == "transcript":
                seq = event.get("seq")
                if isinstance(seq, int) and seq <= self._last_seq:
                    log.debug("dropping transcript seq %d (already seen up to %d)", seq, self._last_seq)
                    continue
                self._last_seq = seq if isinstance(seq, int) else self._last_seq
                self._acknowledge(event)
                new = self.transcript.apply(event)
                self.on_update(self.transcript, new)
            elif kind == "reconnect":  # the daemon is draining: the close 1012 that follows resumes us
                self._acknowledge(event)
                log.info("daemon asked this stream to move (resume at %.2f s)", self.point.committed_until)
            elif kind == "end":
                if not self._exhausted:  # the daemon finished the stream on its side (a shutdown)
                    self._ended_early(event)
                self.end_event = event
                self.transcript.finish_segment()
                self.on_update(self.transcript, [])
                return
            elif kind == "error":  # fatal ones are followed by a close, which ends this loop
                self.last_error = event
                log.warning("daemon error %s: %s", event.get("code"), event.get("message"))
        raise Interrupted(f"connection closed without end ({ws.close_code} {ws.close_reason or ''})".strip())

    def _ended_early(self, event: dict[str, Any]) -> None:
        """Everything the daemon received is committed, but the stream goes on: what it did not
        receive starts a new session (the last token would replay audio it already transcribed)."""
        received = float(event.get("audio_seconds", self.point.committed_until) or 0.0)
        self.retained.ack(self.offset + received)
        self.point.clear()
        log.info("daemon ended session %s at %.2f s; the rest of the stream continues in a new session",
                 event.get("session"), received)

    def _acknowledge(self, event: dict[str, Any]) -> None:
        if self.point.update(event):
            self.retained.ack(self.offset + self.point.committed_until)
