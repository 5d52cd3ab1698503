"""Many sessions, one model: batch the due decodes and run them off the event loop.

The engine is not thread-safe and holds the only copy of the weights, so exactly one worker
thread calls it. Each round the scheduler asks every session, least recently served first,
for its next due window and sends up to ``max_batch`` of them through
``engine.decode_batch``. While a round runs, audio keeps arriving; the next request of
each session then covers more new audio, so under overload every stream's update interval
lengthens by the same amount instead of one stream falling behind without bound.

Two worker threads, so the event loop only does I/O: the *engine* thread runs the model,
and the *core* thread runs every call into the sans-I/O sessions (resampling, silero VAD,
LocalAgreement). Keeping all session calls on one thread serialises them without locks,
and a VAD pass slowed by the engine's CPU and GIL use can no longer stall the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from streamer.daemon.capacity import Capacity
from streamer.daemon.metrics import Metrics
from streamer.daemon.session import Session
from streamer.hypothesis import SAMPLE_RATE, DecodeAbandoned, DecodeRequest, Engine, Hypothesis
from streamer.protocol import Outgoing
from streamer.threads import current_threads, pin_threads

log = logging.getLogger(__name__)

Deliver = Callable[[list[Outgoing]], None]


RECENT_DECODES = 512  # decode times kept for medians: a window, so a long-lived daemon stays flat


@dataclass
class DecodeStats:
    """What the engine worker has done: totals for the whole life, decode times for a recent window."""

    batches: int = 0
    windows: int = 0
    abandoned: int = 0  # rounds the engine stopped because every window in them was superseded
    largest_batch: int = 0
    recent_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_DECODES))

    def record(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.windows += size
        self.largest_batch = max(self.largest_batch, size)
        self.recent_seconds.append(seconds)

    @property
    def mean_batch(self) -> float:
        return self.windows / self.batches if self.batches else 0.0


@dataclass(eq=False)
class _Entry:
    session: Session
    deliver: Deliver
    served: int = 0  # round number of the last decode; lower goes first (fairness)
    order: int = 0   # tie-break: first come first served
    progress: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """Owns the engine's worker thread and decides who is decoded when."""

    def __init__(self, engine: Engine, *, max_batch: int = 8, metrics: Metrics | None = None,
                 min_chunk: float = 1.0, capacity: Capacity | None = None, beam_size: int = 1,
                 beam_streams: int = 0, bucket_streams: int = 0, encoder_buckets: Sequence[float] = ()) -> None:
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self.beam_size = beam_size          # the engine's configured beam (engine.beam_size)
        self.beam_streams = beam_streams    # beams only while at most this many sessions are live; 0 = always
        self.bucket_streams = bucket_streams  # a cut encoder with more sessions live than this; 0 = always
        self.encoder_buckets = tuple(encoder_buckets)  # () = the engine's own setting whatever the load
        self.metrics = metrics or Metrics()
        self.min_chunk = min_chunk
        self._entries: dict[str, _Entry] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamer-engine",
                                            initializer=_engine_thread, initargs=(current_threads(),))
        self._core = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamer-core",
                                        initializer=_yield_to_event_loop)
        self._wake = asyncio.Event()
        self._round = 0
        self._counter = itertools.count()
        self._task: asyncio.Task | None = None
        self.stats = DecodeStats()
        self.capacity = capacity or Capacity()

    # ----------------------------------------------------------------- registry
    def add(self, session: Session, deliver: Deliver) -> None:
        """Schedule a session; ``deliver`` receives its outgoing messages, in order."""
        self._entries[session.id] = _Entry(session, deliver, served=self._round, order=next(self._counter))
        self.metrics.sessions.set(len(self._entries))
        self.wake()

    def remove(self, session: Session) -> None:
        entry = self._entries.get(session.id)
        if entry is None or entry.session is not session:  # another session took over this id (a resume)
            return
        del self._entries[session.id]
        self.metrics.sessions.set(len(self._entries))
        try:
            self.metrics.lag.remove(session.id)
        except KeyError:
            pass

    def rekey(self, old_id: str, session: Session) -> None:
        """The session's id changed (it resumed another stream)."""
        entry = self._entries.pop(old_id, None)
        if entry is not None:
            self._entries[session.id] = entry
        try:
            self.metrics.lag.remove(old_id)
        except KeyError:
            pass

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a session call on the core thread (never on the loop, never concurrently)."""
        return await asyncio.get_running_loop().run_in_executor(self._core, fn, *args)

    def wake(self) -> None:
        """New audio or a stop arrived: a decode may now be due."""
        self._wake.set()

    async def progressed(self, session: Session, timeout: float | None = None) -> None:
        """Wait until the scheduler has done something for ``session`` (backpressure release)."""
        entry = self._entries.get(session.id)
        if entry is None:
            return
        entry.progress.clear()
        try:
            await asyncio.wait_for(entry.progress.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    # ----------------------------------------------------------------- running
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="streamer-scheduler")

    async def close(self) -> None:
        """Stop scheduling (sessions should be finished first) and release the worker thread."""
        await _cancel(self._task)
        self._task = None
        loop = asyncio.get_running_loop()
        for executor in (self._executor, self._core):  # joining a busy worker must not block the loop
            await loop.run_in_executor(None, executor.shutdown, True)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            entries = sorted(self._entries.values(), key=lambda e: (e.served, e.order))
            batch, idle = await self.call(self._collect, entries)
            for entry, out in idle:
                entry.progress.set()  # nothing due: a waiting reader may go on
                if out:
                    entry.deliver(out)
            self._update_gauges()
            if not batch:
                await self._wake.wait()
                continue
            await self._decode(batch)

    def _collect(self, entries: list[_Entry]) -> tuple[list[tuple[_Entry, DecodeRequest]], list[tuple[_Entry, list]]]:
        """Core thread: up to ``max_batch`` due requests, least recently served sessions first."""
        batch: list[tuple[_Entry, DecodeRequest]] = []
        idle: list[tuple[_Entry, list]] = []
        for entry in entries:
            if len(batch) >= self.max_batch:
                break
            request = entry.session.next_request()
            if request is not None:
                batch.append((entry, request))
                continue
            idle.append((entry, entry.session.poll() + entry.session.end_now()))
        return batch, idle

    async def _decode(self, batch: list[tuple[_Entry, DecodeRequest]]) -> None:
        loop = asyncio.get_running_loop()
        requests = self._for_load([request for _, request in batch])
        self._round += 1
        started = time.perf_counter()
        try:
            results: Sequence[Hypothesis | BaseException] = await loop.run_in_executor(
                self._executor, self.engine.decode_batch, requests)
            if len(results) != len(requests):
                raise RuntimeError(f"engine returned {len(results)} hypotheses for {len(requests)} windows")
        except DecodeAbandoned:
            await self._gave_up(batch)
            return
        except Exception as exc:  # one bad window must not fail its batch-mates: retry one by one
            log.warning("batched decode of %d windows failed (%s); retrying one by one", len(batch), exc)
            results = [await loop.run_in_executor(self._executor, _decode_one, self.engine, r) for r in requests]
        elapsed = time.perf_counter() - started
        self._record(requests, elapsed, sum(not entry.session.batch for entry, _ in batch))
        outs = await self.call(_complete_all, [entry.session for entry, _ in batch], list(results))
        for (entry, _), out in zip(batch, outs):
            entry.served = self._round
            entry.progress.set()
            if out:
                entry.deliver(out)

    async def _gave_up(self, batch: list[tuple[_Entry, DecodeRequest]]) -> None:
        """The engine stopped a round whose every window was a superseded update: each session's
        pause or final decode is due now, and the next round takes it (no capacity sample: a cut-short round)."""
        self.stats.abandoned += 1
        log.debug("a round of %d superseded update(s) was stopped early", len(batch))
        await self.call(lambda: [entry.session.gave_up() for entry, _ in batch])
        for entry, _ in batch:
            entry.progress.set()

    @property
    def _cuts(self) -> bool:
        """Whether rounds run a cut encoder under load (configured, and an engine that can)."""
        return bool(self.encoder_buckets) and getattr(self.engine, "encoder_cuts", False)

    def _for_load(self, requests: list[DecodeRequest]) -> list[DecodeRequest]:
        """Each request as the load decides: with its beam or greedy, with the full encoder or a cut one.

        A beam is the better text (docs/engine.md: the sonnet and LibriSpeech within reach of an
        offline decode) but costs decoder time that more streams need: with more than
        ``beam_streams`` sessions live, every window is decoded greedily. An engine without beam
        search (the compiled CUDA loop) decodes greedily anyway: its rounds say so, so that they count
        as samples of the greedy cost. Likewise the full encoder is the better text for spontaneous
        speech, but a cut one (``encoder_buckets``, fixed-language windows only) costs half as much a
        round: with more than ``bucket_streams`` sessions live, every window asks for it.
        """
        live = len(self._entries)
        greedy = not self.engine.beam_search or (self.beam_streams > 0 and live > self.beam_streams)
        cut = self._cuts and (self.bucket_streams == 0 or live > self.bucket_streams)
        return [replace(r, beam_size=1 if greedy else r.beam_size or self.beam_size,
                        encoder_buckets=self.encoder_buckets if cut else r.encoder_buckets) for r in requests]

    def _record(self, requests: list[DecodeRequest], elapsed: float, realtime: int | None = None) -> None:
        """``realtime``: how many of the requests came from live streams; only their share of the time
        counts toward capacity (a file takes what is left, so it must not close admission for them)."""
        self.stats.record(len(requests), elapsed)
        share = 1.0 if realtime is None else realtime / len(requests)
        # a beam round, or one on the full encoder where more streams would cut it, is no sample of
        # the cost of the rounds that more streams would make
        sample = all(r.beam_size == 1 and (not self._cuts or r.encoder_buckets == self.encoder_buckets)
                     for r in requests)
        self.capacity.decoded(time.perf_counter(), elapsed, len(requests), share, sample)
        self.metrics.decode_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(requests))
        self.metrics.decode_audio_seconds.inc(sum(len(r.audio) for r in requests) / SAMPLE_RATE)
        if log.isEnabledFor(logging.DEBUG):
            stages = getattr(self.engine, "last_timing", None) or {}
            log.debug("decoded batch of %d in %.3f s (%s)", len(requests), elapsed,
                      ", ".join(f"{k} {v:.3f}" if k != "tokens" else f"{k} {v:.0f}" for k, v in stages.items()))

    def _update_gauges(self) -> None:
        lags = []
        waiting = 0
        for sid, entry in self._entries.items():
            lag = entry.session.lag
            lags.append(lag)
            self.metrics.lag.labels(session=sid).set(round(lag, 3))
            if not entry.session.in_flight and entry.session.active and lag >= self.min_chunk:
                waiting += 1
        self.metrics.max_lag.set(max(lags, default=0.0))
        self.metrics.queue_depth.set(waiting)


WORKER_NICENESS = 5


def _engine_thread(threads: int) -> None:
    """The engine worker: lower priority than the event loop, and the model's thread count (the
    core thread's VAD runs on one, see :mod:`streamer.threads`)."""
    _yield_to_event_loop()
    pin_threads(threads)


def _yield_to_event_loop() -> None:
    """Lower this worker thread's CPU priority (Linux: per-thread nice, inherited by torch's threads).

    On a machine with few cores the model's threads keep every core busy; the event loop,
    which does little work but must answer at once, then waits for the OS scheduler and
    its stalls grow. A higher nice value on the workers lets the loop run first.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: only a latency tweak
        log.debug("cannot lower worker priority: %s", exc)


def _complete_all(sessions: list[Session], results: list[Hypothesis | BaseException]) -> list[list[Outgoing]]:
    """Core thread: hand each session its hypothesis (or its failure)."""
    outs = []
    for session, result in zip(sessions, results):
        if isinstance(result, BaseException):
            log.error("session %s: decode failed: %s", session.id, result)
            outs.append(session.fail(result))
            continue
        try:
            outs.append(session.complete(result))
        except Exception as exc:  # a core bug must only end its own session
            log.exception("session %s: stream core failed", session.id)
            outs.append(session.fail(exc))
    return outs


def _decode_one(engine: Engine, request: DecodeRequest) -> Hypothesis | BaseException:
    try:
        return engine.decode(request)
    except Exception as exc:
        return exc


class LoopMonitor:
    """Measures how late the event loop wakes up: its longest stall is a health number.

    Inference runs on a thread; anything that blocks the loop anyway (a big resample, a VAD
    pass over a huge frame) shows up here and in ``streamer_loop_stall_*``.
    """

    def __init__(self, metrics: Metrics | None = None, interval: float = 0.01) -> None:
        self.metrics = metrics
        self.interval = interval
        self.max_stall = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="streamer-loop-monitor")

    def reset(self) -> None:
        self.max_stall = 0.0

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            stall = max(0.0, time.perf_counter() - before - self.interval)
            if stall > self.max_stall:
                self.max_stall = stall
                if self.metrics:
                    self.metrics.loop_stall_max.set(stall)
            if self.metrics:
                self.metrics.loop_stall.observe(stall)


async def _cancel(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has really stopped."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
