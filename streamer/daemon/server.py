"""The network front of the daemon: HTTP and protocol v1 websockets on one port (aiohttp).

This module moves bytes: it accepts connections, turns frames into calls on the
:class:`~streamer.daemon.host.SessionHost` (which owns sessions, scheduling and fan-out), and
sends what comes back through an :class:`~streamer.daemon.outbox.Outbox`. Idle timeouts,
backpressure by not reading, and graceful shutdown live here; no transcription logic does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import WSMsgType, web

from streamer import protocol, resources
from streamer.compat.deepgram import DeepgramSurface
from streamer.compat.surfaces import default_surfaces
from streamer.config import ConfigError, Settings
from streamer.daemon import http
from streamer.daemon.host import SessionHost, session_keys
from streamer.daemon.metrics import Metrics
from streamer.daemon.outbox import Outbox
from streamer.hypothesis import Engine
from streamer.protocol import CAPTIONS_PATH, LISTEN_PATH, Close, CloseCode, StartError

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 120.0
PING_INTERVAL = 20.0
CLOSE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Refusal:
    """A new stream is refused: a protocol v1 error code, the message, a short close reason."""

    code: str
    message: str
    reason: str
    retry_after: float | None = None


class StreamerServer:
    """The daemon's listening side: one port, one :class:`SessionHost`."""

    def __init__(self, settings: Settings, engine: Engine | None = None, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.host = SessionHost(settings, engine, metrics=metrics)
        self.metrics = self.host.metrics
        self.port: int = 0
        self._ssl = self._ssl_context()
        self._shutdown = asyncio.Event()
        self._draining = asyncio.Event()   # /healthz says draining, new sessions are refused
        self._moving = asyncio.Event()     # live streams are told to resume elsewhere
        self._handlers: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.background: list = []  # local captures and other listeners (Wyoming): stopped before sessions flush
        # other protocols on this port: objects with routes(server) -> [RouteDef], added before start(), and
        # optionally auth_refusal(request, status, message, headers) -> their own shape for a 401/403 (or None)
        self.surfaces: list = [DeepgramSurface(), *default_surfaces(settings)]

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

    def _app(self) -> web.Application:
        cfg = self.settings.server
        refusals = lambda: [s.auth_refusal for s in self.surfaces if hasattr(s, "auth_refusal")]  # noqa: E731
        app = web.Application(middlewares=[http.access_guard(cfg.token, cfg.allowed_origins, self.metrics, refusals)],
                              client_max_size=cfg.max_frame_bytes * 4)
        app.router.add_get(LISTEN_PATH, self.tracked(self._listen))
        app.router.add_get(CAPTIONS_PATH, self.tracked(self._captions))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", http.metrics_handler(self.metrics, self._count_subscribers))
        for surface in self.surfaces:
            app.add_routes(surface.routes(self))
        http.add_web_page(app, resources.web_root())  # last: it answers every other GET path
        return app

    # ------------------------------------------------------------- lifecycle
    async def start(self, port: int | None = None) -> None:
        cfg = self.settings.server
        self.host.monitor.start()
        if cfg.bus:  # other replicas' transcript events for this daemon's caption subscribers
            from streamer.daemon.bus import RedisBus

            self.host.hub.bus = RedisBus(cfg.bus, self.host.hub.deliver_local_one)
            await self.host.hub.bus.start()
        self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, cfg.host, cfg.port if port is None else port, ssl_context=self._ssl)
        await self._site.start()
        self.port = self.sockets[0].getsockname()[1]
        log.info("listening on %s%s (model %s)", self.url, LISTEN_PATH,
                 self.host.engine.name if self.host.engine else "loading")

    @property
    def sockets(self) -> list:
        """The listening sockets (tests shrink their buffers)."""
        return list(self._site._server.sockets) if self._site and self._site._server else []

    @property
    def url(self) -> str:
        return f"{'wss' if self._ssl else 'ws'}://{self.settings.server.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.settings.server.host}:{self.port}"

    async def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop accepting, flush every live session (all audio decoded, ``end`` sent), then close."""
        if self._shutdown.is_set():
            return
        log.info("shutting down: finishing %d live session(s)", len(self.host.live))
        self._shutdown.set()
        if self._site is not None:
            await self._site.stop()  # the listening socket closes now; connections stay
        for runner in self.background:
            with contextlib.suppress(Exception):
                await runner.stop()
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
        for subscriber in self.host.hub.all():
            subscriber.close(Close(CloseCode.GOING_AWAY, "server shutting down"))
        if self._runner is not None:
            await self._runner.cleanup()
        await self.host.close()
        if self.host.hub.bus is not None:
            await self.host.hub.bus.close()
        await self.host.monitor.stop()
        log.info("shutdown complete")

    # ------------------------------------------------------------- HTTP
    async def _healthz(self, request: web.Request) -> web.Response:
        if self._draining.is_set() and not self._shutdown.is_set():
            return http.text(503, "draining")
        if self.host.ready and not self._shutdown.is_set():
            admission = self.host.admission()
            return http.text(200, "ok") if admission.admit else http.text(503, "saturated")
        return http.text(503, "loading model" if not self.host.ready else "shutting down")

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    async def drain(self, grace: float, notice: float = 0.0) -> None:
        """SIGTERM: ``/healthz`` says draining at once (a load balancer stops sending sessions here),
        new sessions are refused, sessions that are finishing get ``grace`` seconds, and live streams
        are told to resume elsewhere (``reconnect`` with their resume token, close 1012). Their state
        is on the client's side, so no audio and no committed word is lost."""
        log.info("draining: %d live session(s)", len(self.host.live))
        self._draining.set()
        if notice:
            await asyncio.sleep(notice)
        self._moving.set()
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)

    def refusal(self) -> Refusal | None:
        """Why a new stream cannot start here now (model loading, draining, at capacity), or None.

        Every surface (protocol v1 and the compatibility adapters) asks this before opening a
        session, and words the answer in its own protocol's error shape."""
        if not self.host.ready:
            return Refusal("not_ready", "the model is still loading; retry in a few seconds", "model loading")
        if self._draining.is_set() or self._shutdown.is_set():
            return Refusal("server_busy", "this server is draining for a restart; connect to another one "
                           "(or retry)", "draining")
        admission = self.host.admission()
        if not admission.admit:
            return Refusal("server_busy", f"{admission.reason}; retry in about {admission.retry_after:.0f} s or "
                           "use another server", "server busy", admission.retry_after)
        return None

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

    async def wait_shutdown(self) -> None:
        """Return once shutdown has begun (sessions must finish now)."""
        await self._shutdown.wait()

    def _count_subscribers(self) -> None:
        self.metrics.subscribers.set(self.host.hub.count())
        self.metrics.tasks.set(len(asyncio.all_tasks()))
        admission = self.host.admission()
        self.metrics.utilisation.set(round(admission.utilisation, 3))
        self.metrics.headroom.set(admission.headroom if admission.admit else 0.0)

    def tracked(self, handler):
        """Run a websocket handler as a tracked task, so shutdown can wait for its session to flush."""
        async def run(request: web.Request) -> web.StreamResponse:
            if self._shutdown.is_set():
                return http.text(503, "server is shutting down")
            task = asyncio.current_task()
            self._handlers.add(task)
            try:
                return await handler(request)
            finally:
                self._handlers.discard(task)

        return run

    async def accept(self, request: web.Request, heartbeat: float | None = None) -> tuple[web.WebSocketResponse, Outbox]:
        """Upgrade to a websocket. ``heartbeat`` pings only suit a connection that is always being read:
        aiohttp handles pongs in ``receive()``, and a stream's reader pauses for backpressure."""
        cfg = self.settings.server
        # over max_msg_size aiohttp closes with 1009 by itself; the session refuses smaller oversize frames
        ws = web.WebSocketResponse(max_msg_size=max(cfg.max_frame_bytes * 4, 1 << 16), heartbeat=heartbeat,
                                   timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        return ws, Outbox(ws, request.transport, cfg.send_queue, self.metrics)

    async def _reject(self, outbox: Outbox, code: str, message: str, close: Close, **extra) -> None:
        self.metrics.errors.labels(code=code).inc()
        outbox.put(protocol.error(code, message, **extra))
        outbox.close(close)
        await outbox.finish(timeout=CLOSE_TIMEOUT)

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        ws, outbox = await self.accept(request)
        host, query = self.host, dict(request.query)
        refused = self.refusal()
        if refused is not None:
            extra = {"retry_after": refused.retry_after} if refused.retry_after is not None else {}
            await self._reject(outbox, refused.code, refused.message, Close(CloseCode.TRY_AGAIN, refused.reason),
                               **extra)
            return ws
        fields = protocol.start_query(query)
        try:
            defaults = protocol.parse_start(fields, host.default_params())
        except StartError as exc:
            await self._reject(outbox, "invalid_start", f"query parameter: {exc}",
                               Close(CloseCode.UNSUPPORTED, "invalid start"))
            return ws
        session = host.new_session(defaults, autostart=bool(fields))
        host.register(session, outbox, session_keys(session.id, query.get("source")))
        moved = False
        try:
            moved = await self._read_loop(ws, session, outbox)
        finally:
            answering = asyncio.ensure_future(self._ignore_frames(ws))  # pings still get their pongs
            try:
                await (host.detach(session) if moved else host.finalise(session))
                await outbox.finish(timeout=5)
            finally:
                answering.cancel()
        return ws

    @staticmethod
    async def _ignore_frames(ws: web.WebSocketResponse) -> None:
        """Read and drop what a client still sends while its last words are decoded: aiohttp answers
        the client's keepalive pings only inside ``receive()``."""
        with contextlib.suppress(Exception):
            while (await ws.receive()).type in (WSMsgType.TEXT, WSMsgType.BINARY):
                pass

    async def _read_loop(self, ws: web.WebSocketResponse, session, outbox: Outbox) -> bool:
        """Read client frames until stop, close, idle timeout or shutdown; True if the stream moves elsewhere."""
        idle = self.settings.server.idle_timeout
        stopping = {asyncio.ensure_future(self._shutdown.wait()), asyncio.ensure_future(self._moving.wait())}
        recv: asyncio.Future | None = None
        try:
            while outbox.closing is None and session.reading:
                await self.host.backpressure(session)
                recv = recv or asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({recv, *stopping}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                if self._moving.is_set() and session.resumable:
                    self.host.deliver(session.id, [await self.host.scheduler.call(session.reconnect_message)])
                    outbox.override = Close(CloseCode.SERVICE_RESTART, "draining: resume on another server")
                    return True
                if done & stopping:
                    outbox.override = Close(CloseCode.GOING_AWAY, "server shutting down")
                    return False
                if not done:
                    self.host.deliver(session.id, [protocol.error(
                        "idle_timeout", f"no message for {idle:g} s; the session was finished and closed")])
                    outbox.override = Close(CloseCode.POLICY, "idle timeout")
                    return False
                try:
                    message, recv = recv.result(), None
                except ConnectionError as exc:  # e.g. aiohttp answering a ping on a reset connection
                    log.info("session %s: connection lost (%s); finishing server-side", session.id, exc)
                    recv = None
                    return False
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    log.info("session %s: client closed without stop; finishing server-side", session.id)
                    return False
                await self.host.receive(session, message.data)
            return False
        finally:
            for waiter in stopping:
                waiter.cancel()
            if recv is not None:
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)

    async def _captions(self, request: web.Request) -> web.StreamResponse:
        ws, outbox = await self.accept(request, heartbeat=PING_INTERVAL)
        host, query = self.host, request.query
        if query.get("session"):
            sid, source = query["session"], None
            if sid not in host.live and not host.hub.knows(sid):
                await self._reject(outbox, "unknown_session", f"no live session {sid!r}",
                                   Close(CloseCode.POLICY, "unknown session"))
                return ws
            key = f"session:{sid}"
        elif query.get("source"):
            source = query["source"]
            key, sid = f"source:{source}", host.source_session(source)
        else:
            await self._reject(outbox, "invalid_subscription", "use /v1/captions?source=mic or "
                               "/v1/captions?session=<id>", Close(CloseCode.POLICY, "missing source"))
            return ws
        outbox.put(host.caption_ready(sid, source))
        snapshot = await host.snapshot(sid) if sid else None
        if snapshot is not None:
            outbox.put(snapshot)
        host.hub.subscribe(key, outbox)
        try:
            await self._until_gone(ws, outbox)
        finally:
            host.hub.unsubscribe(key, outbox)
            if self._shutdown.is_set():
                outbox.override = Close(CloseCode.GOING_AWAY, "server shutting down")
            await outbox.finish(timeout=CLOSE_TIMEOUT)
        return ws

    async def _until_gone(self, ws: web.WebSocketResponse, outbox: Outbox) -> None:
        """Listen-only: ignore what the client sends, until it leaves, is closed, or we shut down."""
        shutdown = asyncio.ensure_future(self._shutdown.wait())
        try:
            while outbox.closing is None:
                recv = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({recv, shutdown}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    await asyncio.gather(recv, return_exceptions=True)
                    return
                if recv.result().type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    return
        finally:
            shutdown.cancel()


@contextlib.asynccontextmanager
async def running_server(settings: Settings, engine: Engine | None, *, port: int | None = 0,
                         metrics: Metrics | None = None) -> AsyncIterator[StreamerServer]:
    """A started server for tests, benchmarks and clients; ``port=0`` binds a free port (see ``.port``)."""
    server = StreamerServer(settings, engine, metrics=metrics)
    await server.start(port=port)
    await server.host.warm_up()
    try:
        yield server
    finally:
        await server.shutdown()
