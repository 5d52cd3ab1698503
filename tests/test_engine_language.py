"""Language evidence: the detector's top candidates, returned whenever detection ran or was asked for.

Real weights (the embedded multilingual base and English-only tiny.en) on shared German and
English speech; the streaming core weighs these candidates to keep a steady language.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import DecodeRequest, Word

needs_faster_whisper = pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None,
                                          reason="faster-whisper is not installed (pip install 'streamer[bench]')")


@pytest.fixture(scope="module")
def german(shared_data) -> np.ndarray:
    return load_audio(shared_data / "aeneas_librivox" / "example7_de.wav")[: 16000 * 12]


@pytest.fixture(scope="module")
def english(shared_data) -> np.ndarray:
    return load_audio(shared_data / "jfk" / "jfk.wav")


def _check_candidates(candidates: tuple[tuple[str, float], ...], top: str) -> None:
    assert len(candidates) == 5 and candidates[0][0] == top
    probs = [p for _, p in candidates]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert len({code for code, _ in candidates}) == 5


def _check_backend(engine, german: np.ndarray, english: np.ndarray) -> None:
    detected, kept, quiet, english_kept = engine.decode_batch([
        DecodeRequest(german),  # no language: detect, decode in German, report the evidence
        DecodeRequest(german, language="en", detect_language=True),  # evidence only; English stays
        DecodeRequest(german, language="de"),  # nothing asked: no detection
        DecodeRequest(english, language="en", detect_language=True),
    ])
    _check_candidates(detected.language_probs, "de")
    assert detected.language == "de" and detected.language_probability == detected.language_probs[0][1] > 0.5
    assert kept.language == "en" and kept.language_probability == 1.0
    _check_candidates(kept.language_probs, "de")
    assert kept.language_probs[0][1] == pytest.approx(detected.language_probs[0][1], abs=0.02)
    assert quiet.language == "de" and quiet.language_probs == ()
    _check_candidates(english_kept.language_probs, "en")


@pytest.mark.slow
def test_whisper_backend_reports_the_top_languages(base_engine, german, english):
    _check_backend(base_engine, german, english)


@pytest.mark.slow
@needs_faster_whisper
def test_faster_whisper_backend_reports_the_top_languages(german, english):
    from streamer.engine.loader import load_engine

    _check_backend(load_engine(backend="faster-whisper", model="base", warmup=False), german, english)


def test_english_only_model_reports_english_when_asked(tiny_engine, english):
    asked, plain = tiny_engine.decode_batch([DecodeRequest(english, detect_language=True),
                                             DecodeRequest(english, language="en")])
    assert asked.language_probs == (("en", 1.0),) and asked.language == "en"
    assert plain.language_probs == ()
    assert asked.text == plain.text


def test_scripted_engine_returns_the_scripted_evidence():
    evidence = (("es", 0.6), ("pt", 0.3))
    engine = ScriptedEngine(timeline_script([Word(" hola", 0.1, 0.5)], language="es", language_probs=evidence))
    audio = np.zeros(16000, dtype=np.float32)
    assert engine.decode(DecodeRequest(audio)).language_probs == evidence
    assert engine.decode(DecodeRequest(audio, language="es", detect_language=True)).language_probs == evidence
    assert engine.decode(DecodeRequest(audio, language="es")).language_probs == ()


def _check_expected_languages(engine, drawn_out: np.ndarray) -> str | None:
    """Detection limited to the speaker's expected languages; the row beside it detects among all (its language)."""
    among, free = engine.decode_batch([DecodeRequest(drawn_out, languages=("en", "de")), DecodeRequest(drawn_out)])
    assert len(free.language_probs) == 5
    assert {code for code, _ in among.language_probs} <= {"en", "de"} and among.language in ("en", "de")
    assert sum(p for _, p in among.language_probs) == pytest.approx(1.0, abs=1e-3)
    assert among.text and all(ch.isascii() for ch in among.text)
    return free.language


@pytest.fixture(scope="module")
def drawn_out(shared_data) -> np.ndarray:
    """mfa_long.wav's first 1.25 s of speech, the window a stream's first decodes see."""
    return load_audio(shared_data / "mfa" / "mfa_long.wav")[int(1.09 * 16000):int(2.34 * 16000)]


@pytest.mark.slow
def test_whisper_backend_detects_among_the_expected_languages(base_engine, drawn_out):
    assert _check_expected_languages(base_engine, drawn_out) == "ko"  # base hears the drawn-out "Montreal" as Korean


@pytest.mark.slow
@needs_faster_whisper
def test_faster_whisper_backend_detects_among_the_expected_languages(drawn_out):
    from streamer.engine.loader import load_engine

    _check_expected_languages(load_engine(backend="faster-whisper", model="base", warmup=False), drawn_out)


@pytest.mark.slow
def test_a_stream_expecting_english_or_german_never_writes_another_script(base_engine, shared_data):
    """Through the streaming core: without the list the first phrase came out as Korean ("마이...")."""
    from streamer.config import StreamConfig
    from streamer.replay import replay

    audio = load_audio(shared_data / "mfa" / "mfa_long.wav")
    free = replay(audio, base_engine, StreamConfig()).text
    among = replay(audio, base_engine, StreamConfig(), language="en,de").text
    assert not free.isascii()
    assert among.isascii() and "liner" in among
