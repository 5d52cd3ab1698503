"""Where the files that ship beside the code live: config profiles, the web page, the sample.

In a checkout they sit at the repository root (``configs/``, ``clients/web/``, ``samples/``) where
people look for them; ``pyproject.toml`` maps them into the wheel as the packages
``streamer.configs``, ``streamer_clients`` (its ``web/`` folder) and ``streamer.samples``. Finding
them through :mod:`importlib.resources` rather than a path relative to this file makes one lookup
work for an installed wheel, an editable install and a plain checkout on ``sys.path`` alike.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE_NAME = "LJ001-0004"  # LJ Speech 1.1, public domain: samples/README.md
_REPO_ROOT = Path(__file__).resolve().parent.parent  # only for a checkout whose data packages are not importable


def _package_dir(package: str) -> Path | None:
    """The folder of an importable package on the file system, or None when it is not there."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root)) if isinstance(root, Path) else None
    return path if path is not None and path.is_dir() else None


def _locate(package: str, subdir: str, checkout_dir: str) -> Path | None:
    base = _package_dir(package)
    found = base / subdir if base is not None else None
    if found is not None and found.is_dir():
        return found
    fallback = _REPO_ROOT / checkout_dir
    if fallback.is_dir():
        log.debug("%s not importable; using the checkout's %s", package, fallback)
        return fallback
    return None


def config_dir() -> Path:
    """The folder of the shipped config profiles (``cpu.toml``, ``gpu.toml``)."""
    found = _locate("streamer.configs", "", "configs")
    if found is None:
        raise FileNotFoundError("streamer's config profiles are missing from this installation")
    return found


def web_root() -> Path | None:
    """The web client's folder (``index.html`` and its scripts), or None when it is not installed."""
    return _locate("streamer_clients", "web", "clients/web")


def sample_path() -> Path:
    """The bundled sample recording; its reference transcript is :func:`sample_transcript`."""
    folder = _locate("streamer.samples", "", "samples")
    path = folder / f"{SAMPLE_NAME}.wav" if folder is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError("streamer's sample recording is missing from this installation")
    return path


def sample_transcript() -> str:
    """The published reference transcript of :func:`sample_path`, one line."""
    return sample_path().with_suffix(".txt").read_text(encoding="utf-8").strip()
