"""Wyoming, Home Assistant's voice protocol, on its own TCP (or Unix) socket, onto the session host.

A Wyoming client (Home Assistant's Wyoming integration, a satellite, ``wyoming``'s own client)
sends ``describe`` and gets ``info``; for speech it sends ``transcribe`` (language, names and
terms to spell right), ``audio-start``, ``audio-chunk``... and ``audio-stop``, and gets
``transcript``. Each utterance is an ordinary host session: the chunks are fed as they come
(decoded while the person speaks, not after), committed words go out at once as
``transcript-chunk`` events between ``transcript-start`` and ``transcript-stop``, and
``audio-stop`` finishes the session, so the final ``transcript`` follows within one decode.

Wyoming has no authentication: bind it to 127.0.0.1, a Unix socket or a trusted network. The
``wyoming`` package is imported only when ``server.wyoming`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.ping import Ping, Pong

from streamer import __version__, protocol
from streamer.compat.sessions import QueueSink, open_session
from streamer.daemon.session import Session
from streamer.protocol import Close, StartError

if TYPE_CHECKING:
    from streamer.daemon.server import StreamerServer

log = logging.getLogger(__name__)

LINE_LIMIT = 64 * 1024  # an event's JSON header line; its data and payload are bounded separately
STOP_TIMEOUT = 30.0     # on shutdown, seconds open utterances get to finish
READY_POLL = 0.1        # s: how often a describe that arrived while the model loads checks again
PROGRAM = Attribution(name="streamer", url="")
MODEL = Attribution(name="OpenAI", url="https://github.com/openai/whisper")


class WyomingProblem(Exception):
    """Input this connection cannot go on with: answered with an ``error`` event, then closed."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


async def read_event(reader: asyncio.StreamReader, max_payload: int) -> Event | None:
    """One Wyoming event (None at end of stream), with its data and payload size bounded.

    ``wyoming.event.async_read_event`` reads whatever lengths the header claims; a daemon
    shared by many clients must not allocate a stranger's number of bytes.
    """
    try:
        line = await reader.readline()
    except ValueError:  # longer than the reader's limit
        raise WyomingProblem("invalid_event", f"event header longer than {LINE_LIMIT} bytes") from None
    if not line:
        return None
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WyomingProblem("invalid_event", "an event header must be one line of JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise WyomingProblem("invalid_event", 'an event header must be a JSON object with a "type"')
    data = header.get("data") or {}
    sizes = {}
    for key, limit in (("data_length", LINE_LIMIT), ("payload_length", max_payload)):
        size = header.get(key) or 0
        if not isinstance(size, int) or not 0 <= size <= limit:
            raise WyomingProblem("invalid_event", f"{key} must be an integer from 0 to {limit}, got {size!r}")
        sizes[key] = size
    if sizes["data_length"]:
        try:
            extra = json.loads(await reader.readexactly(sizes["data_length"]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise WyomingProblem("invalid_event", "event data must be a JSON object") from None
        if not isinstance(extra, dict) or not isinstance(data, dict):
            raise WyomingProblem("invalid_event", "event data must be a JSON object")
        data = {**data, **extra}
    payload = await reader.readexactly(sizes["payload_length"]) if sizes["payload_length"] else None
    return Event(type=header["type"], data=data if isinstance(data, dict) else {}, payload=payload)


def language_code(value: Any) -> str | None:
    """Home Assistant may send a region (``en-US``); Whisper knows languages (``en``)."""
    if not value or not isinstance(value, str):
        return None
    return value.replace("_", "-").split("-")[0].lower()


class PcmToFloat:
    """Integer PCM of any width (1 = unsigned 8-bit, 2, 3, 4 = signed little-endian) and any channel
    count, as float32 mono bytes: what protocol v1's ``pcm_f32le`` carries. Whole frames only; a
    frame cut between chunks waits for the rest."""

    def __init__(self, width: int, channels: int) -> None:
        self.width, self.channels = width, channels
        self._rest = b""

    def convert(self, data: bytes) -> bytes:
        data, frame = self._rest + data, self.width * self.channels
        cut = len(data) - len(data) % frame
        data, self._rest = data[:cut], data[cut:]
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.width)
        if self.width == 1:
            samples = (raw[:, 0].astype(np.float32) - 128.0) / 128.0
        else:  # sign-extend to 32 bits: the sample's bytes go to the top of an int32
            padded = np.zeros((raw.shape[0], 4), dtype=np.uint8)
            padded[:, 4 - self.width:] = raw
            samples = padded.view("<i4").reshape(-1).astype(np.float32) / 2147483648.0
        mono = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        return mono.astype("<f4").tobytes()


class WyomingSurface:
    """The Wyoming listener of one :class:`~streamer.daemon.server.StreamerServer`.

    It sits in ``server.background``: shutdown calls :meth:`stop` before the host's sessions
    are flushed, and open utterances are finished (their ``transcript`` sent) first.
    """

    def __init__(self, server: StreamerServer, uri: str, *, zeroconf: bool = False) -> None:
        self.server = server
        self.host = server.host
        self.uri = uri
        self.zeroconf = None
        self._announce = zeroconf
        self._listener: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        parts = urlsplit(self.uri)
        if parts.scheme == "unix":
            self._listener = await asyncio.start_unix_server(self._accept, path=parts.path, limit=LINE_LIMIT)
        else:
            self._listener = await asyncio.start_server(self._accept, parts.hostname, parts.port, limit=LINE_LIMIT)
        log.info("Wyoming on %s", self.address)
        if self._announce:
            from wyoming.zeroconf import HomeAssistantZeroconf

            self.zeroconf = HomeAssistantZeroconf(port=self.port, host=parts.hostname)
            await self.zeroconf.register_server()

    @property
    def port(self) -> int:
        """The bound TCP port (``tcp://HOST:0`` binds a free one)."""
        return self._listener.sockets[0].getsockname()[1] if self._listener else 0

    @property
    def address(self) -> str:
        parts = urlsplit(self.uri)
        return self.uri if parts.scheme == "unix" else f"tcp://{parts.hostname}:{self.port}"

    async def stop(self) -> None:
        """Stop listening; open utterances finish and get their transcript; then connections close."""
        self.stopping.set()
        if self._listener is not None:
            self._listener.close()
        pending = [t for t in self._connections if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_TIMEOUT)
            for task in late:
                task.cancel()
        if self.zeroconf is not None:
            with contextlib.suppress(Exception):
                await self.zeroconf._aiozc.async_close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await WyomingConnection(self, reader, writer).run()
        finally:
            self._connections.discard(task)

    def info(self) -> Info:
        """What ``describe`` gets: one ASR program with the loaded model and its languages."""
        engine = self.host.engine
        name = engine.name if engine is not None else self.server.settings.engine.model
        languages = list(getattr(engine, "languages", ()) or ())
        model = AsrModel(name=name, attribution=MODEL, installed=True, version=None, languages=languages,
                         description=f"Whisper {name} (streamed: words commit while you speak)")
        program = AsrProgram(name="streamer", attribution=PROGRAM, installed=True, version=__version__,
                             description="streamer: real-time Whisper transcription daemon", models=[model],
                             supports_transcript_streaming=True)
        return Info(asr=[program])


class WyomingConnection:
    """One client connection: any number of describe/ping and transcribe + audio exchanges."""

    def __init__(self, surface: WyomingSurface, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.surface, self.host = surface, surface.host
        self.reader, self.writer = reader, writer
        self.peer = writer.get_extra_info("peername")
        self.request = Transcribe()
        self.session: Session | None = None
        self.format: tuple[int, int, int] | None = None
        self.convert: PcmToFloat | None = None
        self.rejected = False  # this utterance was refused: ignore its audio until audio-stop
        self.pump: asyncio.Task | None = None
        self.language: str | None = None

    # ------------------------------------------------------------- the loop
    async def run(self) -> None:
        try:
            while True:
                event = await self._next()
                if event is None:
                    break
                await self._handle(event)
        except WyomingProblem as exc:
            log.info("Wyoming client %s: %s: %s", self.peer, exc.code, exc)
            await self._send_error(exc.code, str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("Wyoming client %s went away", self.peer)
        finally:
            await self._finish(send=not self.writer.is_closing())
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _next(self) -> Event | None:
        """The next event; None when the client is done, or the daemon stops, or it idled too long."""
        if self.session is not None:
            await self.host.backpressure(self.session)
        idle = self.surface.server.settings.server.idle_timeout
        limit = self.surface.server.settings.server.max_frame_bytes
        read = asyncio.ensure_future(read_event(self.reader, limit))
        stop = asyncio.ensure_future(self.surface.stopping.wait())
        try:
            done, _ = await asyncio.wait({read, stop}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if read in done:
            return read.result()
        read.cancel()
        await asyncio.gather(read, return_exceptions=True)
        if not done:
            raise WyomingProblem("idle_timeout", f"no event for {idle:g} s; closing the connection")
        return None  # stopping: an open utterance is finished by run()

    async def _handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self._describe()
        elif Ping.is_type(event.type):
            await self._write(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(event.type):
            if self.session is not None:
                await self._send_error("already_started", "transcribe while audio is streaming: send audio-stop first")
            else:
                self.request, self.rejected = Transcribe.from_event(event), False
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            await self._begin(start.rate, start.width, start.channels)
        elif AudioChunk.is_type(event.type):
            await self._chunk(event)
        elif AudioStop.is_type(event.type):
            await self._finish(send=True)
        else:
            log.debug("Wyoming client %s: ignoring %s", self.peer, event.type)

    async def _describe(self) -> None:
        """``info``, once the model is loaded: Home Assistant keeps the languages it is told when it is set
        up, and while the model loads they are not known (it retries a describe that times out)."""
        while not self.host.ready and not self.surface.stopping.is_set():
            await asyncio.sleep(READY_POLL)
        await self._write(self.surface.info().event())

    # ------------------------------------------------------------- an utterance
    async def _begin(self, rate: int, width: int, channels: int) -> None:
        """Open a session for an utterance. A refused one ends the connection after its ``error``: Home
        Assistant (2024.3) ignores error events and waits for a ``transcript``, so only a closed connection
        tells it at once that none will come."""
        if self.session is not None or self.rejected:
            await self._send_error("already_started", "audio-start while audio is streaming: send audio-stop first")
            return
        self.rejected = True  # until the session is open
        refused = self.surface.server.refusal()
        if refused is not None:
            raise WyomingProblem(refused.code, refused.message)
        if width not in (1, 2, 3, 4) or not 1 <= channels <= 8:
            raise WyomingProblem("invalid_start", f"audio of width {width} bytes and {channels} channels is not "
                                 "supported: send 1-4 byte samples, 1-8 channels (16-bit mono is best)")
        request = self.request
        terms = [*(request.transcript_names or []), *(request.transcript_terms or [])]
        prompt = ", ".join(str(t) for t in terms if t)[:protocol.MAX_PROMPT_CHARS]
        native = width == 2 and channels <= 2
        fields = {"sample_rate": rate, "encoding": "pcm_s16le" if native else "pcm_f32le",
                  "channels": channels if native else 1, "prompt": prompt}
        if request.language:
            fields["language"] = language_code(request.language)
        try:
            params = protocol.parse_start(fields, self.host.default_params())
            self.host.check_start(params)
        except StartError as exc:
            raise WyomingProblem("invalid_start", str(exc)) from exc
        self.session, sink = await open_session(self.host, params, prefix="wyoming-")
        self.format, self.rejected = (rate, width, channels), False
        self.convert = None if native else PcmToFloat(width, channels)
        self.language = params.language
        self.pump = asyncio.ensure_future(self._pump(sink))
        log.info("Wyoming client %s: session %s (%d Hz, %d-byte samples x%d, language %s)", self.peer,
                 self.session.id, rate, width, channels, params.language)

    async def _chunk(self, event: Event) -> None:
        chunk = AudioChunk.from_event(event)
        if self.rejected:
            return
        if self.session is None:  # audio-start is optional for some clients: the first chunk's format starts it
            await self._begin(chunk.rate, chunk.width, chunk.channels)
            if self.session is None:
                return
        if (chunk.rate, chunk.width, chunk.channels) != self.format:
            await self._send_error("invalid_audio", f"audio-chunk format {chunk.rate} Hz/{chunk.width}/"
                                   f"{chunk.channels} differs from audio-start's {self.format}; chunk ignored")
            return
        data = self.convert.convert(chunk.audio) if self.convert else chunk.audio
        if data:
            await self.host.receive(self.session, data)

    async def _finish(self, *, send: bool) -> None:
        """audio-stop (or the end of the connection): decode the rest, send the transcript if ``send``."""
        session, pump = self.session, self.pump
        self.session, self.pump, self.rejected, self.request = None, None, False, Transcribe()
        if session is None:
            return
        await self.host.finalise(session)
        if pump is not None:
            if not send:
                pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _pump(self, sink: QueueSink) -> None:
        """Protocol v1 events of this utterance, as Wyoming events."""
        started = False
        while True:
            item = await sink.get()
            if isinstance(item, Close):
                return
            kind = item.get("type")
            if kind == "transcript":
                self.language = item.get("language") or self.language
                text = "".join(w["word"] for w in item["committed"])
                if text:
                    if not started:
                        started = True
                        await self._write(TranscriptStart(language=self.language).event())
                    await self._write(TranscriptChunk(text=text).event())
            elif kind == "end":
                if started:
                    await self._write(TranscriptStop().event())
                await self._write(Transcript(text=item["text"].strip(), language=self.language).event())
            elif kind == "error":
                await self._send_error(item.get("code", "error"), item.get("message", ""))

    # ------------------------------------------------------------- writing
    async def _write(self, event: Event) -> None:
        if not self.writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await async_write_event(event, self.writer)

    async def _send_error(self, code: str, text: str) -> None:
        self.host.metrics.errors.labels(code=code).inc()
        await self._write(Error(text=text, code=code).event())


async def start_wyoming(server: StreamerServer) -> WyomingSurface:
    """Listen on ``server.wyoming`` (config or ``--wyoming``) and stop with the daemon."""
    cfg = server.settings.server
    surface = WyomingSurface(server, cfg.wyoming, zeroconf=cfg.wyoming_zeroconf)
    await surface.start()
    server.background.append(surface)
    return surface

