"""Quality and latency measures shared by the benchmarks and the end-to-end tests.

WER is always computed after Whisper's English text normaliser, as the project's targets
are stated. Sentence latency aligns committed words to the reference text (not to word
times, which Whisper estimates only roughly) to find when each sentence's last word was
committed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from streamer.core.agreement import normalize_word


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normaliser (spelling, numbers, punctuation, case)."""
    return _normalizer()(text)


def wer(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus word error rate of hypotheses against references, after normalisation.

    Pairs whose normalised reference is empty are skipped (WER is undefined there; count
    hallucinated words on non-speech separately).
    """
    import jiwer

    if isinstance(references, str):
        references, hypotheses = [references], [hypotheses]  # type: ignore[list-item]
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    if not pairs:
        return 0.0
    return float(jiwer.wer([r for r, _ in pairs], [h if h.strip() else "<empty>" for _, h in pairs]))


def word_edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance between two texts after normalisation."""
    x, y = normalize_text(a).split(), normalize_text(b).split()
    row = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        prev, row[0] = row[0], i
        for j, wy in enumerate(y, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (wx != wy))
    return row[-1]


def percentile(values: Iterable[float], q: float) -> float | None:
    values = list(values)
    return float(np.percentile(values, q)) if values else None


@dataclass(frozen=True)
class CommittedWord:
    """A committed word and the wall-clock time (s since the first sample) it was committed."""

    word: str
    start: float
    end: float
    committed_at: float


def sentence_latencies(segments: Sequence[dict], committed: Sequence[CommittedWord], *,
                       marks: bool = False) -> list[float | None]:
    """Per sentence (``{"start", "end", "text"}``): when its last word was committed, minus its end.

    Committed words are aligned to the reference words; a sentence's last word is the last
    committed word before the first word aligned to the next sentence (so a misrecognised
    final word still counts). None when no word of the sentence was committed. A trailing mark
    committed as its own item (it waits for audio after the word) is not the word: it counts
    only with ``marks``, which measures when the sentence's punctuation arrived.
    """
    if not marks:
        committed = [w for w in committed if any(c.isalnum() for c in w.word)]
    ref_keys, ref_sentence = [], []
    for index, segment in enumerate(segments):
        for token in segment["text"].split():
            key = normalize_word(token)
            if key:
                ref_keys.append(key)
                ref_sentence.append(index)
    hyp_keys = [normalize_word(w.word) for w in committed]
    matcher = difflib.SequenceMatcher(a=ref_keys, b=hyp_keys, autojunk=False)
    first_hyp: dict[int, int] = {}   # sentence -> first committed index aligned to it
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            first_hyp.setdefault(ref_sentence[block.a + k], block.b + k)
    out: list[float | None] = []
    for index, segment in enumerate(segments):
        if index not in first_hyp:
            out.append(None)
            continue
        following = [first_hyp[i] for i in first_hyp if i > index]
        stop = min(following) if following else len(committed)
        last = committed[stop - 1] if stop > first_hyp[index] else committed[first_hyp[index]]
        out.append(round(last.committed_at - segment["end"], 3))
    return out


def words_in_spans(words: Sequence[CommittedWord], spans: Sequence[tuple[float, float]]) -> list[CommittedWord]:
    """Words whose midpoint lies inside any of the spans (e.g. the pauses of a file)."""
    return [w for w in words if any(a <= (w.start + w.end) / 2 <= b for a, b in spans)]


def pauses(segments: Sequence[dict], min_gap: float = 2.0, margin: float = 0.5) -> list[tuple[float, float]]:
    """Gaps of at least ``min_gap`` seconds between consecutive sentences, shrunk by ``margin``."""
    spans = []
    for before, after in zip(segments, segments[1:]):
        if after["start"] - before["end"] >= min_gap:
            spans.append((before["end"] + margin, after["start"] - margin))
    return spans
