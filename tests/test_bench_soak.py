"""The soak benchmark, short: a daemon child process under clients joining, dropping and leaving."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import scaled

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.timeout(scaled(900))]


def test_short_soak_leaves_the_daemon_at_rest(tmp_path):
    report = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "-m", "streamer", "bench", "soak", "--minutes", "1", "--clients", "2",
                           "--sample-every", "3", "--json", str(report)], capture_output=True, text=True,
                          timeout=scaled(600))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(report.read_text())
    first, rest = result["samples"][0], result["samples"][-1]
    assert result["sessions"] >= 2 and result["daemon_exit"] == 0
    assert rest["fds"] <= first["fds"] + 1, result["samples"]          # every socket closed again
    assert rest["tasks"] <= first["tasks"] + 1, result["samples"]      # every session's tasks gone
    assert rest["threads"] <= first["threads"] + 4, result["samples"]  # worker pools are bounded
    assert "Traceback" not in (tmp_path / "soak.daemon.log").read_text()
