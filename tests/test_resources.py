"""The shipped files are found through streamer.resources, and config profiles resolve through it."""

from __future__ import annotations

import pytest

from streamer.config import ConfigError, load_settings, resolve_config_path
from streamer.resources import config_dir, sample_path, sample_transcript, web_root


def test_profiles_resolve_to_the_shipped_config_folder():
    assert resolve_config_path("cpu") == config_dir() / "cpu.toml"
    assert load_settings("gpu", environ={}).engine.device == "cuda"
    assert load_settings("cpu", environ={}).engine.device == "cpu"


def test_an_unknown_profile_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="cpu, gpu"):
        resolve_config_path("nope")


def test_web_root_holds_the_page():
    root = web_root()
    assert root is not None and (root / "index.html").is_file() and (root / "app.js").is_file()


def test_the_sample_ships_with_its_reference_transcript():
    assert sample_path().suffix == ".wav" and sample_path().stat().st_size > 100_000
    assert sample_transcript() == "produced the block books, which were the immediate predecessors of the true printed book,"
