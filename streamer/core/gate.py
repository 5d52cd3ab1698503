"""VAD gating: which audio enters the utterance buffer, and when an utterance ends.

Works on per-window speech probabilities with hysteresis (speech above ``threshold``,
silence below ``threshold - 0.15``, as silero-vad's own segmenter does):

* Before speech, the last ``pad`` seconds are held back, so the onset of the first
  syllable is kept when speech starts.
* During a pause inside an utterance, the first ``pad`` seconds are kept (the end of the
  last syllable), the rest is held; when speech resumes only the last ``pad`` seconds of the
  pause go in. Long pauses are thus cut out of the buffer.
* A pause of ``end_silence`` closes the utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from streamer.hypothesis import SAMPLE_RATE

HYSTERESIS = 0.15


@dataclass
class GateStep:
    """What one window did: audio to append (stream position, samples), and transitions."""

    append: list[tuple[int, np.ndarray]] = field(default_factory=list)
    opened: bool = False
    closed: bool = False


class SpeechGate:
    """Per-stream VAD state machine over consecutive windows."""

    def __init__(self, threshold: float, end_silence: float, pad: float) -> None:
        self.threshold = threshold
        self.neg_threshold = max(threshold - HYSTERESIS, 0.01)
        self.end_silence = int(end_silence * SAMPLE_RATE)
        self.pad = int(pad * SAMPLE_RATE)
        self.in_utterance = False
        self.speech_samples = 0          # speech-classified samples in the open utterance
        self._silence = 0                # length of the current pause (samples)
        self._tail_kept = 0              # pause samples appended as trailing padding
        self._held: deque[tuple[int, np.ndarray]] = deque()
        self._held_len = 0
        self._regions: list[list[int]] = []  # [start, end) speech spans in samples; end -1 = open
        self._position = 0

    def push(self, position: int, samples: np.ndarray, prob: float) -> GateStep:
        """Consume one window starting at stream sample ``position``."""
        self._position = position + samples.size
        step = GateStep()
        if not self.in_utterance:
            if prob >= self.threshold:
                self._open(position, samples, step)
            else:
                self._hold(position, samples)
            return step
        if prob >= self.threshold or (prob >= self.neg_threshold and self._silence == 0):
            self._speech(position, samples, step)
        else:
            self._pause(position, samples, step)
        return step

    def open_at(self, start: int) -> None:
        """Open an utterance whose speech began at stream sample ``start``, before now.

        For speech the detector missed but a probe decode found: the caller already holds that
        audio, so nothing held here is appended.
        """
        self.in_utterance = True
        self.speech_samples = self._position - start
        self._silence = 0
        self._tail_kept = 0
        self._take_held()
        self._regions.append([start, -1])

    def close(self) -> bool:
        """End the open utterance (end of stream); True if one was open."""
        was_open = self.in_utterance
        if was_open:
            self._end_region(self._position)
        self.in_utterance = False
        self._silence = 0
        return was_open

    @property
    def pause_samples(self) -> int:
        """Length of the pause the open utterance is in now (0 while speech goes on)."""
        return self._silence if self.in_utterance else 0

    @property
    def pause_start(self) -> float:
        """Stream time where the current pause began (the end of the last speech span)."""
        if self._regions and self._regions[-1][1] >= 0:
            return self._regions[-1][1] / SAMPLE_RATE
        return self._position / SAMPLE_RATE

    def speech_regions(self) -> list[tuple[float, float]]:
        """Speech spans on the stream timeline, in seconds (an open span ends now)."""
        return [(a / SAMPLE_RATE, (b if b >= 0 else self._position) / SAMPLE_RATE) for a, b in self._regions]

    def forget_before(self, stream_time: float) -> None:
        """Drop speech spans that ended before ``stream_time`` (keeps memory flat)."""
        cut = stream_time * SAMPLE_RATE
        while self._regions and 0 <= self._regions[0][1] < cut:
            self._regions.pop(0)

    def _open(self, position: int, samples: np.ndarray, step: GateStep) -> None:
        self.in_utterance = True
        self.speech_samples = 0
        step.opened = True
        step.append.extend(self._take_held())
        self._speech(position, samples, step)

    def _speech(self, position: int, samples: np.ndarray, step: GateStep) -> None:
        if self._silence:
            step.append.extend(self._take_held())
        if not self._regions or self._regions[-1][1] >= 0:
            self._regions.append([position, -1])
        self._silence = 0
        self._tail_kept = 0
        self.speech_samples += samples.size
        step.append.append((position, samples))

    def _pause(self, position: int, samples: np.ndarray, step: GateStep) -> None:
        if self._silence == 0:
            self._end_region(position)
        self._silence += samples.size
        if self._tail_kept < self.pad:
            self._tail_kept += samples.size
            step.append.append((position, samples))
        else:
            self._hold(position, samples)
        if self._silence >= self.end_silence:
            self.in_utterance = False
            self._silence = 0
            step.closed = True

    def _end_region(self, position: int) -> None:
        if self._regions and self._regions[-1][1] < 0:
            self._regions[-1][1] = position

    def _hold(self, position: int, samples: np.ndarray) -> None:
        self._held.append((position, samples))
        self._held_len += samples.size
        while self._held and self._held_len - self._held[0][1].size >= self.pad:
            self._held_len -= self._held.popleft()[1].size

    def _take_held(self) -> list[tuple[int, np.ndarray]]:
        held = list(self._held)
        self._held.clear()
        self._held_len = 0
        return held
