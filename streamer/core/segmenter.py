"""The audio side of the stream core: samples in, utterances (buffers to decode) out.

VAD gating (:mod:`streamer.core.gate`) decides which audio enters an utterance buffer and
when an utterance ends; this module keeps those buffers, the stream's audio timeline, the
speech starts and stops clients may ask for, and the pause bookkeeping that makes a pause
decode due. It knows nothing of hypotheses: :class:`~streamer.core.stream.StreamProcessor`
asks it what to decode and tells it what was decoded.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from streamer.config import StreamConfig
from streamer.core.buffer import AudioBuffer
from streamer.core.events import SpeechBoundary
from streamer.core.gate import SpeechGate
from streamer.core.probe import Probe, energetic
from streamer.hypothesis import SAMPLE_RATE
from streamer.vad import SpeechDetector

log = logging.getLogger(__name__)

MIN_SPEECH = 0.2  # s of VAD speech below which an utterance is a blip: discarded, never decoded
CONTEXT_FOR_SHORTER_THAN = 2.5  # s of its own audio: a longer utterance's windows drop the carried context
PAUSE_MIN_WINDOW = 2.5  # s: a shorter pause window commits by agreement only (too little context alone)
COLD_START = 0.6  # s: a stream's first windows, gated together once the detector had a second opinion


@dataclass
class Utterance:
    """One VAD utterance: its buffer and decode bookkeeping."""

    buffer: AudioBuffer
    decoded_until: float          # stream time up to which its audio has been decoded
    new_samples: int = 0          # appended since the last request
    closed: bool = False
    speech_samples: int = 0
    pause_at: float | None = None  # start of a pause (stream time) not yet used by a pause decode
    heard_speech: bool = False     # speech since the last pause decode was requested
    settled: bool = False          # a pause decode committed everything and no speech came since
    context_end: float | None = None  # where the carried context (the last utterance's tail) ends, while kept


class Segmenter:
    """Feeds audio through the VAD gate into utterances (see the module docstring).

    ``busy(utterance)`` tells whether a decode of it is in flight (a closing blip or settled
    utterance is then kept); ``on_settled(utterance)`` is called for one that closes needing
    no final decode.
    """

    def __init__(self, config: StreamConfig, detector: SpeechDetector | None,
                 busy: Callable[[Utterance], bool], on_settled: Callable[[Utterance], None]) -> None:
        self.config = config
        self._detector = detector if config.use_vad else None
        self.gate = (SpeechGate(config.vad_threshold, config.end_silence, config.speech_pad)
                     if self._detector is not None else None)
        self._busy, self._on_settled = busy, on_settled
        self._pending = np.zeros(0, dtype=np.float32)  # tail shorter than one VAD window
        self.received = 0                              # samples fed
        self.position = 0                              # samples passed through the gate
        self._finished = False
        self.open: Utterance | None = None
        self.closed: deque[Utterance] = deque()
        self._boundaries: list[SpeechBoundary] = []
        self.probe = Probe()
        self._context: AudioBuffer | None = None  # a retired utterance's tail, for the next one
        # a stream's first windows wait for the detector's second opinion (see _first_windows); a
        # detector that cannot give one gates them at once
        self._second_opinion = getattr(self._detector, "after_silence", None)
        self._first: list[tuple[np.ndarray, float]] | None = [] if self.gate and self._second_opinion else None

    def start_at(self, sample: int) -> None:
        """Begin the timeline at ``sample`` (a resumed stream continues its original timeline)."""
        if self.received:
            raise RuntimeError("the timeline's origin is set before any audio")
        self.received = self.position = sample

    # ----------------------------------------------------------------- audio in
    def feed(self, samples: np.ndarray) -> None:
        """16 kHz mono float32, any length (checked, and copied: the buffer keeps it)."""
        samples = _validated(samples)
        self.received += samples.size
        if self.gate is None:
            self._append(self._ensure_open(), self.position, samples)
            self.position += samples.size
            return
        pending = np.concatenate([self._pending, samples]) if self._pending.size else samples
        window = self._detector.window
        whole = pending.size - pending.size % window
        if whole:
            probs = self._detector.probabilities(pending[:whole])
            for i, prob in enumerate(probs):
                self._window(pending[i * window:(i + 1) * window], float(prob))
        self._pending = pending[whole:].copy()

    def _window(self, samples: np.ndarray, prob: float) -> None:
        """Gate one VAD window; the stream's first ``COLD_START`` seconds wait to be gated together."""
        if self._first is None:
            self._on_window(samples, prob)
            return
        self._first.append((samples, prob))
        if len(self._first) * samples.size >= COLD_START * SAMPLE_RATE:
            self._first_windows()

    def _first_windows(self) -> None:
        """Gate the stream's first windows, with the detector's second opinion where speech began.

        On a fresh state silero fires late (LJ001-0017's "that the", 0.0-0.26 s, scored under 0.5
        until 0.38 s), and the first words of a stream that starts mid-speech were lost. Where it
        fires in these windows, the windows before are scored again from a state that heard silence
        first (:meth:`~streamer.vad.SileroDetector.after_silence`: "that the" from 0.03 s). Only
        then: warmed up for every stream, silero fired on two non-speech clips, whose decodes
        committed "Thank you." and "Woooooo!"; as a second opinion on an onset it changes nothing there.
        """
        first, self._first = self._first or [], None
        probs = [prob for _, prob in first]
        onset = next((i for i, prob in enumerate(probs) if prob >= self.config.vad_threshold), 0)
        if onset and self._second_opinion is not None:
            warm = self._second_opinion(np.concatenate([samples for samples, _ in first]))
            if warm is not None:
                probs[:onset] = [float(prob) for prob in warm[:onset]]
        for (samples, _), prob in zip(first, probs):
            self._on_window(samples, prob)

    def finish(self) -> None:
        """End of stream: the tail joins the open utterance, which closes."""
        self._finished = True
        if self.gate is not None:
            self._first_windows()
            if self.gate.in_utterance and self.open is not None and self._pending.size:
                self._append(self.open, self.position, self._pending)
            self.position += self._pending.size
            self._pending = np.zeros(0, dtype=np.float32)
            if self.gate.close():
                self._boundaries.append(SpeechBoundary("stopped", self.position / SAMPLE_RATE))
        if self.open is not None:
            self._close_open()

    # ----------------------------------------------------------------- what to decode
    def current(self) -> Utterance | None:
        """The oldest utterance with audio to decode (closed ones first), dropping empty closed ones."""
        while self.closed and len(self.closed[0].buffer) == 0:
            self.closed.popleft()
        return self.closed[0] if self.closed else self.open

    def pause_due(self, utterance: Utterance) -> bool:
        """A pause was seen: decode now (or as soon as the engine is free, even if speech resumed)
        so that the words before it are committed without waiting for agreement."""
        return utterance.pause_at is not None and utterance.new_samples > 0 and self._open_with_speech(utterance)

    def pause_pending(self, utterance: Utterance) -> bool:
        """The open utterance is in a pause that a pause decode will follow if it lasts ``pause_commit``.

        An update started now would hold the engine when that pause decode comes due, and the
        sentence's last words would wait for both; so the update waits, at most ``pause_commit``
        seconds, until the pause either becomes a pause decode or ends in speech. Only where that
        decode can commit on its own (a window of ``PAUSE_MIN_WINDOW``): a shorter pause window
        commits by agreement, and then the update is the hypothesis it agrees with (LJ001-0025 with
        tiny.en: without the update at 2.2 s the first commit came from one 3.3 s pause window, with
        a word the clip does not have).
        """
        threshold = self.config.pause_commit * SAMPLE_RATE
        return (utterance.pause_at is None and self._open_with_speech(utterance)
                and 0 < self.gate.pause_samples < threshold and utterance.buffer.seconds >= PAUSE_MIN_WINDOW)

    def _open_with_speech(self, utterance: Utterance) -> bool:
        """The open utterance, with more than a blip of speech: what a pause decode needs."""
        return (utterance is self.open and self.gate is not None
                and self.gate.speech_samples >= MIN_SPEECH * SAMPLE_RATE)

    def probe_due(self) -> bool:
        """Sound the VAD keeps calling non-speech has gone on long enough to be checked by a decode."""
        return (self.gate is not None and not self.gate.in_utterance and self.open is None and not self.closed
                and not self._finished and self.probe.due)

    def probe_utterance(self) -> Utterance:
        """The recent audio, as an utterance that is not yet part of the stream."""
        buffer = self.probe.audio()
        return Utterance(buffer, decoded_until=buffer.start, new_samples=len(buffer))

    def adopt_probe(self, utterance: Utterance) -> None:
        """The probe heard speech: its audio (and what arrived since) becomes the open utterance."""
        start = int(round(utterance.buffer.start * SAMPLE_RATE))
        for position, samples in self.probe.recent_after(int(round(utterance.buffer.end * SAMPLE_RATE))):
            utterance.buffer.append(samples, position)
        self.probe.accepted()
        self.gate.open_at(start)
        self.open = utterance
        self._boundaries.append(SpeechBoundary("started", start / SAMPLE_RATE))

    def reject_probe(self) -> None:
        self.probe.rejected()

    def retire(self, utterance: Utterance, context_from: float | None = None) -> None:
        """Every word of a closed utterance is committed: forget it and its speech spans, except the audio
        from ``context_from`` on, which the next utterance is decoded after (if it comes soon)."""
        if self.closed and self.closed[0] is utterance:
            self.closed.popleft()
        self._context = None
        if context_from is not None and context_from < utterance.buffer.end:
            utterance.buffer.trim_before(context_from)
            self._context = utterance.buffer
        if self.gate is not None:
            self.gate.forget_before(utterance.buffer.start if self._context else utterance.buffer.end)

    def drop_long_context(self, utterance: Utterance) -> None:
        """Drop the carried context once the utterance has ``CONTEXT_FOR_SHORTER_THAN`` seconds of its own.

        The context is for what a short window cannot hear alone (base heard jfk's 1.6 s "ask not" as
        "ASK NOT!" or "is not.", with "Americans" before it as "Ask not what"); a longer utterance has
        context of its own, and decoding the last one's tail again only gives Whisper another reading of
        it (carried into every window, it made verse 1.8 WER points worse; docs/streaming.md).
        """
        end = utterance.context_end
        if end is not None and utterance.buffer.end - end >= CONTEXT_FOR_SHORTER_THAN:
            self.drop_context(utterance)

    def drop_context(self, utterance: Utterance) -> None:
        """The utterance's windows start at its own audio from now on."""
        end, utterance.context_end = utterance.context_end, None
        if end is not None:
            utterance.buffer.trim_before(end)
            self.forget_regions_before_buffer(utterance)

    def forget_regions_before_buffer(self, utterance: Utterance) -> None:
        """VAD spans before the buffer are no longer needed: keeps an hour-long utterance flat."""
        if self.gate is not None and not self.closed:
            self.gate.forget_before(utterance.buffer.start - 1.0)

    def speech_regions(self) -> list[tuple[float, float]] | None:
        """Speech spans on the stream timeline (None without a VAD: everything counts as speech)."""
        return self.gate.speech_regions() if self.gate is not None else None

    def take_boundaries(self) -> list[SpeechBoundary]:
        out, self._boundaries = self._boundaries, []
        return out

    # ----------------------------------------------------------------- time
    @property
    def decoded_seconds(self) -> float:
        """Stream time up to which all audio has been dealt with (decoded, or skipped as non-speech)."""
        utterance = self.closed[0] if self.closed else self.open
        if utterance is None:
            return self.position / SAMPLE_RATE
        return min(max(utterance.decoded_until, utterance.buffer.start), self.position / SAMPLE_RATE)

    def silence_seconds(self) -> float:
        """How long the stream has been without speech (0 without a VAD: it cannot tell)."""
        if self.gate is None or self.gate.in_utterance or self.open is not None or self.closed:
            return 0.0
        return self.position / SAMPLE_RATE - self.gate.pause_start

    @property
    def buffer_seconds(self) -> float:
        """Audio held for decoding now (open and closed utterances)."""
        held = sum(u.buffer.seconds for u in self.closed)
        return held + (self.open.buffer.seconds if self.open else 0.0)

    # ----------------------------------------------------------------- gating
    def _on_window(self, samples: np.ndarray, prob: float) -> None:
        if self.probe.forcing:  # a probe found speech the VAD misses: loud windows are speech
            if energetic(samples):
                prob = 1.0
            else:
                self.probe.forcing = False
        step = self.gate.push(self.position, samples, prob)
        if self.gate.in_utterance or step.closed:
            self.probe.speech()
        else:
            self.probe.non_speech(self.position, samples)
        if step.opened:
            self._boundaries.append(SpeechBoundary("started", self.position / SAMPLE_RATE))
            self._ensure_open()
        if self.open is not None and self.gate.in_utterance:
            self._note_pause(self.open, samples.size)
        for position, chunk in step.append:
            self._append(self.open, position, chunk)
        self.position += samples.size
        if step.closed:
            self._boundaries.append(SpeechBoundary("stopped", self.gate.pause_start))
            self._close_open()

    def _note_pause(self, utterance: Utterance, window: int) -> None:
        """Track speech and pauses of the open utterance for pause decodes."""
        pause = self.gate.pause_samples
        if pause == 0:
            utterance.heard_speech = True
            utterance.settled = False
            return
        threshold = self.config.pause_commit * SAMPLE_RATE
        if threshold > 0 and threshold <= pause < threshold + window:  # the pause just got long enough
            utterance.pause_at = self.gate.pause_start

    def _ensure_open(self) -> Utterance:
        if self.open is None:
            context, self._context = self._context, None
            recent = context is not None and self.position / SAMPLE_RATE - context.end <= self.config.long_silence
            if recent:  # the last utterance's tail leads the window: its words are heard in context
                self.open = Utterance(context, decoded_until=context.end, context_end=context.end)
            else:
                self.open = Utterance(AudioBuffer(), decoded_until=self.position / SAMPLE_RATE)
        return self.open

    def _append(self, utterance: Utterance, position: int, samples: np.ndarray) -> None:
        if len(utterance.buffer) == 0:
            utterance.decoded_until = position / SAMPLE_RATE
        utterance.buffer.append(samples, position)
        utterance.new_samples += samples.size

    def _close_open(self) -> None:
        utterance, self.open = self.open, None
        utterance.closed = True
        if self.gate is not None:
            utterance.speech_samples = self.gate.speech_samples
            blip = utterance.speech_samples < MIN_SPEECH * SAMPLE_RATE
            busy = self._busy(utterance)
            if blip and not busy:
                log.debug("discarding a %.2f s VAD blip", utterance.speech_samples / SAMPLE_RATE)
                return
            if utterance.settled and not busy:
                self._on_settled(utterance)  # the pause decode already committed all of it
                return
        self.closed.append(utterance)


def _validated(samples: np.ndarray) -> np.ndarray:
    if not isinstance(samples, np.ndarray):
        raise ValueError(f"samples must be a numpy array, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise ValueError(f"samples must be 1-D mono audio, got shape {samples.shape}")
    if samples.dtype.kind != "f":
        raise ValueError(f"samples must be float32 in [-1, 1], got {samples.dtype} (use streamer.audio.pcm_to_float32)")
    samples = samples.astype(np.float32, copy=True)  # the buffer keeps it: never alias the caller's array
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples contain NaN or infinite values")
    return samples
