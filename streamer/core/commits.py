"""What each kind of decode may commit, on top of LocalAgreement.

An update commits by agreement between successive hypotheses; the other kinds commit from a
single hypothesis, each for its own reason: a final decode because the utterance has ended, a
pause decode because the speaker stopped (the words before the pause will not change), a forced
decode because the audio is about to leave the buffer. After an update or a pause decode the
buffer is bounded (:class:`Committer`). Sans-I/O, like the stream processor.
"""

from __future__ import annotations

import logging

from streamer.config import StreamConfig
from streamer.core.agreement import LocalAgreement, new_words_after
from streamer.core.buffer import TimeMap
from streamer.core.segmenter import PAUSE_MIN_WINDOW, Segmenter, Utterance
from streamer.core.window import cut_before_word, forced_cut, trim_point
from streamer.hypothesis import Word

log = logging.getLogger(__name__)

PAUSE_START_SLACK = 0.05  # s: a word must start this much before the pause to be committed by it
PAUSE_MIN_PROBABILITY = 0.1  # a pause commit (one hypothesis, no agreement) stops at a word less sure than this
SKIP_SECONDS = 1.0  # earlier tentative words ending this far past all a pause decode heard: it skipped audio


def commit_final(agreement: LocalAgreement, words: list[Word]) -> list[Word]:
    """Every remaining word of the ended utterance."""
    earlier = agreement.tentative
    new = agreement.commit_all(words)
    if not new and earlier:
        # The last decode was rejected by a guard (a short tail window often looks like
        # no-speech) or heard nothing new: the tentative words that accepted decodes of
        # this utterance produced are all we will ever have, so commit them, not lose them.
        new = agreement.commit_all(earlier)
    return new


def commit_pause(agreement: LocalAgreement, words: list[Word], pause_start: float,
                 window_seconds: float) -> list[Word]:
    """The words that start before the pause, up to the first one Whisper is unsure of.

    A window shorter than ``PAUSE_MIN_WINDOW`` commits only by agreement, like an update: base
    heard jfk's 1.6 s "ask not" as "is not." or "ASK NOT!", and longer windows as "Ask not what".
    """
    if window_seconds < PAUSE_MIN_WINDOW:
        return agreement.insert(words)
    until = pause_start - PAUSE_START_SLACK
    tail = new_words_after(agreement.committed, words)
    unsure = next((w.start for w in tail if w.probability < PAUSE_MIN_PROBABILITY), until)
    earlier = agreement.tentative
    new = agreement.commit_until(words, min(until, unsure), by_start=True)
    if skipped(earlier, words):
        # Whisper skipped audio in this window ("the" for "the woodcutters of the Netherlands
        # by a similar process"): keep what the earlier decode heard for the final decode
        agreement.preview(earlier)
    return new


def commit_update(agreement: LocalAgreement, words: list[Word], window_seconds: float,
                  min_window: float) -> list[Word]:
    """Agreement with the previous hypothesis; a window too short to vote is only shown."""
    if window_seconds < min_window:
        agreement.preview(words)
        return []
    return agreement.insert(words)


def skipped(earlier: list[Word], words: list[Word]) -> bool:
    """Whether the earlier tentative words reach well past everything a new hypothesis heard."""
    heard_until = words[-1].end if words else float("-inf")
    return bool(earlier) and earlier[-1].end > heard_until + SKIP_SECONDS


class Committer:
    """Applies one decode's words by its kind, then bounds the utterance's buffer."""

    def __init__(self, config: StreamConfig, agreement: LocalAgreement, segmenter: Segmenter) -> None:
        self.config, self.agreement, self.segmenter = config, agreement, segmenter

    def apply(self, kind: str, utterance: Utterance, timemap: TimeMap, words: list[Word], rejected: bool,
              pause_start: float = 0.0) -> list[Word]:
        """The words this decode commits (the caller retires the utterance after a final decode)."""
        if kind == "final":
            return commit_final(self.agreement, words)
        if kind == "forced":
            if rejected:
                # The audio before the cut is about to leave the buffer for good: what accepted
                # decodes heard there (the tentative words) is all that can still be committed.
                words = self.agreement.tentative
            return self._forced(utterance, words, timemap)
        if rejected:
            return []
        if kind == "pause":
            new = commit_pause(self.agreement, words, pause_start, timemap.end - timemap.start)
            # settled: the final decode would only add trailing padding this window already had
            utterance.settled = (not self.agreement.tentative and not utterance.heard_speech
                                 and timemap.end >= pause_start + self.config.speech_pad - 0.01)
        else:
            new = commit_update(self.agreement, words, timemap.end - timemap.start,
                                self.config.min_agreement_window)
        self._trim(utterance)
        return new

    def _forced(self, utterance: Utterance, words: list[Word], timemap: TimeMap) -> list[Word]:
        """The buffer hit its cap: commit the words of the window's first part and cut there."""
        cut = forced_cut(timemap, self.config.max_buffer, self.config.trim_to)
        new = self.agreement.commit_until(words, cut)
        trim_at = cut_before_word(cut, self.agreement.tentative, timemap.start)
        log.debug("buffer over %.1f s cap: forced commit of %d words, cut at %.2f",
                  self.config.max_buffer, len(new), trim_at)
        utterance.buffer.trim_before(trim_at)
        utterance.new_samples = len(utterance.buffer)
        self.segmenter.forget_regions_before_buffer(utterance)
        return new

    def _trim(self, utterance: Utterance) -> None:
        """Past ``trim_to`` seconds, cut at a committed word boundary (see :func:`trim_point`)."""
        buffer = utterance.buffer
        if buffer.seconds <= self.config.trim_to:
            return
        cut = trim_point(buffer.start, buffer.end, self.agreement.committed, self.agreement.tentative,
                         self.config.trim_to)
        if cut is not None:
            buffer.trim_before(cut)
            self.segmenter.forget_regions_before_buffer(utterance)
