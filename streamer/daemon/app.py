"""``streamer serve``: the daemon process: flags, signals, model loading, local capture.

The server answers ``/healthz`` with 503 while the model loads in a worker thread, so a
supervisor or load balancer sees the process at once. SIGINT (Ctrl+C) finishes every session
here (all audio decoded, ``end`` sent) before exit 0; SIGTERM (what orchestrators send) drains:
``/healthz`` turns ``draining``, finishing sessions get ``server.drain_grace`` seconds, and live
streams are told to resume on another server (close 1012) before exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any, Callable, Sequence

from streamer.config import ConfigError, MicConfig, Settings, load_settings, parse_set_flags
from streamer.daemon.server import StreamerServer
from streamer.hypothesis import Engine

log = logging.getLogger(__name__)


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
    parser.add_argument("--wyoming", metavar="URI", help="server.wyoming: also serve Wyoming (Home Assistant) at "
                        "tcp://HOST:PORT or unix:///PATH (docs/wyoming.md)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any configuration key, e.g. --set stream.min_chunk=0.5")
    parser.set_defaults(func=run_cli)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = parse_set_flags(args.set)
    for flag, key in (("model", "engine.model"), ("host", "server.host"), ("port", "server.port"),
                      ("token", "server.token"), ("certfile", "server.certfile"), ("keyfile", "server.keyfile"),
                      ("source", "mic.source"), ("wyoming", "server.wyoming")):
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
        from streamer.daemon.capture import CaptureError, check_device

        try:
            for capture in captures:
                check_device(capture)
        except CaptureError as exc:
            log.error("%s", exc)
            return 1
    sys.setswitchinterval(0.001)  # hand the GIL back to the event loop sooner while threads decode
    server = StreamerServer(settings)
    await server.start()
    if settings.server.wyoming and not await _start_wyoming(server):
        await server.shutdown()
        return 1
    stop = asyncio.Event()
    drain = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, lambda: (drain.set(), stop.set()))
    try:
        return await _serve(server, settings, stop, drain, captures, engine, on_started)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _start_wyoming(server: StreamerServer) -> bool:
    """Serve Wyoming beside the websockets (the ``wyoming`` package is imported only then)."""
    try:
        from streamer.compat.wyoming import start_wyoming
    except ImportError as exc:
        log.error("server.wyoming needs the wyoming package: pip install 'streamer[wyoming]' (%s)", exc)
        return False
    try:
        await start_wyoming(server)
    except OSError as exc:
        log.error("cannot listen for Wyoming on %s: %s", server.settings.server.wyoming, exc)
        return False
    return True


async def _load(settings: Settings, stop: asyncio.Event) -> Engine | None:
    """Load the model on a worker thread; None if a stop signal came first."""
    from streamer.engine.loader import load_engine

    started = time.perf_counter()
    loader = asyncio.get_running_loop().run_in_executor(None, load_engine, settings.engine)
    done, _ = await asyncio.wait({loader, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if loader not in done:
        return None
    engine = loader.result()
    log.info("model %s ready in %.1f s", engine.name, time.perf_counter() - started)
    return engine


async def _serve(server: StreamerServer, settings: Settings, stop: asyncio.Event, drain: asyncio.Event,
                 captures: Sequence[MicConfig], engine: Engine | None,
                 on_started: Callable[[StreamerServer], Any] | None) -> int:
    if engine is None:
        try:
            engine = await _load(settings, stop)
        except Exception as exc:
            log.error("cannot load the model: %s", exc)
            await server.shutdown()
            return 1
        if engine is None:
            await server.shutdown()
            return 0
    server.host.attach_engine(engine)
    await server.host.warm_up()
    if captures:
        from streamer.daemon.capture import CaptureError
        from streamer.daemon.mic import start_capture

        try:
            for capture in captures:
                server.background.append(await start_capture(server.host, capture))
        except CaptureError as exc:
            log.error("%s", exc)
            await server.shutdown()
            return 1
    if on_started is not None:
        on_started(server)
    await stop.wait()
    if drain.is_set():  # SIGTERM (an orchestrator): live streams resume elsewhere; SIGINT (a person): flush here
        await server.drain(settings.server.drain_grace, settings.server.drain_notice)
    await server.shutdown()
    return 0
