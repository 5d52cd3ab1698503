"""Pure geometry of a decode window: its words on the stream timeline, and where to cut the buffer.

Whisper times words relative to the window; the window may have cut pauses inside it (a
:class:`~streamer.core.buffer.TimeMap` maps back). The buffer is bounded by cutting it at a
committed word boundary (``trim_point``), or, when it reaches its cap, by committing the
window's first part and cutting there (``forced_cut``). No state here: the stream core
decides when, these functions decide where.
"""

from __future__ import annotations

from itertools import dropwhile
from typing import Sequence

from streamer.core.buffer import TimeMap
from streamer.core.guards import drop_nonspeech
from streamer.hypothesis import SAMPLE_RATE, Word

BEYOND_END = 0.2        # s: words starting this far past the window's audio are invented
END_PILEUP = 0.05       # s: only one word can start this close to the window's end; the ones after it are invented
NONSPEECH_TOLERANCE = 0.1  # s: Whisper's word times are this loose; a word farther from speech is invented
MAX_WORD_SECONDS = 0.5  # plus 0.15 s per character: Whisper stretches a window's last word to its end
KEEP_AFTER_TRIM = 0.5   # a trim keeps about this fraction of trim_to (committed audio as context)
SENTENCE_LOOKBACK = 3.0  # s: a sentence end this far before the ideal cut is preferred to it
SENTENCE_END = (".", "?", "!", "。", "？", "！")
LEADING_JUNK = frozenset(".,;:!?…。、，！？：；")  # marks that close something: a window cannot start with them


def stream_words(words: Sequence[Word], timemap: TimeMap,
                 speech: list[tuple[float, float]] | None) -> list[Word]:
    """Window times -> stream times; drop words past the audio or outside VAD speech (``speech``), all
    but the first of the words that start at the window's very end, and marks alone before the first
    word (Whisper echoing a prompt's punctuation: "not! . What your")."""
    length = sum(n for _, n in timemap.runs) / SAMPLE_RATE
    out = []
    at_end = 0
    for w in dropwhile(lambda w: w.word.strip() and set(w.word.strip()) <= LEADING_JUNK, words):
        if "\ufffd" in w.word:  # never commit a broken character, whatever the engine sends
            w = Word(w.word.replace("\ufffd", ""), w.start, w.end, w.probability)
        if w.start > length + BEYOND_END or not w.word.strip():
            continue
        if w.start >= length - END_PILEUP and any(ch.isalnum() for ch in w.word):
            # Whisper going on past the audio times every invented word at the window's end
            # ("his life was a bit more than a single day", nine words at one instant)
            at_end += 1
            if at_end > 1:
                continue
        start = timemap.to_stream(w.start)
        longest = MAX_WORD_SECONDS + 0.15 * len(w.word.strip())
        end = max(timemap.to_stream(min(w.end, length, w.start + longest)), start)
        out.append(Word(w.word, round(start, 3), round(end, 3), w.probability))
    return out if speech is None else drop_nonspeech(out, speech, NONSPEECH_TOLERANCE)


def trim_point(start: float, end: float, committed: Sequence[Word], tentative: Sequence[Word],
               trim_to: float) -> float | None:
    """Where to cut a buffer [start, end) longer than ``trim_to``, keeping about half of it.

    Some already-committed audio stays as context: a window that starts right at the
    uncommitted words (often mid-sentence, a second or two long) is where Whisper, small
    models especially, garbles or drops words. A cut between committed words only, a sentence
    end preferred; None when no committed word lies in the buffer.
    """
    target = end - trim_to * KEEP_AFTER_TRIM
    inside = []  # indices of committed words in the buffer, newest first
    for i in range(len(committed) - 1, -1, -1):
        if committed[i].start < start:
            break
        inside.append(i)
    if not inside:
        return None
    early = [i for i in inside if committed[i].end <= target] or inside[:1]
    sentence = [i for i in early if committed[i].end >= target - SENTENCE_LOOKBACK
                and committed[i].word.rstrip().endswith(SENTENCE_END)]
    pick = (sentence or early)[0]
    following = committed[pick + 1] if pick + 1 < len(committed) else next(iter(tentative), None)
    cut = committed[pick].end
    if following is not None and following.start > cut:
        cut = (cut + following.start) / 2
    return cut


def forced_cut(timemap: TimeMap, max_buffer: float, trim_to: float) -> float:
    """Stream time up to which a window at the buffer's cap commits its words (its first part)."""
    return timemap.to_stream(max_buffer - trim_to)


def cut_before_word(cut: float, tentative: Sequence[Word], window_start: float) -> float:
    """Move a cut back to the start of the uncommitted word it would split (it is decoded again)."""
    if tentative and tentative[0].start < cut and tentative[0].start > window_start + 0.5:
        return tentative[0].start
    return cut
