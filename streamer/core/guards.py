"""Anti-hallucination checks on a hypothesis, before any of its words can be committed.

Whisper invents text on silence, noise and music ("Thank you.", "Subtitles by ..."), and
sometimes loops on a phrase. VAD gating keeps most of that audio away from the model; these
checks catch what gets through:

* no-speech: the model's own no-speech probability is high *and* its confidence is low
  (Whisper's rule: average log-probability; and here also a low mean word probability,
  which is what "Thank you." on music looks like: no-speech 0.7, log-probability -0.8,
  words at 0.02 and 0.77),
* compression ratio: highly repetitive text compresses too well. Where the repetition is a loop
  at the end of words that read normally, those words are kept and the loop is cut, as below:
  the cut encoder under load looped "represented in the exhibition, in the exhibition, in the
  exhibition, ..." at a pause, and rejecting the whole hypothesis lost the clause before the
  loop from the pause commit, at 1.7 s of decoding for nothing,
* repeated n-grams: a phrase repeated many times in a row is cut after its first occurrence
  (a word five times, two words four times, a phrase of three to twelve words three times: Whisper's
  loops at a window's end run to whole clauses, "Printing then for our purpose, printing then for
  our purpose, printing then for our purpose,"; a speaker's restart repeats a phrase once); and a
  phrase of four or more words said twice where the hypothesis ends (possibly with the start of a
  third time): the loop Whisper falls into when a pause window's audio runs out ("as all books,
  not primarily intended as picture books, as all books, not primarily intended as picture
  books,"), where the speaker's next words would otherwise follow,
* words outside VAD speech: a word whose audio lies entirely in non-speech is dropped.

A hypothesis that trips a check is *suspect*: the prompt is reset so that a hallucination is
not fed back into the next decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from streamer.config import StreamConfig
from streamer.core.agreement import normalize_word
from streamer.hypothesis import Hypothesis, Word, compression_ratio

MAX_NGRAM = 12
UNSURE_WORDS = 0.5   # mean word probability below which a "maybe no speech" hypothesis is dropped
MIN_REPEATS = {1: 5, 2: 4}  # consecutive occurrences that make a loop; 3 for longer phrases
MIN_TRAILING_LOOP = 4       # a phrase this long said twice to the hypothesis' very end is a loop
MIN_KEPT_BEFORE_LOOP = 4    # words before a loop that make it worth keeping ("Thank you. Thank you. ..." is not)


@dataclass(frozen=True)
class Verdict:
    """What the guards decided about one hypothesis."""

    words: tuple[Word, ...]     # the words that may be used (possibly truncated)
    rejected: bool = False      # nothing from this hypothesis may be committed
    suspect: bool = False       # reset the prompt
    reasons: tuple[str, ...] = ()


def assess(hypothesis: Hypothesis, config: StreamConfig) -> Verdict:
    """Apply the hypothesis-level guards."""
    reasons: list[str] = []
    if hypothesis.no_speech_prob > config.no_speech_threshold and (
            hypothesis.avg_logprob < config.logprob_threshold or mean_probability(hypothesis) < UNSURE_WORDS):
        reasons.append("no_speech")
    words = tuple(hypothesis.words)
    if hypothesis.compression_ratio > config.compression_ratio_threshold:
        kept = None if reasons else words_before_loop(words, config.compression_ratio_threshold)
        if kept is None:
            reasons.append("compression_ratio")
        else:
            return Verdict(kept, suspect=True, reasons=("compression_ratio", "repetition"))
    if reasons:
        return Verdict((), rejected=True, suspect=True, reasons=tuple(reasons))
    loop_at = find_repetition_loop(words)
    if loop_at is not None:
        return Verdict(words[:loop_at], suspect=True, reasons=("repetition",))
    if hypothesis.avg_logprob < config.logprob_threshold:
        return Verdict(words, suspect=True, reasons=("low_logprob",))
    return Verdict(words)


def words_before_loop(words: Sequence[Word], threshold: float) -> tuple[Word, ...] | None:
    """The words before a repetition loop, if they are enough and do not compress past ``threshold`` themselves."""
    loop_at = find_repetition_loop(words)
    if loop_at is None or loop_at < MIN_KEPT_BEFORE_LOOP:
        return None
    kept = tuple(words[:loop_at])
    return kept if compression_ratio("".join(w.word for w in kept).strip()) <= threshold else None


def mean_probability(hypothesis: Hypothesis) -> float:
    """Mean word probability (1.0 without words)."""
    words = hypothesis.words
    return sum(w.probability for w in words) / len(words) if words else 1.0


def find_repetition_loop(words: Sequence[Word]) -> int | None:
    """Index where a run of repeated n-grams starts repeating (after its first occurrence), if any."""
    keys = [normalize_word(w.word) for w in words]
    for start in range(len(keys)):
        for n in range(1, MAX_NGRAM + 1):
            gram = keys[start:start + n]
            if len(gram) < n:
                break
            reps = 1
            while keys[start + reps * n:start + (reps + 1) * n] == gram:
                reps += 1
            if reps >= MIN_REPEATS.get(n, 3) or (n >= MIN_TRAILING_LOOP and reps >= 2
                                                   and ends_inside(keys, gram, start + reps * n)):
                return start + n
    return None


def ends_inside(keys: list[str], gram: list[str], at: int) -> bool:
    """Whether ``keys`` from ``at`` on is a beginning of ``gram`` (nothing at all counts)."""
    rest = keys[at:]
    return len(rest) < len(gram) and rest == gram[:len(rest)]


def in_speech(word: Word, regions: Sequence[tuple[float, float]], pad: float) -> bool:
    """Whether a word's span touches a VAD speech region (each widened by ``pad``)."""
    return any(word.start < end + pad and word.end > start - pad for start, end in regions)


def drop_nonspeech(words: Sequence[Word], regions: Sequence[tuple[float, float]], pad: float) -> list[Word]:
    """Words whose audio lies entirely in VAD non-speech are hallucinations: drop them."""
    return [w for w in words if in_speech(w, regions, pad)]


def prompt_may_have_failed(heard: Sequence[Word], verdict: Verdict) -> bool:
    """A prompted decode that heard nothing, or was rejected as a loop (not as no-speech): the
    prompt may be the cause, so a window about to leave the buffer is worth one unprompted try."""
    if verdict.rejected:
        return "compression_ratio" in verdict.reasons and "no_speech" not in verdict.reasons
    return not heard
