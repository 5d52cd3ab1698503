"""Protocol v1 as data: paths, close codes, start parameters, session states and message shapes.

One definition for both sides of the wire (docs/protocol.md is the prose version): the daemon
builds its messages here, the clients (``streamer_clients``) send start messages and read events
with the same names, and nothing here touches sockets, asyncio or the model. A field added to
the protocol is added here once.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Iterable, Mapping, Union

PROTOCOL_VERSION = 1
SAMPLE_RATE = 16_000

LISTEN_PATH = "/v1/listen"
CAPTIONS_PATH = "/v1/captions"

MIN_RATE, MAX_RATE = 8000, 48000
TASKS = ("transcribe", "translate")
START_FIELDS = ("sample_rate", "encoding", "channels", "language", "task", "prompt", "vad_events")
MAX_PROMPT_CHARS = 1000  # before the model's own token limit, which the daemon checks too

# Encoding name -> (numpy dtype, bytes per sample). Little-endian raw PCM only.
ENCODINGS: dict[str, tuple[str, int]] = {"pcm_s16le": ("<i2", 2), "pcm_f32le": ("<f4", 4)}


class CloseCode(IntEnum):
    """Websocket close codes the daemon uses (RFC 6455 and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED = 1003
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012  # the server is draining: resume the stream elsewhere
    TRY_AGAIN = 1013


# Close codes after which reconnecting cannot help (unsupported data, policy, too big).
FATAL_CLOSE_CODES = (CloseCode.UNSUPPORTED, CloseCode.POLICY, CloseCode.TOO_BIG)


class SessionState(str, Enum):
    """The life of one stream: new -> started -> stopping -> ended."""

    NEW = "new"
    STARTED = "started"
    STOPPING = "stopping"
    ENDED = "ended"


@dataclass(frozen=True)
class Close:
    """Close the connection with ``code`` after sending everything queued before it."""

    code: int
    reason: str


Outgoing = Union[dict, Close]


def sample_width(encoding: str) -> int:
    """Bytes per sample of a protocol encoding."""
    try:
        return ENCODINGS[encoding][1]
    except KeyError:
        raise StartError(f"encoding {encoding!r} is not supported: use one of {', '.join(ENCODINGS)}") from None


class StartError(ValueError):
    """A start field that cannot be used; the message tells the client what to send instead."""


@dataclass(frozen=True)
class StartParams:
    """The fields of a ``start`` message (also accepted as URL query parameters)."""

    sample_rate: int = SAMPLE_RATE
    encoding: str = "pcm_s16le"
    channels: int = 1
    language: str | None = None
    task: str = "transcribe"
    prompt: str = ""          # names and terms to spell right: kept in every decode's context
    vad_events: bool = False  # also send ``speech`` messages (speech started / stopped)

    @property
    def frame_bytes(self) -> int:
        """Bytes in one interleaved sample frame; audio is consumed in whole frames."""
        return sample_width(self.encoding) * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.frame_bytes

    def message(self) -> dict:
        """The ``start`` message a client sends (optional fields only when set)."""
        message = {"type": "start", "sample_rate": self.sample_rate, "encoding": self.encoding,
                   "channels": self.channels, "language": self.language, "task": self.task}
        if self.prompt:
            message["prompt"] = self.prompt
        if self.vad_events:
            message["vad_events"] = True
        return message


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
    """None (detect), a code ("en"), or the expected languages to detect among ("en,de" or ["en", "de"])."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "auto", "none")):
        return None
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
    codes = [p.strip().lower() for p in parts if isinstance(p, str)] if parts else []
    if not codes or len(codes) != len(parts) or not all(_is_code(c) for c in codes) or len(codes) > 16:
        raise StartError(f"language must be null (detect), a code such as \"en\", or the languages to detect "
                         f"among such as \"en,de\", got {value!r}")
    return ",".join(dict.fromkeys(codes))


def _is_code(code: str) -> bool:
    return 0 < len(code) <= 16 and code.replace("-", "").replace("_", "").isalpha()


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise StartError(f"{name} must be true or false, got {value!r}")


def _prompt(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StartError(f"prompt must be a string of names and terms, got {value!r}")
    if len(value) > MAX_PROMPT_CHARS:
        raise StartError(f"prompt is {len(value)} characters; the limit is {MAX_PROMPT_CHARS}")
    return value.strip()


def parse_start(fields: Mapping[str, Any], defaults: StartParams | None = None) -> StartParams:
    """Validate start fields (from JSON or URL query strings) over ``defaults``."""
    base = defaults or StartParams()
    rate = _as_int("sample_rate", fields.get("sample_rate", base.sample_rate))
    if not MIN_RATE <= rate <= MAX_RATE:
        raise StartError(f"sample_rate {rate} is out of range: send an integer from {MIN_RATE} to {MAX_RATE}")
    encoding = fields.get("encoding", base.encoding)
    if not isinstance(encoding, str) or encoding not in ENCODINGS:  # a JSON list or object is unhashable
        raise StartError(f"encoding {encoding!r} is not supported: use one of {', '.join(ENCODINGS)}")
    channels = _as_int("channels", fields.get("channels", base.channels))
    if channels not in (1, 2):
        raise StartError(f"channels must be 1 or 2 (interleaved), got {channels}")
    language = _language(fields.get("language", base.language))
    task = fields.get("task", base.task)
    if task not in TASKS:  # a tuple: any JSON value compares
        raise StartError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    prompt = _prompt(fields.get("prompt", base.prompt))
    vad_events = _as_bool("vad_events", fields.get("vad_events", base.vad_events))
    return StartParams(rate, encoding, channels, language, task, prompt, vad_events)


def start_query(query: Mapping[str, str]) -> dict[str, str]:
    """The start fields among a URL's query parameters."""
    return {k: v for k, v in query.items() if k in START_FIELDS}


# --------------------------------------------------------------------------- server messages
def ready(session: str | None, model: str, sample_rate: int = SAMPLE_RATE, **extra: Any) -> dict:
    """``ready``: the session is set up (``source`` is added for caption subscriptions)."""
    return {"type": "ready", "session": session, **extra, "protocol": PROTOCOL_VERSION, "model": model,
            "sample_rate": sample_rate}


def is_punctuation(text: str) -> bool:
    """A committed item that is punctuation alone, with no leading space: the previous word's trailing mark.

    The server commits a word's trailing punctuation separately once the audio after the word
    has been heard; joining all committed ``word`` strings still gives the text.
    """
    return bool(text) and not text[0].isspace() and all(unicodedata.category(c).startswith("P") for c in text)


def word(w: Any) -> dict:
    """One word as sent on the wire (anything with word/start/end/probability)."""
    out = {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
           "probability": round(getattr(w, "probability", 1.0), 3)}
    if is_punctuation(w.word):
        out["punctuation"] = True
    return out


def transcript(seq: int, committed: Iterable[Any], tentative: Iterable[Any], language: str | None,
               audio_seconds: float, *, snapshot: bool = False, final: bool = False) -> dict:
    """``transcript``: newly committed words and the whole current tentative tail.

    ``final`` marks the update that completes an utterance (the speaker paused for the
    daemon's end-of-utterance silence, or the stream stopped): no tentative word is left of it.
    """
    message = {"type": "transcript", "seq": seq, "committed": [word(w) for w in committed],
               "tentative": [word(w) for w in tentative], "language": language,
               "audio_seconds": round(audio_seconds, 3)}
    if snapshot:
        message["snapshot"] = True
    if final:
        message["final"] = True
    return message


def speech(state: str, at: float) -> dict:
    """``speech`` (opt-in with ``"vad_events": true``): the VAD heard speech start or stop at audio time ``at``."""
    return {"type": "speech", "state": state, "at": round(at, 3)}


def reconnect(session: str, resume: str, committed_until: float, seq: int) -> dict:
    """``reconnect``: this server is going away; resume the stream (on any server) with ``resume``,
    replaying the audio from ``committed_until``."""
    return {"type": "reconnect", "session": session, "resume": resume, "committed_until": round(committed_until, 3),
            "seq": seq}


def end(session: str, text: str, audio_seconds: float) -> dict:
    """``end``: every word is committed; ``text`` is the whole committed transcript."""
    return {"type": "end", "session": session, "text": text, "audio_seconds": round(audio_seconds, 3)}


def error(code: str, message: str, **extra: Any) -> dict:
    """``error``: non-fatal unless a close follows it (``retry_after`` seconds on a refusal)."""
    return {"type": "error", "code": code, "message": message, **extra}
