"""A sentence's first word starts with a capital, whichever window wrote it.

The mark that ends a sentence and the word that starts the next one are often written by
different windows: the first window heard "surpassed. Printing", the mark was decided from it
(see :mod:`streamer.core.punctuation`), but the window that committed the next word began
after the trim, at "printing then for our purpose", and Whisper wrote it in lower case. The
committed text read "has never been surpassed. printing then", a sentence break no offline
decode makes. The capital of a word is therefore decided by what was committed before it: after
a committed ``.``/``?``/``!`` (not an ellipsis, not an abbreviation such as "i.e." or "Mr."),
the word's first letter is upper case.

A hypothesis written wholly in capitals is written in sentence case (:func:`unshouted`): on a
short window without context Whisper sometimes shouts (base on jfk's 1.5 s "ask not", unprompted:
"ASK NOT!"), and a prompt holding those capitals makes the next window shout too ("ASK what you
can do"). An offline decode of the same audio writes "ask not".

A wrong mark is not hidden by this: the mark is decided before (with audio after its word),
and ``streamer bench text`` counts sentence marks the reference lacks, whatever the case of
the word after them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

from streamer.hypothesis import Word

_SENTENCE_END = re.compile(r"[.?!。？！]$")
# Abbreviations that rarely end a sentence: titles, and words such as "etc." that Whisper writes
# mid-sentence ("psalters, etc., produced by"; a window that heard "etc. produced" made it "etc. Produced").
_NOT_AN_END = re.compile(r"(?:\.\.|…|\b\w\.\w\.|\b(?:Mr|Mrs|Ms|Dr|St|Prof|Jr|Sr|vs|Sra|Srta|Dra|Hr|Nr)\."
                         r"|\b(?i:etc|cf|approx|usw|bzw|vgl)\.)$")
DOTTED_I_LANGUAGES = frozenset({"tr", "az"})  # "i" capitalises to "İ"
TAIL_CHARS = 24


def ends_sentence(text: str) -> bool:
    """Whether committed text ending in ``text`` ends a sentence.

    A stream's first word keeps Whisper's case: Whisper hears whether speech starts a sentence
    (LJ Speech's clips that begin mid-sentence, "in being comparatively modern.", are written in
    lower case by the offline decode too).
    """
    text = text.rstrip()
    if not text:
        return False
    return bool(_SENTENCE_END.search(text)) and not _NOT_AN_END.search(text)


def _shouts(word: str) -> bool:
    cased = [ch for ch in word if ch.isupper() or ch.islower()]
    return len(cased) >= 2 and all(ch.isupper() for ch in cased)


def _has_lower(word: str) -> bool:
    return any(ch.islower() for ch in word)


def unshouted(words: Sequence[Word]) -> list[Word]:
    """``words`` (one hypothesis) in sentence case if all of its cased words are capitals.

    It takes two words of two or more capital letters, and none with a small letter, so an
    acronym among ordinary words ("the FBI said") or alone ("NASA.") is kept. The first word
    keeps its capital initial, as Whisper writes a window's first word; every other letter is
    small (a shouted German noun loses its capital: rarer than a shouted phrase).
    """
    if sum(_shouts(w.word) for w in words) < 2 or any(_has_lower(w.word) for w in words):
        return list(words)
    out = [replace(w, word=w.word.lower()) for w in words]
    first = next((i for i, w in enumerate(out) if _has_lower(w.word)), None)
    if first is not None:
        out[first] = replace(out[first], word=_capitalised(out[first].word, None))
    return out


def _initial(text: str) -> int | None:
    """Index of the first cased letter of ``text``, if any."""
    return next((i for i, ch in enumerate(text) if ch.isupper() or ch.islower()), None)


def starts_small(text: str) -> bool:
    """Whether the first cased letter of ``text`` is a small one."""
    at = _initial(text)
    return at is not None and text[at].islower()


def with_small_initial(text: str) -> str:
    """``text`` with its first cased letter small (unchanged without one)."""
    at = _initial(text)
    return text if at is None else text[:at] + text[at].lower() + text[at + 1:]


def _capitalised(text: str, language: str | None) -> str:
    for i, char in enumerate(text):
        if char.isalpha():
            if not char.islower():
                return text
            upper = "İ" if char == "i" and language in DOTTED_I_LANGUAGES else char.upper()
            return text[:i] + upper + text[i + 1:]
        if not char.isspace() and char not in "\"'(¿¡«“‘":
            return text  # starts with a digit or a symbol
    return text


class SentenceCase:
    """Remembers the end of the committed text; capitalises the words that start a sentence."""

    def __init__(self, tail: str = "") -> None:
        self._tail = tail[-TAIL_CHARS:]

    def resume(self, tail: str) -> None:
        """A resumed stream continues after ``tail`` (its committed text so far)."""
        self._tail = tail[-TAIL_CHARS:]

    def apply(self, words: Sequence[Word], language: str | None) -> list[Word]:
        """``words`` (about to be committed, in order) with each sentence's first word capitalised."""
        out = []
        for word in words:
            if word.word.strip() and ends_sentence(self._tail):
                word = replace(word, word=_capitalised(word.word, language))
            out.append(word)
            self._tail = (self._tail + word.word)[-TAIL_CHARS:]
        return out
