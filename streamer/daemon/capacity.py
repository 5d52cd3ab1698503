"""Admission by measured capacity: how many more real-time streams this machine can take.

A fixed ``max_sessions`` either wastes a fast machine or lets a slow one take streams it cannot
serve; under overload every stream's latency grows and accuracy drops with it (six base streams
on two cores reached 13-22 s of latency). So the daemon measures instead: the engine thread's
*utilisation* (seconds spent decoding per second of wall time, over a sliding window) and the
streams it served meanwhile give a per-stream cost; a new stream is admitted only while the
predicted utilisation stays under ``target`` and no admitted stream's lag is over its latency
budget. Sans-I/O: times are passed in, so it is tested with numbers, not sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 30.0          # s of history the utilisation is measured over
MIN_HISTORY = 5.0      # s: with less history than this, nothing is predicted (a new daemon admits)


@dataclass(frozen=True)
class Verdict:
    admit: bool
    utilisation: float   # engine busy fraction now (0..1+)
    headroom: float      # how many more streams the prediction allows (may be fractional)
    reason: str = ""
    retry_after: float = 0.0  # s: when asking again may succeed


class Capacity:
    """Utilisation of the engine and a per-stream cost, from decode times (see the module docstring)."""

    def __init__(self, target: float = 0.85, latency_budget: float = 2.0) -> None:
        self.target = target
        self.latency_budget = latency_budget
        self._decodes: deque[tuple[float, float]] = deque()  # (finished at, seconds busy)
        self._started: float | None = None

    def decoded(self, now: float, seconds: float) -> None:
        """The engine finished a (batched) decode that kept it busy ``seconds``."""
        if self._started is None:
            self._started = now - seconds
        self._decodes.append((now, seconds))
        self._expire(now)

    def utilisation(self, now: float) -> float:
        self._expire(now)
        if self._started is None:
            return 0.0
        span = min(WINDOW, max(now - self._started, 1e-6))
        return sum(seconds for _, seconds in self._decodes) / span

    def verdict(self, now: float, streams: int, worst_lag: float) -> Verdict:
        """Whether one more real-time stream fits, given ``streams`` live ones and their worst lag."""
        busy = self.utilisation(now)
        history = 0.0 if self._started is None else now - self._started
        if worst_lag > self.latency_budget:
            return Verdict(False, busy, 0.0, f"streams are {worst_lag:.1f} s behind (budget "
                           f"{self.latency_budget:g} s)", retry_after=min(30.0, worst_lag * 2))
        if streams == 0 or history < MIN_HISTORY or busy == 0.0:
            return Verdict(True, busy, float("inf"))
        per_stream = busy / streams
        headroom = (self.target - busy) / per_stream
        if headroom < 1.0:
            return Verdict(False, busy, max(headroom, 0.0), f"the engine is {busy:.0%} busy with {streams} "
                           f"stream(s); one more would pass {self.target:.0%}", retry_after=10.0)
        return Verdict(True, busy, headroom)

    def _expire(self, now: float) -> None:
        while self._decodes and self._decodes[0][0] < now - WINDOW:
            self._decodes.popleft()
