"""The prompt: a per-session vocabulary kept whole and first, the rolling prompt trimmed into what is left.

Token ids come from the embedded models' real tokenizers; the spelling test runs the real
tiny.en on espeak-ng speech of a made-up name.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.engine.models import resolve_model
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.engine.tokenizer import WhisperTokens
from streamer.hypothesis import MAX_PROMPT_TOKENS, DecodeRequest, EngineError

ROLLING = ("Printing, in the only sense with which we are at present concerned, differs from most if not "
           "from all the arts and crafts represented in the Exhibition. ") * 9


@pytest.fixture(scope="module")
def en() -> WhisperTokens:
    folder = resolve_model("tiny.en")
    return WhisperTokens.from_file(folder / "tokenizer.json", json.loads((folder / "config.json").read_text())["vocab_size"])


def test_vocabulary_comes_first_and_whole_and_the_prompt_fills_the_rest(en):
    vocabulary = "Quillbrook, Zarkovian, Kvetoslav Brzobohaty"
    fixed, rolling = en.encode(" " + vocabulary), en.encode(" " + ROLLING.strip())
    assert len(rolling) > MAX_PROMPT_TOKENS  # the rolling prompt alone would be trimmed
    prefix = en.prompt_prefix(ROLLING, vocabulary)
    assert len(prefix) == 1 + MAX_PROMPT_TOKENS and prefix[0] == en.sot_prev
    assert prefix[1:1 + len(fixed)] == fixed
    assert prefix[1 + len(fixed):] == rolling[-(MAX_PROMPT_TOKENS - len(fixed)):]  # its newest tokens
    assert en.prompt_prefix("", vocabulary) == [en.sot_prev, *fixed]
    assert en.prompt_prefix("short", "") == [en.sot_prev, *en.encode(" short")]
    assert en.prompt_prefix("  ", " ") == []


def test_vocabulary_filling_the_budget_leaves_no_room_for_the_prompt(en):
    words = " ".join(["hello"] * MAX_PROMPT_TOKENS)
    assert en.prompt_tokens(words) == MAX_PROMPT_TOKENS
    assert en.prompt_prefix(ROLLING, words) == [en.sot_prev, *en.encode(" " + words)]


def test_vocabulary_over_the_limit_is_refused_naming_the_limit(en):
    words = " ".join(["hello"] * (MAX_PROMPT_TOKENS + 1))
    assert en.prompt_tokens(words) == MAX_PROMPT_TOKENS + 1
    with pytest.raises(EngineError, match=f"at most {MAX_PROMPT_TOKENS} prompt tokens"):
        en.prompt_prefix("", words)


def test_engines_tell_callers_the_prompt_budget(tiny_engine):
    assert tiny_engine.max_prompt_tokens == MAX_PROMPT_TOKENS == 223
    assert tiny_engine.prompt_tokens("") == 0
    assert tiny_engine.prompt_tokens("Quillbrook") == len(tiny_engine.tokens.encode(" Quillbrook")) > 1
    scripted = ScriptedEngine(timeline_script([]))
    assert scripted.max_prompt_tokens == 223 and scripted.prompt_tokens("two words") == 2
    too_long = " ".join(["hello"] * 300)
    with pytest.raises(EngineError, match="at most 223"):
        tiny_engine.decode(DecodeRequest(np.zeros(16000, dtype=np.float32), vocabulary=too_long))


@pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None, reason="faster-whisper is not installed")
def test_faster_whisper_counts_prompt_tokens_the_same_way(tiny_engine):
    from streamer.engine.loader import load_engine

    engine = load_engine(backend="faster-whisper", model="tiny.en", warmup=False)
    assert engine.max_prompt_tokens == 223
    assert engine.prompt_tokens(ROLLING) == tiny_engine.prompt_tokens(ROLLING)


@pytest.fixture(scope="module")
def made_up_name(tmp_path_factory) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "name.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path),
                    "Yesterday Doctor Quillbrook called about the budget."], check=True)
    return load_audio(path)


def test_vocabulary_spells_a_made_up_name(base_engine, made_up_name):
    """base, not tiny.en: with a one-word vocabulary tiny.en drops the sentence's first half ("Call
    them out of the Mergid.") in float32 and with the bfloat16 encoder; it kept it only in int8."""
    plain = base_engine.decode(DecodeRequest(made_up_name))
    assert "Quillbrook" not in plain.text  # base hears "the quail broke" (float32: "quillbrook")
    assert "Quillbrook" in base_engine.decode(DecodeRequest(made_up_name, vocabulary="Quillbrook")).text
