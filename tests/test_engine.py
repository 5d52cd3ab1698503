"""The Whisper engine with real embedded weights: conversion, decoding, word times, bad input."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import soundfile as sf

from streamer.engine.ct2_format import CT2FormatError, read_ct2_model
from streamer.engine.models import EMBEDDED, EmbeddedModel, embedded_folder, resolve_model
from streamer.hypothesis import DecodeAbandoned, DecodeRequest, EngineError

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def _jfk(shared_data) -> np.ndarray:
    audio, rate = sf.read(shared_data / "jfk" / "jfk.wav", dtype="float32")
    assert rate == 16000
    return audio


def test_ct2_reader_rejects_truncated_file(tmp_path):
    src = EMBEDDED["tiny.en"]
    from streamer.engine.models import _package_dir

    original = _package_dir(src.packages[0], src) / "model" / "model.bin"
    truncated = tmp_path / "model.bin"
    truncated.write_bytes(original.read_bytes()[:5_000_000])
    with pytest.raises(CT2FormatError, match="truncated|unexpected end"):
        read_ct2_model(truncated)


def test_ct2_reader_rejects_other_formats(tmp_path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(struct.pack("<I", 99) + b"\0" * 64)
    with pytest.raises(CT2FormatError, match="version 99"):
        read_ct2_model(bogus)


def test_converted_tiny_en_transcribes_jfk(tiny_engine, shared_data):
    hyp = tiny_engine.decode(DecodeRequest(_jfk(shared_data)))
    assert _words(hyp.text) == _words(JFK)
    assert hyp.language == "en"
    assert hyp.no_speech_prob < 0.2 and hyp.avg_logprob > -0.6


def test_a_decode_its_caller_gave_up_stops_between_steps(tiny_engine, shared_data):
    """``DecodeRequest.abandoned``: the engine asks between stages and decoder steps, and stops at the first yes;
    a batch stops only once every window in it is given up (the others' decodes are worth finishing)."""
    audio = _jfk(shared_data)
    asked = []

    def gave_up_after_three() -> bool:
        asked.append(True)
        return len(asked) > 3

    with pytest.raises(DecodeAbandoned):
        tiny_engine.decode(DecodeRequest(audio, language="en", abandoned=gave_up_after_three))
    assert len(asked) == 4  # after the encoder, then once per step: it stopped at the first True
    given_up, wanted = tiny_engine.decode_batch([DecodeRequest(audio, language="en", abandoned=lambda: True),
                                                 DecodeRequest(audio, language="en", abandoned=lambda: False)])
    assert _words(wanted.text) == _words(JFK) and given_up.text == wanted.text


def test_word_times_are_ordered_inside_the_window(tiny_engine, shared_data):
    audio = _jfk(shared_data)
    hyp = tiny_engine.decode(DecodeRequest(audio))
    starts = [w.start for w in hyp.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= len(audio) / 16000 + 0.02 for w in hyp.words)
    assert all(0 < w.probability <= 1 for w in hyp.words)
    # "country" is said twice; the last word ends in the final second of the 11 s clip
    assert hyp.words[-1].end > 9.0


def test_batched_decode_matches_single_decodes_in_fp32(shared_data):
    from streamer.engine.loader import load_engine

    engine = load_engine(model="tiny.en", quantize="none", warmup=False)
    audio = _jfk(shared_data)
    requests = [DecodeRequest(audio), DecodeRequest(audio[: 16000 * 6], prompt="The inaugural address."),
                DecodeRequest(audio[16000 * 3:])]
    batched = engine.decode_batch(requests)
    single = [engine.decode(r) for r in requests]
    assert [h.text for h in batched] == [h.text for h in single]
    for a, b in zip(batched, single):
        assert [w.start for w in a.words] == pytest.approx([w.start for w in b.words], abs=0.05)


def test_prompt_conditions_the_decode(tiny_engine, shared_data):
    """Whisper continues the prompt's style: without one it capitalises and punctuates; after a
    lower-case, unpunctuated prompt it writes the same words lower-case and unpunctuated."""
    plain = tiny_engine.decode(DecodeRequest(_jfk(shared_data))).text
    styled = tiny_engine.decode(DecodeRequest(_jfk(shared_data), prompt="and so my fellow americans lowercase "
                                              "words with no punctuation at all like this")).text
    assert plain.startswith("And so my fellow Americans") and plain.endswith(".")
    assert styled == styled.lower() and not any(mark in styled for mark in ".,!?")
    assert "ask what you can do for your country" in styled


@pytest.mark.parametrize("audio, message", [
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.zeros(16000 * 31, dtype=np.float32), "at most 30 s"),
    (np.array([0.0, np.nan] * 8000, dtype=np.float32), "NaN"),
    (np.zeros(16000, dtype=np.int16), "float32"),
    (np.zeros((2, 16000), dtype=np.float32), "mono"),
])
def test_bad_windows_get_clear_errors(tiny_engine, audio, message):
    with pytest.raises(EngineError, match=message):
        tiny_engine.decode(DecodeRequest(audio))


def test_unknown_model_name_says_what_to_use():
    with pytest.raises(EngineError, match="embedded name.*hub id"):
        resolve_model("whisper-hyper-large")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(EngineError, match="not a transformers model folder"):
        resolve_model(str(tmp_path))


def test_missing_offline_package_names_the_extra(monkeypatch):
    fake = EmbeddedModel("ghost", "test", ("streamer_no_such_package",), "data",
                         (("streamer_no_such_package", "data/model.bin", "0" * 64),))
    monkeypatch.setitem(EMBEDDED, "ghost", fake)
    with pytest.raises(EngineError, match=r"streamer\[offline\]"):
        resolve_model("ghost")


def test_half_written_cache_is_rebuilt(tmp_path):
    first = embedded_folder("tiny.en", cache=tmp_path)
    (first / ".streamer-complete").unlink()  # as if the process died before publishing
    (first / "model.safetensors").write_bytes(b"garbage")
    rebuilt = embedded_folder("tiny.en", cache=tmp_path)
    assert (rebuilt / ".streamer-complete").is_file()
    assert (rebuilt / "model.safetensors").stat().st_size > 10_000_000


def test_corrupt_published_cache_gives_a_clear_error(tmp_path):
    from streamer.config import EngineConfig
    from streamer.engine.whisper import load_whisper

    folder = embedded_folder("tiny.en", cache=tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EngineError, match="delete that folder"):
        load_whisper(EngineConfig(model="tiny.en", cache_dir=str(tmp_path), warmup=False))


def test_local_transformers_folder_is_a_first_class_model(tmp_path, shared_data):
    """``--model /path/to/folder`` (what a hub download is on disk) loads like any other source."""
    from streamer.engine.loader import load_engine

    folder = tmp_path / "my-whisper"
    shutil.copytree(embedded_folder("tiny.en"), folder)
    (folder / ".streamer-complete").unlink()  # a plain HF folder carries no marker
    engine = load_engine(model=str(folder), warmup=False)
    assert _words(engine.decode(DecodeRequest(_jfk(shared_data))).text) == _words(JFK)


@pytest.mark.slow
def test_base_detects_and_translates_other_languages(base_engine, shared_data):
    audio, _ = sf.read(shared_data / "aeneas_librivox" / "example7_de.wav", dtype="float32")
    window = audio[: 16000 * 20]
    german = base_engine.decode(DecodeRequest(window))
    assert german.language == "de" and german.language_probability > 0.5
    english = base_engine.decode(DecodeRequest(window, language="de", task="translate"))
    common = {"the", "and", "of", "to", "a", "in", "is", "was", "that", "he", "it", "with"}
    assert common & set(_words(english.text)), english.text


@pytest.mark.slow
def test_base_ljspeech_word_error_rate_is_within_target(base_engine, shared_data):
    """Faithful conversion: greedy base on the 33 LJ Speech clips scores WER <= 9 %."""
    from streamer.bench.engine import corpus_wer

    wer, _ = corpus_wer(base_engine, "ljspeech")
    assert wer <= 0.09, f"WER {wer:.3f}"
