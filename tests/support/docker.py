"""A Docker daemon for the container test: use the one that answers, or start one (root only).

Debian's docker.io on a machine without a service manager (CI, this project's machines) has no
daemon running; ``dockerd`` starts in a few seconds. ``--iptables=false`` because such machines may
not allow netfilter changes, which is fine here: the test's containers use the host network. A
fixed data root keeps the image layers (and so the build cache) for the next run on the same
machine; a daemon the test started is stopped after it, so no process outlives the test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DATA_ROOT = Path(os.environ.get("STREAMER_DOCKER_ROOT", "/var/lib/docker-streamer"))


def answers() -> bool:
    """Whether ``docker info`` reaches a daemon."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass
class Daemon:
    """A Docker daemon that answers (``reason`` None), or why there is none; ``started`` if this process began it."""

    reason: str | None = None
    started: subprocess.Popen | None = None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the dockerd this test started (SIGTERM: it stops its containers and containerd first)."""
        if self.started is None or self.started.poll() is not None:
            return
        self.started.terminate()
        try:
            self.started.wait(timeout)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait(10)


def ensure_daemon(timeout: float = 60.0) -> Daemon:
    """A daemon that answers, started here if need be, or the reason there is none."""
    if answers():
        return Daemon()
    if shutil.which("docker") is None:
        return Daemon("no docker command (apt-get install docker.io)")
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if dockerd is None:
        return Daemon("no Docker daemon answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        return Daemon("no Docker daemon answers, and starting dockerd needs root")
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    log_path = DATA_ROOT.parent / "docker-streamer.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([dockerd, "--iptables=false", "--data-root", str(DATA_ROOT)], stdout=log,
                                   stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    daemon = Daemon(started=process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if answers():
            return daemon
        time.sleep(1)
    daemon.stop()
    daemon.reason = f"dockerd did not answer within {timeout:.0f} s (log: {log_path})"
    return daemon

