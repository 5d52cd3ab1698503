"""Trailing punctuation decided with context: a word may commit before its punctuation does.

Whisper ends a window's last word with a period because the window ends there, not because
the sentence does. Committing that period at a pause made captions read "we are at present
concerned different. from most if not from all the arts". So the last word of each commit
commits without its trailing punctuation: the mark is *held*, and decided by the next
hypothesis that contains the word and a word after it (its verdict may be "no punctuation at
all"), by the case of the next committed word when the word is no longer in the window, or as it
stands when the stream truly ends (long silence, stop). A word committed bare is held the same way:
a pause decode committed "concerned" and the next window heard "concerned, differs", the comma an
offline decode writes. A mark followed by a word in the committing hypothesis is held too: the
hypothesis it agreed with may have ended right there ("the lower case." then "the lower case.
Then the case is complete." committed "case." before "the lower case than the capital
letters"). Marks inside a commit, followed by committed words, are agreed on and commit at once.

A decided mark is committed as its own item: a :class:`Word` whose text is the punctuation
alone, with no leading space, at the end time of the word it belongs to. Joining committed
words (what every client does) therefore still gives the right text.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

from streamer.core.agreement import normalize_word
from streamer.hypothesis import Word

SENTENCE_MARKS = frozenset(".?!。？！…")
MATCH_SECONDS = 0.5  # a hypothesis word this close to the held word (midpoints) is the same word


def split_trailing(text: str) -> tuple[str, str]:
    """``" different."`` -> ``(" different", ".")``; a word with nothing but punctuation keeps it."""
    end = len(text)
    while end > 0 and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    if not text[:end].strip():
        return text, ""
    return text[:end], text[end:]


def _starts_lower(text: str) -> bool:
    first = next((c for c in text if c.isalpha()), "")
    return first.islower()


class HeldPunctuation:
    """The one trailing mark that waits for audio after its word (see the module docstring)."""

    def __init__(self) -> None:
        self.word: Word | None = None   # the committed word the mark belongs to
        self.mark: str = ""

    @property
    def pending(self) -> bool:
        return self.word is not None

    @property
    def tentative(self) -> list[Word]:
        """The held mark as a tentative item, so a display can show it until it is decided."""
        return [self._item(self.mark)] if self.word is not None and self.mark else []

    def settle(self, hypothesis: Sequence[Word], new: list[Word], *, ended: bool = False) -> list[Word]:
        """Commit order for one accepted update: a decided mark first, then ``new`` (its last mark held if unheard).

        ``hypothesis`` is the update's words on the stream timeline; ``new`` the words it commits.
        ``ended``: the hypothesis is the final decode of an utterance, which heard the silence after its
        last word, so that word's mark in it is a verdict too (jfk's pause decode wrote "country!",
        the final decode of the same words, with the pause after them, "country.").
        """
        out = self._decide(hypothesis, new, ended)
        if new:
            last, mark = split_trailing(new[-1].word)
            if mark or any(ch.isalnum() for ch in last):  # a bare word too: a comma may come with context
                self.word = Word(last, new[-1].start, new[-1].end, new[-1].probability)
                self.mark = mark
                new = [*new[:-1], self.word]
        return out + new

    def hold(self, word: Word, mark: str) -> None:
        """Hold ``mark`` for ``word``, committed elsewhere (a resumed stream carries it over)."""
        self.word, self.mark = (word, mark) if mark else (None, "")

    def in_prompt(self, last_committed: Word | None, prompt_end: float, tolerance: float) -> str:
        """The held mark, when its word ends a prompt that ends at ``prompt_end``: without it the
        prompt reads as if the sentence went on (verse, base: streamed WER 27.2 -> 21.9 % with it).
        Not an exclamation or an ellipsis: Whisper ends short windows with them, and tiny.en
        prompted "Ask, not!" heard "Why'd you are country" for "what your country"."""
        word, mark = self.word, self.mark
        if word is None or last_committed is not word or word.end > prompt_end + tolerance:
            return ""
        return "" if any(c in mark for c in "!！…") or ".." in mark else mark

    def release(self) -> list[Word]:
        """The stream truly ended (long silence, stop): the mark stands as Whisper wrote it."""
        out = [self._item(self.mark)] if self.word is not None and self.mark else []
        self.word, self.mark = None, ""
        return out

    def _decide(self, hypothesis: Sequence[Word], new: list[Word], ended: bool) -> list[Word]:
        if self.word is None:
            return []
        verdict = self._verdict_from(hypothesis if ended else hypothesis[:-1])
        if verdict is None:
            if not new:
                return []  # nothing heard after the word yet: keep holding
            # The word has left the window (a new utterance): the next word's case tells whether a
            # sentence ended there; a lowercase continuation means the mark was the window's end.
            sentence_end = bool(self.mark) and self.mark[-1] in SENTENCE_MARKS
            verdict = "" if sentence_end and _starts_lower(new[0].word) else self.mark
        out = [self._item(verdict)] if verdict else []
        self.word, self.mark = None, ""
        return out

    def _verdict_from(self, hypothesis: Sequence[Word]) -> str | None:
        """The held word's trailing punctuation in ``hypothesis`` (the words that heard audio after them).

        The word is found by its text near its time, or, re-spelt ("basil." held, "Basel, Paris"
        heard), as the word covering most of its time.
        """
        held = self.word
        key = normalize_word(held.word)
        middle = (held.start + held.end) / 2
        candidates = [w for w in hypothesis if split_trailing(w.word)[0].strip()]  # not a lone mark
        for w in candidates:
            if normalize_word(w.word) == key and abs((w.start + w.end) / 2 - middle) <= MATCH_SECONDS:
                return split_trailing(w.word)[1]
        def covered(w: Word) -> float:
            return min(w.end, held.end) - max(w.start, held.start)

        best = max(candidates, key=covered, default=None)
        if best is not None and covered(best) >= 0.5 * max(held.end - held.start, 1e-3):
            return split_trailing(best.word)[1]
        return None

    def _item(self, mark: str) -> Word:
        return Word(mark, self.word.end, self.word.end, self.word.probability)
