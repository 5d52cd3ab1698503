"""The small value types that cross the engine boundary, and the engine interface.

Everything above the engine (the streaming core, the daemon, the benchmarks) talks to
Whisper only through :class:`Engine`, so a scripted fake can stand in for the model in
policy tests and the real model drives end-to-end tests.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000
MAX_WINDOW_SECONDS = 30.0
MAX_PROMPT_TOKENS = 223  # Whisper's own limit: half the decoder context, minus <|startofprev|>

Task = Literal["transcribe", "translate"]


def compression_ratio(text: str) -> float:
    """How repetitive a text is (:attr:`Hypothesis.compression_ratio`); Whisper's loops compress very well (> 2.4)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 1.0


@dataclass(frozen=True, slots=True)
class Word:
    """One decoded word. ``word`` keeps Whisper's leading space; times are seconds."""

    word: str
    start: float
    end: float
    probability: float = 1.0

    def shifted(self, offset: float) -> "Word":
        """The same word moved by ``offset`` seconds (window time -> stream time)."""
        return Word(self.word, round(self.start + offset, 3), round(self.end + offset, 3), self.probability)

    def to_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3),
                "probability": round(self.probability, 3)}


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """What one decode of one window produced. Word times are relative to the window start."""

    words: tuple[Word, ...]
    language: str | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    language_probability: float = 1.0
    # the language detector's top candidates, most likely first: the evidence a caller weighs to keep a
    # steady language across windows. Empty when no detection ran (language given, detection not asked).
    language_probs: tuple[tuple[str, float], ...] = ()
    # the decoded token ids (timestamps included, no <|endoftext|>): opaque to callers, who hand them
    # back as the next decode's ``DecodeRequest.draft``. Empty from engines without drafts.
    tokens: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words).strip()


@dataclass(frozen=True)
class DecodeRequest:
    """One window to decode: 16 kHz mono float32, at most 30 s.

    ``prompt`` is previous committed text used as Whisper's ``<|startofprev|>`` context;
    ``vocabulary`` (names and terms to spell right) goes first in that context and is never
    trimmed, the prompt fills the rest of the engine's ``max_prompt_tokens`` from its end.
    ``language`` None asks the engine to detect the language (and decode in it);
    ``detect_language`` asks for the detector's candidates (:attr:`Hypothesis.language_probs`)
    even when ``language`` is set, so a caller can decide when the language really changed.
    ``languages`` limits detection to those codes (the speaker's expected languages).
    """

    audio: np.ndarray
    prompt: str = ""
    vocabulary: str = ""
    language: str | None = None
    task: Task = "transcribe"
    detect_language: bool = False
    languages: tuple[str, ...] = ()  # detection chooses among these only; empty = any the model knows
    # where the window starts on the stream's audio timeline, in seconds. Hypothesis times stay
    # window-relative (the caller maps them back); an engine may read it to place the window,
    # as the scripted timeline engine does to pick the words a window holds.
    offset: float = 0.0
    tag: object = field(default=None, compare=False)  # opaque, for the caller's bookkeeping
    # the previous hypothesis' ``tokens`` for this stream: an engine may verify them in one pass
    # instead of decoding token by token. Only a speed hint: the result is the same without it.
    draft: tuple[int, ...] = field(default=(), compare=False)
    # stop decoding once the text loops and compresses past this ratio: the caller's compression-ratio
    # guard would reject the hypothesis anyway, and a loop runs to the token limit (seconds on a CPU).
    # None decodes to <|endoftext|> or the limit, as Whisper does (offline baselines).
    stop_ratio: float | None = None
    # a beam for this window (1 = greedy); None = the engine's ``engine.beam_size``. Engines without
    # beam search, and the compiled CUDA loop, decode greedily.
    beam_size: int | None = None
    # the encoder lengths (s) this window may be cut to, when its language is fixed; None = the engine's
    # ``engine.encoder_buckets``, () = always 30 s. The daemon cuts every window of a round while many
    # streams are live (``server.bucket_streams``). Only the CPU path of the transformers engine cuts.
    encoder_buckets: tuple[float, ...] | None = None
    # set by the caller when it no longer wants the result (a decode due in its place commits more: see
    # ``StreamProcessor.superseded``). Once it says True for every request of a batch, an engine may stop
    # and raise :class:`DecodeAbandoned`; one that cannot stop early just finishes, and the result is dropped.
    abandoned: Callable[[], bool] | None = field(default=None, compare=False)


class EngineError(Exception):
    """A problem the user can fix (bad model name, bad audio, missing package); the message says how."""


class DecodeAbandoned(Exception):
    """An engine stopped a decode early because every request in it was abandoned (``DecodeRequest.abandoned``)."""


@runtime_checkable
class Engine(Protocol):
    """Decodes windows of audio into hypotheses. Knows nothing about streams.

    Implementations are chosen by ``engine.backend`` through :mod:`streamer.engine.loader` and
    are fully set up by their constructor: callers read these attributes, never set them.
    """

    name: str  # the model, as the user named it (shown to clients)
    device: str  # where it runs: "cpu", "cuda"
    dtype: str  # the weights' compute type: "float32", "int8", "float16", ...
    max_window_seconds: float  # the longest window one decode accepts (30.0 for Whisper)
    languages: tuple[str, ...]  # language codes it can transcribe; ("en",) for English-only models
    max_prompt_tokens: int  # the most prompt tokens (vocabulary + rolling prompt) one decode takes
    beam_search: bool  # whether ``DecodeRequest.beam_size`` is honoured (False: greedy only, the compiled CUDA loop)
    encoder_cuts: bool  # whether ``DecodeRequest.encoder_buckets`` is honoured (the transformers engine's CPU path)

    def prompt_tokens(self, text: str) -> int:
        """How many of ``max_prompt_tokens`` ``text`` takes (so a caller can refuse a vocabulary over the limit)."""
        ...

    def decode(self, request: DecodeRequest) -> Hypothesis:
        """Decode one window."""
        ...

    def decode_batch(self, requests: Sequence[DecodeRequest]) -> list[Hypothesis]:
        """Decode several windows (one per stream) in one pass; results in request order."""
        ...


def validate_window(audio: np.ndarray) -> np.ndarray:
    """Check a window before it reaches the model, with errors a caller can act on."""
    if not isinstance(audio, np.ndarray):
        raise EngineError(f"audio must be a numpy array of float32 samples, got {type(audio).__name__}")
    if audio.ndim != 1:
        raise EngineError(f"audio must be mono (1-D), got shape {audio.shape}; downmix channels first")
    if audio.dtype != np.float32:
        if audio.dtype.kind == "f":
            audio = audio.astype(np.float32)
        else:
            raise EngineError(
                f"audio must be float32 in [-1, 1], got {audio.dtype}; convert PCM with streamer.audio.pcm_to_float32"
            )
    if audio.size == 0:
        raise EngineError("audio is empty: nothing to decode")
    if audio.size > MAX_WINDOW_SECONDS * SAMPLE_RATE:
        raise EngineError(
            f"audio window is {audio.size / SAMPLE_RATE:.1f} s; Whisper takes at most 30 s "
            "(split it, or use streamer transcribe for long files)"
        )
    if not np.all(np.isfinite(audio)):
        raise EngineError("audio contains NaN or infinite samples; clean the input before decoding")
    return audio
