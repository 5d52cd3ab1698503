"""One copy of what the tests share: synthetic audio and word timelines, feed-and-drain loops,
transcript comparison, time scaling for slow machines, and protocol v1 client helpers.

Import from here (``from support import ...``); the test tree's conftest puts ``tests/`` on the path.
"""

from support.audio import noise, pcm16, s16, timeline, tone
from support.drive import drive_session, feed_and_drain
from support.text import recall, word_distance, words
from support.timing import TIME_FACTOR, scaled, settled, wait_for, wait_until

__all__ = ["TIME_FACTOR", "drive_session", "feed_and_drain", "noise", "pcm16", "recall", "s16", "scaled", "settled",
           "timeline", "tone", "wait_for", "wait_until", "word_distance", "words"]
