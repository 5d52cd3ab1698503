"""Voice activity detection: per-window speech probabilities for the stream core.

The core only needs :class:`SpeechDetector`: probabilities for consecutive 512-sample
windows at 16 kHz, with state carried from one call to the next (one detector per stream).
:class:`SileroDetector` is the real one; :class:`EnergyDetector` and :class:`ScriptedDetector`
let tests and VAD-less setups plug in something trivial.

Silero's JIT model keeps its recurrent state *inside* the module, which would make one model
per stream necessary. Instead every :class:`SileroDetector` shares one loaded model and calls
its inner network with an explicit state (the same computation the module's ``forward`` does),
so a new stream costs two small tensors, not a model load (~0.1 s) or copy (~13 ms).
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from streamer.hypothesis import SAMPLE_RATE
from streamer.threads import one_thread

if TYPE_CHECKING:
    from streamer.config import StreamConfig

log = logging.getLogger(__name__)

WINDOW = 512  # silero-vad's window at 16 kHz (32 ms)
WARM_SILENCE = 16 * WINDOW  # silence a second opinion hears first (half a second)


@runtime_checkable
class SpeechDetector(Protocol):
    """Speech probability per window; stateful across calls, so one instance per stream."""

    window: int

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """One probability in [0, 1] per ``window`` samples; ``len(samples)`` is a multiple of ``window``."""
        ...

    def reset(self) -> None:
        """Forget the stream so far (a new stream starts)."""
        ...


def _check_windows(samples: np.ndarray, window: int) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size % window:
        raise ValueError(f"VAD takes 1-D audio in whole windows of {window} samples, got shape {samples.shape}")
    return samples


_model_lock = threading.Lock()
_shared_model = None


def load_silero_model():
    """Load silero-vad's JIT model once per process (from the pip package, no hub).

    Importing ``silero_vad`` calls ``torch.set_num_threads(1)`` as a side effect, which would
    silently slow the Whisper engine down; the previous thread count is restored.
    """
    global _shared_model
    with _model_lock:
        if _shared_model is None:
            import torch

            threads = torch.get_num_threads()
            from silero_vad import load_silero_vad

            torch.set_num_threads(threads)
            model = load_silero_vad()
            model.eval()
            _shared_model = model
            log.debug("silero-vad loaded")
        return _shared_model


class SileroDetector:
    """Streaming silero-vad with this stream's recurrent state and context kept here."""

    window = WINDOW

    def __init__(self) -> None:
        import torch

        self._torch = torch
        model = load_silero_model()
        self._net = getattr(model, "_model", None)
        self._context_size = int(getattr(self._net, "context_size_samples", 64)) if self._net is not None else 0
        self._own_model = None
        if self._net is None:  # a silero-vad version without the inner network: fall back to a private copy
            self._own_model = copy.deepcopy(model)
        self.reset()

    def reset(self) -> None:
        torch = self._torch
        self._state = torch.zeros((2, 1, 128))
        self._context = torch.zeros((1, self._context_size))
        if self._own_model is not None:
            self._own_model.reset_states()

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        samples = _check_windows(samples, self.window)
        torch = self._torch
        out = np.empty(samples.size // self.window, dtype=np.float32)
        frames = torch.from_numpy(samples.copy()).reshape(-1, self.window)
        with torch.inference_mode(), _model_lock, one_thread():  # 3x faster alone, and leaves the model's cores
            for i, frame in enumerate(frames):
                out[i] = self._step(frame.unsqueeze(0))
        return out

    def after_silence(self, samples: np.ndarray) -> np.ndarray | None:
        """A second opinion on a stream's first windows: probabilities from a fresh state that heard
        half a second of silence first. This stream's own state is left as it was.

        On a fresh state silero is slow to fire: LJ001-0017's "that the" (0.0-0.26 s) scored under
        0.5 until 0.38 s, and after silence from 0.03 s.
        """
        if self._own_model is not None:
            return None
        saved = self._state, self._context
        self.reset()
        try:
            self.probabilities(np.zeros(WARM_SILENCE, dtype=np.float32))
            return self.probabilities(samples)
        finally:
            self._state, self._context = saved

    def _step(self, frame) -> float:
        if self._own_model is not None:
            return float(self._own_model(frame, SAMPLE_RATE))
        x = self._torch.cat([self._context, frame], dim=1)
        prob, self._state = self._net(x, self._state)
        self._context = x[:, -self._context_size:]
        return float(prob)


class Conditioner:
    """What the VAD hears: a 100 Hz high-pass (rumble, mains hum) and a slow gain for quiet speech.

    Measured on shared clips: after 26 s of speech and 1 s of silence, silero scored a
    low-frequency recording (``mfa/cold_corpus``, 98 % of its energy below 300 Hz) at 0.03
    mean probability, and LJ speech under a loud 50 Hz hum at 0.39; high-passed, 0.71 and 0.91.
    The gain only amplifies (up to ``max_gain_db``), following the loudest recent window with a
    slow release (20 dB in 3 s), so pauses inside quiet speech are not pumped up. Whisper still
    gets the original audio; only the speech/non-speech decision is conditioned.
    """

    RELEASE_DB_PER_SECOND = 20 / 3

    def __init__(self, highpass_hz: float = 100.0, target_dbfs: float = -26.0, max_gain_db: float = 30.0) -> None:
        from scipy.signal import butter

        self._sos = butter(4, highpass_hz, btype="highpass", fs=SAMPLE_RATE, output="sos") if highpass_hz else None
        self._zi = np.zeros((self._sos.shape[0], 2)) if self._sos is not None else None
        self._target = 10 ** (target_dbfs / 20)
        self._max_gain = 10 ** (max_gain_db / 20)
        self._release = 10 ** (-self.RELEASE_DB_PER_SECOND * WINDOW / SAMPLE_RATE / 20)
        self._level = self._target

    def fresh(self) -> "Conditioner":
        """The same filter and gain, as they were before any audio."""
        new = copy.copy(self)
        new._zi = np.zeros_like(self._zi) if self._zi is not None else None
        new._level = self._target
        return new

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Whole VAD windows in, the same windows conditioned out (state carries across calls)."""
        if self._sos is not None:
            from scipy.signal import sosfilt

            samples, self._zi = sosfilt(self._sos, samples, zi=self._zi)
        frames = np.asarray(samples, dtype=np.float32).reshape(-1, WINDOW)
        levels = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-9
        gains = np.empty(len(frames), dtype=np.float32)
        for i, level in enumerate(levels):
            self._level = max(level, self._level * self._release)
            gains[i] = min(self._max_gain, max(1.0, self._target / self._level))
        return np.clip(frames * gains[:, None], -1.0, 1.0).reshape(-1)


class ConditionedDetector:
    """A detector that hears audio through a :class:`Conditioner` first."""

    def __init__(self, detector: SpeechDetector, conditioner: Conditioner) -> None:
        self.detector = detector
        self.conditioner = conditioner
        self.window = detector.window

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        return self.detector.probabilities(self.conditioner.process(_check_windows(samples, self.window)))

    def after_silence(self, samples: np.ndarray) -> np.ndarray | None:
        """The inner detector's second opinion on the stream's first windows, conditioned afresh."""
        second = getattr(self.detector, "after_silence", None)
        return second(self.conditioner.fresh().process(_check_windows(samples, self.window))) if second else None

    def reset(self) -> None:
        self.detector.reset()


def detector_for(config: "StreamConfig") -> SpeechDetector | None:
    """The one place a stream's detector is built: silero-vad when ``config.use_vad``, else none.

    Callers hand the result to :class:`~streamer.core.stream.StreamProcessor`, which stays free
    of model code (silero loads torch).
    """
    if not config.use_vad:
        return None
    if not config.vad_highpass and not config.vad_gain:
        return SileroDetector()
    max_gain = 30.0 if config.vad_gain else 0.0
    return ConditionedDetector(SileroDetector(), Conditioner(config.vad_highpass, max_gain_db=max_gain))


def warm_up_detector(config: "StreamConfig", windows: int = 96) -> None:
    """Build and run a stream's detector once, before the first client would feel what that costs.

    silero's TorchScript model is slow on its first calls, and the conditioner imports scipy's
    filters (0.2 s holding the interpreter lock, which stalled the event loop for every client
    when the first stream started).
    """
    detector = detector_for(config)
    if detector is None:
        return
    for _ in range(3):
        detector.probabilities(np.zeros(WINDOW * windows // 3, dtype=np.float32))


class EnergyDetector:
    """Speech wherever the window's RMS level exceeds ``threshold_db`` dBFS. No model, no state."""

    window = WINDOW

    def __init__(self, threshold_db: float = -40.0) -> None:
        self.threshold_db = threshold_db

    def reset(self) -> None:
        pass

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        frames = _check_windows(samples, self.window).reshape(-1, self.window)
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
        level = 20 * np.log10(np.maximum(rms, 1e-10))
        return (level > self.threshold_db).astype(np.float32)


class ScriptedDetector:
    """Speech exactly inside given stream-time intervals (seconds), or per a function of time."""

    window = WINDOW

    def __init__(self, speech: Sequence[tuple[float, float]] | Callable[[float], float]) -> None:
        if callable(speech):
            self._prob = speech
        else:
            spans = list(speech)
            self._prob = lambda t: 1.0 if any(a <= t < b for a, b in spans) else 0.0
        self._pos = 0

    def reset(self) -> None:
        self._pos = 0

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        n = _check_windows(samples, self.window).size // self.window
        out = np.empty(n, dtype=np.float32)
        for i in range(n):
            mid = (self._pos + self.window / 2) / SAMPLE_RATE
            out[i] = self._prob(mid)
            self._pos += self.window
        return out
