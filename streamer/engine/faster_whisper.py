"""The faster-whisper backend: CTranslate2's Whisper behind the :class:`~streamer.hypothesis.Engine` interface.

Optional (``pip install 'streamer[bench]'``); chosen with ``engine.backend = "faster-whisper"``.
It loads the same embedded weights (as a CTranslate2 folder) or any faster-whisper model.

One window is one decode, as in :class:`~streamer.engine.whisper.WhisperEngine`: features,
encoder, language detection, one greedy generation with Whisper's timestamp rules (done by
CTranslate2), timestamp segments, and word times from faster-whisper's own cross-attention
alignment. faster-whisper's ``transcribe()`` is not used on purpose: it seeks through long
audio and re-decodes a window's unfinished tail, which is the streaming core's job here.
``decode_batch`` decodes the windows one after another.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from streamer.config import EngineConfig
from streamer.engine.alignment import clamp_to_segments, segment_word_times, segments_of
from streamer.engine.decoding import MAX_INITIAL_TIMESTAMP, TIME_PRECISION
from streamer.engine.language import ENGLISH_ONLY, TOP_CANDIDATES, LanguageChoice
from streamer.engine.tokenizer import WhisperTokens
from streamer.engine.views import WordTimingViews
from streamer.hypothesis import (DecodeRequest, EngineError, Hypothesis, MAX_PROMPT_TOKENS, MAX_WINDOW_SECONDS,
                                 SAMPLE_RATE, Word, compression_ratio, validate_window)

log = logging.getLogger(__name__)

MAX_LENGTH = 448  # Whisper's decoder context, prompt included


class FasterWhisperEngine(WordTimingViews):
    """A faster-whisper ``WhisperModel`` decoding one window per call, with the streamer's word types."""

    max_window_seconds = MAX_WINDOW_SECONDS
    max_prompt_tokens = MAX_PROMPT_TOKENS
    beam_search = True
    encoder_cuts = False  # CTranslate2's encoder takes 30 s

    def __init__(self, model, config: EngineConfig):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model, self.config, self.name = model, config, config.model
        self.device = model.model.device
        self.dtype = model.model.compute_type.removesuffix("_float32")  # CTranslate2's int8 is int8_float32
        self.languages = tuple(model.supported_languages)
        self.tokens = WhisperTokens.from_tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                                                   source=f"{config.model}'s tokenizer")
        self._fw_tokenizer = Tokenizer
        defaults = inspect.signature(WhisperModel.transcribe).parameters
        self._punctuation = (defaults["prepend_punctuations"].default, defaults["append_punctuations"].default)
        t = self.tokens
        self._suppress = [-1, t.transcribe, t.translate, t.sot, t.sot_prev]  # as faster-whisper does
        self.last_timing: dict[str, float] = {}

    def decode_batch(self, requests: Sequence[DecodeRequest]) -> list[Hypothesis]:
        return [self.decode(r) for r in requests]

    def prompt_tokens(self, text: str) -> int:
        return self.tokens.prompt_tokens(text)

    def decode(self, request: DecodeRequest) -> Hypothesis:
        audio = validate_window(request.audio)
        duration = len(audio) / SAMPLE_RATE
        started = time.perf_counter()
        features = self.model.feature_extractor(audio)
        frames = features.shape[-1] - 1  # the last frame is STFT padding, as in faster-whisper
        encoded = self.model.encode(_pad_frames(features[:, :frames]))
        encoded_at = time.perf_counter()
        language = self._language(request, encoded)
        prompt = self.tokens.prompt_prefix(request.prompt, request.vocabulary) + self.tokens.sot_sequence(language.code, request.task)
        limit = min(self.config.max_new_tokens, MAX_LENGTH - len(prompt))
        beam = request.beam_size or self.config.beam_size  # a request may ask for its own (stream.commit_beam_size)
        result = self.model.model.generate(
            encoded, [prompt], beam_size=beam, max_length=_max_length(limit, len(prompt)),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress,
            max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP / TIME_PRECISION))[0]
        tokens = result.sequences_ids[0][:limit]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # scores are length-normalised
        decoded_at = time.perf_counter()
        segments = [(start, min(end, duration), text)
                    for start, end, text in segments_of(tokens, self.tokens.timestamp_begin, self.tokens.eot, duration)]
        words = self._words(segments, encoded, frames, language.code, request.task, avg_logprob)
        text = self.tokens.decode([t for t in tokens if t < self.tokens.eot])
        self.last_timing = {"encode": encoded_at - started, "decode": decoded_at - encoded_at,
                            "align": time.perf_counter() - decoded_at, "tokens": float(len(tokens))}
        return Hypothesis(words=tuple(words), language=language.code, avg_logprob=avg_logprob,
                          no_speech_prob=result.no_speech_prob, compression_ratio=compression_ratio(text),
                          language_probability=language.probability, language_probs=language.candidates)

    def _language(self, request: DecodeRequest, encoded) -> LanguageChoice:
        """As the whisper backend: detect where no language is given or its evidence is asked for."""
        asked = not request.language or request.detect_language
        if not self.tokens.multilingual:
            return LanguageChoice("en", 1.0, ENGLISH_ONLY if asked else ())
        if not asked:
            return LanguageChoice(request.language)
        ranked = [(token[2:-2], float(p)) for token, p in self.model.model.detect_language(encoded)[0]]
        among = [(code, p) for code, p in ranked if code in request.languages]
        if among:  # detection limited to the expected languages, their probabilities renormalised
            total = sum(p for _, p in among) or 1.0
            ranked = [(code, p / total) for code, p in among]
        candidates = tuple((code, round(p, 6)) for code, p in ranked[:TOP_CANDIDATES])
        if request.language:
            return LanguageChoice(request.language, 1.0, candidates)
        return LanguageChoice(candidates[0][0], candidates[0][1], candidates)

    def _words(self, segments, encoded, frames: int, language: str, task: str, avg_logprob: float) -> list[Word]:
        """Word times by the configured method; ``segments`` spreads each segment by characters."""
        if self.config.word_timestamps == "segments":
            probability = [math.exp(avg_logprob)] * sum(len(text) for _, _, text in segments)
            return segment_word_times(segments, probability, self.tokens, language)
        words = self._aligned_words(segments, encoded, frames, language, task)
        if self.config.word_timestamps == "both":
            return clamp_to_segments(words, segments, self.tokens, language)
        return words

    def _aligned_words(self, segments, encoded, frames: int, language: str, task: str) -> list[Word]:
        """faster-whisper's cross-attention DTW with its punctuation merging and long-word heuristics."""
        if not segments:
            return []
        tokenizer = self._fw_tokenizer(self.model.hf_tokenizer, self.tokens.multilingual, task=task,
                                       language=language if self.tokens.multilingual else None)
        parts = [{"seek": 0, "start": start, "end": end, "tokens": text} for start, end, text in segments]
        self.model.add_word_timestamps([parts], tokenizer, encoded, frames, *self._punctuation,
                                       last_speech_timestamp=0.0)
        return [Word(w["word"], round(float(w["start"]), 3), round(float(max(w["end"], w["start"])), 3),
                     float(w["probability"])) for part in parts for w in part["words"] if w["word"].strip()]


def _max_length(new_tokens: int, prompt_length: int) -> int:
    """CTranslate2's ``max_length`` that lets Whisper generate ``new_tokens`` tokens after the prompt.

    Measured with ctranslate2 4.8: generation stops after about ``max_length / 2`` tokens
    (96 gave 48, with 1- to 122-token prompts) and never runs past ``max_length`` positions,
    not at ``prompt + max_length`` as faster-whisper's own ``max_new_tokens`` assumes. Ask for
    enough and cut the result to ``new_tokens``.
    """
    return max(2 * new_tokens, prompt_length + new_tokens)


def _pad_frames(features: np.ndarray, frames: int = 3000) -> np.ndarray:
    """Whisper's encoder always sees 30 s of log-mel frames."""
    if features.shape[-1] >= frames:
        return features[:, :frames]
    return np.pad(features, [(0, 0), (0, frames - features.shape[-1])])


def _device(name: str, ctranslate2) -> str:
    gpus = ctranslate2.get_cuda_device_count()
    if name == "cuda" and not gpus:
        raise EngineError("engine.device = cuda, but CTranslate2 sees no CUDA GPU; use device = auto or cpu")
    if name == "auto":
        return "cuda" if gpus else "cpu"
    return name


def _compute_type(config: EngineConfig, device: str) -> str:
    """CTranslate2's compute type from the same settings the whisper backend reads."""
    if device == "cpu":
        if config.dtype == "float16":
            raise EngineError("float16 is not supported on the CPU path; use float32 (with quantize = int8)")
        base = "float32" if config.dtype == "auto" else config.dtype
        return "int8" if config.quantize in ("auto", "int8") and base == "float32" else base
    base = "float16" if config.dtype == "auto" else config.dtype
    return f"int8_{base}" if config.quantize == "int8" else base


def _model_path(config: EngineConfig) -> str:
    """An embedded name's CTranslate2 folder, a local CTranslate2 folder, or a name faster-whisper downloads."""
    from streamer.engine.models import EMBEDDED, ct2_folder

    if config.model in EMBEDDED:
        return str(ct2_folder(config.model, Path(config.cache_dir) if config.cache_dir else None))
    path = Path(config.model).expanduser()
    if path.exists() and not (path / "model.bin").is_file():
        raise EngineError(f"{path} is not a CTranslate2 model folder (no model.bin); the faster-whisper backend "
                          "reads CTranslate2 models, the whisper backend transformers folders")
    return str(path) if path.exists() else config.model


def load_faster_whisper(config: EngineConfig) -> FasterWhisperEngine:
    """Load a faster-whisper model for the settings in ``config`` and warm it up."""
    try:
        import ctranslate2
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise EngineError(f"engine.backend = faster-whisper needs the faster-whisper package ({exc}); "
                          "install it with: pip install 'streamer[bench]'") from None
    device = _device(config.device, ctranslate2)
    compute_type = _compute_type(config, device)
    path = _model_path(config)
    threads = config.threads or len(os.sched_getaffinity(0))
    try:
        model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=threads)
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError(f"faster-whisper could not load {config.model!r} ({type(exc).__name__}: {exc}); use an "
                          "embedded model (base, tiny.en) or a local CTranslate2 folder") from None
    engine = FasterWhisperEngine(model, config)
    if config.warmup:
        engine.decode(DecodeRequest(np.zeros(SAMPLE_RATE, dtype=np.float32)))
    return engine
