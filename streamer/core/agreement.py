"""LocalAgreement-n: commit the words on which the last n hypotheses agree.

Each decode re-reads the whole buffer, so its hypothesis repeats words that are already
committed (those still inside the buffer) and ends in an unstable tail. Two things make that
robust here:

* Matching is on normalised words (case and punctuation ignored), so "Hello," and "hello"
  agree and a late comma does not hold a word back.
* Where the agreeing hypotheses write a word in different case, the small initial wins: a
  capital that only one of them has comes from a sentence break that hypothesis put before
  it, usually at its window's end ("perfection. And it was" after "perfection, and it was";
  the committed text read "perfection, And it was"). A sentence that really starts there is
  capitalised by what was committed before it (:mod:`streamer.core.casing`). A window's first
  word keeps the newest hypothesis' case: there no hypothesis heard a word before it, and the
  longer window hears better whether a sentence starts there (a stream's "printing in the" in
  its first second, "Printing in the" later; a new utterance's first word, whose case decides
  whether the last one ended a sentence, :mod:`streamer.core.punctuation`).
* Finding where the committed text ends inside a new hypothesis uses both time (word
  midpoints against the end of the last committed word) and text (the committed tail
  matched against the hypothesis near that point), so timestamp jitter at the buffer start
  after a trim neither duplicates a committed word nor drops a new one.

Committed words are append-only: nothing here ever changes or removes one.
"""

from __future__ import annotations

import difflib
import unicodedata
from typing import Sequence

from streamer.core.casing import starts_small, with_small_initial
from streamer.hypothesis import Word

TIME_TOLERANCE = 0.05   # s: a word whose midpoint is this close before the committed end is new
MAX_OVERLAP = 5         # longest committed tail compared against a new hypothesis head
NEAR_SECONDS = 0.5      # a one-word text match only counts this close to the committed end
AGREE_SECONDS = 1.0     # the same word in two hypotheses: midpoints at most this far apart


def normalize_word(text: str) -> str:
    """Case- and punctuation-insensitive form of a word for comparison."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    core = "".join(ch for ch in folded if ch.isalnum())
    return core or folded.strip()


def _keys(words: Sequence[Word]) -> list[str]:
    return [normalize_word(w.word) for w in words]


def common_prefix_length(sequences: Sequence[Sequence[Word]]) -> int:
    """Number of leading words on which all sequences agree: the same word (normalised) at about the same time.

    The time matters when Whisper skips audio: a window that heard "que la escribiese en la
    seguridad ..." at 31 s and the next one that jumped straight to "que me daría" at 35 s agree
    on the text "que", and committing it would lose everything between forever.
    """
    keys = [_keys(s) for s in sequences]
    n = min(len(k) for k in keys) if keys else 0
    for i in range(n):
        if any(k[i] != keys[0][i] for k in keys[1:]):
            return i
        middles = [(s[i].start + s[i].end) / 2 for s in sequences]
        if max(middles) - min(middles) > AGREE_SECONDS:
            return i
    return n


def new_words_after(committed: Sequence[Word], words: Sequence[Word]) -> list[Word]:
    """The part of ``words`` (stream times) that comes after the committed words."""
    words = list(words)
    if not committed or not words:
        return words
    last_end = committed[-1].end
    split = next((i for i, w in enumerate(words) if (w.start + w.end) / 2 > last_end - TIME_TOLERANCE), len(words))
    split = _refine_split(committed, words, split, last_end)
    if split < len(words) and _respelled(committed[-1], words[split]):
        split += 1
    for i in (split - 1, split):  # the word the committed one may have been joined into
        joined = _joined_remainder(committed[-1], words[i]) if 0 <= i < len(words) else None
        if joined is not None:
            return [joined, *words[i + 1:]]
    return words[split:]


def _joined_remainder(last: Word, word: Word) -> Word | None:
    """The new part of ``word`` if it is the committed ``last`` word hyphen-joined to the next one.

    A later window may write two words as one: the sonnet's committed "bud," came back as
    "bud-barreest" (for "bud buriest"). Taken as the committed word heard again, the word after
    the hyphen was lost; taken as new, "bud" was written twice. Its part after the hyphen is the
    new word, timed from the committed word's end.
    """
    head, hyphen, rest = word.word.strip().partition("-")
    key = normalize_word(head)
    if not hyphen or not normalize_word(rest).isalnum() or not key.isalnum() or key != normalize_word(last.word):
        return None
    if word.start >= last.end or word.end <= last.end + TIME_TOLERANCE:
        return None  # a word of its own after the committed one, or one that ends with it: nothing joined
    return Word(" " + rest, max(word.start, last.end), word.end, word.probability)


def _respelled(last: Word, first: Word) -> bool:
    """Is ``first`` the committed ``last`` word heard again, spelt differently ("Bazel"/"Basil")?

    Exact repeats are handled by text matching; a re-spelling defeats it. It is the same
    word when it lies mostly inside the committed word's time span and the spellings are
    similar, or when it is the end of the committed word and starts inside it (a pause decode
    of the sonnet committed "self-difoe," and the next window heard "Thyself thy foe": "foe"
    was committed again).
    """
    overlap = min(last.end, first.end) - max(last.start, first.start)
    duration = max(first.end - first.start, 1e-3)
    a, b = normalize_word(last.word), normalize_word(first.word)
    if a != b and len(b) >= 3 and a.endswith(b) and overlap > TIME_TOLERANCE:
        return True  # the end of a committed compound heard as a word of its own: "self-difoe", then "thy foe"
    if overlap < 0.5 * duration:
        return False
    if a == b or min(len(a), len(b)) < 4:  # short words ("cat"/"sat") are too alike to judge
        return False
    return difflib.SequenceMatcher(a=a, b=b).ratio() >= 0.6


def _refine_split(committed: Sequence[Word], words: list[Word], split: int, last_end: float) -> int:
    """Move the time-based split to where the committed tail's text ends, if it matches nearby.

    Nearby is two words either side, or further on when the match spans the time split: a window
    that ended right after "may just be considered," timed those words early, the next one timed
    them 0.5 s later, the split fell after "may", and "just be considered" was committed twice.
    """
    tail = _keys(committed[-MAX_OVERLAP:])
    keys = _keys(words)
    best: tuple[int, int] | None = None  # (overlap length, -distance) -> split index
    best_split = split
    for j in range(max(0, split - 2), min(len(words), split + MAX_OVERLAP) + 1):
        for m in range(min(len(tail), j), 0, -1):
            if keys[j - m:j] != tail[-m:]:
                continue
            if j > split + 2 and j - m >= split:
                continue  # far past the split, only a match that reaches back across it
            if m == 1 and j != split and words[j - 1].start > last_end + NEAR_SECONDS:
                continue  # a lone common word far from the committed end: a real repeat, not overlap
            score = (m, -abs(j - split))
            if best is None or score > best:
                best, best_split = score, j
            break
    return best_split


def _small_initials(new: Sequence[Word], window_first: bool, versions: Sequence[Sequence[Word]]) -> list[Word]:
    """``new`` with a small initial on each word that one of its other ``versions`` writes so.

    Not on a window's first word (see the module docstring)."""
    out = []
    for i, (word, others) in enumerate(zip(new, versions)):
        if not (i == 0 and window_first) and not starts_small(word.word) and any(starts_small(o.word) for o in others):
            word = Word(with_small_initial(word.word), word.start, word.end, word.probability)
        out.append(word)
    return out


def _same_word(word: Word, earlier: Sequence[Word]) -> list[Word]:
    """The words of ``earlier`` that are ``word`` (same normalised text, about the same time)."""
    key, middle = normalize_word(word.word), (word.start + word.end) / 2
    return [w for w in earlier
            if normalize_word(w.word) == key and abs((w.start + w.end) / 2 - middle) <= AGREE_SECONDS]


class LocalAgreement:
    """Commits the longest prefix agreed by the last ``n`` hypotheses, after the committed words."""

    def __init__(self, n: int = 2) -> None:
        if n < 1:
            raise ValueError("LocalAgreement needs n >= 1")
        self.n = n
        self.committed: list[Word] = []
        self._tails: list[list[Word]] = []  # uncommitted tails of the last n-1 hypotheses
        self._preview = False  # the latest tail is shown, but does not vote

    @property
    def tentative(self) -> list[Word]:
        """The unstable tail of the latest hypothesis."""
        return list(self._tails[-1]) if self._tails else []

    def insert(self, words: Sequence[Word]) -> list[Word]:
        """Add a hypothesis (stream times); return the words it newly commits."""
        tail = new_words_after(self.committed, words)
        history, self._preview = ([] if self._preview else self._tails), False
        candidates = [*history, tail][-self.n:]
        agreed = common_prefix_length(candidates) if len(candidates) >= self.n else 0
        window_first = len(tail) == len(words)  # no word before the first new one in the newest window
        new = _small_initials(tail[:agreed], window_first, [[c[i] for c in candidates] for i in range(agreed)])
        self.committed.extend(new)
        self._tails = [c[agreed:] for c in candidates][-max(self.n - 1, 1):]
        if self.n == 1:
            self._tails = [[]]
        return new

    def preview(self, words: Sequence[Word]) -> None:
        """Show a hypothesis as the tentative tail without letting it vote in the next agreement.

        For a window too short to trust: base on 1 s of "Had he married a more amiable woman"
        heard "How do you marry a demon?", and the 2 s window's "How do you marry a more amiable
        woman?" agreed with it on "How do you marry a"; from 3 s on it heard "Had he married".
        """
        self._tails = [new_words_after(self.committed, words)]
        self._preview = True

    def commit_all(self, words: Sequence[Word]) -> list[Word]:
        """Commit every new word of a final hypothesis (end of utterance or stream)."""
        new = new_words_after(self.committed, words)
        self.committed.extend(new)
        self._tails, self._preview = [], False
        return new

    def commit_until(self, words: Sequence[Word], until: float, *, by_start: bool = False) -> list[Word]:
        """Commit the leading new words that end by ``until`` (or start before it, ``by_start``).

        Used when a single hypothesis is trusted for part of the window: the first part of a
        window when the buffer hits its cap, or the words before a pause. The rest stays
        tentative and becomes the history for the next agreement. A word the previous
        hypothesis wrote with a small initial keeps it, as in :meth:`insert` (a pause decode
        after a trim heard "whatever they were. The forms", the update before it "whatever they
        were, the forms", whose comma was committed: "were, The forms").
        """
        tail = new_words_after(self.committed, words)
        count = 0
        for w in tail:
            if (w.start >= until) if by_start else (w.end > until):
                break
            count += 1
        earlier = self.tentative
        new = _small_initials(tail[:count], len(tail) == len(words), [_same_word(w, earlier) for w in tail[:count]])
        self.committed.extend(new)
        self._tails, self._preview = [tail[count:]], False
        return new

    def reset_history(self) -> None:
        """Forget earlier hypotheses (a new utterance starts); commits stay."""
        self._tails = []
        self._preview = False
