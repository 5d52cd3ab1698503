"""What the stream core tells the outside world after each update."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamer import protocol
from streamer.hypothesis import Word


@dataclass(frozen=True)
class TranscriptEvent:
    """One update of a stream's transcript.

    ``committed`` holds only the words committed by this update (never repeated, never
    changed later); ``tentative`` is the whole current unstable tail and replaces the previous
    one. Word times are seconds on the stream's audio timeline (0 = first sample received).
    """

    seq: int
    committed: tuple[Word, ...]
    tentative: tuple[Word, ...]
    language: str | None
    audio_seconds: float
    final: bool = False  # the utterance ended and every word of it is committed

    def to_message(self) -> dict:
        """The protocol v1 ``transcript`` message."""
        return protocol.transcript(self.seq, self.committed, self.tentative, self.language, self.audio_seconds,
                                   final=self.final)


@dataclass(frozen=True)
class SpeechBoundary:
    """The VAD's view of the stream: speech ``started`` (at its first window) or ``stopped`` (at its end)."""

    kind: Literal["started", "stopped"]
    at: float  # seconds on the stream's audio timeline

    def to_message(self) -> dict:
        return protocol.speech(self.kind, self.at)
