"""Protocol v1 session state machine, without I/O.

One :class:`Session` per stream: a ``/v1/listen`` connection, a local capture source, or a
compatibility adapter's request. It turns client messages into calls on the stream core and
returns what to send back: JSON-ready dicts and, for fatal problems, a
:class:`~streamer.protocol.Close`. Nothing here touches sockets, asyncio or the wall clock, so
every bad-input case is a plain unit test and the transports stay thin.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from streamer import protocol
from streamer.audio import PcmDecoder, StreamResampler
from streamer.config import StreamConfig
from streamer.daemon.resume import ResumeError, ResumeState
from streamer.hypothesis import DecodeRequest, Hypothesis
from streamer.protocol import Close, CloseCode, Outgoing, SessionState, StartError, StartParams

log = logging.getLogger(__name__)


def stream_core(config: StreamConfig, params: StartParams) -> Any:
    """The stream core with its own detector (imported late: silero loads torch)."""
    from streamer.core.stream import StreamProcessor
    from streamer.vad import detector_for

    return StreamProcessor(config, detector_for(config), language=params.language, task=params.task,
                           vocabulary=params.prompt)


StartCheck = Callable[[StartParams], None]  # raises StartError for what this daemon's model cannot do


class Resumer(Protocol):
    """Checks resume claims and signs a stream's state into tokens (see streamer.daemon.resume)."""

    def verify(self, claim: Mapping[str, Any]) -> ResumeState: ...

    def token(self, state: ResumeState) -> str: ...


class Session:
    """The life of one stream (:class:`~streamer.protocol.SessionState`).

    The scheduler drives decoding through :meth:`next_request` / :meth:`complete`; the
    transport feeds client messages through :meth:`receive_text` / :meth:`receive_binary`
    and sends whatever they return, in order.
    """

    def __init__(
        self,
        session_id: str,
        config: StreamConfig,
        *,
        model: str = "",
        max_frame_bytes: int = 1 << 20,
        defaults: StartParams | None = None,
        autostart: bool = False,
        check_start: StartCheck | None = None,
        resumer: Resumer | None = None,
    ) -> None:
        self.id = session_id
        self.config = config
        self.model = model
        self.max_frame_bytes = max_frame_bytes
        self.defaults = defaults or StartParams(language=config.language, task=config.task)
        self.autostart = autostart
        # a file fed as fast as the engine takes it (not a real-time stream): it shares the scheduler's
        # rounds but not the capacity measure that admits live streams
        self.batch = False
        self._check_start = check_start
        self._resumer = resumer
        self.resumed: ResumeState | None = None
        self._gone = False  # failed or abandoned (not a client's stop)
        self.state = SessionState.NEW
        self.params: StartParams | None = None
        self.processor: Any = None
        self._pcm: PcmDecoder | None = None
        self._resampler: StreamResampler | None = None
        self._warned_nonfinite = False
        self._language: str | None = None
        # set (core thread) once the in-flight update is superseded; the engine thread reads it between steps
        self._given_up = threading.Event()

    # ----------------------------------------------------------------- client input
    def receive_text(self, text: str) -> list[Outgoing]:
        """A text frame: start, stop, or a protocol error."""
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return self._error("invalid_json", f"text frames must be JSON objects ({exc.msg}); "
                               'send e.g. {"type": "start"} or {"type": "stop"}')
        if not isinstance(message, dict):
            return self._error("invalid_json", "text frames must be JSON objects with a \"type\" field")
        kind = message.get("type")
        if kind == "start":
            return self.start(message)
        if kind == "stop":
            return self.stop()
        return self._error("unknown_type", f"unknown message type {kind!r}: client messages are "
                           "\"start\" and \"stop\" (audio goes in binary frames)")

    def start(self, fields: Mapping[str, Any]) -> list[Outgoing]:
        """Validate the start fields, build the resampler and stream core, and say ready."""
        if self.state is not SessionState.NEW:
            return self._error("already_started", "this session has already started; a second start is "
                               "ignored (open a new connection for a new stream)")
        try:
            params = protocol.parse_start(fields, self.defaults)
            if self._check_start is not None:
                self._check_start(params)
        except StartError as exc:
            return self._error("invalid_start", str(exc), Close(CloseCode.UNSUPPORTED, "invalid start"))
        self.params = params
        self._pcm = PcmDecoder(params.encoding, params.channels)
        self._resampler = StreamResampler(params.sample_rate, params.channels)
        self.processor = stream_core(self.config, params)
        out = self._resume(fields.get("resume")) if fields.get("resume") is not None else []
        self.state = SessionState.STARTED
        log.info("session %s %s: %d Hz %s x%d language=%s task=%s", self.id,
                 "resumed" if self.resumed else "started", params.sample_rate, params.encoding, params.channels,
                 params.language, params.task)
        return out + [self.ready_message()]

    def _resume(self, claim: Any) -> list[Outgoing]:
        """Continue another connection's stream; a claim that fails gives an error and a fresh session."""
        try:
            if self._resumer is None or not isinstance(claim, Mapping):
                raise ResumeError("resume_invalid", "resume must be an object with the session, its token, "
                                  "seq and committed_until")
            state = self._resumer.verify(claim)
        except ResumeError as exc:
            return self._error(exc.code, f"{exc}; this connection continues as a new session")
        self.resumed = state
        self.id = state.session
        self.processor.resume(state.committed_until, state.seq, state.tail, state.held,
                              context=float(claim.get("context_seconds", 0.0)))
        return []

    def ready_message(self) -> dict:
        extra: dict[str, Any] = {}
        if self.resumed is not None:
            extra = {"resumed": True, "seq": self.resumed.seq, "committed_until": self.resumed.committed_until}
        if self._resumer is not None and self.processor is not None:
            extra["resume"] = self._resumer.token(self._state())
        return protocol.ready(self.id, self.model, self.params.sample_rate if self.params else protocol.SAMPLE_RATE,
                              **extra)

    def _state(self) -> ResumeState:
        """Where this stream stands now, for its next resume token."""
        processor = self.processor
        return ResumeState(self.id, processor.seq, processor.committed_until(), processor.held_mark,
                           processor.committed_text[-200:] or (self.resumed.tail if self.resumed else ""))

    def receive_binary(self, data: bytes) -> list[Outgoing]:
        """Raw PCM in the session's encoding; partial samples wait for the next frame."""
        if len(data) > self.max_frame_bytes:
            return self._error("frame_too_large", f"binary frame of {len(data)} bytes exceeds the limit of "
                               f"{self.max_frame_bytes}; send smaller frames", Close(CloseCode.TOO_BIG, "frame too large"))
        out: list[Outgoing] = []
        if self.state is SessionState.NEW:
            if not self.autostart:
                return self._error("not_started", 'audio arrived before the start message; send {"type": '
                                   '"start", ...} first', Close(CloseCode.POLICY, "audio before start"))
            out += self.start({})
        if self._gone:
            return out  # failed or abandoned: its close is on the way
        if self.state is not SessionState.STARTED:
            return out + self._error("stopped", "audio after stop is ignored")
        samples = self._pcm.decode(data)
        if self._pcm.nonfinite and not self._warned_nonfinite:
            self._warned_nonfinite = True
            out += self._error("invalid_audio", "pcm_f32le audio contains NaN or infinite samples; they were "
                               "replaced by silence (this is reported once per session)")
        return out + self.feed(self._resampler.process(samples))

    def feed(self, samples: np.ndarray) -> list[Outgoing]:
        """16 kHz mono float32 into the stream core (local capture calls this directly).

        Returns the ``speech`` messages the VAD produced, for clients that asked for them.
        """
        if samples.size:
            self.processor.feed(samples)
            self._note_superseded()
        return self._boundaries()

    def _note_superseded(self) -> None:
        """Tell the engine that the in-flight update may stop: a pause or final decode now due commits more."""
        if self.processor.superseded:
            self._given_up.set()

    def _boundaries(self) -> list[Outgoing]:
        boundaries = self.processor.take_boundaries()
        return [b.to_message() for b in boundaries] if self.params.vad_events else []

    def stop(self) -> list[Outgoing]:
        """Client asked to stop: decode everything left; :meth:`complete` sends ``end`` when done."""
        if self.state is SessionState.NEW:
            self.state = SessionState.ENDED
            return [self.end_message(), Close(CloseCode.NORMAL, "stopped")]
        if self.state is not SessionState.STARTED:
            return []
        self.state = SessionState.STOPPING
        dropped = self._pcm.flush()
        if dropped:
            log.info("session %s: dropping %d trailing bytes (not a whole sample)", self.id, dropped)
        out = self.feed(self._resampler.flush())
        self.processor.finish()
        self._note_superseded()
        return out + self._boundaries() + self.poll() + self._maybe_end()

    def _maybe_end(self) -> list[Outgoing]:
        if self.state is SessionState.STOPPING and self.processor.done:
            self.state = SessionState.ENDED
            log.info("session %s ended: %.1f s of audio", self.id, self.audio_seconds)
            return [self.end_message(), Close(CloseCode.NORMAL, "stopped")]
        return []

    def end_message(self) -> dict:
        text = self.processor.committed_text if self.processor is not None else ""
        return protocol.end(self.id, text, self.audio_seconds)

    # ----------------------------------------------------------------- scheduler side
    def next_request(self) -> DecodeRequest | None:
        """The next window to decode, if one is due (the core keeps at most one in flight)."""
        if not self.active:
            return None
        request = self.processor.next_request()
        if request is None:
            return None
        self._given_up = threading.Event()
        return replace(request, abandoned=self._given_up.is_set)

    def gave_up(self) -> None:
        """The engine stopped this session's superseded update: the decode due in its place comes next."""
        self.processor.cancel()

    def complete(self, hypothesis: Hypothesis) -> list[Outgoing]:
        """The engine's answer for the in-flight request: a transcript update and maybe ``end``."""
        event = self.processor.complete(hypothesis)
        if self.state is SessionState.ENDED:  # abandoned while this decode ran: its client is gone
            return []
        out: list[Outgoing] = [self._transcript(event)] if event is not None else []
        return out + self._maybe_end()

    def poll(self) -> list[Outgoing]:
        """A transcript update that waited for time rather than a decode (see ``StreamProcessor.poll``)."""
        event = self.processor.poll() if self.active else None
        return [self._transcript(event)] if event is not None else []

    def _transcript(self, event) -> dict:
        self._language = event.language or self._language
        message = event.to_message()
        if self._resumer is not None:
            message["committed_until"] = round(self.processor.committed_until(), 3)
            message["resume"] = self._resumer.token(self._state())
        return message

    def fail(self, exc: BaseException) -> list[Outgoing]:
        """The engine raised for this session's window: report and close this session only."""
        self.processor.cancel()
        self.state, self._gone = SessionState.ENDED, True
        return self._error("internal_error", f"decoding failed ({type(exc).__name__}: {exc}); the session "
                           "was closed, reconnect to start a new one", Close(CloseCode.INTERNAL, "decode failed"))

    @property
    def resumable(self) -> bool:
        """A live stream whose client can carry on elsewhere with a resume token."""
        return self._resumer is not None and self.state is SessionState.STARTED

    def reconnect_message(self) -> dict:
        state = self._state()
        return protocol.reconnect(self.id, self._resumer.token(state), state.committed_until, state.seq)

    def abandon(self) -> None:
        """Another connection resumed this stream: stop here, decode nothing more, send nothing."""
        self.state, self._gone = SessionState.ENDED, True

    def snapshot_message(self, max_words: int = 40) -> dict | None:
        """For a subscriber joining mid-stream: the latest committed words and the tentative tail.

        Marked ``"snapshot": true`` with ``seq`` 0; the words were committed before the
        subscriber joined, so from its point of view they are still new and never repeated.
        """
        if self.processor is None:
            return None
        committed = self.processor.committed_words[-max_words:]
        tentative = self.processor.tentative_words
        if not committed and not tentative:
            return None
        return protocol.transcript(0, committed, tentative, self._language, self.audio_seconds, snapshot=True)

    def end_now(self) -> list[Outgoing]:
        """Stopping with nothing left to decode: send ``end`` even if the core still holds words."""
        if self.state is not SessionState.STOPPING or self.in_flight:
            return []
        if not self.processor.done:
            log.warning("session %s: stream core not done after stop with nothing due; ending anyway", self.id)
        out = self.poll()
        self.state = SessionState.ENDED
        return out + [self.end_message(), Close(CloseCode.NORMAL, "stopped")]

    # ----------------------------------------------------------------- state
    @property
    def audio_seconds(self) -> float:
        return float(self.processor.audio_seconds) if self.processor is not None else 0.0

    @property
    def decoded_seconds(self) -> float:
        return float(self.processor.decoded_seconds) if self.processor is not None else 0.0

    @property
    def lag(self) -> float:
        """Audio received but not yet decoded, seconds: the per-session lag metric."""
        return max(0.0, self.audio_seconds - self.decoded_seconds)

    @property
    def in_flight(self) -> bool:
        return self.processor is not None and self.processor.in_flight

    @property
    def reading(self) -> bool:
        """The transport should keep reading client frames: not after ``stop``.

        A session that failed or was abandoned is ENDED on the core thread before its error and
        close reach the transport; the transport stops when that close arrives, not before, so
        the error is never lost.
        """
        return self.state is not SessionState.STOPPING

    @property
    def ended(self) -> bool:
        return self.state is SessionState.ENDED

    @property
    def active(self) -> bool:
        """Has (or may get) work for the scheduler."""
        return self.state in (SessionState.STARTED, SessionState.STOPPING)

    def _error(self, code: str, message: str, close: Close | None = None) -> list[Outgoing]:
        log.info("session %s: %s: %s", self.id, code, message)
        out: list[Outgoing] = [protocol.error(code, message)]
        if close is not None:
            if self.state is SessionState.NEW:
                self.state = SessionState.ENDED
            out.append(close)
        return out
