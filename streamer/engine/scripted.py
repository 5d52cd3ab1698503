"""A scripted engine: the real :class:`~streamer.hypothesis.Engine` interface without a model.

It drives policy and protocol tests in milliseconds. A *timeline* script plays the part of a
perfect recogniser: words live at fixed times on the stream's audio timeline, and a decode of
a window returns those whose audio lies in it (optionally with the last word still wrong, as
Whisper's unstable tail often is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from streamer.hypothesis import (MAX_PROMPT_TOKENS, MAX_WINDOW_SECONDS, SAMPLE_RATE, DecodeRequest, Hypothesis, Word,
                                 validate_window)

# The language codes of multilingual Whisper (before large-v3's "yue"), in token order; a test
# checks them against the embedded base model's tokenizer.
WHISPER_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt "
    "la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc "
    "ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
).split()


@dataclass
class ScriptedEngine:
    """Returns ``script(request)`` for each request and records every call.

    It describes itself as a multilingual Whisper on the CPU, so callers that check a
    language code or the window limit see what the real model would tell them.
    """

    script: Callable[[DecodeRequest], Hypothesis]
    name: str = "scripted"
    device: str = "cpu"
    dtype: str = "float32"
    max_window_seconds: float = MAX_WINDOW_SECONDS
    languages: tuple[str, ...] = tuple(WHISPER_LANGUAGES)
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    beam_search: bool = True
    encoder_cuts: bool = True
    calls: list[DecodeRequest] = field(default_factory=list)

    def decode(self, request: DecodeRequest) -> Hypothesis:
        validate_window(request.audio)
        self.calls.append(request)
        return self.script(request)

    def decode_batch(self, requests: Sequence[DecodeRequest]) -> list[Hypothesis]:
        return [self.decode(r) for r in requests]

    def prompt_tokens(self, text: str) -> int:
        """Words stand in for tokens: a scripted model has no tokenizer."""
        return len(text.split())


def timeline_script(words: Sequence[Word], unstable_tail: bool = False, language: str = "en",
                    language_probs: tuple[tuple[str, float], ...] = ()) -> Callable[[DecodeRequest], Hypothesis]:
    """A script that 'hears' the words of a fixed stream timeline inside each window.

    A word is heard when its whole span lies inside the window. With ``unstable_tail`` the
    last heard word is garbled unless the window extends 1 s beyond it, like a real model
    that has not yet heard the end of a word's context. ``language_probs`` is the detector's
    evidence, returned (as a real engine does) when the request has no language or asks for it.
    """

    def script(request: DecodeRequest) -> Hypothesis:
        start = request.offset
        end = start + len(request.audio) / SAMPLE_RATE
        heard = [w for w in words if w.start >= start - 1e-6 and w.end <= end + 1e-6]
        window_words = [w.shifted(-start) for w in heard]
        if unstable_tail and heard and heard[-1].end > end - 1.0:
            last = window_words[-1]
            window_words[-1] = Word(last.word + "-ish", last.start, last.end, 0.3)
        asked = not request.language or request.detect_language
        return Hypothesis(words=tuple(window_words), language=language, avg_logprob=-0.2,
                          no_speech_prob=0.01 if heard else 0.9, compression_ratio=1.2,
                          language_probs=language_probs if asked else ())

    return script
