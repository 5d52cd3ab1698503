"""OpenAI's shapes for what the daemon answers: error bodies and the transcription response formats.

Pure functions from committed words to bodies, shared by the REST surface (``openai_rest``) and
the realtime one (``openai_realtime``); the subtitle formats reuse ``streamer.subtitles``, so a
``response_format=srt`` answer cuts cues exactly as ``streamer transcribe --format srt`` does.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from aiohttp import web

from streamer.formats import cue_words
from streamer.hypothesis import Word
from streamer.protocol import is_punctuation
from streamer.subtitles import cues, to_srt, to_vtt

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")

# HTTP status -> OpenAI's error "type"
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
               404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_exceeded",
               500: "server_error", 503: "server_error"}


def error_body(message: str, status: int = 400, *, param: str | None = None, code: str | None = None) -> dict:
    """``{"error": {...}}`` as OpenAI sends it: the SDKs read ``message``, ``type``, ``param`` and ``code``."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, status, param=param, code=code), status=status,
                             headers={"Cache-Control": "no-store", **(headers or {})})


def merged_words(words: Sequence[Word]) -> list[Word]:
    """Committed items as OpenAI's words: a trailing mark the daemon committed on its own joins its word."""
    out: list[Word] = []
    for w in words:
        if out and is_punctuation(w.word):
            last = out[-1]
            out[-1] = Word(last.word + w.word, last.start, max(last.end, w.end), last.probability)
        else:
            out.append(w)
    return out


def text_of(words: Sequence[Word]) -> str:
    return "".join(w.word for w in words).strip()


@lru_cache(maxsize=1)
def _language_names() -> dict[str, str]:
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES
    except ImportError:  # only a nicety: codes are returned as they are
        return {}
    return dict(LANGUAGES)


def language_name(code: str | None) -> str:
    """``en`` -> ``english``: verbose_json names the language in full, as OpenAI does."""
    if not code:
        return ""
    return _language_names().get(code, code)


def usage(seconds: float) -> dict:
    return {"type": "duration", "seconds": math.ceil(seconds)}


def segments(words: Sequence[Word], temperature: float) -> list[dict]:
    """verbose_json segments: the subtitle cues, with per-segment scores from the words' probabilities."""
    out = []
    remaining = list(words)
    for i, cue in enumerate(cues(words)):
        count = len(cue_words(cue, remaining)) or 1
        chunk, remaining = remaining[:count], remaining[count:]
        probabilities = [max(w.probability, 1e-6) for w in chunk]
        text = "".join(w.word for w in chunk)
        out.append({"id": i, "seek": int(cue.start * 100), "start": round(cue.start, 3), "end": round(cue.end, 3),
                    "text": text, "tokens": [], "temperature": temperature,
                    "avg_logprob": round(sum(math.log(p) for p in probabilities) / len(probabilities), 4),
                    "compression_ratio": round(_compression_ratio(text), 4), "no_speech_prob": 0.0})
    return out


def _compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def render(fmt: str, words: Sequence[Word], *, text: str, language: str | None, duration: float,
           task: str, temperature: float, word_times: bool) -> web.Response:
    """The answer to a finished transcription in ``response_format`` ``fmt``."""
    if fmt == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    if fmt == "srt":
        return web.Response(text=to_srt(words), content_type="text/plain")
    if fmt == "vtt":
        return web.Response(text=to_vtt(words), content_type="text/vtt")
    body: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        body = {"task": task, "language": language_name(language), "duration": round(duration, 3), "text": text,
                "segments": segments(words, temperature)}
        if word_times:
            body["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                             for w in merged_words(words)]
    body["usage"] = usage(duration)
    return web.json_response(body)


def sse(event: dict) -> bytes:
    """One server-sent event as the OpenAI SDKs read it (``data:`` only)."""
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
