"""Admission by measured capacity: how many more real-time streams this machine can take.

A fixed ``max_sessions`` either wastes a fast machine or lets a slow one take streams it cannot
serve; under overload every stream's latency grows and accuracy drops with it (six base streams
on two cores reached 13-22 s of latency). So the daemon measures instead.

Streams are decoded in batched *rounds*, and a round of ``n`` windows costs about
``fixed + per_row * n``: on two cores a base round of one window took 0.44 s and one of three
0.75 s, so a stream's marginal cost is far below its share of a one-stream round. The
utilisation alone (busy time / streams) cannot see that, and refused a second stream that fit.
So the recent rounds (last ``WINDOW`` s) are fitted to that line, and a new stream is admitted
while one pass over every live stream plus it (``max_batch`` windows per round) is predicted to
take at most ``target`` x ``min_chunk``: each stream is then still updated about every
``min_chunk`` seconds, which is what keeps its latency. With rounds of one size only the line
cannot be fitted, and ``ASSUMED_FIXED`` of a round is taken as fixed (measured here: 0.37 for
base, 0.65 for base with encoder buckets), so the first guesses err on the side of refusing.
Whatever the prediction, no stream is admitted while an admitted one lags past its latency budget.

Sans-I/O: times are passed in, so it is tested with numbers, not sleeps.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

WINDOW = 30.0          # s of history the rounds and the utilisation are measured over
MIN_HISTORY = 5.0      # s: with less history than this, nothing is predicted (a new daemon admits)
MIN_ROUNDS = 3         # rounds needed before their cost is trusted
ASSUMED_FIXED = 0.3    # share of a round's cost taken as fixed while only one round size was seen


@dataclass(frozen=True)
class Verdict:
    admit: bool
    utilisation: float   # engine busy fraction now (0..1+)
    headroom: float      # how many more streams the prediction allows
    reason: str = ""
    retry_after: float = 0.0  # s: when asking again may succeed


@dataclass(frozen=True)
class RoundCost:
    """Seconds a batched round of ``rows`` windows takes: ``fixed + per_row * rows``."""

    fixed: float
    per_row: float

    def rounds(self, streams: int, max_batch: int) -> float:
        """Seconds to decode one window of each of ``streams`` streams, ``max_batch`` per round."""
        full, rest = divmod(streams, max_batch)
        sizes = [max_batch] * full + ([rest] if rest else [])
        return sum(self.fixed + self.per_row * size for size in sizes)


def fit_round_cost(rounds: list[tuple[int, float]]) -> RoundCost | None:
    """The line through the median cost of each round size (weighted by how often it was seen).

    One size seen, or a fit that says bigger rounds are cheaper (noise): ``ASSUMED_FIXED`` of
    the mean round is fixed, the rest scales with the rows.
    """
    if not rounds:
        return None
    by_size: dict[int, list[float]] = {}
    for rows, seconds in rounds:
        by_size.setdefault(rows, []).append(seconds)
    points = [(rows, statistics.median(costs), len(costs)) for rows, costs in by_size.items()]
    total = sum(weight for *_, weight in points)
    mean_rows = sum(rows * weight for rows, _, weight in points) / total
    mean_cost = sum(cost * weight for _, cost, weight in points) / total
    spread = sum(weight * (rows - mean_rows) ** 2 for rows, _, weight in points)
    if spread > 0:
        slope = sum(weight * (rows - mean_rows) * (cost - mean_cost) for rows, cost, weight in points) / spread
        fixed = mean_cost - slope * mean_rows
        if slope > 0 and fixed >= 0:
            return RoundCost(fixed, slope)
    fixed = ASSUMED_FIXED * mean_cost
    return RoundCost(fixed, (mean_cost - fixed) / mean_rows)


class Capacity:
    """Recent rounds of the engine, their cost line, and the admission verdict (see the module docstring)."""

    def __init__(self, target: float = 0.85, latency_budget: float = 2.0, *, min_chunk: float = 1.0,
                 max_batch: int = 4) -> None:
        self.target = target
        self.latency_budget = latency_budget
        self.min_chunk = min_chunk
        self.max_batch = max(1, max_batch)
        self._busy: deque[tuple[float, float]] = deque()         # (finished at, seconds busy for live streams)
        self._rounds: deque[tuple[float, int, float]] = deque()  # (finished at, windows, seconds)
        self._started: float | None = None

    def decoded(self, now: float, seconds: float, rows: int = 1, live_share: float = 1.0,
                sample: bool = True) -> None:
        """The engine finished a round of ``rows`` windows that kept it busy ``seconds``;
        ``live_share`` of that time served live streams (the rest, files, takes what is left).

        A round decoded as only few streams are (``sample`` False: a beam, ``server.beam_streams``, or
        the full encoder, ``server.bucket_streams``) is busy time but no sample of the round cost: the
        streams admitted beyond them are decoded greedily on a cut encoder, at the cost the line
        must predict."""
        if self._started is None:
            self._started = now - seconds
        if sample:
            self._rounds.append((now, max(1, rows), seconds))
        if live_share:
            self._busy.append((now, seconds * live_share))
        self._expire(now)

    def utilisation(self, now: float) -> float:
        """Seconds the engine spent on live streams per second of wall time, lately."""
        self._expire(now)
        if self._started is None:
            return 0.0
        span = min(WINDOW, max(now - self._started, 1e-6))
        return sum(seconds for _, seconds in self._busy) / span

    def round_cost(self, now: float) -> RoundCost | None:
        self._expire(now)
        if len(self._rounds) < MIN_ROUNDS:
            return None
        return fit_round_cost([(rows, seconds) for _, rows, seconds in self._rounds])

    def verdict(self, now: float, streams: int, worst_lag: float) -> Verdict:
        """Whether one more real-time stream fits, given ``streams`` live ones and their worst lag."""
        busy = self.utilisation(now)
        if worst_lag > self.latency_budget:
            return Verdict(False, busy, 0.0, f"streams are {worst_lag:.1f} s behind (budget "
                           f"{self.latency_budget:g} s)", retry_after=min(30.0, worst_lag * 2))
        history = 0.0 if self._started is None else now - self._started
        cost = self.round_cost(now)
        if streams == 0 or history < MIN_HISTORY or cost is None:
            return Verdict(True, busy, float("inf"))
        allowed = self.target * self.min_chunk
        headroom = self._headroom(cost, streams, allowed)
        if headroom < 1:
            needed = cost.rounds(streams + 1, self.max_batch)
            return Verdict(False, busy, 0.0, f"a pass over {streams + 1} streams would take {needed:.2f} s "
                           f"of engine time (limit {allowed:.2f} s)", retry_after=10.0)
        return Verdict(True, busy, float(headroom))

    def _headroom(self, cost: RoundCost, streams: int, allowed: float, most: int = 64) -> int:
        """How many more streams keep a pass over all of them within ``allowed`` seconds."""
        extra = 0
        while extra < most and cost.rounds(streams + extra + 1, self.max_batch) <= allowed:
            extra += 1
        return extra

    def _expire(self, now: float) -> None:
        while self._busy and self._busy[0][0] < now - WINDOW:
            self._busy.popleft()
        while self._rounds and self._rounds[0][0] < now - WINDOW:
            self._rounds.popleft()
