"""Helpers for the client tests (imported by the test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from support import recall, scaled, wait_for  # noqa: F401  (re-exported for the client tests)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DICTATION_WAV = HERE / "data" / "dictation.wav"


class ThreadedDaemon:
    """``running_server`` on a private loop in a thread; ``restart`` keeps the port (reconnect tests)."""

    def __init__(self, settings, engine, capture: bool = False) -> None:
        self.settings, self.engine = settings, engine
        self.capture = capture  # also run the daemon's local capture (settings.mic), as `serve --mic` does
        self.port = 0
        self.url = ""
        self.server = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> "ThreadedDaemon":
        ready = threading.Event()
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(ready,), name="test-daemon", daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise RuntimeError("daemon did not start within 60 s")
        if self.error is not None:
            raise RuntimeError(f"daemon failed to start: {self.error!r}") from self.error
        return self

    def _run(self, ready: threading.Event) -> None:
        from streamer.daemon.server import running_server

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with running_server(self.settings, self.engine, port=self.port) as server:
                self.server = server
                if self.capture:
                    from streamer.daemon.mic import start_capture

                    server.background.append(await start_capture(server.host, self.settings.mic))
                self.port = server.port
                self.url = server.url
                ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surface start-up failures in the test, not as a timeout
            self.error = exc
        finally:
            ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def http_url(self) -> str:
        return "http" + self.url[2:]


def client_settings(**overrides):
    """Daemon settings for client tests: tiny.en, fast updates, loopback, no environment leaking in."""
    from streamer.config import load_settings

    base = {"engine.model": "tiny.en", "stream.min_chunk": 0.5, "server.host": "127.0.0.1"}
    return load_settings(None, {**base, **overrides}, environ={})


def need(*tools: str) -> None:
    """Skip, naming the package, when a system tool is missing (scripts/setup --test installs them)."""
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (run scripts/setup --test)")


def streamer_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m streamer`` subprocesses: no user config leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_") or k == "STREAMER_DATA"}
    env["STREAMER_CLIENT_CONFIG"] = "/nonexistent"
    env.update(extra)
    return env


def x_screenshot(path: Path, x: int, y: int, width: int, height: int) -> None:
    """Save a region of the X screen as PNG with python-xlib and zlib (no imaging library needed)."""
    import struct
    import zlib

    import numpy as np
    from Xlib import X, display

    d = display.Display()
    try:
        raw = d.screen().root.get_image(x, y, width, height, X.ZPixmap, 0xFFFFFFFF).data
    finally:
        d.close()
    rgb = np.frombuffer(raw, np.uint8).reshape(height, width, 4)[:, :, 2::-1]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))
