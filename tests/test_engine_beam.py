"""Beam search (``engine.beam_size``) on the real tiny.en weights: Whisper's procedure, batched correctly.

The exactness tests run in float32: with int8 dynamic quantisation (one scale per tensor) a row's
activations depend on the other rows of its batch, so a beam of one differs from greedy by float
noise (0.014 in a sum of log probabilities) and a window batched with another from the window alone.
"""

from __future__ import annotations

import pytest
import torch

from streamer.audio import load_audio
from streamer.engine.beam import beam_decode
from streamer.engine.decoding import greedy_decode, prefill
from streamer.engine.language import LanguageChoice
from streamer.hypothesis import DecodeRequest


@pytest.fixture(scope="module")
def exact_engine():
    from streamer.engine.loader import load_engine

    return load_engine(model="tiny.en", quantize="none", warmup=False)


@pytest.fixture(scope="module")
def windows(exact_engine, shared_data):
    """Two real windows with different prompts, encoded once: (encoder output, rows)."""
    engine = exact_engine
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    lj = load_audio(shared_data / "ljspeech/LJ001-0001.wav")
    requests = [DecodeRequest(jfk, language="en"), DecodeRequest(lj, language="en", prompt="On printing.")]
    with torch.inference_mode():
        encoded = engine.encode([r.audio for r in requests])
    rows = [engine._row(r, LanguageChoice("en"), len(r.audio) / 16000) for r in requests]
    return encoded, rows


def forced_score(engine, encoded, row, sequence) -> float:
    """Sum of rule-masked log probabilities of ``sequence`` then end-of-text, one token at a time."""
    tokens, decoder, rules = engine.tokens, engine.decoder, engine.rules
    pre = prefill(decoder, encoded, [row], tokens)
    state, width, logits, position = pre.state, pre.width, pre.logits, pre.position
    total = 0.0
    for i, token in enumerate([*sequence, tokens.eot]):
        masked = rules.apply(logits.float(), [list(sequence[:i])], [row], first=i == 0)
        total += torch.log_softmax(masked, dim=-1)[0, token].item()
        if token == tokens.eot:
            break
        position = position + 1
        state.valid[:, width + i] = True
        hidden = decoder(torch.tensor([[token]]), position, torch.tensor([width + i]), state, attend_len=width + i + 1)
        logits = decoder.logits(hidden[:, -1])
    return total


@torch.inference_mode()
def test_a_beam_of_one_is_greedy(exact_engine, windows):
    encoded, rows = windows
    engine = exact_engine
    greedy = greedy_decode(engine.decoder, encoded, rows, engine.tokens, engine.rules, 128)
    beam = beam_decode(engine.decoder, encoded, rows, engine.tokens, engine.rules, 128, beam_size=1)
    assert [r.tokens for r in beam] == [r.tokens for r in greedy]
    assert [r.sum_logprob for r in beam] == pytest.approx([r.sum_logprob for r in greedy], abs=1e-3)


@torch.inference_mode()
def test_beams_follow_their_own_cache_and_windows_do_not_mix(exact_engine, windows):
    """Each winner's score is its sequence's score recomputed token by token from scratch (a beam that
    continued another beam's cache would not match), and a batch of two windows gives what each gives alone."""
    encoded, rows = windows
    engine = exact_engine
    both = beam_decode(engine.decoder, encoded, rows, engine.tokens, engine.rules, 128, beam_size=4)
    for b, result in enumerate(both):
        assert result.tokens and result.tokens[0] >= engine.tokens.timestamp_begin  # timestamps on, as greedy
        assert result.sum_logprob == pytest.approx(forced_score(engine, encoded[b:b + 1], rows[b], result.tokens), abs=0.05)
        alone = beam_decode(engine.decoder, encoded[b:b + 1], rows[b:b + 1], engine.tokens, engine.rules, 128, beam_size=4)
        assert alone[0].tokens == result.tokens


def test_the_engine_decodes_with_a_beam_through_its_interface(tiny_engine, shared_data):
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    hyp = tiny_engine.with_beam_size(4).decode(DecodeRequest(jfk, language="en"))
    assert tiny_engine.config.beam_size == 1
    assert "ask not what your country can do for you" in hyp.text.lower().replace(",", "")
    assert hyp.words[-1].word.strip(" .").lower() == "country"
