"""Protocol v1 session state machine, without I/O.

One :class:`Session` per ``/v1/listen`` connection (and one for each local capture source).
It turns parsed client messages into calls on the stream core and returns what to send
back: JSON-ready dicts and, for fatal problems, a :class:`Close`. Nothing here touches
sockets, asyncio or the wall clock, so every bad-input case is a plain unit test and the
server stays a thin shell (see docs/protocol.md for the wire format).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import numpy as np

from streamer.audio import ENCODINGS, StreamResampler
from streamer.config import StreamConfig
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest, Hypothesis

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MIN_RATE, MAX_RATE = 8000, 48000
TASKS = ("transcribe", "translate")
START_FIELDS = ("sample_rate", "encoding", "channels", "language", "task")

# Close codes (RFC 6455 and the IANA registry).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013


@dataclass(frozen=True)
class Close:
    """Ask the transport to close the connection (after sending what came before it)."""

    code: int
    reason: str


Outgoing = Union[dict, Close]


@dataclass(frozen=True)
class StartParams:
    """The validated fields of a start message."""

    sample_rate: int = SAMPLE_RATE
    encoding: str = "pcm_s16le"
    channels: int = 1
    language: str | None = None
    task: str = "transcribe"

    @property
    def frame_bytes(self) -> int:
        """Bytes in one interleaved sample frame; audio is consumed in whole frames."""
        return ENCODINGS[self.encoding][1] * self.channels


class StartError(ValueError):
    """A start field that cannot be used; the message tells the client what to send instead."""


def error(code: str, message: str) -> dict:
    """An ``error`` message as sent on the wire."""
    return {"type": "error", "code": code, "message": message}


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise StartError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
            raise StartError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise StartError(f"{name} must be an integer, got {value!r}")
    return value


def _language(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "auto", "none")):
        return None
    if not isinstance(value, str) or not value.replace("-", "").replace("_", "").isalpha() or len(value) > 16:
        raise StartError(f"language must be null (detect) or a code such as \"en\", got {value!r}")
    return value.strip().lower()


def parse_start(fields: Mapping[str, Any], defaults: StartParams | None = None) -> StartParams:
    """Validate start fields (from JSON or URL query strings) over ``defaults``."""
    base = defaults or StartParams()
    rate = _as_int("sample_rate", fields.get("sample_rate", base.sample_rate))
    if not MIN_RATE <= rate <= MAX_RATE:
        raise StartError(f"sample_rate {rate} is out of range: send an integer from {MIN_RATE} to {MAX_RATE}")
    encoding = fields.get("encoding", base.encoding)
    if encoding not in ENCODINGS:
        raise StartError(f"encoding {encoding!r} is not supported: use one of {', '.join(ENCODINGS)}")
    channels = _as_int("channels", fields.get("channels", base.channels))
    if channels not in (1, 2):
        raise StartError(f"channels must be 1 or 2 (interleaved), got {channels}")
    language = _language(fields.get("language", base.language))
    task = fields.get("task", base.task)
    if task not in TASKS:
        raise StartError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return StartParams(rate, encoding, channels, language, task)


def processor_factory(config: StreamConfig, language: str | None, task: str) -> Any:
    """The real stream core with its own silero detector (imported late: it loads torch)."""
    from streamer.core.stream import StreamProcessor

    detector = None
    if config.use_vad:
        from streamer.vad import SileroDetector

        detector = SileroDetector()
    return StreamProcessor(config, detector, language=language, task=task)


ProcessorFactory = Callable[[StreamConfig, "str | None", str], Any]


class Session:
    """The life of one stream: new -> started -> stopping -> ended.

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
        make_processor: ProcessorFactory = processor_factory,
    ) -> None:
        self.id = session_id
        self.config = config
        self.model = model
        self.max_frame_bytes = max_frame_bytes
        self.defaults = defaults or StartParams(language=config.language, task=config.task)
        self.autostart = autostart
        self._make_processor = make_processor
        self.state = "new"
        self.params: StartParams | None = None
        self.processor: Any = None
        self._resampler: StreamResampler | None = None
        self._remainder = b""
        self._in_flight = False
        self._warned_nonfinite = False
        self._language: str | None = None
        self.received_bytes = 0
        self.errors: dict[str, int] = {}

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
        if self.state != "new":
            return self._error("already_started", "this session has already started; a second start is "
                               "ignored (open a new connection for a new stream)")
        try:
            params = parse_start(fields, self.defaults)
        except StartError as exc:
            return self._error("invalid_start", str(exc), Close(CLOSE_UNSUPPORTED, "invalid start"))
        self.params = params
        self._resampler = StreamResampler(params.sample_rate, params.channels)
        self.processor = self._make_processor(self.config, params.language, params.task)
        self.state = "started"
        log.info("session %s started: %d Hz %s x%d language=%s task=%s", self.id, params.sample_rate,
                 params.encoding, params.channels, params.language, params.task)
        return [self.ready_message()]

    def ready_message(self) -> dict:
        return {"type": "ready", "session": self.id, "protocol": PROTOCOL_VERSION, "model": self.model,
                "sample_rate": self.params.sample_rate if self.params else SAMPLE_RATE}

    def receive_binary(self, data: bytes) -> list[Outgoing]:
        """Raw PCM in the session's encoding; partial samples wait for the next frame."""
        if len(data) > self.max_frame_bytes:
            return self._error("frame_too_large", f"binary frame of {len(data)} bytes exceeds the limit of "
                               f"{self.max_frame_bytes}; send smaller frames", Close(CLOSE_TOO_BIG, "frame too large"))
        out: list[Outgoing] = []
        if self.state == "new":
            if not self.autostart:
                return self._error("not_started", 'audio arrived before the start message; send {"type": '
                                   '"start", ...} first', Close(CLOSE_POLICY, "audio before start"))
            out += self.start({})
        if self.state != "started":
            return out + self._error("stopped", "audio after stop is ignored")
        self.received_bytes += len(data)
        samples = self._decode_pcm(data, out)
        if samples.size:
            self.feed(self._resampler.process(samples))
        return out

    def feed(self, samples: np.ndarray) -> None:
        """16 kHz mono float32 into the stream core (local capture calls this directly)."""
        if samples.size:
            self.processor.feed(samples)

    def _decode_pcm(self, data: bytes, out: list[Outgoing]) -> np.ndarray:
        params = self.params
        data = self._remainder + data
        cut = len(data) - len(data) % params.frame_bytes
        self._remainder = data[cut:]
        dtype, width = ENCODINGS[params.encoding]
        raw = np.frombuffer(data[:cut], dtype=dtype)
        if params.encoding == "pcm_s16le":
            return raw.astype(np.float32) / 32768.0
        samples = raw.astype(np.float32)
        finite = np.isfinite(samples)
        if not finite.all():
            samples = np.where(finite, samples, np.float32(0.0))
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                out += self._error("invalid_audio", "pcm_f32le audio contains NaN or infinite samples; they "
                                   "were replaced by silence (this is reported once per session)")
        np.clip(samples, -1.0, 1.0, out=samples)
        return samples

    def stop(self) -> list[Outgoing]:
        """Client asked to stop: decode everything left; :meth:`complete` sends ``end`` when done."""
        if self.state == "new":
            self.state = "ended"
            return [self.end_message(), Close(CLOSE_NORMAL, "stopped")]
        if self.state != "started":
            return []
        self.state = "stopping"
        if self._remainder:
            log.info("session %s: dropping %d trailing bytes (not a whole sample)", self.id, len(self._remainder))
            self._remainder = b""
        tail = self._resampler.flush()
        self.feed(tail)
        self.processor.finish()
        return self._maybe_end()

    def _maybe_end(self) -> list[Outgoing]:
        if self.state == "stopping" and not self._in_flight and self.processor.done:
            self.state = "ended"
            log.info("session %s ended: %.1f s of audio", self.id, self.audio_seconds)
            return [self.end_message(), Close(CLOSE_NORMAL, "stopped")]
        return []

    def end_message(self) -> dict:
        text = self.processor.committed_text if self.processor is not None else ""
        return {"type": "end", "session": self.id, "text": text, "audio_seconds": round(self.audio_seconds, 3)}

    # ----------------------------------------------------------------- scheduler side
    def next_request(self) -> DecodeRequest | None:
        """The next window to decode, if one is due (at most one in flight)."""
        if self.state not in ("started", "stopping") or self._in_flight:
            return None
        request = self.processor.next_request()
        if request is not None:
            self._in_flight = True
        return request

    def complete(self, hypothesis: Hypothesis) -> list[Outgoing]:
        """The engine's answer for the in-flight request: a transcript update and maybe ``end``."""
        self._in_flight = False
        event = self.processor.complete(hypothesis)
        out: list[Outgoing] = []
        if event is not None:
            out.append(self.transcript_message(event))
        return out + self._maybe_end()

    def fail(self, exc: BaseException) -> list[Outgoing]:
        """The engine raised for this session's window: report and close this session only."""
        self._in_flight = False
        self.state = "ended"
        return self._error("internal_error", f"decoding failed ({type(exc).__name__}: {exc}); the session "
                           "was closed, reconnect to start a new one", Close(CLOSE_INTERNAL, "decode failed"))

    def transcript_message(self, event: Any) -> dict:
        message = dict(event.to_message())
        message["type"] = "transcript"
        self._language = message.get("language") or self._language
        return message

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
        return {"type": "transcript", "seq": 0, "snapshot": True,
                "committed": [w.to_dict() for w in committed], "tentative": [w.to_dict() for w in tentative],
                "language": self._language,
                "audio_seconds": round(self.audio_seconds, 3)}

    def end_now(self) -> list[Outgoing]:
        """Stopping with nothing left to decode: send ``end`` even if the core still holds words."""
        if self.state != "stopping" or self._in_flight:
            return []
        if not self.processor.done:
            log.warning("session %s: stream core not done after stop with nothing due; ending anyway", self.id)
        self.state = "ended"
        return [self.end_message(), Close(CLOSE_NORMAL, "stopped")]

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
        return self._in_flight

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @property
    def active(self) -> bool:
        """Has (or may get) work for the scheduler."""
        return self.state in ("started", "stopping")

    def _error(self, code: str, message: str, close: Close | None = None) -> list[Outgoing]:
        self.errors[code] = self.errors.get(code, 0) + 1
        log.info("session %s: %s: %s", self.id, code, message)
        out: list[Outgoing] = [error(code, message)]
        if close is not None:
            if self.state == "new":
                self.state = "ended"
            out.append(close)
        return out
