"""Several real daemons behind real HAProxy (and a real Redis), as subprocesses on 127.0.0.1.

Subprocesses, not in-process servers, because the point is what happens when one is killed
with SIGKILL or drained with SIGTERM the way an orchestrator does it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.timing import scaled

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int) -> tuple[int, str]:
    """(status, body) of ``/healthz``, or (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except OSError as exc:
        return 0, str(exc)


def wait_port(port: int, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {port} within {scaled(timeout):.0f} s")


class Daemon:
    """``streamer serve`` (tiny.en) on a fixed port, restartable on the same port."""

    def __init__(self, log_dir: Path, name: str, *settings: str) -> None:
        self.name, self.port, self.settings = name, free_port(), settings
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_") or k == "STREAMER_DATA"}
        args = [sys.executable, "-m", "streamer", "serve", "--model", "tiny.en", "--host", "127.0.0.1",
                "--port", str(self.port)]
        # one torch thread each: two replicas sharing two cores, each spinning two threads, run
        # many times slower than either alone (a replica per core is also how to deploy on one box)
        for item in ("stream.min_chunk=0.5", "engine.threads=1", *self.settings):
            args += ["--set", item]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while healthz(self.port)[0] != 200:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not healthy: {healthz(self.port)}")
            time.sleep(0.2)

    def live_sessions(self) -> int:
        """The replica's live session count, from its Prometheus metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("streamer_sessions "):
                    return int(float(line.split()[1]))
        return 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(scaled(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class _Child:
    """A helper process the tests start and stop (``proc``: the running process, or None)."""

    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class HAProxy(_Child):
    """Debian's haproxy running the repository's deploy/haproxy.cfg unmodified (addresses via env)."""

    def __init__(self, log_dir: Path, *daemons: Daemon) -> None:
        if not shutil.which("haproxy"):
            import pytest

            pytest.skip("needs haproxy (run scripts/setup --test)")
        self.port, self.daemons = free_port(), daemons
        self.log_path = log_dir / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "HAProxy":
        env = {**os.environ, "STREAMER_LB_BIND": f"127.0.0.1:{self.port}"}
        for i, daemon in enumerate(self.daemons, 1):
            env[f"STREAMER_DAEMON{i}"] = f"127.0.0.1:{daemon.port}"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 10, "haproxy", self.proc)
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class Redis(_Child):
    """Debian's redis-server on a free port, no persistence; restartable on the same port."""

    def __init__(self, log_dir: Path) -> None:
        if not shutil.which("redis-server"):
            import pytest

            pytest.skip("needs redis-server (run scripts/setup --test)")
        self.port, self.log_path = free_port(), log_dir / "redis.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Redis":
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 10, "redis-server", self.proc)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
