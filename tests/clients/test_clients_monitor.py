"""System audio (``--source monitor``) headless: a PulseAudio null sink plays a clip, the daemon
records the sink's monitor through PortAudio's ``pulse`` device, and a listen-only client gets the
captions from ``/v1/captions?source=monitor``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

import pytest

from client_helpers import ThreadedDaemon, client_settings, need, recall, wait_for
from streamer_clients.client import Endpoint, State, subscribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch) -> str:
    """A private PulseAudio server with a null sink ``meeting`` as the default output."""
    need("pulseaudio", "pactl", "paplay")
    run = tmp_path / "run"
    run.mkdir()
    socket = run / "native"
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(run), "PULSE_RUNTIME_PATH": str(run / "pulse"),
           "PULSE_SERVER": f"unix:{socket}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    proc = subprocess.Popen(["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
                             "-L", f"module-native-protocol-unix socket={socket} auth-anonymous=1",
                             "-L", "module-null-sink sink_name=meeting"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        wait_for(lambda: subprocess.run(["pactl", "info"], capture_output=True).returncode == 0, 15,
                 what="PulseAudio")
        subprocess.run(["pactl", "set-default-sink", "meeting"], check=True)
        yield "meeting"
    finally:
        proc.terminate()
        proc.wait(10)


def test_daemon_captions_system_audio_from_a_monitor(pulse: str, daemon_engine, jfk_wav: Path) -> None:
    sd = pytest.importorskip("sounddevice", reason="needs sounddevice and PortAudio (libportaudio2)")
    if not any(d["name"] == "pulse" for d in sd.query_devices()):
        pytest.skip("PortAudio has no 'pulse' device (install libasound2-plugins)")
    settings = client_settings(**{"mic.source": "monitor"})
    daemon = ThreadedDaemon(settings, daemon_engine, capture=True).start()
    words: list[str] = []
    states: list[State] = []
    stop = asyncio.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []

    def listen() -> None:
        async def main() -> None:
            loop_box.append(asyncio.get_running_loop())
            def on_event(event: dict) -> None:
                if event.get("type") == "transcript":
                    words.extend(w["word"] for w in event["committed"])
            await subscribe(Endpoint(daemon.url), on_event, lambda s, d: states.append(s), source="monitor",
                            stop=stop)
        asyncio.run(main())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        wait_for(lambda: State.CONNECTED in states, 15, what="the captions subscription")
        subprocess.run(["paplay", f"--device={pulse}", str(jfk_wav)], check=True, timeout=30)
        wait_for(lambda: recall("".join(words), JFK) >= 0.7, 30, what="the monitor's captions")
    finally:
        if loop_box:
            loop_box[0].call_soon_threadsafe(stop.set)
        listener.join(10)
        daemon.stop()
    assert "country" in "".join(words).lower()
