"""Committed words -> subtitle cues and .txt/.srt/.vtt text (shared by ``streamer.formats`` and the clients).

Cue grouping matches the web page's ``transcript.js`` so a download from the browser and
``streamer captions --output`` cut the same transcript the same way: a new cue at a long pause,
after a sentence end, or when a cue would exceed six seconds or 84 characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streamer.protocol import is_punctuation


class TimedWord(Protocol):
    word: str
    start: float
    end: float
    probability: float


MAX_CUE_SECONDS = 6.0
MAX_CUE_CHARS = 84
GAP_SECONDS = 1.2
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?$")


@dataclass
class Cue:
    start: float
    end: float
    text: str


def cues(words: Sequence[TimedWord]) -> list[Cue]:
    """Group words into subtitle cues (pause, sentence end, duration and length limits)."""
    out: list[Cue] = []
    for w in words:
        cur = out[-1] if out else None
        if cur is None or _breaks(cur, w):
            out.append(Cue(w.start, w.end, ""))
            cur = out[-1]
        cur.text += w.word
        cur.end = max(cur.end, w.end)
    return [Cue(c.start, c.end, c.text.strip()) for c in out if c.text.strip()]


def _breaks(cur: Cue, w: TimedWord) -> bool:
    if is_punctuation(w.word):  # a word's trailing mark, committed after it: stays with its word
        return False
    return (w.start - cur.end > GAP_SECONDS or w.end - cur.start > MAX_CUE_SECONDS
            or len((cur.text + w.word).strip()) > MAX_CUE_CHARS or bool(_SENTENCE_END.search(cur.text.strip())))


def stamp(seconds: float, sep: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT)."""
    ms = max(0, round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def to_txt(words: Sequence[TimedWord]) -> str:
    return "".join(c.text + "\n" for c in cues(words))


def to_srt(words: Sequence[TimedWord]) -> str:
    return "\n".join(f"{i}\n{stamp(c.start, ',')} --> {stamp(max(c.end, c.start + 0.001), ',')}\n{c.text}\n"
                     for i, c in enumerate(cues(words), 1))


def to_vtt(words: Sequence[TimedWord]) -> str:
    body = "\n".join(f"{stamp(c.start, '.')} --> {stamp(max(c.end, c.start + 0.001), '.')}\n{c.text}\n"
                     for c in cues(words))
    return "WEBVTT\n\n" + body


def parse_srt(text: str) -> list[Cue]:
    """Read SRT back (tests and round trips): strict enough to reject a malformed file."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.strip().splitlines()
        if len(lines) < 3 or not lines[0].strip().isdigit():
            raise ValueError(f"bad SRT block: {block!r}")
        m = re.fullmatch(r"(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})", lines[1].strip())
        if not m:
            raise ValueError(f"bad SRT timing line: {lines[1]!r}")
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        if end < start:
            raise ValueError(f"SRT cue ends before it starts: {lines[1]!r}")
        out.append(Cue(start, end, "\n".join(lines[2:])))
    return out
