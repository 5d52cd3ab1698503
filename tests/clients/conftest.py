"""Fixtures for the client tests: a real daemon (tiny.en) in a thread, Xvfb, test audio.

The daemon runs on its own event loop in a background thread so that synchronous drivers
(Playwright, subprocesses, Tk) can talk to it over real sockets, exactly as a user's client would.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_helpers import REPO, ThreadedDaemon, client_settings, need


@pytest.fixture(scope="session")
def daemon_engine(tiny_engine):
    return tiny_engine


@pytest.fixture
def daemon(daemon_engine) -> Iterator[ThreadedDaemon]:
    """A real daemon with tiny.en on a free port."""
    pytest.importorskip("streamer.daemon.server", reason="the daemon (streamer.daemon.server) is not available")
    d = ThreadedDaemon(client_settings(), daemon_engine).start()
    yield d
    d.stop()


@pytest.fixture
def jfk_wav(shared_data) -> Path:
    path = Path(shared_data) / "jfk" / "jfk.wav"
    if not path.is_file():
        pytest.skip(f"{path} not found in the shared test audio")
    return path


@pytest.fixture
def xvfb(monkeypatch) -> Iterator[str]:
    """A private Xvfb display; DISPLAY points at it for the test and its subprocesses."""
    need("Xvfb")
    for number in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    display = f":{number}"
    proc = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.skip("Xvfb did not start")
        time.sleep(0.05)
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    yield display
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored)."""
    path = REPO / "artifacts"
    path.mkdir(exist_ok=True)
    return path
