"""A safety net under the VAD: sustained sound it calls non-speech is decoded now and then.

Silero misses some real speech (a low-frequency recording after another one scored 0.03 mean
speech probability for 26 s). Dropping speech without a trace is the worst failure a caption
tool can have, so when the stream has been *energetic* (not quiet) for a while without the VAD
opening, the last few seconds are decoded as a *probe*. The hypothesis must pass the usual
hallucination guards and a stricter bar of its own (confident words, little no-speech
probability, several words) before its audio becomes an utterance; then the VAD's decision is
overridden for as long as the sound stays energetic. A rejected probe doubles the wait before
the next one, so music or machinery costs a handful of decodes, not a steady stream of them.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from streamer.core.buffer import AudioBuffer
from streamer.hypothesis import SAMPLE_RATE, Hypothesis

ENERGY_DBFS = -38.0     # a window louder than this is sound, not silence or room noise
FIRST_WAIT = 4.0        # s of energetic non-speech before the first probe
LONGEST_WAIT = 32.0     # s: the wait doubles after each rejected probe, up to this
PROBE_SECONDS = 6.0     # s of the most recent audio a probe decodes
MIN_WORDS = 3
MIN_WORD_PROBABILITY = 0.6
MAX_NO_SPEECH = 0.3
MIN_LOGPROB = -0.6


def energetic(samples: np.ndarray) -> bool:
    level = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * np.log10(max(level, 1e-10)) > ENERGY_DBFS


def convincing(hypothesis: Hypothesis) -> bool:
    """The stricter bar a probe must pass: speech the model is sure of, not a hallucination."""
    words = hypothesis.words
    if len(words) < MIN_WORDS or hypothesis.no_speech_prob > MAX_NO_SPEECH or hypothesis.avg_logprob < MIN_LOGPROB:
        return False
    return sum(w.probability for w in words) / len(words) >= MIN_WORD_PROBABILITY


class Probe:
    """When to probe, and the recent audio to probe with (sans-I/O; the segmenter feeds it)."""

    def __init__(self) -> None:
        self._recent: deque[tuple[int, np.ndarray]] = deque()
        self._recent_len = 0
        self._energetic = 0  # samples of energetic non-speech in a row
        self._wait = FIRST_WAIT
        self.forcing = False  # a probe found speech: energetic windows count as speech

    def non_speech(self, position: int, samples: np.ndarray) -> None:
        """A window the VAD did not take: keep it, and count it if it was loud."""
        self._recent.append((position, samples))
        self._recent_len += samples.size
        while self._recent_len - self._recent[0][1].size >= PROBE_SECONDS * SAMPLE_RATE:
            self._recent_len -= self._recent.popleft()[1].size
        self._energetic = self._energetic + samples.size if energetic(samples) else 0

    def speech(self) -> None:
        """The VAD heard speech: it works here, so the net relaxes."""
        self._recent.clear()
        self._recent_len = self._energetic = 0
        self._wait = FIRST_WAIT

    @property
    def due(self) -> bool:
        return self._energetic >= self._wait * SAMPLE_RATE

    def audio(self) -> AudioBuffer:
        """The recent audio as a buffer on the stream timeline."""
        buffer = AudioBuffer()
        for position, samples in self._recent:
            buffer.append(samples, position)
        return buffer

    def recent_after(self, position: int) -> list[tuple[int, np.ndarray]]:
        """Recent windows from stream sample ``position`` on (audio that came during the probe)."""
        return [(p, x) for p, x in self._recent if p >= position]

    def rejected(self) -> None:
        self._energetic = 0
        self._wait = min(self._wait * 2, LONGEST_WAIT)

    def accepted(self) -> None:
        self._recent.clear()
        self._recent_len = self._energetic = 0
        self.forcing = True
