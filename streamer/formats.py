"""Transcript output formats for committed words: timestamped text, txt, srt, vtt, jsonl.

Caption segmentation (a new cue at a long pause, after a sentence end, or when a cue would
grow past its duration or length limit) is shared with the client library, so that
``streamer transcribe --format srt`` and ``streamer captions --output x.srt`` cut the same
transcript into the same cues.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence, TextIO

from streamer.hypothesis import Word
from streamer.subtitles import Cue, cues, stamp, to_srt, to_txt, to_vtt

__all__ = ["FORMATS", "Cue", "cues", "render", "format_for_path", "write"]


def to_timestamped(words: Sequence[Word]) -> str:
    """One caption line per cue, prefixed with its time span: the default terminal output."""
    return "".join(f"[{stamp(c.start, '.')} --> {stamp(c.end, '.')}] {c.text}\n" for c in cues(words))


def to_jsonl(words: Sequence[Word]) -> str:
    """One JSON object per cue with its words: machine-readable and lossless."""
    lines = []
    remaining = list(words)
    for cue in cues(words):
        count = len(cue_words(cue, remaining))
        chunk, remaining = remaining[:count], remaining[count:]
        lines.append(json.dumps({"start": round(cue.start, 3), "end": round(cue.end, 3), "text": cue.text,
                                 "words": [w.to_dict() if isinstance(w, Word) else _word_dict(w) for w in chunk]}))
    return "".join(line + "\n" for line in lines)


def cue_words(cue: Cue, words: Sequence[Word]) -> list[Word]:
    """The leading words of ``words`` that make up ``cue`` (cues are built from words in order)."""
    text, out = "", []
    for w in words:
        if text.strip() == cue.text:
            break
        text += w.word
        out.append(w)
    return out


def _word_dict(w) -> dict:
    return {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
            "probability": round(getattr(w, "probability", 1.0), 3)}


FORMATS: dict[str, Callable[[Sequence[Word]], str]] = {
    "text": to_timestamped, "txt": to_txt, "srt": to_srt, "vtt": to_vtt, "jsonl": to_jsonl}


def render(words: Sequence[Word], fmt: str = "text") -> str:
    """The transcript of ``words`` in format ``fmt`` (one of :data:`FORMATS`)."""
    try:
        return FORMATS[fmt](words)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}") from None


def format_for_path(path: str | Path) -> str | None:
    """The format a file name's extension names (``.srt`` -> ``srt``), if any."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS and suffix != "text" else None


def write(words: Sequence[Word], fmt: str, out: TextIO | str | Path) -> None:
    """Write the transcript to a stream or a file path."""
    text = render(words, fmt)
    if isinstance(out, (str, Path)):
        Path(out).write_text(text, encoding="utf-8")
    else:
        out.write(text)
