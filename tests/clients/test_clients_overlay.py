"""The overlay under Xvfb: real Tk widgets following live sessions on a real daemon (tiny.en).

The widgets run in ``overlay_driver.py`` (a child process that reports their text as JSON lines),
because a Tk interpreter cannot survive its X server going away between tests."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client_helpers import DICTATION_WAV, HERE, ThreadedDaemon, need, streamer_env, wait_for, x_screenshot
from streamer_clients.capture import WavCapture
from streamer.protocol import StartParams
from streamer_clients.client import Endpoint
from streamer_clients.live import LiveSession

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def stream_wav(url: str, wav: Path, speed: float, source: str | None = None,
               sessions: list[str] | None = None) -> threading.Thread:
    """Stream a WAV through the capture path in a thread, publishing it as ``source``."""
    def run() -> None:
        capture = WavCapture(wav, speed=speed)
        session = LiveSession(Endpoint(url), StartParams(sample_rate=capture.sample_rate, encoding="pcm_f32le"), source=source)
        if sessions is not None:
            session.sessions = sessions  # shared list: the test reads the id as soon as it exists
        asyncio.run(session.run(capture.chunks()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class Driver:
    """The overlay widgets in a child process; ``latest`` is their last reported state."""

    def __init__(self, url: str, what: str, geometry: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "overlay_driver.py"), url, what, geometry],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=streamer_env())
        self.reports: queue.Queue[dict] = queue.Queue()
        self.latest: dict = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.reports.put(json.loads(line))

    def until(self, predicate, timeout: float, what: str) -> dict:
        def poll():
            while not self.reports.empty():
                self.latest = self.reports.get()
                if predicate(self.latest):
                    return self.latest
            return None
        return wait_for(poll, timeout, what=what)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def text(report: dict, label: str) -> str:
    return report["texts"].get(label, "").lower()


def test_overlay_shows_mic_and_system_audio_as_two_rows(daemon: ThreadedDaemon, xvfb: str, jfk_wav: Path,
                                                        artifacts: Path) -> None:
    driver = Driver(daemon.url, "both", "940x170+40+380")
    try:
        driver.until(lambda r: [s[0] for s in r["states"].values()] == ["connected"] * 2, 20, "subscriptions")
        senders = [stream_wav(daemon.url, jfk_wav, 2.0, source="monitor"),
                   stream_wav(daemon.url, DICTATION_WAV, 1.5, source="mic")]
        report = driver.until(lambda r: "country" in text(r, "Others") and "typing" in text(r, "Me"), 45,
                              "captions in both rows")
        assert report["lines"] == {"Me": 2, "Others": 2}
        time.sleep(0.3)
        x_screenshot(artifacts / "overlay.png", 30, 370, 960, 190)
        for sender in senders:
            sender.join(30)
        driver.until(lambda r: "thank" in text(r, "Me"), 15, "the end of the mic stream")
        driver.send("adjust")
        adjusted = driver.until(lambda r: "adjusted" in r, 10, "font/opacity changes")["adjusted"]
        assert adjusted["font"] == 26 and adjusted["opacity"] == pytest.approx(0.6)
        assert adjusted["click_through"] is True  # Xvfb has the SHAPE extension
    finally:
        driver.close()


def test_overlay_follows_one_session_until_it_ends(daemon: ThreadedDaemon, xvfb: str) -> None:
    sessions: list[str] = []
    sender = stream_wav(daemon.url, DICTATION_WAV, 1.0, sessions=sessions)
    session_id = wait_for(lambda: sessions[0] if sessions else None, 15, what="the session id")
    driver = Driver(daemon.url, f"session:{session_id}", "800x90+0+0")
    try:
        label = f"Session {session_id[:8]}"
        driver.until(lambda r: "thank" in text(r, label), 40, "the session's text")
        sender.join(30)
        report = driver.until(lambda r: r["states"][label][0] == "closed", 15, "the session's end")
        assert report["states"][label][1] == "session ended"
    finally:
        driver.close()


def test_overlay_command_starts_and_keeps_running(daemon: ThreadedDaemon, xvfb: str) -> None:
    """``streamer overlay`` as a user starts it: a window appears and it stays up until closed."""
    need("xdotool")
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "overlay", "--url", daemon.url, "--source", "mic"],
                            stderr=subprocess.PIPE, text=True, env=streamer_env())
    try:
        found = wait_for(lambda: subprocess.run(["xdotool", "search", "--name", "streamer overlay"],
                                                capture_output=True, text=True).stdout.strip(), 20,
                         what="the overlay window")
        assert found
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(10)


def test_caption_subscription_reconnects_after_a_daemon_restart(daemon: ThreadedDaemon) -> None:
    """What keeps the overlay alive: ``subscribe`` reports the loss and reconnects with backoff."""
    from streamer_clients.client import State, subscribe

    states: list[State] = []
    stop_box: list = []

    def follow() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            stop_box.append((asyncio.get_running_loop(), stop))
            await subscribe(Endpoint(daemon.url), lambda e: None, lambda s, d: states.append(s), source="mic",
                            stop=stop)
        asyncio.run(main())

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        wait_for(lambda: State.CONNECTED in states, 15, what="the first connection")
        daemon.restart()
        wait_for(lambda: states.count(State.CONNECTED) >= 2, 30, what="the reconnection")
        assert State.RECONNECTING in states[states.index(State.CONNECTED):]
    finally:
        loop, stop = stop_box[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    assert states[-1] == State.CLOSED
