"""Beam search (``engine.beam_size``) on the real tiny.en weights: Whisper's procedure, batched correctly.

The exactness tests run in float32: with int8 dynamic quantisation (one scale per tensor) a row's
activations depend on the other rows of its batch, so a beam of one differs from greedy by float
noise (0.014 in a sum of log probabilities) and a window batched with another from the window alone.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
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


@pytest.mark.parametrize("length", [1, 5])
def test_beams_of_a_window_read_its_cross_attention_keys_once_with_the_same_result(length):
    """Rows of a beam attend to their window's one set of encoder keys as if each row had its own copy."""
    from torch.nn.functional import scaled_dot_product_attention

    from streamer.engine.kv_decoder import _cross_attend

    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(6, 8, length, 64, generator=generator)  # 2 windows x a beam of 3
    keys, values = torch.randn(2, 2, 8, 1500, 64, generator=generator)
    copied = scaled_dot_product_attention(queries, keys.repeat_interleave(3, 0), values.repeat_interleave(3, 0))
    assert torch.allclose(_cross_attend(queries, keys, values), copied, atol=1e-5)
    alone = queries[::3]  # one row per window: the plain path
    assert torch.equal(_cross_attend(alone, keys, values), scaled_dot_product_attention(alone, keys, values))


@torch.inference_mode()
def test_a_batch_mixing_greedy_and_beam_windows_gives_what_each_gives_alone(exact_engine, shared_data):
    """Sessions batched together may ask for different beams (a pause decode beside an update)."""
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    lj = load_audio(shared_data / "ljspeech/LJ001-0001.wav")
    requests = [DecodeRequest(jfk, language="en"), DecodeRequest(lj, language="en", beam_size=4),
                DecodeRequest(lj[: 5 * 16000], language="en", prompt="On printing.")]
    batched = exact_engine.decode_batch(requests)
    for request, hypothesis in zip(requests, batched):
        alone = exact_engine.decode(request)
        assert hypothesis.tokens == alone.tokens and hypothesis.text == alone.text
        assert [w.start for w in hypothesis.words] == pytest.approx([w.start for w in alone.words], abs=0.02)
    assert exact_engine.decode(requests[1]).tokens != exact_engine.decode(replace(requests[1], beam_size=1)).tokens


@torch.inference_mode()
def test_a_looping_window_stops_its_beams_and_real_speech_beside_it_does_not(exact_engine, shared_data):
    """The loop stop (``stop_ratio``) holds for a beam too: every beam of a window looping past the ratio ends it."""
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    looped = np.tile(jfk[int(7.6 * 16000):int(9.2 * 16000)], 12)
    limit = exact_engine.config.max_new_tokens
    full = exact_engine.decode(DecodeRequest(looped, language="en", beam_size=3))
    assert len(full.tokens) >= limit - 1  # without a stop ratio every beam ran to the token limit
    stopped = exact_engine.decode(DecodeRequest(looped, language="en", beam_size=3, stop_ratio=2.4))
    assert 0 < len(stopped.tokens) < limit // 2 and stopped.compression_ratio > 2.4
    speech = load_audio(shared_data / "ljspeech/LJ001-0001.wav")
    alone = exact_engine.decode(DecodeRequest(speech, language="en", beam_size=3, stop_ratio=2.4))
    batch = exact_engine.decode_batch([DecodeRequest(looped, language="en", beam_size=3, stop_ratio=2.4),
                                       DecodeRequest(speech, language="en", beam_size=3, stop_ratio=2.4)])
    assert [h.tokens for h in batch] == [stopped.tokens, alone.tokens]
