"""The audio of the current utterance, bounded, mapped to the stream timeline.

Cut pauses leave gaps, so the buffer is a list of contiguous *runs*, each knowing where it
starts on the stream's timeline; a position inside a decode window maps back to stream time
through them. Trimming only ever happens at a time the caller chose (a committed word
boundary), never at a Whisper segment end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.hypothesis import SAMPLE_RATE


@dataclass
class _Run:
    start: int                      # stream sample index of the first sample
    parts: list[np.ndarray] = field(default_factory=list)
    length: int = 0

    def samples(self) -> np.ndarray:
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class TimeMap:
    """Window position -> stream time for one decode window (a snapshot of the runs)."""

    runs: tuple[tuple[int, int], ...]  # (stream start sample, length) in window order

    def to_stream(self, window_seconds: float) -> float:
        pos = window_seconds * SAMPLE_RATE
        offset = 0
        for start, length in self.runs:
            if pos <= offset + length:
                return (start + max(pos - offset, 0)) / SAMPLE_RATE
            offset += length
        start, length = self.runs[-1]
        return (start + length + pos - offset) / SAMPLE_RATE

    @property
    def start(self) -> float:
        return self.runs[0][0] / SAMPLE_RATE

    @property
    def end(self) -> float:
        start, length = self.runs[-1]
        return (start + length) / SAMPLE_RATE


class AudioBuffer:
    """Contiguous runs of 16 kHz float32 audio placed on the stream timeline."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []

    def __len__(self) -> int:
        return sum(r.length for r in self._runs)

    @property
    def seconds(self) -> float:
        return len(self) / SAMPLE_RATE

    @property
    def start(self) -> float:
        """Stream time of the first sample (0 when empty)."""
        return self._runs[0].start / SAMPLE_RATE if self._runs else 0.0

    @property
    def end(self) -> float:
        """Stream time just after the last sample."""
        if not self._runs:
            return 0.0
        last = self._runs[-1]
        return (last.start + last.length) / SAMPLE_RATE

    def append(self, samples: np.ndarray, position: int) -> None:
        """Add samples that start at stream sample ``position`` (after everything already here)."""
        if samples.size == 0:
            return
        last = self._runs[-1] if self._runs else None
        if last is not None and position < last.start + last.length:
            raise ValueError("audio must be appended in stream order")
        if last is None or position != last.start + last.length:
            last = _Run(position)
            self._runs.append(last)
        last.parts.append(samples)
        last.length += samples.size

    def window(self, max_seconds: float | None = None) -> tuple[np.ndarray, TimeMap]:
        """The oldest audio, at most ``max_seconds`` of it, and its time map."""
        limit = len(self) if max_seconds is None else min(len(self), int(max_seconds * SAMPLE_RATE))
        pieces, runs, taken = [], [], 0
        for run in self._runs:
            if taken >= limit:
                break
            take = min(run.length, limit - taken)
            pieces.append(run.samples()[:take])
            runs.append((run.start, take))
            taken += take
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return audio.astype(np.float32, copy=False), TimeMap(tuple(runs))

    def trim_before(self, stream_time: float) -> None:
        """Drop all audio before ``stream_time`` (seconds on the stream timeline)."""
        cut = int(round(stream_time * SAMPLE_RATE))
        while self._runs and self._runs[0].start + self._runs[0].length <= cut:
            self._runs.pop(0)
        if self._runs and self._runs[0].start < cut:
            run = self._runs[0]
            drop = cut - run.start
            rest = run.samples()[drop:]
            self._runs[0] = _Run(cut, [rest], rest.size)
