"""``streamer serve``: the asyncio websocket daemon (protocol v1, docs/protocol.md).

A thin shell around :class:`~streamer.daemon.session.Session` (protocol logic) and
:class:`~streamer.daemon.scheduler.Scheduler` (one model, batched decodes on a worker
thread). This module only moves bytes: HTTP routes, auth, origin checks, per-connection
send queues, backpressure, idle timeouts, caption subscribers and graceful shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import mimetypes
import signal
import ssl
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamer.config import ConfigError, MicConfig, Settings, load_settings, parse_set_flags
from streamer.daemon.metrics import Metrics
from streamer.daemon.scheduler import LoopMonitor, Scheduler
from streamer.daemon.session import (CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_AGAIN,
                                     CLOSE_UNSUPPORTED, START_FIELDS, Close, Outgoing, Session,
                                     StartError, StartParams, error, parse_start)
from streamer.hypothesis import SAMPLE_RATE, Engine

log = logging.getLogger(__name__)

LISTEN_PATH = "/v1/listen"
CAPTIONS_PATH = "/v1/captions"
FEED_PIECE_BYTES = 64 * 1024  # big frames are fed in pieces so one client cannot hog the core thread
SHUTDOWN_TIMEOUT = 120.0
EXTRA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
               ".json": "application/json", ".wasm": "application/wasm", ".webmanifest": "application/manifest+json",
               ".ico": "image/x-icon", ".html": "text/html", ".txt": "text/plain", ".vtt": "text/vtt"}


# --------------------------------------------------------------------------- send queue
class Outbox:
    """A bounded queue of messages for one websocket, drained by its own task.

    A client that stops reading fills the socket buffers, then this queue; at the bound it
    is dropped (close 1008) instead of letting memory grow. A :class:`Close` item is sent
    after everything queued before it.
    """

    def __init__(self, ws: ServerConnection, limit: int, metrics: Metrics | None = None) -> None:
        self.ws = ws
        self.limit = limit
        self.metrics = metrics
        self.closing: Close | None = None
        self.override: Close | None = None  # e.g. 1001 during shutdown
        self.overflowed = False
        self._items: deque[str | Close] = deque()
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, message: dict) -> None:
        if self.closing is not None:
            return
        if len(self._items) >= self.limit:
            self._overflow()
            return
        self._items.append(json.dumps(message, ensure_ascii=False))
        self._ready.set()

    def put_all(self, items: Iterable[Outgoing]) -> None:
        for item in items:
            if isinstance(item, Close):
                self.close(item)
            else:
                self.put(item)

    def close(self, close: Close) -> None:
        """Send what is queued, then close with ``close`` (the first close wins)."""
        if self.closing is None:
            self.closing = self.override or close
            self._items.append(self.closing)
            self._ready.set()

    def _overflow(self) -> None:
        log.warning("client %s is not reading (%d messages queued): dropping it", self.ws.remote_address,
                    len(self._items))
        self.overflowed = True
        self.closing = Close(CLOSE_POLICY, "slow reader: send queue full")
        if self.metrics:
            self.metrics.errors.labels(code="slow_reader").inc()
        self._items.clear()
        self._task.cancel()
        self.ws.transport.abort()  # it does not read, so a close handshake would only wait

    async def _run(self) -> None:
        try:
            while True:
                await self._ready.wait()
                while self._items:
                    item = self._items.popleft()
                    if isinstance(item, Close):
                        await self.ws.close(item.code, item.reason)
                        return
                    await self.ws.send(item)
                self._ready.clear()
        except ConnectionClosed:
            pass

    async def finish(self, timeout: float = 10.0) -> None:
        """Flush and close (normal close unless one was already asked for).

        Incoming frames are read and dropped meanwhile: a client still sending would otherwise
        fill the receive queue, reading would pause, and its close frame would never be seen.
        """
        self.close(Close(CLOSE_NORMAL, ""))
        drain = asyncio.ensure_future(self._discard_incoming())
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            self.ws.transport.abort()
        finally:
            drain.cancel()

    async def _discard_incoming(self) -> None:
        try:
            while True:
                await self.ws.recv()
        except Exception:  # closed, or a concurrent reader: either way nothing left to drain
            pass

    @property
    def done(self) -> bool:
        return self._task.done()


# --------------------------------------------------------------------------- subscribers
class Hub:
    """Fan-out of transcript events to listen-only subscribers, by ``source:X`` / ``session:ID``."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Outbox]] = {}

    def subscribe(self, key: str, outbox: Outbox) -> None:
        self._subs.setdefault(key, set()).add(outbox)

    def unsubscribe(self, key: str, outbox: Outbox) -> None:
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(outbox)
            if not subs:
                del self._subs[key]

    def publish(self, keys: Iterable[str], message: dict) -> None:
        for key in keys:
            for outbox in list(self._subs.get(key, ())):
                outbox.put(message)
                if message.get("type") == "end" and key.startswith("session:"):
                    outbox.close(Close(CLOSE_NORMAL, "session ended"))

    def count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def all(self) -> list[Outbox]:
        return [o for subs in self._subs.values() for o in subs]


# --------------------------------------------------------------------------- HTTP
def _response(status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    headers = Headers([("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("Cache-Control", "no-store"), *extra])
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _text(status: int, text: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8", extra)


def web_root() -> Path | None:
    """Where the web client's files are: the installed ``streamer_clients/web`` or the repo's clients/web."""
    try:
        root = Path(str(resources.files("streamer_clients") / "web"))
        if root.is_dir():
            return root
    except (ModuleNotFoundError, TypeError):
        pass
    fallback = Path(__file__).resolve().parents[2] / "clients" / "web"
    return fallback if fallback.is_dir() else None


def content_type(path: Path) -> str:
    kind = EXTRA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith(("json", "javascript")) else kind


def static_file(root: Path | None, url_path: str) -> Response:
    """A file under the web root, or 404 (never anything outside it)."""
    if root is None:
        return _text(404, "web client not installed (clients/web is missing)")
    rel = url_path.lstrip("/") or "index.html"
    try:
        target = (root / rel).resolve()
        target.relative_to(root.resolve())
    except (ValueError, OSError):
        return _text(404, "not found")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return _text(404, "not found")
    return _response(200, target.read_bytes(), content_type(target))


def bearer_token(request: Request, query: dict[str, list[str]]) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = query.get("token")
    return values[0] if values else None


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison, so timing does not leak how much of a guess was right."""
    if not expected:
        return True
    return hmac.compare_digest(expected.encode(), (given or "").encode())


def origin_ok(allowed: list[str], request: Request) -> bool:
    """Browsers send Origin; non-browser clients usually do not and are not subject to it."""
    origin = request.headers.get("Origin")
    if not allowed or origin is None or "*" in allowed:
        return True
    if origin.rstrip("/") in (a.rstrip("/") for a in allowed):
        return True
    host = request.headers.get("Host", "")
    return bool(host) and urlsplit(origin).netloc == host  # the page this server served itself


def single_query(query: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[-1] for k, v in query.items() if v}


# --------------------------------------------------------------------------- server
@dataclass
class _Live:
    session: Session
    outbox: Outbox | None
    keys: tuple[str, ...]


class StreamerServer:
    """The daemon: websocket + HTTP on one port, one engine, many sessions."""

    def __init__(self, settings: Settings, engine: Engine | None = None, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.hub = Hub()
        self.monitor = LoopMonitor(self.metrics)
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.live: dict[str, _Live] = {}
        self.port: int = 0
        self.host: str = settings.server.host
        self._ws_server: Server | None = None
        self._shutdown = asyncio.Event()
        self._handlers: set[asyncio.Task] = set()
        self._web_root = web_root()
        self._ssl = self._ssl_context()
        self.background: list[Any] = []  # local capture runners, stopped before sessions flush
        if engine is not None:
            self.attach_engine(engine)

    # ------------------------------------------------------------- lifecycle
    def attach_engine(self, engine: Engine) -> None:
        """Model loaded and warm: start scheduling (``/healthz`` turns 200)."""
        self.engine = engine
        self.scheduler = Scheduler(engine, max_batch=self.settings.server.max_batch, metrics=self.metrics,
                                   min_chunk=self.settings.stream.min_chunk)
        self.scheduler.start()
        self.metrics.ready.set(1)

    async def warm_up(self) -> None:
        """Load the stream core and run the VAD once on the core thread, before clients pay for it.

        Silero's TorchScript model is slow on its first calls; doing them here keeps the first
        session's updates prompt. The loop-stall gauge restarts afterwards, so it measures
        serving, not model loading.
        """
        if self.scheduler is not None:
            try:
                await self.scheduler.call(_warm_stream_core, self.settings.stream)
            except Exception as exc:  # only a latency nicety: sessions will load it themselves
                log.warning("stream core warm-up failed: %s", exc)
        self.monitor.reset()
        self.metrics.loop_stall_max.set(0)

    @property
    def ready(self) -> bool:
        return self.scheduler is not None

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.settings.server
        if not cfg.certfile:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cfg.certfile, cfg.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate {cfg.certfile} / key {cfg.keyfile}: {exc}") from None
        return context

    async def start(self, port: int | None = None) -> None:
        cfg = self.settings.server
        self.monitor.start()
        self._ws_server = await serve(
            self._handle, cfg.host, cfg.port if port is None else port,
            process_request=self._process_request, ssl=self._ssl,
            max_size=max(cfg.max_frame_bytes * 4, 1 << 16),  # over this websockets closes 1009 by itself
            max_queue=4, close_timeout=3, ping_interval=20, ping_timeout=20,
            server_header="streamer", logger=logging.getLogger("streamer.daemon.websockets"))
        self.port = self._ws_server.sockets[0].getsockname()[1]
        log.info("listening on %s://%s:%d%s (model %s)", "wss" if self._ssl else "ws", cfg.host, self.port,
                 LISTEN_PATH, self.engine.name if self.engine else "loading")

    @property
    def url(self) -> str:
        return f"{'wss' if self._ssl else 'ws'}://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self.port}"

    async def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop accepting, flush every live session (all audio decoded, ``end`` sent), then close."""
        if self._shutdown.is_set():
            return
        log.info("shutting down: finishing %d live session(s)", len(self.live))
        self._shutdown.set()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)  # listening socket closed now
        for runner in self.background:
            with contextlib.suppress(Exception):
                await runner.stop()
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            done, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
        for outbox in self.hub.all():
            outbox.close(Close(CLOSE_GOING_AWAY, "server shutting down"))
            await outbox.finish(timeout=3)
        if self._ws_server is not None:
            self._ws_server.close(close_connections=True)
            await self._ws_server.wait_closed()
        if self.scheduler is not None:
            await self.scheduler.close()
        await self.monitor.stop()
        log.info("shutdown complete")

    # ------------------------------------------------------------- HTTP routes
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        cfg = self.settings.server
        if parts.path in (LISTEN_PATH, CAPTIONS_PATH):
            if not token_ok(cfg.token, bearer_token(request, query)):
                self.metrics.errors.labels(code="unauthorized").inc()
                return _text(401, "unauthorized: send 'Authorization: Bearer <token>' or ?token=<token>",
                             [("WWW-Authenticate", 'Bearer realm="streamer"')])
            if not origin_ok(cfg.allowed_origins, request):
                self.metrics.errors.labels(code="forbidden_origin").inc()
                return _text(403, f"origin {request.headers.get('Origin')} is not allowed "
                             "(server.allowed_origins)")
            if self._shutdown.is_set():
                return _text(503, "server is shutting down")
            return None
        if parts.path == "/healthz":
            if self.ready and not self._shutdown.is_set():
                return _text(200, "ok")
            return _text(503, "loading model" if not self.ready else "shutting down")
        if parts.path == "/metrics":
            if not token_ok(cfg.token, bearer_token(request, query)):
                return _text(401, "unauthorized", [("WWW-Authenticate", 'Bearer realm="streamer"')])
            self.metrics.subscribers.set(self.hub.count())
            return _response(200, self.metrics.render(), self.metrics.content_type)
        return static_file(self._web_root, parts.path)

    # ------------------------------------------------------------- websocket
    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            parts = urlsplit(ws.request.path)
            query = single_query(parse_qs(parts.query))
            if parts.path == CAPTIONS_PATH:
                await self._captions(ws, query)
            else:
                await self._listen(ws, query)
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._handlers.discard(task)

    async def _reject(self, ws: ServerConnection, code: str, message: str, close: Close) -> None:
        self.metrics.errors.labels(code=code).inc()
        outbox = Outbox(ws, 4, self.metrics)
        outbox.put(error(code, message))
        outbox.close(close)
        await outbox.finish(timeout=3)

    async def _listen(self, ws: ServerConnection, query: dict[str, str]) -> None:
        cfg = self.settings.server
        if not self.ready:
            return await self._reject(ws, "not_ready", "the model is still loading; retry in a few seconds",
                                      Close(CLOSE_TRY_AGAIN, "model loading"))
        if len(self.scheduler) >= cfg.max_sessions:
            return await self._reject(ws, "server_busy", f"the server is at its limit of {cfg.max_sessions} "
                                      "sessions; retry later", Close(CLOSE_TRY_AGAIN, "too many sessions"))
        start_query = {k: v for k, v in query.items() if k in START_FIELDS}
        try:
            defaults = parse_start(start_query, StartParams(language=self.settings.stream.language,
                                                            task=self.settings.stream.task))
        except StartError as exc:
            return await self._reject(ws, "invalid_start", f"query parameter: {exc}",
                                      Close(CLOSE_UNSUPPORTED, "invalid start"))
        session = Session(uuid.uuid4().hex[:12], self.settings.stream, model=self.engine.name,
                          max_frame_bytes=cfg.max_frame_bytes, defaults=defaults, autostart=bool(start_query))
        outbox = Outbox(ws, cfg.send_queue, self.metrics)
        keys = (f"session:{session.id}",) + ((f"source:{query['source']}",) if query.get("source") else ())
        self._register(session, outbox, keys)
        try:
            await self._read_loop(ws, session, outbox)
        finally:
            await self._finalise(session, outbox)

    def _register(self, session: Session, outbox: Outbox | None, keys: tuple[str, ...]) -> None:
        self.live[session.id] = _Live(session, outbox, keys)
        self.metrics.sessions_total.inc()
        self.scheduler.add(session, lambda items: self._deliver(session.id, items))

    def _deliver(self, session_id: str, items: list[Outgoing]) -> None:
        """Messages from a session: to its own client, and transcripts/end to its subscribers."""
        live = self.live.get(session_id)
        if live is None:
            return
        for item in items:
            if isinstance(item, dict):
                kind = item.get("type")
                if kind == "error":
                    self.metrics.errors.labels(code=item.get("code", "unknown")).inc()
                if kind in ("transcript", "end"):
                    self.hub.publish(live.keys, item)
            if live.outbox is not None:
                live.outbox.put_all([item])

    async def _read_loop(self, ws: ServerConnection, session: Session, outbox: Outbox) -> None:
        cfg = self.settings.server
        shutdown = asyncio.ensure_future(self._shutdown.wait())
        recv: asyncio.Task | None = None
        try:
            while outbox.closing is None and session.state in ("new", "started"):
                await self._backpressure(session)
                if recv is None:
                    recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, shutdown}, timeout=cfg.idle_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if shutdown in done:
                    outbox.override = Close(CLOSE_GOING_AWAY, "server shutting down")
                    return
                if not done:
                    self._deliver(session.id, [error("idle_timeout", f"no message for {cfg.idle_timeout:g} s; "
                                                     "the session was finished and closed")])
                    outbox.override = Close(CLOSE_POLICY, "idle timeout")
                    return
                try:
                    message = recv.result()
                except ConnectionClosed:
                    log.info("session %s: client closed without stop; finishing server-side", session.id)
                    return
                recv = None
                await self._on_message(session, message)
        finally:
            shutdown.cancel()
            if recv is not None:
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)

    async def _on_message(self, session: Session, message: str | bytes) -> None:
        """Parse and feed on the core thread (resampling and VAD never run on the loop)."""
        call = self.scheduler.call
        if isinstance(message, str):
            self._deliver(session.id, await call(session.receive_text, message))
        elif len(message) > session.max_frame_bytes:
            self._deliver(session.id, await call(session.receive_binary, message))
        else:
            before = session.audio_seconds
            for i in range(0, len(message), FEED_PIECE_BYTES):
                self._deliver(session.id, await call(session.receive_binary, message[i:i + FEED_PIECE_BYTES]))
                if session.state != "started":
                    break
                self.scheduler.wake()
            self.metrics.audio_seconds.inc(max(0.0, session.audio_seconds - before))
        self.scheduler.wake()

    async def _backpressure(self, session: Session) -> None:
        """Stop reading this socket while too much of its audio waits for decoding."""
        bound = self.settings.server.max_pending_audio
        while session.active and session.lag > bound:
            self.scheduler.wake()
            await self.scheduler.progressed(session, timeout=5.0)
            if not session.in_flight and session.lag > bound:
                break  # nothing due although audio waits (e.g. silence): keep reading

    async def _finalise(self, session: Session, outbox: Outbox | None) -> None:
        """Decode everything received, send the rest and ``end``, then close (also on disconnect)."""
        try:
            if session.state == "started":
                self._deliver(session.id, await self.scheduler.call(session.stop))
            while session.active:
                self.scheduler.wake()
                await self.scheduler.progressed(session, timeout=1.0)
        finally:
            self.scheduler.remove(session)
            self.live.pop(session.id, None)
            if outbox is not None:
                await outbox.finish(timeout=5)

    async def _captions(self, ws: ServerConnection, query: dict[str, str]) -> None:
        cfg = self.settings.server
        if query.get("session"):
            sid = query["session"]
            if sid not in self.live:
                return await self._reject(ws, "unknown_session", f"no live session {sid!r}",
                                          Close(CLOSE_POLICY, "unknown session"))
            key, source = f"session:{sid}", None
        elif query.get("source"):
            source = query["source"]
            key, sid = f"source:{source}", self._source_session(source)
        else:
            return await self._reject(ws, "invalid_subscription", "use /v1/captions?source=mic or "
                                      "/v1/captions?session=<id>", Close(CLOSE_POLICY, "missing source"))
        outbox = Outbox(ws, cfg.send_queue, self.metrics)
        outbox.put({"type": "ready", "session": sid, "source": source, "protocol": 1,
                    "model": self.engine.name if self.engine else "", "sample_rate": SAMPLE_RATE})
        live = self.live.get(sid) if sid else None
        if live is not None and self.scheduler is not None:
            # On the core thread, so it is ordered with the session's updates: every update the
            # snapshot lacks is delivered after the subscription below, none twice.
            snapshot = await self.scheduler.call(live.session.snapshot_message)
            if snapshot is not None:
                outbox.put(snapshot)
        self.hub.subscribe(key, outbox)
        self.metrics.subscribers.set(self.hub.count())
        try:
            await self._drain_subscriber(ws, outbox)
        finally:
            self.hub.unsubscribe(key, outbox)
            self.metrics.subscribers.set(self.hub.count())
            if self._shutdown.is_set():
                outbox.override = Close(CLOSE_GOING_AWAY, "server shutting down")
            await outbox.finish(timeout=3)

    async def _drain_subscriber(self, ws: ServerConnection, outbox: Outbox) -> None:
        """Listen-only: ignore what the client sends, until it leaves, is closed, or we shut down."""
        shutdown = asyncio.ensure_future(self._shutdown.wait())
        try:
            while outbox.closing is None:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, shutdown}, return_when=asyncio.FIRST_COMPLETED)
                if shutdown in done or recv not in done:
                    recv.cancel()
                    await asyncio.gather(recv, return_exceptions=True)
                    return
                if recv.exception() is not None:
                    return
        finally:
            shutdown.cancel()

    def _source_session(self, source: str) -> str | None:
        for sid, live in self.live.items():
            if f"source:{source}" in live.keys:
                return sid
        return None

    # ------------------------------------------------------------- local sources
    async def open_local_session(self, source: str, params: StartParams) -> Session:
        """A session fed in-process (microphone, monitor): its events go to ``source:<name>`` subscribers."""
        if not self.ready:
            raise RuntimeError("attach an engine before opening a local session")
        session = Session(f"{source}-{uuid.uuid4().hex[:6]}", self.settings.stream, model=self.engine.name,
                          defaults=params, autostart=True)
        await self.scheduler.call(session.start, {})
        self._register(session, None, (f"session:{session.id}", f"source:{source}"))
        return session

    async def feed_local(self, session: Session, samples: Any) -> None:
        """16 kHz mono float32 from a local capture."""
        if session.state == "started":
            before = session.audio_seconds
            await self.scheduler.call(session.feed, samples)
            self.metrics.audio_seconds.inc(max(0.0, session.audio_seconds - before))
            self.scheduler.wake()

    async def close_local_session(self, session: Session) -> None:
        await self._finalise(session, None)


def _warm_stream_core(config: Any) -> None:
    import numpy as np

    from streamer.core.stream import StreamProcessor  # noqa: F401  (import cost paid here, once)

    if config.use_vad:
        from streamer.vad import SileroDetector

        detector = SileroDetector()
        for _ in range(3):
            detector.probabilities(np.zeros(detector.window * 32, dtype=np.float32))


@contextlib.asynccontextmanager
async def running_server(settings: Settings, engine: Engine | None, *, port: int | None = 0,
                         metrics: Metrics | None = None) -> AsyncIterator[StreamerServer]:
    """A started server for tests, benchmarks and clients; ``port=0`` binds a free port (see ``.port``)."""
    server = StreamerServer(settings, engine, metrics=metrics)
    await server.start(port=port)
    await server.warm_up()
    try:
        yield server
    finally:
        await server.shutdown()


# --------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the websocket transcription daemon",
                                   description="Serve protocol v1 on ws://HOST:PORT/v1/listen (docs/protocol.md).")
    parser.add_argument("--config", default=None, help="profile name in configs/ (cpu, gpu) or a TOML path")
    parser.add_argument("--model", help="engine.model: embedded name, hub id or local folder")
    parser.add_argument("--host", help="server.host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="server.port (default 8765)")
    parser.add_argument("--token", help="server.token: bearer token clients must send (or STREAMER_TOKEN)")
    parser.add_argument("--certfile", help="TLS certificate (PEM); with --keyfile serves wss://")
    parser.add_argument("--keyfile", help="TLS private key (PEM)")
    parser.add_argument("--mic", nargs="?", const="", default=None, metavar="DEVICE",
                        help="also capture a local input device (name or index; default device if omitted)")
    parser.add_argument("--source", choices=("mic", "monitor"), help="what --mic captures: a microphone or the "
                        "monitor of an output device (system audio); published as /v1/captions?source=NAME")
    parser.add_argument("--monitor", nargs="?", const="", default=None, metavar="DEVICE",
                        help="also capture system audio (the default output's monitor, or this monitor device) as "
                        "source=monitor, alongside --mic")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any configuration key, e.g. --set stream.min_chunk=0.5")
    parser.set_defaults(func=run_cli)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = parse_set_flags(args.set)
    for flag, key in (("model", "engine.model"), ("host", "server.host"), ("port", "server.port"),
                      ("token", "server.token"), ("certfile", "server.certfile"), ("keyfile", "server.keyfile"),
                      ("source", "mic.source")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    if getattr(args, "mic", None):
        overrides["mic.device"] = args.mic
    return load_settings(args.config, overrides)


def captures_from_args(args: argparse.Namespace, settings: Settings) -> list[MicConfig]:
    """The local sources to capture: --mic (as --source says) and/or --monitor."""
    captures = []
    if args.mic is not None or args.source == "monitor":
        captures.append(settings.mic)
    if getattr(args, "monitor", None) is not None and settings.mic.source != "monitor":
        captures.append(settings.mic.model_copy(update={"source": "monitor", "device": args.monitor or None}))
    return captures


def run_cli(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        return asyncio.run(serve_forever(settings, captures=captures_from_args(args, settings)))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2


async def serve_forever(settings: Settings, *, captures: Sequence[MicConfig] = (), engine: Engine | None = None,
                        on_started: Callable[[StreamerServer], Any] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully and return 0.

    ``captures`` are local devices to caption (published as ``source=<config.source>``).
    ``on_started`` is called with the server once it accepts sessions (tests use it to find
    the port when binding port 0).
    """
    if captures:
        from streamer.daemon.mic import CaptureError, check_device

        try:
            for capture in captures:
                check_device(capture)
        except CaptureError as exc:
            log.error("%s", exc)
            return 1
    sys.setswitchinterval(0.001)  # hand the GIL back to the event loop sooner while threads decode
    server = StreamerServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _serve(server, settings, stop, captures, engine, on_started)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _serve(server: StreamerServer, settings: Settings, stop: asyncio.Event, captures: Sequence[MicConfig],
                 engine: Engine | None, on_started: Callable[[StreamerServer], Any] | None) -> int:
    loop = asyncio.get_running_loop()
    if engine is None:
        from streamer.engine.loader import load_engine

        started = time.perf_counter()
        loader = loop.run_in_executor(None, load_engine, settings.engine)
        done, _ = await asyncio.wait({loader, asyncio.ensure_future(stop.wait())},
                                     return_when=asyncio.FIRST_COMPLETED)
        if loader not in done:
            await server.shutdown()
            return 0
        try:
            engine = loader.result()
        except Exception as exc:
            log.error("cannot load the model: %s", exc)
            await server.shutdown()
            return 1
        log.info("model %s ready in %.1f s", engine.name, time.perf_counter() - started)
    server.attach_engine(engine)
    await server.warm_up()
    if captures:
        from streamer.daemon.mic import CaptureError, start_capture

        try:
            for capture in captures:
                server.background.append(await start_capture(server, capture))
        except CaptureError as exc:
            log.error("%s", exc)
            await server.shutdown()
            return 1
    if on_started is not None:
        on_started(server)
    await stop.wait()
    await server.shutdown()
    return 0
