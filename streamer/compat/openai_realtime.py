"""OpenAI Realtime transcription on the daemon: the ``/v1/realtime?intent=transcription`` websocket.

Both dialects the ``openai`` SDK speaks: the GA one (``session.update`` with a ``transcription``
session, ``session.created`` / ``session.updated``) and the beta one (header ``OpenAI-Beta:
realtime=v1``, ``transcription_session.update``, ``transcription_session.created`` / ``.updated``).
Input is base64 pcm16 in ``input_audio_buffer.append``: 24 kHz as OpenAI requires, or any rate
the daemon resamples (``{"type": "audio/pcm", "rate": 16000}``).

Audio goes into an ordinary live session on the host (a stream: same VAD, scheduler and model as
protocol v1), started at the first append with the session's language, prompt and format.
``input_audio_buffer.commit`` finishes that stream (every word decoded) and the next append starts
another; ``.clear`` drops it. :mod:`streamer.compat.openai_items` turns the stream's messages into
OpenAI's events. Bad input gets an ``error`` event and the connection stays open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from streamer import protocol
from streamer.compat.openai_items import ItemTranslator, Timeline, error_event, event_id
from streamer.daemon.host import session_keys
from streamer.daemon.outbox import Outbox
from streamer.daemon.session import Session
from streamer.protocol import Close, CloseCode, StartError

if TYPE_CHECKING:
    from streamer.daemon.server import StreamerServer

log = logging.getLogger(__name__)

PATH = "/v1/realtime"
OPENAI_RATE = 24_000
MODEL = "whisper-1"
UNSUPPORTED_FORMATS = ("audio/pcmu", "audio/pcma", "g711_ulaw", "g711_alaw")


class RealtimeError(Exception):
    """A client event that cannot be used: becomes an ``error`` event naming the field."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.code = param, code


@dataclass(frozen=True)
class Config:
    """The transcription session's settings, as the client last set them."""

    rate: int = OPENAI_RATE
    language: str | None = None
    prompt: str = ""
    model: str = MODEL
    turns: bool = True  # turn_detection server_vad (the default), or null: the client commits
    silence: float | None = None  # turn_detection.silence_duration_ms, s: this stream's stream.end_silence


class OpenAIRealtime:
    """The websocket surface; registered through ``StreamerServer.surfaces``."""

    def routes(self, server: StreamerServer) -> list[web.RouteDef]:
        self.server = server
        return [web.get(PATH, server.tracked(self._connect))]

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ws, outbox = await self.server.accept(request)
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        refused = self._refusal(request)
        if refused is not None:
            code, message, close = refused
            self.server.metrics.errors.labels(code=code).inc()
            outbox.put(error_event(message, code=code, kind="invalid_request_error" if code == "invalid_intent"
                                   else "server_error"))
            outbox.close(close)
            await outbox.finish(timeout=3.0)
            return ws
        connection = RealtimeConnection(self.server, ws, outbox, beta=beta)
        try:
            await connection.run()
        finally:
            await connection.end()
            await outbox.finish(timeout=5.0)
        return ws

    def _refusal(self, request: web.Request) -> tuple[str, str, Close] | None:
        """Why this connection cannot transcribe here: another intent, or the daemon's own refusal
        (model loading, draining, at capacity), as for a protocol v1 stream."""
        intent = request.query.get("intent")
        if intent != "transcription":
            return "invalid_intent", ("this server only transcribes: connect to /v1/realtime?intent=transcription "
                                      f"(got intent={intent!r})"), Close(CloseCode.POLICY, "transcription only")
        refused = self.server.refusal()
        if refused is not None:
            return refused.code, refused.message, Close(CloseCode.TRY_AGAIN, refused.reason)
        return None


class RealtimeConnection:
    """One client: its settings, the stream now being fed, and the client events' handlers."""

    def __init__(self, server: StreamerServer, ws: web.WebSocketResponse, outbox: Outbox, *, beta: bool) -> None:
        self.server, self.host, self.ws, self.outbox, self.beta = server, server.host, ws, outbox, beta
        self.id = "sess_" + uuid.uuid4().hex[:20]
        self.config = Config()
        self.timeline = Timeline()
        self.stream: Session | None = None
        self.items: ItemTranslator | None = None
        self.appended = 0  # bytes since the last commit

    def send(self, event: dict) -> None:
        self.outbox.put(event)

    # ----------------------------------------------------------------- reading
    async def run(self) -> None:
        self.send({"type": self._kind("created"), "event_id": event_id(), "session": self._session()})
        idle = self.server.settings.server.idle_timeout
        stopping = asyncio.ensure_future(self.server.wait_shutdown())
        try:
            while self.outbox.closing is None:
                if self.stream is not None:
                    await self.host.backpressure(self.stream)
                receive = asyncio.ensure_future(self.ws.receive())
                done, _ = await asyncio.wait({receive, stopping}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    await asyncio.gather(receive, return_exceptions=True)
                    if stopping in done:
                        self.outbox.override = Close(CloseCode.GOING_AWAY, "server shutting down")
                    else:
                        self.send(error_event(f"no message for {idle:g} s; the session was closed", code="idle_timeout"))
                        self.outbox.override = Close(CloseCode.POLICY, "idle timeout")
                    return
                message = receive.result()
                if message.type == WSMsgType.TEXT:
                    await self.handle(message.data)
                elif message.type == WSMsgType.BINARY:
                    self.send(error_event("send client events as JSON text frames (audio goes base64 in "
                                          "input_audio_buffer.append)", code="invalid_event"))
                else:
                    return
        finally:
            stopping.cancel()

    async def handle(self, text: str) -> None:
        """One client event; a bad one is answered with an ``error`` event, nothing else changes."""
        try:
            event = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self.send(error_event(f"client events must be JSON objects ({exc.msg})", code="invalid_json"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.send(error_event("client events are JSON objects with a \"type\"", code="invalid_event"))
            return
        kind, client_id = event["type"], event.get("event_id")
        handler = {"session.update": self._update, "transcription_session.update": self._update,
                   "input_audio_buffer.append": self._append, "input_audio_buffer.commit": self._commit,
                   "input_audio_buffer.clear": self._clear}.get(kind)
        try:
            if handler is None:
                raise RealtimeError(f"{kind!r} is not supported here: this server transcribes only (session.update, "
                                    "input_audio_buffer.append / commit / clear)", "type", "unsupported_event")
            await handler(event)
        except RealtimeError as exc:
            self.host.metrics.errors.labels(code=exc.code).inc()
            self.send(error_event(str(exc), code=exc.code, param=exc.param, client_event=client_id))

    # ----------------------------------------------------------------- client events
    async def _update(self, event: dict) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise RealtimeError("session must be an object", "session")
        if session.get("type", "transcription") != "transcription":
            raise RealtimeError("only transcription sessions are served here (session.type = \"transcription\")",
                                "session.type", "unsupported_session_type")
        config = _configured(self.config, session)
        try:
            params = protocol.parse_start(self._fields(config), self.host.default_params())
            self.host.check_start(params)
        except StartError as exc:
            raise RealtimeError(str(exc), "session.audio.input.transcription") from None
        if config != self.config and self.stream is not None:
            await self._finish(empty_item=False)  # the new settings apply to the audio from here on
        self.config = config
        self.send({"type": self._kind("updated"), "event_id": event_id(), "session": self._session()})

    async def _append(self, event: dict) -> None:
        try:
            audio = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise RealtimeError("audio must be base64-encoded pcm16", "audio", "invalid_audio") from None
        if not audio:
            return
        if self.stream is None:
            await self._start()
        if self.stream is None:
            return
        self.appended += len(audio)
        step = self.host.settings.server.max_frame_bytes
        for i in range(0, len(audio), step):
            if self.stream is None or not self.stream.active:
                break
            await self.host.receive(self.stream, audio[i:i + step])
        if self.items is not None and self.items.failed:
            await self._finish(empty_item=False)

    async def _commit(self, event: dict) -> None:
        if self.stream is None or self.appended < self.config.rate * 2 // 10:  # 100 ms of pcm16
            raise RealtimeError("the input audio buffer holds less than 100 ms of audio: nothing to commit",
                                None, "input_audio_buffer_commit_empty")
        await self._finish(empty_item=True)

    async def _clear(self, event: dict) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await self.host.detach(stream)
            if self.items is not None:
                self.timeline.offset += stream.audio_seconds
            self.items, self.appended = None, 0
        self.send({"type": "input_audio_buffer.cleared", "event_id": event_id()})

    # ----------------------------------------------------------------- streams
    async def _start(self) -> None:
        params = protocol.parse_start(self._fields(self.config), self.host.default_params())
        settings = self.server.settings.stream
        if self.config.silence is not None:  # the client's end-of-turn silence, for this stream only
            settings = settings.model_copy(update={"end_silence": self.config.silence})
        stream = self.host.new_session(params, prefix="rt-", resumable=False, stream=settings)
        self.items = ItemTranslator(self.send, self.timeline, turns=self.config.turns)
        out = await self.host.scheduler.call(stream.start, {})
        if stream.ended:
            message = next((m["message"] for m in out if isinstance(m, dict) and m.get("type") == "error"), "refused")
            raise RealtimeError(f"cannot start transcribing: {message}", None, "invalid_session")
        self.host.register(stream, self.items, session_keys(stream.id))
        self.stream = stream

    async def _finish(self, *, empty_item: bool) -> None:
        """Decode everything appended so far and complete its items; the next append starts afresh."""
        stream, items = self.stream, self.items
        self.stream, self.items, self.appended = None, None, 0
        if stream is None:
            return
        await self.host.finalise(stream)
        items.finish(empty_item and not items.failed)

    async def end(self) -> None:
        """The connection is closing: nobody waits for the rest of the audio, so it is dropped."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            if self.server.shutting_down:
                await self.host.finalise(stream)  # shutdown: the client still gets its last words
                self.items.finish(empty_item=False)
            else:
                await self.host.detach(stream)

    def _fields(self, config: Config) -> dict[str, Any]:
        return {"sample_rate": config.rate, "encoding": "pcm_s16le", "channels": 1, "language": config.language,
                "prompt": config.prompt, "vad_events": config.turns}

    # ----------------------------------------------------------------- shapes
    def _kind(self, what: str) -> str:
        return f"transcription_session.{what}" if self.beta else f"session.{what}"

    def _session(self) -> dict:
        """The effective settings in the dialect the client speaks (turn detection is the daemon's VAD)."""
        stream = self.server.settings.stream
        c = self.config
        turn = ({"type": "server_vad", "threshold": stream.vad_threshold, "prefix_padding_ms": int(stream.speech_pad * 1000),
                 "silence_duration_ms": int((c.silence or stream.end_silence) * 1000)} if c.turns else None)
        transcription = {"model": c.model, "language": c.language, "prompt": c.prompt}
        if self.beta:
            return {"id": self.id, "object": "realtime.transcription_session", "modalities": ["text"],
                    "input_audio_format": "pcm16" if c.rate == OPENAI_RATE else {"type": "audio/pcm", "rate": c.rate},
                    "input_audio_transcription": transcription, "turn_detection": turn,
                    "input_audio_noise_reduction": None, "include": []}
        return {"type": "transcription", "id": self.id, "object": "realtime.transcription_session",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": c.rate}, "transcription": transcription,
                                    "turn_detection": turn, "noise_reduction": None}}, "include": []}


def _configured(config: Config, session: dict) -> Config:
    """``config`` with a session update applied: the GA shape (``audio.input``) or the beta one."""
    audio = session.get("audio")
    given = audio.get("input") if isinstance(audio, dict) else None
    if given is not None and not isinstance(given, dict):
        raise RealtimeError("session.audio.input must be an object", "session.audio.input")
    source, prefix = (given, "session.audio.input.") if given is not None else (session, "session.")
    fmt_key, tr_key = ("format", "transcription") if given is not None else ("input_audio_format",
                                                                             "input_audio_transcription")
    if fmt_key in source:
        config = replace(config, rate=_rate(source[fmt_key], prefix + fmt_key))
    if tr_key in source and source[tr_key] is not None:
        tr = source[tr_key]
        if not isinstance(tr, dict):
            raise RealtimeError("transcription must be an object with model, language and prompt", prefix + tr_key)
        prompt = tr.get("prompt", config.prompt)
        if prompt is not None and not isinstance(prompt, str):
            raise RealtimeError("prompt must be a string", prefix + tr_key + ".prompt")
        config = replace(config, model=str(tr.get("model") or config.model),
                         language=tr.get("language", config.language) or None, prompt=prompt or "")
    if "turn_detection" in source:
        turn = source["turn_detection"]
        if turn is not None and (not isinstance(turn, dict) or turn.get("type") not in ("server_vad", "semantic_vad")):
            raise RealtimeError("turn_detection must be null or {\"type\": \"server_vad\"}", prefix + "turn_detection")
        config = replace(config, turns=turn is not None)
        silence = turn.get("silence_duration_ms") if isinstance(turn, dict) else None
        if silence is not None:
            if isinstance(silence, bool) or not isinstance(silence, (int, float)) or not 100 <= silence <= 5000:
                raise RealtimeError(f"silence_duration_ms must be a number from 100 to 5000, got {silence!r}",
                                    prefix + "turn_detection.silence_duration_ms")
            config = replace(config, silence=silence / 1000)
    return config


def _rate(value: Any, param: str) -> int:
    """The input sample rate a format names: pcm16 is 24 kHz; ``audio/pcm`` may name another rate."""
    if value == "pcm16":
        return OPENAI_RATE
    if value in UNSUPPORTED_FORMATS or (isinstance(value, dict) and value.get("type") in UNSUPPORTED_FORMATS):
        raise RealtimeError("G.711 input is not supported: send pcm16 (audio/pcm) at 24 kHz or 16 kHz", param,
                            "unsupported_format")
    if isinstance(value, dict) and value.get("type", "audio/pcm") == "audio/pcm":
        rate = value.get("rate", OPENAI_RATE)
        if isinstance(rate, int) and not isinstance(rate, bool) and protocol.MIN_RATE <= rate <= protocol.MAX_RATE:
            return rate
        raise RealtimeError(f"rate must be an integer from {protocol.MIN_RATE} to {protocol.MAX_RATE} "
                            f"(OpenAI uses 24000), got {rate!r}", param + ".rate", "unsupported_format")
    raise RealtimeError(f"unknown audio format {value!r}: use {{\"type\": \"audio/pcm\", \"rate\": 24000}}", param,
                        "unsupported_format")
