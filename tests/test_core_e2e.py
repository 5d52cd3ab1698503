"""End to end with the real tiny.en model: the streaming core loses nothing, and file replay works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.audio import load_audio
from streamer.bench.metrics import word_edit_distance
from streamer.cli import main as cli_main
from streamer.config import StreamConfig
from streamer.replay import replay, transcribe_offline

pytestmark = pytest.mark.slow

SPEECH = Path(__file__).parent / "audio" / "espeak_two_sentences.wav"


@pytest.fixture(scope="module")
def jfk(shared_data):
    path = shared_data / "jfk" / "jfk.wav"
    if not path.is_file():
        pytest.skip(f"{path} not in the shared data")
    return load_audio(path)


def test_finish_loses_nothing(tiny_engine, jfk):
    """Streamed (and finished right at the last sample) = offline decode, within 2 words."""
    streamed = replay(jfk, tiny_engine, StreamConfig(min_chunk=1.0), language="en")
    offline = " ".join(w.word.strip() for w in transcribe_offline(tiny_engine, jfk, language="en"))
    assert streamed.text, "nothing committed"
    assert word_edit_distance(streamed.text, offline) <= 2, (streamed.text, offline)
    assert "country" in streamed.text.lower()
    assert streamed.max_window_seconds <= 20.0


def test_transcribe_cli_on_a_real_clip(tmp_path, capsys):
    out, events = tmp_path / "out.srt", tmp_path / "events.jsonl"
    assert cli_main(["transcribe", str(SPEECH), "--model", "tiny.en", "--language", "en",
                     "--output", str(out), "--events", str(events)]) == 0
    srt = out.read_text()
    assert srt.startswith("1\n00:00:0")
    assert "recognition" in srt.lower()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines and all(line["type"] == "transcript" and line["t"] >= 0 for line in lines)
    committed = "".join(w["word"] for line in lines for w in line["committed"]).lower()
    assert "speech recognition" in committed
    assert lines[-1]["tentative"] == []


def test_transcribe_cli_errors(tmp_path, capsys):
    assert cli_main(["transcribe", str(tmp_path / "missing.wav")]) == 2
    assert "not found" in capsys.readouterr().err
