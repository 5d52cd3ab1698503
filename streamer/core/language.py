"""Which language each window is decoded in: the user's, or a detected one that does not flip.

Whisper detects a language per window. On a one-second window of Spanish it may well say
Portuguese, and decoding in the guess turned whole phrases into the wrong language (or
script). The policy here keeps the stream's language steady:

* Until a language is *established*, windows are detected and decoded as detected, but only a
  confident guess (or one from a long window) establishes it.
* Once established, every window is decoded in it, and detection still runs on each window as
  evidence. Another language takes over only when it wins clearly on consecutive windows
  (hysteresis), so a speaker who changes language between utterances is followed, one short
  window's guess is not.
* While a challenger is pending, the window's words are not trustworthy (they were decoded in a
  language that may be wrong), so the caller commits nothing from them.

A fixed language (the client's ``language``) bypasses all of it. A list of expected languages
(``"en,de"``) keeps all of it, with detection choosing among those only: a bilingual speaker's
short first phrase cannot come out in a third language (base heard the drawn-out "Montreal"
of ``mfa/mfa_long.wav`` as Korean, 0.47, in 1.25 s of audio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

CONFIDENT = 0.8        # a detection this sure establishes the stream's language at once
LONG_WINDOW = 3.0      # s: ... and so does a guess from a window at least this long
SWITCH_PROBABILITY = 0.6  # another language must reach this probability ...
SWITCH_MARGIN = 0.3       # ... beat the current one by this much ...
SWITCH_WINDOWS = 2        # ... on this many consecutive windows


@dataclass(frozen=True)
class LanguageChoice:
    """What to ask the engine: decode in ``language`` (None: detect and decode as detected), and
    whether to run detection as evidence."""

    language: str | None
    detect: bool
    among: tuple[str, ...] = ()  # detection chooses among these only (empty: any the model knows)


def language_codes(value: str | None) -> tuple[str, ...]:
    """``"en"`` -> ``("en",)``, ``"en, de"`` -> ``("en", "de")``, None or empty -> ``()``."""
    codes = (code.strip().lower() for code in (value or "").split(","))
    return tuple(dict.fromkeys(code for code in codes if code))


def fixed_or_among(value: str | None) -> tuple[str | None, tuple[str, ...]]:
    """``"en"`` -> ``("en", ())`` (a fixed language), ``"en,de"`` -> ``(None, ("en", "de"))`` (detect among)."""
    codes = language_codes(value)
    return (codes[0], ()) if len(codes) == 1 else (None, codes)


class LanguagePolicy:
    """Per-stream language decision (see the module docstring)."""

    def __init__(self, language: str | None = None) -> None:
        self.fixed, self.among = fixed_or_among(language)
        self.current: str | None = self.fixed
        self._challenger: str | None = None
        self._wins = 0

    def choice(self) -> LanguageChoice:
        if self.fixed:
            return LanguageChoice(self.fixed, False)
        return LanguageChoice(self.current, True, self.among)

    @property
    def unsure(self) -> bool:
        """A challenger is pending: the last window's words may be in the wrong language."""
        return self._challenger is not None

    @property
    def established(self) -> bool:
        return self.current is not None

    def observe(self, decoded_in: str | None, probabilities: Sequence[tuple[str, float]],
                window_seconds: float) -> None:
        """One window's evidence: the language it was decoded in and the detector's top candidates."""
        if self.fixed:
            return
        scores = dict(probabilities)
        if not scores and decoded_in:
            scores = {decoded_in: 1.0}
        if not scores:
            return
        best, best_p = max(scores.items(), key=lambda kv: kv[1])
        if self.current is None:
            if best_p >= CONFIDENT or window_seconds >= LONG_WINDOW:
                self.current = best
            return
        if best == self.current:
            self._challenger, self._wins = None, 0
            return
        clear = best_p >= SWITCH_PROBABILITY and best_p - scores.get(self.current, 0.0) >= SWITCH_MARGIN
        if not clear:
            self._challenger, self._wins = None, 0
            return
        self._wins = self._wins + 1 if best == self._challenger else 1
        self._challenger = best
        if self._wins >= SWITCH_WINDOWS:
            self.current, self._challenger, self._wins = best, None, 0
