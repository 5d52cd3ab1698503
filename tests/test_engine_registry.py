"""Backends behind one interface: the registry, what engines tell callers, and the faster-whisper backend."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from streamer.audio import load_audio
from streamer.engine.loader import BACKENDS, load_engine
from streamer.engine.models import EMBEDDED, _package_dir, ct2_folder, embedded_folder, resolve_model
from streamer.engine.scripted import WHISPER_LANGUAGES, ScriptedEngine, timeline_script
from streamer.engine.tokenizer import WhisperTokens
from streamer.hypothesis import DecodeRequest, Engine, EngineError, Word

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
needs_faster_whisper = pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None,
                                          reason="faster-whisper is not installed (pip install 'streamer[bench]')")


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def _jfk(shared_data) -> np.ndarray:
    audio, _ = sf.read(shared_data / "jfk" / "jfk.wav", dtype="float32")
    return audio


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(EngineError, match=r"unknown engine backend 'whispr'.*faster-whisper, whisper"):
        load_engine(backend="whispr")


def test_a_backend_is_one_registry_entry(monkeypatch):
    words = [Word(" hi", 0.2, 0.5)]
    monkeypatch.setitem(BACKENDS, "timeline", lambda config: ScriptedEngine(timeline_script(words), name=config.model))
    engine = load_engine(backend="timeline", model="my-model")
    assert isinstance(engine, Engine) and engine.name == "my-model"
    assert engine.decode(DecodeRequest(np.zeros(16000, dtype=np.float32))).text == "hi"


def test_overrides_are_validated_like_the_config_file():
    with pytest.raises(ValidationError, match="quantize"):
        load_engine(quantize="int4")


def test_scripted_engine_describes_a_multilingual_whisper():
    base = resolve_model("base")
    assert tuple(WHISPER_LANGUAGES) == WhisperTokens.from_file(base / "tokenizer.json", 51865).languages
    engine = ScriptedEngine(timeline_script([]))
    assert isinstance(engine, Engine) and engine.max_window_seconds == 30.0 and "de" in engine.languages


def test_whisper_engine_tells_callers_what_it_is(tiny_engine):
    assert isinstance(tiny_engine, Engine)
    assert (tiny_engine.name, tiny_engine.device) == ("tiny.en", "cpu")
    assert tiny_engine.dtype in ("int8", "int8, encoder bfloat16")   # bfloat16 where the CPU has it natively
    assert tiny_engine.max_window_seconds == 30.0 and tiny_engine.languages == ("en",)


def test_unquantised_engine_reports_float32():
    assert load_engine(model="tiny.en", quantize="none", warmup=False).dtype == "float32"


def test_word_timing_view_shares_weights_and_leaves_the_engine_alone(tiny_engine, shared_data):
    audio = _jfk(shared_data)
    view = tiny_engine.with_word_timestamps("segments")
    assert view.model is tiny_engine.model and view.decoder is tiny_engine.decoder
    assert (view.config.word_timestamps, tiny_engine.config.word_timestamps) == ("segments", "both")
    spread, aligned = view.decode(DecodeRequest(audio)), tiny_engine.decode(DecodeRequest(audio))
    assert spread.text == aligned.text
    assert [w.start for w in spread.words] != [w.start for w in aligned.words]
    with pytest.raises(ValidationError):
        tiny_engine.with_word_timestamps("guess")


def test_ct2_folder_is_published_whole(tmp_path):
    folder = ct2_folder("tiny.en", cache=tmp_path)
    assert (folder / ".streamer-complete").is_file() and (folder / "tokenizer.json").is_file()
    spec = EMBEDDED["tiny.en"]
    shipped = _package_dir(spec.packages[0], spec) / spec.parts[0][1]
    assert (folder / "model.bin").stat().st_size == shipped.stat().st_size
    assert not [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]  # no leftovers


def test_missing_faster_whisper_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if it were not installed
    with pytest.raises(EngineError, match=r"pip install 'streamer\[bench\]'"):
        load_engine(backend="faster-whisper", model="tiny.en")


@needs_faster_whisper
def test_faster_whisper_rejects_a_transformers_folder():
    with pytest.raises(EngineError, match="not a CTranslate2 model folder"):
        load_engine(backend="faster-whisper", model=str(embedded_folder("tiny.en")), warmup=False)


@pytest.mark.slow
@needs_faster_whisper
@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_faster_whisper_backend_transcribes_jfk(model, shared_data):
    engine = load_engine(backend="faster-whisper", model=model)
    assert isinstance(engine, Engine)
    assert (engine.device, engine.dtype, engine.max_window_seconds) == ("cpu", "int8", 30.0)
    if model == "tiny.en":
        assert engine.languages == ("en",)
    else:
        assert "de" in engine.languages and len(engine.languages) >= 99
    audio = _jfk(shared_data)
    hyp = engine.decode(DecodeRequest(audio))
    assert _words(hyp.text) == _words(JFK)
    assert hyp.language == "en" and hyp.language_probability > 0.5
    assert hyp.no_speech_prob < 0.2 and -0.6 < hyp.avg_logprob < 0 and 1.0 < hyp.compression_ratio < 2.0
    starts = [w.start for w in hyp.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= len(audio) / 16000 + 0.02 and 0 < w.probability <= 1 for w in hyp.words)
    assert hyp.words[-1].end > 9.0  # the second "country" ends in the clip's last second
    assert [h.text for h in engine.decode_batch([DecodeRequest(audio[:16000 * 4]), DecodeRequest(audio)])][1] == hyp.text


@pytest.mark.slow
@needs_faster_whisper
def test_faster_whisper_generates_exactly_max_new_tokens(shared_data):
    """CTranslate2 counts ``max_length`` its own way; the backend still stops at ``max_new_tokens``."""
    window = load_audio(shared_data / "longform" / "ljspeech_LJ001-0001_to_0032.wav")[: 16000 * 30]
    engine = load_engine(backend="faster-whisper", model="tiny.en", max_new_tokens=24, warmup=False)
    engine.decode(DecodeRequest(window, prompt="Printing history. " * 10))
    assert engine.last_timing["tokens"] == 24


@pytest.mark.slow
@needs_faster_whisper
def test_faster_whisper_decodes_with_the_requests_beam(shared_data):
    """A request's own beam (``stream.commit_beam_size``) reaches CTranslate2, as on the whisper backend."""
    engine = load_engine(backend="faster-whisper", model="tiny.en", warmup=False)
    asked: list[int] = []

    class Recording:  # the real CTranslate2 model, its beam noted on the way in
        def __init__(self, model):
            self._model = model

        def generate(self, *args, **kwargs):
            asked.append(kwargs["beam_size"])
            return self._model.generate(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._model, name)

    engine.model.model = Recording(engine.model.model)
    audio = _jfk(shared_data)
    texts = [engine.decode(DecodeRequest(audio, beam_size=beam)).text for beam in (None, 3)]
    assert asked == [engine.config.beam_size, 3]
    assert _words(texts[1]) == _words(JFK)
