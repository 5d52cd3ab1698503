"""Deepgram live query parameters, read into what the session host understands.

Deepgram's streaming API takes its options as URL query parameters on the websocket. The ones
that mean something for a Whisper stream are mapped (audio format, language, interim results,
punctuation, endpointing, utterance ends, VAD events, key terms as the vocabulary prompt);
model-specific ones (``model``, ``smart_format`` beyond punctuation, ``diarize``...) are accepted
and ignored, as a client written for Deepgram sends them anyway. A value that cannot work is a
:class:`BadRequest`, answered before the upgrade with HTTP 400 as Deepgram does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from streamer import protocol

MIN_ENDPOINTING, MAX_ENDPOINTING = 0.1, 5.0  # the stream core's end_silence range, seconds


class BadRequest(ValueError):
    """A query parameter this server cannot honour; the message says what to send instead."""


@dataclass(frozen=True)
class DeepgramParams:
    sample_rate: int
    channels: int
    language: str | None          # None: detect (Deepgram's ``multi``)
    interim_results: bool = False
    punctuate: bool = False
    endpointing: float | None = None  # seconds of silence that end an utterance; None: the daemon's setting
    speech_final: bool = True         # endpointing=false: never mark speech_final
    utterance_end: float | None = None  # seconds (utterance_end_ms)
    vad_events: bool = False
    prompt: str = ""
    model: str = ""


def _flag(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadRequest(f"{name} must be true or false, got {value!r}")


def _int(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {number}")
    return number


def _language(value: str | None) -> str | None:
    """``en-US`` -> ``en``; ``multi`` (and nothing) -> detect."""
    if not value or value.lower() == "multi":
        return None
    return value.replace("_", "-").split("-")[0].lower()


def _terms(query) -> str:
    """``keyterm`` and ``keywords`` (``word:boost``) as names and terms for the prompt."""
    getall = getattr(query, "getall", None)
    values = [*(getall("keyterm", []) if getall else [query.get("keyterm")]),
              *(getall("keywords", []) if getall else [query.get("keywords")])]
    terms = [v.rsplit(":", 1)[0] if ":" in v else v for v in values if v]
    return ", ".join(t.strip() for t in terms if t.strip())[:protocol.MAX_PROMPT_CHARS]


def parse_query(query: Mapping[str, str]) -> DeepgramParams:
    """Read a ``/v1/listen`` query as Deepgram defines it (raw audio: ``encoding`` and ``sample_rate``)."""
    encoding = query.get("encoding")
    if not encoding:
        raise BadRequest("encoding is required: this server takes raw audio, encoding=linear16 with sample_rate "
                         "(containers such as WAV or Ogg are not supported on the live API here)")
    if encoding != "linear16":
        raise BadRequest(f"encoding {encoding!r} is not supported here: send encoding=linear16 (16-bit "
                         "little-endian PCM)")
    rate = _int(query, "sample_rate", protocol.MIN_RATE, protocol.MAX_RATE)
    if rate is None:
        raise BadRequest("sample_rate is required with encoding=linear16")
    channels = _int(query, "channels", 1, 2) or 1
    if _flag(query, "multichannel"):
        raise BadRequest("multichannel=true is not supported: channels are mixed into one transcript")
    endpointing = query.get("endpointing", "")
    speech_final, silence = True, None
    if endpointing.lower() == "false":
        speech_final = False
    elif endpointing and endpointing.lower() != "true":
        ms = _int(query, "endpointing", 0, 60_000)
        silence = min(max(ms / 1000, MIN_ENDPOINTING), MAX_ENDPOINTING)
    utterance_end = _int(query, "utterance_end_ms", 1, 60_000)
    return DeepgramParams(
        sample_rate=rate, channels=channels, language=_language(query.get("language")),
        interim_results=_flag(query, "interim_results"),
        punctuate=_flag(query, "punctuate") or _flag(query, "smart_format"),
        endpointing=silence, speech_final=speech_final,
        utterance_end=utterance_end / 1000 if utterance_end else None,
        vad_events=_flag(query, "vad_events"), prompt=_terms(query), model=query.get("model", ""))
