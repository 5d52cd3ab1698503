"""Word times from the decode loop's own attention (``engine.fused_alignment``), real tiny.en weights.

The loop records the alignment heads' queries step by step; these tests check that what it records is
the attention a teacher-forced pass over the decoded sequence computes, that recording changes no
token, and that the word times it gives agree with the separate pass's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.engine.alignment import teacher_forced
from streamer.engine.decoding import TIME_PRECISION, RowSpec, greedy_decode
from streamer.engine.trace import AttentionTrace, TokenEvidence
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest

EOT = 100


def test_text_rows_pick_each_text_token_and_the_row_after_the_last():
    weights = np.arange(6)[None, :, None] * np.ones((2, 6, 3))  # row j holds j
    evidence = TokenEvidence(weights, [np.log(p) for p in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)])
    tokens = [EOT + 5, 7, 8, EOT + 9, 9]  # timestamp, text, text, timestamp, text; query 5 follows the last
    rows, probs = evidence.text_rows(tokens, EOT)
    assert rows[0, :, 0].tolist() == [1, 2, 4, 5]
    assert probs == pytest.approx([0.8, 0.7, 0.5])


def test_text_rows_without_a_query_after_the_last_token_reuse_the_last_row():
    evidence = TokenEvidence(np.arange(3)[None, :, None] * np.ones((1, 3, 2)), [0.0, 0.0, 0.0])
    rows, _ = evidence.text_rows([EOT + 1, 4, 5], EOT)  # a row stopped at the token limit: 3 queries
    assert rows[0, :, 0].tolist() == [1, 2, 2]


def test_no_text_gives_no_rows():
    rows, probs = TokenEvidence(np.ones((1, 2, 4)), [0.0, 0.0]).text_rows([EOT + 3], EOT)
    assert rows.shape[1] == 0 and probs == []


@pytest.fixture(scope="module")
def engine():
    from streamer.engine.loader import load_engine

    return load_engine(model="tiny.en", quantize="none", warmup=False)


def _rows(engine, audio: np.ndarray, prompt: str) -> list[RowSpec]:
    prefix = engine.tokens.prompt_prefix(prompt, "")
    sot = len(prefix)
    prefix += engine.tokens.sot_sequence("en", "transcribe")
    return [RowSpec(prefix, sot, int(np.ceil(len(audio) / SAMPLE_RATE / TIME_PRECISION)))]


@torch.inference_mode()
def test_recorded_attention_is_the_teacher_forced_attention_of_the_decoded_sequence(engine, shared_data):
    audio = load_audio(shared_data / "jfk" / "jfk.wav")
    encoder_out = engine.encode([audio])
    rows = _rows(engine, audio, "Good evening.")
    plain = greedy_decode(engine.decoder, encoder_out, rows, engine.tokens, engine.rules, 100)
    trace = AttentionTrace(engine.alignment_heads, engine.tokens.eot)
    traced = greedy_decode(engine.decoder, encoder_out, rows, engine.tokens, engine.rules, 100, trace=trace)
    assert traced[0].tokens == plain[0].tokens  # recording changes nothing
    generated = traced[0].tokens
    sequence = rows[0].prefix + generated + [engine.tokens.eot]
    (forced,), _ = teacher_forced(engine.decoder, encoder_out, [sequence], engine.alignment_heads, engine.tokens.eot)
    recorded = traced[0].evidence.weights  # query j chose generated[j]; the last one chose <|endoftext|>
    assert recorded.shape[1] == len(generated) + 1
    start = len(rows[0].prefix) - 1
    np.testing.assert_allclose(recorded, forced[:, start:start + len(generated) + 1], atol=2e-4)


def test_fused_word_times_agree_with_the_separate_pass(engine, shared_data):
    audio = load_audio(shared_data / "jfk" / "jfk.wav")
    request = DecodeRequest(audio, language="en", prompt="so what")
    separate = engine.with_fused_alignment(False).decode(request)
    fused_view = engine.with_fused_alignment(True)
    fused = fused_view.decode(request)
    assert fused.tokens == separate.tokens
    assert [w.word for w in fused.words] == [w.word for w in separate.words]
    for a, b in zip(fused.words, separate.words):
        assert abs(a.start - b.start) <= 0.3 and abs(a.end - b.end) <= 0.3, (a, b)
        assert 0.0 < a.probability <= 1.0
    assert np.mean([w.probability for w in fused.words]) > 0.7  # clear speech: confident words


@pytest.mark.parametrize("draft", ["true", "wrong middle"])
def test_verification_passes_give_the_plain_loops_evidence(engine, shared_data, draft):
    """With drafts, the accepted positions of each verified block are recorded: the same evidence as step by step."""
    audio = load_audio(shared_data / "ljspeech" / "LJ001-0001.wav")
    plain = engine.with_fused_alignment(True)
    reference = plain.decode(DecodeRequest(audio))
    tokens = reference.tokens
    given = tokens if draft == "true" else tokens[:10] + (tokens[10] + 1,) + tokens[11:]
    drafted = plain.with_drafts(True).decode(DecodeRequest(audio, draft=given))
    assert drafted.tokens == tokens
    for a, b in zip(drafted.words, reference.words):
        assert a.word == b.word
        assert a.start == pytest.approx(b.start, abs=0.021) and a.end == pytest.approx(b.end, abs=0.021)
        assert a.probability == pytest.approx(b.probability, abs=1e-3)
