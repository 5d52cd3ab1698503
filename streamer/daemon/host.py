"""The session host: live sessions on one engine, their scheduling and the fan-out of their events.

Everything a transport needs to run a stream, without a socket: the websocket server, the
local microphone, ``streamer mic`` and the compatibility adapters all open sessions here, feed
them, and receive their events through the small :class:`~streamer.daemon.outbox.Subscriber`
interface. One host = one model, one scheduler, one set of limits and metrics.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from streamer import protocol
from streamer.config import Settings, StreamConfig
from streamer.core.language import language_codes
from streamer.daemon.capacity import Capacity, Verdict
from streamer.daemon.metrics import Metrics
from streamer.daemon.outbox import Subscriber, put_all
from streamer.daemon.resume import ResumeTokens, TokenResumer
from streamer.daemon.scheduler import LoopMonitor, Scheduler
from streamer.daemon.session import Session
from streamer.hypothesis import Engine
from streamer.protocol import Close, CloseCode, Outgoing, SessionState, StartError, StartParams

log = logging.getLogger(__name__)

FEED_PIECE_BYTES = 64 * 1024  # big frames are fed in pieces so one client cannot hog the core thread


class Hub:
    """Fan-out of transcript events to listen-only subscribers, by ``source:NAME`` / ``session:ID``.

    With a bus (``server.bus``, see streamer.daemon.bus) events also go to, and come from, the
    other replicas, so a subscriber may follow a stream that another daemon serves.
    """

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscriber]] = {}
        self.bus = None  # a RedisBus once the server starts one

    def announce(self, session_id: str) -> None:
        """A stream went live here (other replicas then accept ``?session=ID`` subscribers for it)."""
        if self.bus is not None:
            self.bus.announce(session_id)

    def knows(self, session_id: str) -> bool:
        """Live on another replica, as far as the bus has heard."""
        return self.bus is not None and self.bus.knows(session_id)

    def subscribe(self, key: str, subscriber: Subscriber) -> None:
        self._subs.setdefault(key, set()).add(subscriber)

    def unsubscribe(self, key: str, subscriber: Subscriber) -> None:
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(subscriber)
            if not subs:
                del self._subs[key]

    def publish(self, keys: Iterable[str], message: dict) -> None:
        keys = tuple(keys)
        if self.bus is not None:
            self.bus.publish(keys, message)
        self.deliver_local(keys, message)

    def deliver_local_one(self, key: str, message: dict) -> None:
        self.deliver_local((key,), message)

    def deliver_local(self, keys: Iterable[str], message: dict) -> None:
        """To this process's subscribers only (what the bus calls with other replicas' events)."""
        for key in keys:
            for subscriber in list(self._subs.get(key, ())):
                subscriber.put(message)
                if message.get("type") == "end" and key.startswith("session:"):
                    subscriber.close(Close(CloseCode.NORMAL, "session ended"))

    def count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def all(self) -> list[Subscriber]:
        return [s for subs in self._subs.values() for s in subs]


@dataclass
class Live:
    """A registered session: where its own messages go, and which subscription keys it publishes to."""

    session: Session
    sink: Subscriber | None
    keys: tuple[str, ...]


def session_keys(session_id: str, source: str | None = None) -> tuple[str, ...]:
    return (f"session:{session_id}",) + ((f"source:{source}",) if source else ())


class SessionHost:
    """Live sessions, one scheduler, one engine; no sockets (see the module docstring)."""

    def __init__(self, settings: Settings, engine: Engine | None = None, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.hub = Hub()
        self.monitor = LoopMonitor(self.metrics)
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.live: dict[str, Live] = {}
        cfg = settings.server
        self.resumer = TokenResumer(ResumeTokens(cfg.resume_secret, cfg.resume_ttl), cfg.max_resume_audio, time.time)
        if engine is not None:
            self.attach_engine(engine)

    # ------------------------------------------------------------- lifecycle
    def attach_engine(self, engine: Engine) -> None:
        """Model loaded and warm: start scheduling (``/healthz`` turns 200)."""
        self.engine = engine
        cfg = self.settings.server
        capacity = Capacity(cfg.target_utilisation, cfg.latency_budget, min_chunk=self.settings.stream.min_chunk,
                            max_batch=cfg.max_batch)
        self.scheduler = Scheduler(engine, max_batch=cfg.max_batch, metrics=self.metrics, capacity=capacity,
                                   min_chunk=self.settings.stream.min_chunk,
                                   beam_size=self.settings.engine.beam_size, beam_streams=cfg.beam_streams,
                                   bucket_streams=cfg.bucket_streams, encoder_buckets=cfg.encoder_buckets)
        self.scheduler.start()
        self.metrics.ready.set(1)

    @property
    def ready(self) -> bool:
        return self.scheduler is not None

    async def warm_up(self) -> None:
        """Build and run a stream's VAD once on the core thread, before the first client pays for its first calls.

        The loop-stall gauge restarts afterwards, so it measures serving, not model loading.
        """
        if self.scheduler is not None and self.settings.stream.use_vad:
            from streamer.vad import warm_up_detector

            try:
                await self.scheduler.call(warm_up_detector, self.settings.stream)
            except Exception as exc:  # only a latency nicety: sessions will load it themselves
                log.warning("stream core warm-up failed: %s", exc)
        self.monitor.reset()
        self.metrics.loop_stall_max.set(0)

    async def close(self) -> None:
        """Stop the scheduler and its threads (finish the sessions first)."""
        if self.scheduler is not None:
            await self.scheduler.close()

    # ------------------------------------------------------------- sessions
    def admission(self) -> Verdict:
        """May one more stream start here? Refusals say why and when to try again."""
        cfg = self.settings.server
        if len(self.live) >= cfg.max_sessions:
            return Verdict(False, 0.0, 0.0, f"the server is at its limit of {cfg.max_sessions} sessions",
                           retry_after=10.0)
        if cfg.admission == "fixed" or self.scheduler is None:
            return Verdict(True, 0.0, float(cfg.max_sessions - len(self.live)))
        streams = [live.session for live in self.live.values() if not live.session.batch]
        worst = max((session.lag for session in streams), default=0.0)
        return self.scheduler.capacity.verdict(time.perf_counter(), len(streams), worst)

    def admit_batch(self) -> Verdict:
        """May a file (a batch session) start? Files take whatever the engine has left, so only the
        session cap and live streams already lagging past their budget refuse one."""
        cfg = self.settings.server
        if len(self.live) >= cfg.max_sessions:
            return Verdict(False, 0.0, 0.0, f"the server is at its limit of {cfg.max_sessions} sessions",
                           retry_after=10.0)
        worst = max((live.session.lag for live in self.live.values() if not live.session.batch), default=0.0)
        if self.scheduler is not None and cfg.admission == "capacity" and worst > cfg.latency_budget:
            return Verdict(False, 0.0, 0.0, f"live streams are {worst:.1f} s behind (budget {cfg.latency_budget:g} s)",
                           retry_after=min(30.0, worst * 2))
        return Verdict(True, 0.0, 1.0)

    def at_capacity(self) -> bool:
        return not self.admission().admit

    def new_session(self, defaults: StartParams, *, autostart: bool = False, prefix: str = "",
                    stream: StreamConfig | None = None, resumable: bool = True) -> Session:
        """A session bound to this host's model and stream settings (not yet registered).

        ``stream`` replaces the stream settings for this session only (a compatibility surface
        maps its client's endpointing onto ``end_silence``); ``resumable=False`` for transports
        with no resume tokens (its messages then carry none)."""
        return Session(prefix + uuid.uuid4().hex[:12], stream or self.settings.stream, model=self.engine.name,
                       max_frame_bytes=self.settings.server.max_frame_bytes, defaults=defaults, autostart=autostart,
                       check_start=self.check_start, resumer=self.resumer if resumable else None)

    def check_start(self, params: StartParams) -> None:
        """What the loaded model cannot do is refused at start, with the limit named."""
        known = getattr(self.engine, "languages", ())
        for code in language_codes(params.language) if known else ():
            if code not in known:
                raise StartError(f"language {code!r} is not one this model ({self.engine.name}) knows; "
                                 f"use one of {', '.join(known)} or null to detect")
        limit = getattr(self.engine, "max_prompt_tokens", None)
        if params.prompt and limit is not None:
            count = self.engine.prompt_tokens(params.prompt)
            if count > limit:
                raise StartError(f"prompt is {count} tokens; this model's limit is {limit}")

    def default_params(self) -> StartParams:
        return StartParams(language=self.settings.stream.language, task=self.settings.stream.task)

    def register(self, session: Session, sink: Subscriber | None, keys: tuple[str, ...]) -> None:
        """Schedule ``session``; its messages go to ``sink`` and its transcripts to ``keys`` subscribers."""
        self.live[session.id] = Live(session, sink, keys)
        self.hub.announce(session.id)
        self.metrics.sessions_total.inc()
        self.scheduler.add(session, lambda items: self.deliver(session.id, items))

    def deliver(self, session_id: str, items: list[Outgoing]) -> None:
        """Messages from a session: to its own sink, and transcripts/end to its subscribers."""
        live = self.live.get(session_id)
        if live is None:
            return
        for item in items:
            if isinstance(item, dict):
                kind = item.get("type")
                if kind == "error":
                    self.metrics.errors.labels(code=item.get("code", "unknown")).inc()
                if kind in ("transcript", "end"):
                    # a resume token is a capability to continue the stream: only its own client gets it
                    self.hub.publish(live.keys, {k: v for k, v in item.items() if k != "resume"})
        if live.sink is not None:
            put_all(live.sink, items)

    async def receive(self, session: Session, message: str | bytes) -> None:
        """A client frame: parsed and fed on the core thread (resampling and VAD never run on the loop)."""
        call = self.scheduler.call
        if isinstance(message, str):
            before = session.id
            out = await call(session.receive_text, message)
            if session.id != before:  # resumed: the stream's own id from now on
                self._rekey(before, session)
            self.deliver(session.id, out)
        elif len(message) > session.max_frame_bytes:
            self.deliver(session.id, await call(session.receive_binary, message))
        else:
            before = session.audio_seconds
            for i in range(0, len(message), FEED_PIECE_BYTES):
                self.deliver(session.id, await call(session.receive_binary, message[i:i + FEED_PIECE_BYTES]))
                if session.state is not SessionState.STARTED:
                    break
                self.scheduler.wake()
            self.metrics.audio_seconds.inc(max(0.0, session.audio_seconds - before))
        self.scheduler.wake()

    def _rekey(self, old_id: str, session: Session) -> None:
        """A session resumed another stream: file it under that stream's id, replacing a stale copy
        (a connection that dropped before this daemon noticed)."""
        stale = self.live.pop(session.id, None)
        if stale is not None:
            log.info("session %s resumed on a new connection; dropping the old one", session.id)
            stale.session.abandon()
            self.scheduler.remove(stale.session)
            if stale.sink is not None:
                stale.sink.close(Close(CloseCode.POLICY, "resumed on another connection"))
        live = self.live.pop(old_id)
        self.hub.announce(session.id)
        live.keys = tuple(k.replace(f"session:{old_id}", f"session:{session.id}") for k in live.keys)
        self.live[session.id] = live
        self.scheduler.rekey(old_id, session)

    async def feed(self, session: Session, samples: np.ndarray) -> None:
        """16 kHz mono float32 from a local capture."""
        if session.state is SessionState.STARTED:
            before = session.audio_seconds
            self.deliver(session.id, await self.scheduler.call(session.feed, samples))
            self.metrics.audio_seconds.inc(max(0.0, session.audio_seconds - before))
            self.scheduler.wake()

    async def backpressure(self, session: Session) -> None:
        """Wait while too much of this session's audio waits for decoding (the reader pauses)."""
        bound = self.settings.server.max_pending_audio
        while session.active and session.lag > bound:
            self.scheduler.wake()
            await self.scheduler.progressed(session, timeout=5.0)
            if not session.in_flight and session.lag > bound:
                break  # nothing due although audio waits (e.g. silence): keep reading

    async def finalise(self, session: Session) -> None:
        """Decode everything received, deliver the rest and ``end``, then forget the session."""
        try:
            if session.state is SessionState.STARTED:
                self.deliver(session.id, await self.scheduler.call(session.stop))
            while session.active:
                self.scheduler.wake()
                await self.scheduler.progressed(session, timeout=1.0)
        finally:
            self.scheduler.remove(session)
            if session.id in self.live and self.live[session.id].session is session:
                del self.live[session.id]

    async def detach(self, session: Session) -> None:
        """Let go of a stream that continues elsewhere: no more decoding, nothing more sent for it."""
        await self.scheduler.call(session.abandon)
        self.scheduler.remove(session)
        if session.id in self.live and self.live[session.id].session is session:
            del self.live[session.id]

    async def snapshot(self, session_id: str) -> dict | None:
        """A catch-up ``transcript`` for a subscriber joining a live session.

        Taken on the core thread, so it is ordered with the session's updates: every update
        the snapshot lacks is delivered after a subscription made right after it, none twice.
        """
        live = self.live.get(session_id)
        if live is None or self.scheduler is None:
            return None
        return await self.scheduler.call(live.session.snapshot_message)

    def source_session(self, source: str) -> str | None:
        """The live session publishing ``source``, if any."""
        key = f"source:{source}"
        return next((sid for sid, live in self.live.items() if key in live.keys), None)

    def caption_ready(self, session_id: str | None, source: str | None) -> dict:
        return protocol.ready(session_id, self.engine.name if self.engine else "", source=source)

    # ------------------------------------------------------------- local sources
    async def open_local_session(self, source: str, params: StartParams | None = None) -> Session:
        """A session fed in-process (microphone, monitor): its events go to ``source:<name>`` subscribers."""
        if not self.ready:
            raise RuntimeError("attach an engine before opening a local session")
        session = self.new_session(params or self.default_params(), autostart=True, prefix=f"{source}-")
        await self.scheduler.call(session.start, {})
        self.register(session, None, session_keys(session.id, source))
        return session
