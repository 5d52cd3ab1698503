"""Deepgram's live transcription websocket, under ``/deepgram/v1/listen``, onto the session host.

Deepgram clients (the official ``deepgram-sdk`` and code written against it) build
``<base>/v1/listen?encoding=linear16&sample_rate=...`` and send raw audio, ``KeepAlive``,
``Finalize`` and ``CloseStream``; they read ``Results``, ``SpeechStarted``, ``UtteranceEnd`` and
``Metadata`` (:mod:`streamer.compat.deepgram_events` does the translation).

Why a prefix: Deepgram's path ``/v1/listen`` is protocol v1's own. Telling them apart by query
parameters would guess (both take ``sample_rate``, ``channels``, ``language``, and a v1 client
may send none), and a wrong guess breaks a client. Under ``/deepgram`` nothing is guessed:
users point the client's base URL at ``http://HOST:PORT/deepgram``, and v1 is untouched.

The daemon's token (``Authorization: Token <t>``, as Deepgram clients send their key), Origin
rules, admission, limits and metrics apply as on ``/v1/listen``. Refusals before the upgrade
are HTTP errors with Deepgram's JSON body; problems during a stream are ``Error`` messages and
Deepgram's close codes (1008 bad data, 1009 too big, 1011 timeout or failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from streamer import protocol
from streamer.compat.deepgram_events import Translator
from streamer.compat.deepgram_params import BadRequest, parse_query
from streamer.compat.sessions import QueueSink, open_session
from streamer.daemon.outbox import Outbox
from streamer.daemon.session import Session
from streamer.protocol import Close, CloseCode, StartError, StartParams

if TYPE_CHECKING:
    from streamer.daemon.server import StreamerServer

log = logging.getLogger(__name__)

PREFIX = "/deepgram"
LISTEN_PATH = PREFIX + "/v1/listen"
FINALIZE_MARGIN = 0.1  # s of silence beyond end_silence + speech_pad, so the VAD surely closes the utterance
FINALIZE_WAIT = 60.0   # s a Finalize waits at most for the core (a safety net: it needs one decode per utterance)
FINALIZED = {"type": "finalized"}  # the adapter's own marker in the session's event queue


def http_error(status: int, message: str, request_id: str, headers: dict | None = None) -> web.Response:
    """An error before the upgrade, shaped as Deepgram's (the SDK raises ApiError with the status)."""
    kind = {400: "Bad Request", 429: "TOO_MANY_REQUESTS", 503: "SERVICE_UNAVAILABLE"}.get(status, "ERROR")
    body = {"err_code": kind, "err_msg": message, "request_id": request_id}
    return web.json_response(body, status=status, headers={"dg-error": message, "dg-request-id": request_id,
                                                           **(headers or {})})


def close_for(close: Close) -> Close:
    """A v1 close as Deepgram's: bad data is 1008 (DATA-0000), too big stays 1009, failures 1011."""
    if close.code in (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.TOO_BIG, CloseCode.INTERNAL):
        return close
    if close.code in (CloseCode.UNSUPPORTED, CloseCode.POLICY):
        return Close(1008, f"DATA-0000: {close.reason}")
    return close


class DeepgramSurface:
    """Registered in ``StreamerServer.surfaces``: adds the Deepgram live route."""

    def routes(self, server: StreamerServer) -> list[web.RouteDef]:
        async def listen(request: web.Request) -> web.StreamResponse:
            return await self.listen(server, request)

        return [web.get(LISTEN_PATH, server.tracked(listen))]

    async def listen(self, server: StreamerServer, request: web.Request) -> web.StreamResponse:
        host, request_id = server.host, str(uuid.uuid4())
        try:
            params = parse_query(request.query)
        except BadRequest as exc:
            server.metrics.errors.labels(code="invalid_start").inc()
            return http_error(400, str(exc), request_id)
        refused = server.refusal()
        if refused is not None:
            server.metrics.errors.labels(code=refused.code).inc()
            retry = refused.retry_after if refused.retry_after is not None else 5.0
            return http_error(429 if refused.reason == "server busy" else 503, refused.message, request_id,
                              {"Retry-After": str(max(1, round(retry)))})
        try:
            start = protocol.parse_start({"sample_rate": params.sample_rate, "channels": params.channels,
                                          "language": params.language, "prompt": params.prompt,
                                          "vad_events": True}, host.default_params())
            host.check_start(start)
        except StartError as exc:
            server.metrics.errors.labels(code="invalid_start").inc()
            return http_error(400, str(exc), request_id)
        ws, outbox = await server.accept(request)
        stream = None
        if params.endpointing is not None:
            stream = server.settings.stream.model_copy(update={"end_silence": params.endpointing})
        session, sink = await open_session(host, start, stream=stream, prefix="deepgram-")
        translator = Translator(params, host.engine.name, request_id)
        await DeepgramStream(server, ws, outbox, session, sink, translator, start).run()
        return ws


class DeepgramStream:
    """One live connection: client frames in, the session's events out as Deepgram messages."""

    def __init__(self, server: StreamerServer, ws: web.WebSocketResponse, outbox: Outbox, session: Session,
                 sink: QueueSink, translator: Translator, start: StartParams) -> None:
        self.server, self.host = server, server.host
        self.ws, self.outbox, self.session, self.sink = ws, outbox, session, sink
        self.translator, self.params = translator, translator.params
        self.bytes_per_second = start.bytes_per_second
        self.received = 0  # bytes of the client's audio
        self.sha = hashlib.sha256()
        self.vad = server.settings.stream.use_vad
        self._finalizer: asyncio.Future | None = None

    @property
    def client_seconds(self) -> float:
        return self.received / self.bytes_per_second

    async def run(self) -> None:
        pump = asyncio.ensure_future(self._pump())
        try:
            await self._read()
        finally:
            answering = asyncio.ensure_future(self._drop_frames())  # the client's pings still get pongs
            try:
                await self.host.finalise(self.session)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pump), 5)
                pump.cancel()
                if self._finalizer is not None:
                    self._finalizer.cancel()
                await self.outbox.finish(timeout=5)
            finally:
                answering.cancel()

    async def _read(self) -> None:
        """Client frames until CloseStream, the client leaving, an idle timeout or shutdown."""
        idle = self.server.settings.server.idle_timeout
        stopping = asyncio.ensure_future(self.server.wait_shutdown())
        recv: asyncio.Future | None = None
        try:
            while self.outbox.closing is None and self.session.reading:
                await self.host.backpressure(self.session)
                recv = recv or asyncio.ensure_future(self.ws.receive())
                done, _ = await asyncio.wait({recv, stopping}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    self.outbox.override = Close(CloseCode.GOING_AWAY, "server shutting down")
                    return
                if not done:
                    self.outbox.put(Translator.error("NET-0001", f"no audio or KeepAlive for {idle:g} s"))
                    self.outbox.override = Close(1011, "NET-0001: no audio received within the timeout")
                    return
                message, recv = recv.result(), None
                if message.type == WSMsgType.BINARY:
                    if not message.data:  # Deepgram's older way to say CloseStream
                        return
                    await self._audio(message.data)
                elif message.type == WSMsgType.TEXT:
                    if not await self._control(message.data):
                        return
                else:
                    return  # the client closed or the connection broke: finish server-side
        finally:
            stopping.cancel()
            if recv is not None:
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)

    async def _audio(self, data: bytes) -> None:
        self.received += len(data)
        self.sha.update(data)
        await self.host.receive(self.session, data)
        if self.vad:
            self._send(self.translator.tick(self.client_seconds))

    async def _control(self, text: str) -> bool:
        """KeepAlive, Finalize or CloseStream (False: stop reading)."""
        try:
            kind = json.loads(text).get("type")
        except (json.JSONDecodeError, AttributeError):
            kind = None
        if kind == "KeepAlive":
            return True
        if kind == "CloseStream":
            return False
        if kind == "Finalize":
            await self._finalize()
            return True
        self.host.metrics.errors.labels(code="invalid_json").inc()
        self.outbox.put(Translator.error("SchemaError", "text messages are KeepAlive, Finalize or CloseStream "
                                         "JSON objects (audio goes in binary frames)", message=text[:1000]))
        return True

    async def _finalize(self) -> None:
        """Make the words heard so far final now: silence closes the utterance in the VAD, as a pause
        would (the inserted silence is left out of every time the client sees); once the core has
        decoded everything, the results it produced go out, the last marked ``from_finalize``."""
        if self.translator.finalizing:
            return  # the Finalize under way covers this one
        self.translator.finalize()
        if self.translator.pending or self.translator.in_speech:
            config = self.session.config
            seconds = config.end_silence + config.speech_pad + FINALIZE_MARGIN
            frame = self.bytes_per_second // self.params.sample_rate
            silence = bytes(int(seconds * self.params.sample_rate) * frame)
            self.translator.timeline.insert(self.client_seconds, len(silence) / self.bytes_per_second)
            await self.host.receive(self.session, silence)
        # stream time where the inserted silence ends, less a little (whole VAD windows, filter delay)
        until = self.client_seconds + self.translator.timeline.inserted - FINALIZE_MARGIN / 2
        self._finalizer = asyncio.ensure_future(self._when_decoded(until))

    async def _when_decoded(self, until: float) -> None:
        """Wait until the audio up to ``until`` is decoded, then queue the marker behind its results.

        The check runs on the core thread, after any decode it saw completed; the scheduler hands
        that decode's events to the sink before this coroutine resumes, so the marker is behind them.
        """
        session, deadline = self.session, asyncio.get_running_loop().time() + FINALIZE_WAIT

        def settled() -> tuple[bool, list]:
            """Also the update a settled utterance's end waits for (the scheduler would poll it next)."""
            out = session.poll()
            decoded = session.processor.buffer_seconds == 0 or session.decoded_seconds >= until
            return not session.in_flight and decoded, out

        while session.active:
            done, out = await self.host.scheduler.call(settled)
            self.host.deliver(session.id, out)
            if done:
                break
            if asyncio.get_running_loop().time() > deadline:
                log.warning("session %s: Finalize: not decoded after %g s; sending what is final", session.id,
                            FINALIZE_WAIT)
                break
            self.host.scheduler.wake()
            await self.host.scheduler.progressed(self.session, timeout=0.5)
        self.sink.put(FINALIZED)

    async def _pump(self) -> None:
        """The session's v1 events, as Deepgram messages, in order."""
        while True:
            item = await self.sink.get()
            if isinstance(item, Close):
                if self.translator.finalizing:
                    for message in self.translator.finalized():
                        self.outbox.put(message)
                self.outbox.close(close_for(item))
                return
            kind = item.get("type")
            if kind == "transcript":
                self._send(self.translator.transcript(item))
            elif kind == "speech":
                self._send(self.translator.speech(item))
            elif kind == "end":
                self._send(self.translator.tick(float("inf")))
                self._send([self.translator.metadata(self.client_seconds, self.sha.hexdigest(), self.params.channels)])
            elif kind == "error":
                self._send([Translator.error(item.get("code", "error"), item.get("message", ""))])
            elif item is FINALIZED:
                for message in self.translator.finalized():
                    self.outbox.put(message)

    def _send(self, messages: list[dict]) -> None:
        for message in self.translator.outgoing(messages):
            self.outbox.put(message)

    async def _drop_frames(self) -> None:
        with contextlib.suppress(Exception):
            while (await self.ws.receive()).type in (WSMsgType.TEXT, WSMsgType.BINARY):
                pass

