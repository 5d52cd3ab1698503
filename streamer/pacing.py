"""Real-time pacing for file replays: frames that arrive by a clock, and one decode at a time beside them.

``streamer transcribe --realtime`` and ``streamer bench stream`` feed a file as a microphone would:
a frame arrives when its last sample has been spoken, also while the engine works. How the engine
"works" is the :class:`DecodeWorker`'s business: on the caller's thread, asked between its steps
(the real engine), or for a modelled time on a simulated clock (the benchmark's ``--simulate``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from streamer.core import StreamProcessor
from streamer.hypothesis import SAMPLE_RATE, DecodeAbandoned, DecodeRequest, Engine, Hypothesis

FRAME_SECONDS = 0.1  # audio arrives in frames of this size, like a client's websocket messages


@dataclass
class Feeder:
    """Feeds the processor the frames of ``audio`` that have arrived by ``clock`` (real time)."""

    processor: StreamProcessor
    audio: np.ndarray
    clock: Callable[[], float]
    t0: float
    fed: int = 0

    @property
    def done(self) -> bool:
        return self.fed >= self.audio.size

    def catch_up(self) -> bool:
        """Feed what arrived since the last call; whether anything did. Frames arrive when their
        last sample has been "spoken"."""
        frame = int(FRAME_SECONDS * SAMPLE_RATE)
        arrived = min(self.audio.size, int((self.clock() - self.t0) / FRAME_SECONDS) * frame)
        if arrived <= self.fed:
            return False
        self.processor.feed(self.audio[self.fed:arrived])
        self.fed = arrived
        return True

    def next_frame(self) -> float:
        return self.t0 + (self.fed + int(FRAME_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE


class DecodeWorker:
    """One decode at a time in real time: audio keeps arriving while the engine works.

    The engine runs on the caller's thread and asks the request's ``abandoned`` between its steps;
    that call also feeds the frames that arrived meanwhile (as a microphone would have delivered
    them), so the processor learns of a pause during a decode and the update it supersedes stops
    there. A thread beside the feeding would do the same, but its decodes ran about a fifth slower on
    2 cores (README, one live stream). With ``cost`` the engine works on the
    replay's (simulated) clock instead: a decode is done ``cost(request)`` seconds after it started
    (the frames arrive in the feeding loop meanwhile), and giving it up frees the engine at once.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float], sleep: Callable[[float], None],
                 cost: Callable[[DecodeRequest], float] | None = None) -> None:
        self.engine, self.clock, self.sleep, self.cost = engine, clock, sleep, cost
        self._request: DecodeRequest | None = None
        self._hypothesis: Hypothesis | None = None
        self.started = self._until = 0.0

    @property
    def busy(self) -> bool:
        return self._request is not None

    def start(self, request: DecodeRequest, superseded: Callable[[], bool]) -> None:
        """Start ``request``; ``superseded()`` feeds what arrived and says whether to give the decode up."""
        self._request, self.started = request, self.clock()
        if self.cost is not None:
            self._until = self.started + self.cost(request)
            return
        try:
            self._hypothesis = self.engine.decode(replace(request, abandoned=superseded))
        except DecodeAbandoned:
            self._hypothesis = None

    def ready(self) -> bool:
        return self.cost is None or self.clock() >= self._until - 1e-9

    def wait(self, deadline: float) -> None:
        """Until the decode is done or the clock reaches ``deadline`` (``inf``: until done)."""
        if self.cost is not None:
            self.sleep(max(0.0, min(deadline, self._until) - self.clock()))

    def result(self) -> tuple[DecodeRequest, Hypothesis | None]:
        """The request and its hypothesis (None: the engine gave it up)."""
        request, self._request = self._request, None
        return request, self.engine.decode(request) if self.cost is not None else self._hypothesis

    def abandon(self) -> None:
        """Give up the decode in flight (the simulated engine: it is free at once)."""
        self._request = None
