"""Where the shared test audio lives: ``$STREAMER_DATA`` or ``../shared/data`` beside the checkout."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path | None:
    """The shared data folder, or None when it is absent (tests then skip with a reason)."""
    candidates = [os.environ.get("STREAMER_DATA"), REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "manifest.tsv").is_file():
            return Path(candidate)
    return None


def require_data_dir() -> Path:
    found = data_dir()
    if found is None:
        raise FileNotFoundError("shared test audio not found: set STREAMER_DATA to the folder with manifest.tsv "
                                "(normally ../shared/data beside the checkout)")
    return found


@dataclass(frozen=True)
class Clip:
    path: Path
    seconds: float
    language: str
    transcript: str


def manifest(folder: str | None = None) -> list[Clip]:
    """Clips listed in manifest.tsv, optionally only those under ``folder`` (e.g. "ljspeech")."""
    root = require_data_dir()
    with open(root / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    clips = [Clip(root / r["file"], float(r["seconds"]), r["language"], r["transcript"]) for r in rows]
    return [c for c in clips if folder is None or c.path.parent.name == folder]
