"""``streamer dictate`` under Xvfb: a WAV goes through the capture path to a real daemon, and the
committed words are typed by xdotool into a real Tk text box, which the test reads back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from client_helpers import DICTATION_WAV, HERE, ThreadedDaemon, need, streamer_env, wait_for
from support import settled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def text_box(xvfb: str, tmp_path: Path):
    """A focused Tk text window; returns a function reading its current content."""
    need("xdotool")
    mirror = tmp_path / "typed.txt"
    proc = subprocess.Popen([sys.executable, str(HERE / "tk_target.py"), str(mirror)])
    wait_for(mirror.exists, 15, what="the Tk window")
    subprocess.run(["xdotool", "mousemove", "200", "100"], check=True)
    yield lambda: mirror.read_text() if mirror.exists() else ""
    proc.terminate()
    proc.wait(10)


def dictate(daemon: ThreadedDaemon, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamer", "dictate", "--url", daemon.url, "--typer", "xdotool",
                             "--file", str(DICTATION_WAV), *args], stderr=subprocess.PIPE, text=True,
                            env=streamer_env())


def test_always_on_types_committed_words_with_spoken_punctuation(daemon: ThreadedDaemon, text_box) -> None:
    proc = dictate(daemon, "--speed", "2")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    wait_for(lambda: "much" in text_box().lower(), 10, what="typed text")
    typed = settled(text_box)  # the Tk mirror catches up with the last keystrokes
    lines = typed.splitlines()
    # tiny.en reads espeak's final "period" as "Thea Reid" now and then, so the line break from
    # "new line" (Whisper never writes one itself) is what proves the spoken punctuation here
    assert len(lines) == 2, typed
    assert "typing test" in lines[0].lower(), typed
    assert lines[1].lower().startswith("thank you"), typed
    assert "period" not in typed.lower() and "new line" not in typed.lower(), typed


def test_push_to_talk_types_only_while_the_key_is_held(daemon: ThreadedDaemon, text_box) -> None:
    """F9 held over the first sentence only: it ends at about 1.8 s and "new line" starts at about
    3.9 s, so releasing at 2.9 s leaves a second of slack either way on a loaded machine."""
    proc = dictate(daemon, "--speed", "1", "--push-to-talk", "F9", "--pause-key", "none")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "capturing" in line:
            break
    start = time.monotonic()
    subprocess.run(["xdotool", "keydown", "F9"], check=True)
    time.sleep(max(0.0, start + 2.9 - time.monotonic()))
    subprocess.run(["xdotool", "keyup", "F9"], check=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    wait_for(text_box, 10, what="typed text")
    typed = settled(text_box)
    # the key goes down by wall clock while the file plays: on a loaded machine the first word can
    # fall before it, so only the sentence's last word is required
    assert "test" in typed.lower(), typed
    assert "thank" not in typed.lower(), typed


def test_pause_key_resumes_a_paused_dictation(daemon: ThreadedDaemon, text_box) -> None:
    """Started paused; F8 resumes in the pause between the sentences (1.8 s to 3.9 s), so only the
    second one is typed."""
    proc = dictate(daemon, "--speed", "1", "--start-paused", "--pause-key", "F8")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "capturing" in line:
            break
    time.sleep(2.9)
    subprocess.run(["xdotool", "key", "F8"], check=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    wait_for(text_box, 10, what="typed text")
    typed = settled(text_box).lower()
    assert "thank" in typed and "typing" not in typed, typed
