"""Comparing transcripts: one normaliser (Whisper's English one) and one word edit distance."""

from __future__ import annotations

from collections import Counter

from streamer.bench.metrics import normalize_text, word_edit_distance


def words(text: str) -> list[str]:
    """The words of a transcript after Whisper's English normaliser (case, punctuation, spelling)."""
    return normalize_text(text).split()


def word_distance(a: str, b: str) -> int:
    """Word-level edit distance between two transcripts, after normalisation."""
    return word_edit_distance(a, b)


def recall(hypothesis: str, reference: str) -> float:
    """Share of reference words found in the hypothesis (as a multiset): lenient, for tiny.en."""
    pool = Counter(words(hypothesis))
    ref = words(reference)
    hit = 0
    for w in ref:
        if pool[w] > 0:
            pool[w] -= 1
            hit += 1
    return hit / max(1, len(ref))
