"""Where a window's words land on the stream: invented words past the audio are dropped."""

from __future__ import annotations

from streamer.core.buffer import TimeMap
from streamer.core.window import stream_words
from streamer.hypothesis import SAMPLE_RATE, Word


def window(seconds: float, stream_start: float = 10.0) -> TimeMap:
    return TimeMap(((int(stream_start * SAMPLE_RATE), int(seconds * SAMPLE_RATE)),))


def test_words_piled_at_the_window_end_after_the_first_are_dropped():
    """A pause window of the sonnet (2.98 s) heard the real "his" at its very end and went on:
    "life was a bit more than a single day.", every word timed at the same instant."""
    real = [Word(" deceased,", 1.85, 2.59, 0.78), Word(" his", 2.964, 2.98, 0.69)]
    invented = [Word(f" {w}", 2.964, 2.98, 0.1) for w in "life was a bit more than a single day.".split()]
    out = stream_words(real + invented, window(2.98), None)
    assert [w.word for w in out] == [" deceased,", " his"]
    assert out[1].start == 12.964


def test_words_spread_to_the_window_end_are_kept():
    words = [Word(" of", 2.70, 2.82), Word(" the", 2.84, 2.92), Word(" book", 2.94, 2.98), Word(".", 2.98, 2.98)]
    assert [w.word for w in stream_words(words, window(2.98), None)] == [" of", " the", " book", "."]
