"""``streamer captions`` as a user runs it: a subprocess against a real daemon (tiny.en)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client_helpers import ThreadedDaemon, need, recall, streamer_env, wait_for
from streamer.subtitles import parse_srt

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def captions(daemon: ThreadedDaemon, *args: str, stdin=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", "captions", "--url", daemon.url, *args],
                          stdin=stdin, capture_output=True, text=True, timeout=timeout, env=streamer_env())


def test_file_fast_quiet_writes_outputs(daemon: ThreadedDaemon, jfk_wav: Path, tmp_path: Path) -> None:
    srt, jsonl = tmp_path / "jfk.srt", tmp_path / "jfk.jsonl"
    result = captions(daemon, "--fast", "--quiet", "-o", str(srt), "-o", str(jsonl), str(jfk_wav))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and "\x1b" not in result.stdout  # pipe-friendly: plain committed lines
    assert recall(result.stdout, JFK) >= 0.8, result.stdout
    cues = parse_srt(srt.read_text())
    assert recall(" ".join(c.text for c in cues), JFK) >= 0.8
    assert cues[-1].end <= 12.5
    assert jsonl.read_text().count("\n") == len(cues)


def test_stdin_wav_and_raw(daemon: ThreadedDaemon, jfk_wav: Path) -> None:
    with jfk_wav.open("rb") as fh:
        wav = captions(daemon, "-", "--fast", "--quiet", stdin=fh)
    assert wav.returncode == 0, wav.stderr
    assert recall(wav.stdout, JFK) >= 0.8, wav.stdout
    raw = jfk_wav.read_bytes()[44:]  # the clip's PCM after its canonical 44-byte header
    result = subprocess.run([sys.executable, "-m", "streamer", "captions", "--url", daemon.url, "-", "--fast",
                             "-q", "--rate", "16000", "--encoding", "pcm_s16le"], input=raw,
                            capture_output=True, timeout=60, env=streamer_env())
    assert result.returncode == 0, result.stderr
    assert recall(result.stdout.decode(), JFK) >= 0.8, result.stdout


def test_live_rendering_in_a_terminal_at_real_time(daemon: ThreadedDaemon, jfk_wav: Path, tmp_path: Path) -> None:
    """In tmux: tentative text is drawn dimmed and rewritten in place; the run takes the clip's length."""
    need("tmux")
    name = f"captions-{time.monotonic_ns()}"
    socket = str(tmp_path / "tmux.sock")
    env = streamer_env()
    command = (f"{sys.executable} -m streamer captions --url {daemon.url} {jfk_wav}; "
               f"echo EXIT=$?; sleep 30")
    subprocess.run(["tmux", "-S", socket, "new-session", "-d", "-s", name, "-x", "100", "-y", "20", command],
                   check=True, env=env)
    started = time.monotonic()
    try:
        def pane(escapes: bool = False) -> str:
            args = ["tmux", "-S", socket, "capture-pane", "-p", "-t", name] + (["-e"] if escapes else [])
            return subprocess.run(args, capture_output=True, text=True).stdout

        dim_seen = wait_for(lambda: "\x1b[2m" in pane(True), 30, what="a dimmed tentative tail")
        final = wait_for(lambda: next((p for p in [pane()] if "EXIT=" in p), None), 60, what="captions to finish")
        elapsed = time.monotonic() - started
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True)
    assert dim_seen
    assert "EXIT=0" in final, final
    assert elapsed >= 10.0  # real-time pace for an 11 s clip
    assert recall(final, JFK) >= 0.7, final  # real-time pace gives tiny.en shorter windows


def test_survives_a_daemon_restart(daemon: ThreadedDaemon, jfk_wav: Path) -> None:
    """The daemon restarts mid-stream: captions reconnects with backoff and finishes the file."""
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "captions", "--url", daemon.url, "-q", str(jfk_wav)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=streamer_env())
    time.sleep(4.0)
    restart = threading.Thread(target=daemon.restart)
    restart.start()
    out, err = proc.communicate(timeout=60)
    restart.join(30)
    assert proc.returncode == 0, err
    assert "reconnect" in err.lower(), err
    assert "country" in out.lower(), out


def test_token_required_and_wrong_token_fails_fast(daemon_engine, jfk_wav: Path) -> None:
    from client_helpers import client_settings

    daemon = ThreadedDaemon(client_settings(**{"server.token": "s3cret"}), daemon_engine).start()
    try:
        started = time.monotonic()
        bad = captions(daemon, "--fast", "-q", "--token", "wrong", str(jfk_wav))
        assert bad.returncode == 1 and "401" in bad.stderr, bad.stderr
        assert time.monotonic() - started < 15  # no pointless retries on a wrong token
        good = subprocess.run([sys.executable, "-m", "streamer", "captions", "--url", daemon.url, "--fast", "-q",
                               str(jfk_wav)], capture_output=True, text=True, timeout=60,
                              env=streamer_env(STREAMER_TOKEN="s3cret"))
        assert good.returncode == 0 and "country" in good.stdout.lower(), good.stderr
    finally:
        daemon.stop()


def test_ctrl_c_finishes_gracefully_and_writes_outputs(daemon: ThreadedDaemon, jfk_wav: Path, tmp_path: Path) -> None:
    """Ctrl+C is how a microphone session ends: the words so far are flushed and the files written."""
    import signal

    out = tmp_path / "partial.txt"
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "captions", "--url", daemon.url, "-q", "-o", str(out),
                             str(jfk_wav)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=streamer_env())
    time.sleep(5.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "americans" in out.read_text().lower(), stderr
    assert "for your country" not in out.read_text().lower()  # it stopped early
