"""What the stream core tells the outside world after each update."""

from __future__ import annotations

from dataclasses import dataclass

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

    def to_message(self) -> dict:
        """The protocol v1 ``transcript`` message."""
        return protocol.transcript(self.seq, self.committed, self.tentative, self.language, self.audio_seconds)
