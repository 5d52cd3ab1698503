"""Captions of a local device: ``streamer serve --mic`` and ``streamer mic``.

``streamer serve --mic`` feeds a :class:`~streamer.daemon.capture.Capture` into a session of
the daemon's :class:`~streamer.daemon.host.SessionHost`, whose events go to
``/v1/captions?source=mic`` (or ``source=monitor``) subscribers. ``streamer mic`` runs the same
capture, host and session in-process, with no server, and renders captions in the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
from typing import Any, TextIO

from streamer.config import ConfigError, MicConfig, Settings
from streamer.daemon.capture import Capture, CaptureError, FileInputStream, StreamFactory, check_device, list_devices
from streamer.daemon.host import SessionHost
from streamer.daemon.outbox import Subscriber
from streamer.daemon.session import Session
from streamer.protocol import Close

log = logging.getLogger(__name__)


class CaptureRunner:
    """A capture feeding a host session until stopped (or the input ends)."""

    def __init__(self, host: SessionHost, capture: Capture, source: str) -> None:
        self.host = host
        self.capture = capture
        self.source = source
        self.session: Session | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.capture.open()
        self.session = await self.host.open_local_session(self.source)
        self.task = asyncio.get_running_loop().create_task(self._pump(), name=f"capture-{self.source}")

    async def _pump(self) -> None:
        try:
            async for block in self.capture.blocks():
                await self.host.feed(self.session, block)
        finally:
            await self.host.finalise(self.session)

    async def wait(self) -> None:
        if self.task is not None:
            await asyncio.shield(self.task)

    async def stop(self) -> None:
        """Stop capturing, then decode and publish everything captured (``end`` to subscribers)."""
        self.capture.close()
        await self.wait()

    @property
    def committed_text(self) -> str:
        processor = self.session.processor if self.session else None
        return processor.committed_text if processor is not None else ""


async def start_capture(host: SessionHost, config: MicConfig,
                        stream_factory: StreamFactory | None = None) -> CaptureRunner:
    """Start capturing into ``host`` as source ``config.source`` (``mic`` or ``monitor``)."""
    runner = CaptureRunner(host, Capture(config, stream_factory), config.source)
    await runner.start()
    return runner


class TerminalRenderer:
    """Committed text plus the tentative tail, rewritten in place on a terminal.

    Committed words are final, so full lines are printed once and scroll away; only the
    current line (its committed part and the dimmed tentative tail) is redrawn.
    """

    def __init__(self, out: TextIO | None = None, width: int | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.width = width or (shutil.get_terminal_size((100, 20)).columns if self.tty else 100)
        self.line = ""
        self.tentative = ""

    def put(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "transcript":
            self.line += "".join(w["word"] for w in message.get("committed", []))
            self.tentative = "".join(w["word"] for w in message.get("tentative", []))
            self._wrap()
            self._draw()
        elif kind == "end":
            self.tentative = ""
            self._draw(final=True)

    def close(self, close: Close) -> None:
        """The source's session ended; the next one continues on a fresh line."""

    def _wrap(self) -> None:
        limit = max(20, self.width - 1)
        while len(self.line) > limit:
            cut = self.line.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            self._emit(self.line[:cut].strip())
            self.line = self.line[cut:]

    def _emit(self, text: str) -> None:
        self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.out.flush()

    def _draw(self, final: bool = False) -> None:
        if final:
            if self.line.strip():
                self._emit(self.line.strip())
            self.line = ""
            return
        if not self.tty:
            return  # pipes get whole committed lines only
        room = max(0, self.width - 1 - len(self.line.lstrip()))
        tail = self.tentative[:room]
        self.out.write("\r\033[K" + self.line.lstrip() + (f"\033[2m{tail}\033[0m" if tail else ""))
        self.out.flush()


async def run_local(settings: Settings, engine: Any, renderer: Subscriber,
                    stream_factory: StreamFactory | None = None, stop: asyncio.Event | None = None) -> str:
    """Capture -> session -> scheduler in-process (no server), events to ``renderer``; the committed text."""
    host = SessionHost(settings, engine)
    key = f"source:{settings.mic.source}"
    host.hub.subscribe(key, renderer)
    runner = await start_capture(host, settings.mic, stream_factory)
    try:
        waiter = asyncio.ensure_future(stop.wait()) if stop else None
        await asyncio.wait({runner.task} | ({waiter} if waiter else set()), return_when=asyncio.FIRST_COMPLETED)
        if waiter:
            waiter.cancel()
        await runner.stop()
        return runner.committed_text
    finally:
        host.hub.unsubscribe(key, renderer)
        await host.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("mic", help="live captions of a microphone (or system audio) in the terminal",
                                   description="Capture a local device and caption it, without a server.")
    parser.add_argument("device", nargs="?", help="input device name (substring) or index; default device")
    parser.add_argument("--list", action="store_true", help="list input devices and exit")
    parser.add_argument("--source", choices=("mic", "monitor"), help="microphone, or the monitor of an output "
                        "device (system audio via PulseAudio/PipeWire)")
    parser.add_argument("--file", help="capture from a WAV file instead of a device (real-time paced)")
    parser.add_argument("--speed", type=float, default=1.0, help="with --file: pace relative to real time "
                        "(0 = as fast as possible)")
    parser.add_argument("--config", default=None, help="profile in configs/ (cpu, gpu) or a TOML path")
    parser.add_argument("--model", help="engine.model")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from streamer.config import load_settings, parse_set_flags

    try:
        if args.list:
            for d in list_devices():
                print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz, "
                      f"{d['hostapi']})")
            return 0
        overrides = parse_set_flags(args.set)
        for key, value in (("engine.model", args.model), ("mic.device", args.device), ("mic.source", args.source)):
            if value is not None:
                overrides[key] = value
        settings = load_settings(args.config, overrides)
    except (CaptureError, ConfigError) as exc:
        print(f"streamer mic: {exc}", file=sys.stderr)
        return 2
    factory = FileInputStream.factory(args.file, args.speed) if args.file else None
    try:
        return asyncio.run(_run_cli(settings, factory))
    except CaptureError as exc:
        print(f"streamer mic: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


async def _run_cli(settings: Settings, factory: StreamFactory | None) -> int:
    import signal

    from streamer.engine.loader import load_engine

    if factory is None:
        check_device(settings.mic)
    engine = await asyncio.get_running_loop().run_in_executor(None, load_engine, settings.engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_local(settings, engine, TerminalRenderer(), factory, stop)
    return 0
