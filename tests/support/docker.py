"""A Docker daemon for the container test: use the one that answers, or start one (root only).

Debian's docker.io on a machine without a service manager (CI, this project's machines) has no
daemon running; ``dockerd`` starts in a few seconds. ``--iptables=false`` because such machines may
not allow netfilter changes, which is fine here: the test's containers use the host network. A
fixed data root keeps the image layers (and so the build cache) across runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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


def ensure_daemon(timeout: float = 60.0) -> str | None:
    """None when a daemon answers (started here if need be), else why there is none."""
    if answers():
        return None
    if shutil.which("docker") is None:
        return "no docker command (apt-get install docker.io)"
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if dockerd is None:
        return "no Docker daemon answers and dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "no Docker daemon answers, and starting dockerd needs root"
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    log = open(DATA_ROOT.parent / "docker-streamer.log", "ab")
    # Left running after the tests, as a service is: the next run finds it and its build cache.
    subprocess.Popen([dockerd, "--iptables=false", "--data-root", str(DATA_ROOT)], stdout=log, stderr=log,
                     stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():
            return None
        time.sleep(1)
    return f"dockerd did not answer within {timeout:.0f} s (log: {log.name})"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
