"""What a person sees from ``streamer transcribe``: the transcript on stdout, one line on stderr.

Runs the installed ``streamer`` command in a subprocess with the real tiny.en model on the
bundled sample, as the README's first command does with base.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.bench.metrics import wer
from streamer.cli import build_parser, log_level
from streamer.resources import sample_path, sample_transcript

STREAMER = Path(sys.executable).with_name("streamer")


def run_transcribe(*extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(STREAMER), "transcribe", str(sample_path()), "--model", "tiny.en", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def committed_text(events_path: Path) -> str:
    """The committed words of every event, in order: what the transcript must consist of."""
    words = [w["word"] for line in events_path.read_text().splitlines() for w in json.loads(line)["committed"]]
    return "".join(words)


@pytest.mark.parametrize(("argv", "level"), [
    (["transcribe", "x.wav"], logging.WARNING),
    (["-v", "transcribe", "x.wav"], logging.INFO),
    (["transcribe", "-v", "x.wav"], logging.INFO),
    (["transcribe", "x.wav", "-vv"], logging.DEBUG),
    (["-v", "transcribe", "-v", "x.wav"], logging.DEBUG),
    (["serve"], logging.INFO),
    (["serve", "-v"], logging.DEBUG),
])
def test_verbosity_flags_before_or_after_the_subcommand(argv, level):
    assert log_level(build_parser().parse_args(argv)) == level


@pytest.mark.slow
def test_stdout_is_the_transcript_and_stderr_one_line(tmp_path):
    events = tmp_path / "events.jsonl"
    proc = run_transcribe("--format", "txt", "--events", str(events), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # stdout holds exactly the committed words (one cue a line), nothing else
    assert proc.stdout.split() == committed_text(events).split()
    assert wer(sample_transcript(), proc.stdout) <= 0.15, proc.stdout
    # stderr: the one summary line; no weight-loading bars, warnings or log lines
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamer: ") and "s of audio in" in lines[0]
    for noise in ("Loading weights", "Warning", "WARNING", "INFO", "\r"):
        assert noise not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_verbose_adds_info_log_lines(tmp_path):
    proc = run_transcribe("-v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = [line for line in proc.stderr.splitlines() if " INFO " in line]
    assert any("streamer.engine.loader" in line and "tiny.en" in line for line in info), proc.stderr
    assert " DEBUG " not in proc.stderr  # -v is INFO, -vv would be DEBUG
    assert proc.stdout.startswith("[00:00:"), proc.stdout  # the default format: timestamped cues


def test_file_or_sample_is_required(tmp_path):
    proc = subprocess.run([str(STREAMER), "transcribe"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert "--sample" in proc.stderr and proc.stdout == ""
