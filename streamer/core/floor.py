"""Where a resumed stream's new words begin: audio before the floor was committed elsewhere.

A resumed stream may replay some already-committed audio before the resume point (the client's
``context_seconds``) so that its first window does not start mid-sentence: a window that begins
right at the uncommitted words is where Whisper drops or garbles words (tiny.en, prompted with
"ask not", skipped "your country can do for you, ask what" from a window starting at "what").
The words Whisper hears in that context were committed by the previous connection: they are
matched against the committed tail text (known) at the floor time and never committed again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from streamer.core.agreement import MAX_OVERLAP, new_words_after
from streamer.hypothesis import Word


class CommitFloor:
    """Nothing before ``until`` (stream seconds) is new; ``tail`` is the committed text that ends there."""

    def __init__(self, until: float = 0.0, tail: str = "") -> None:
        self.until = until
        # the tail's last words, all placed at the floor: new_words_after matches their text
        # against a hypothesis' head and splits by time where the text does not match
        self._tail = [Word(" " + w, until, until) for w in tail.split()[-MAX_OVERLAP:]] or [Word("", until, until)]

    def fresh(self, words: Sequence[Word], window_start: float) -> list[Word]:
        """The words of a window that lie after the floor (all of them once windows start past it)."""
        if window_start >= self.until:
            return list(words)
        # a new word that Whisper starts a few ms before the floor starts at it: the timeline stays ordered
        return [starting_no_earlier(w, self.until) for w in new_words_after(self._tail, words)]

    def clamp(self, seconds: float) -> float:
        """A committed-until time never goes back before the floor."""
        return max(self.until, seconds)


def in_time_order(new: Sequence[Word], after: float) -> list[Word]:
    """``new`` committed words, each starting no earlier than the one before it (the first: ``after``).

    Committed words are a timeline clients index by time. Whisper times each window on its own, so a
    later window can place a word a few ms before one an earlier window committed (a resumed stream's
    context window moved a word up to the floor, 20 ms before a word already committed past it); such a
    word is moved to start where the previous one starts, its end no earlier than its start.
    """
    out = []
    for word in new:
        out.append(starting_no_earlier(word, after))
        after = out[-1].start
    return out


def starting_no_earlier(word: Word, time: float) -> Word:
    """``word``, moved to start at ``time`` if it starts before it (its end no earlier than its start)."""
    if word.start >= time:
        return word
    return replace(word, start=time, end=max(word.end, time))
