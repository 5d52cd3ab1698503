"""Shared fixtures: the shared test audio (skipped with a reason when absent) and real engines."""

from __future__ import annotations

import pytest

from streamer.bench.data import data_dir


@pytest.fixture(scope="session")
def shared_data():
    found = data_dir()
    if found is None:
        pytest.skip("shared test audio not found (set STREAMER_DATA or put it at ../shared/data)")
    return found


@pytest.fixture(scope="session")
def tiny_engine():
    """The real English-only tiny Whisper (embedded offline model), loaded once per test session."""
    from streamer.engine.loader import load_engine

    return load_engine(model="tiny.en")


@pytest.fixture(scope="session")
def base_engine():
    from streamer.engine.loader import load_engine

    return load_engine(model="base")
