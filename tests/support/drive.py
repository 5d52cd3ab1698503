"""Run the sans-I/O pieces synchronously against an engine: what the daemon's threads do, in a loop."""

from __future__ import annotations

import numpy as np

from streamer.core import StreamProcessor, TranscriptEvent, run_until_idle
from streamer.hypothesis import SAMPLE_RATE


def feed_and_drain(processor: StreamProcessor, engine, audio: np.ndarray, chunk: float = 0.1,
                   finish: bool = True) -> list[TranscriptEvent]:
    """Feed audio in chunks, running every due decode at once (an infinitely fast engine)."""
    events: list[TranscriptEvent] = []
    step = max(1, int(chunk * SAMPLE_RATE))
    for i in range(0, audio.size, step):
        processor.feed(audio[i:i + step])
        events += run_until_idle(processor, engine)
    if finish:
        processor.finish()
        events += run_until_idle(processor, engine)
    return events


def drive_session(session, engine) -> list:
    """What the scheduler does for one protocol session: decode every due window; the output."""
    out = []
    while (request := session.next_request()) is not None:
        out += session.complete(engine.decode(request))
    return out
