"""A bfloat16 encoder on the CPU (``engine.encoder_dtype``) where the CPU has it natively; int8 decoder.

With it, on AMX machines, the decoder's cross-attention keys/values are kept in bfloat16
(``engine.cross_attention_dtype``), and one window's detection, decode and word-time passes share one
projection of them.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from streamer.audio import load_audio
from streamer.engine.loader import load_engine
from streamer.engine.whisper import _cross_dtype, _encoder_dtype
from streamer.hypothesis import DecodeRequest
from support import word_distance

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _cpu_has(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


def test_the_encoder_dtype_is_bfloat16_only_where_asked_or_where_the_cpu_has_it_natively(monkeypatch):
    assert _encoder_dtype("model", CPU, torch.float32, int8=True) == torch.float32
    assert _encoder_dtype("float32", CPU, torch.float32, int8=True) == torch.float32
    assert _encoder_dtype("bfloat16", CPU, torch.float32, int8=False) == torch.bfloat16
    assert _encoder_dtype("bfloat16", CUDA, torch.float16, int8=False) == torch.float16   # the GPU keeps fp16
    assert _encoder_dtype("auto", CPU, torch.bfloat16, int8=False) == torch.bfloat16      # already all bf16
    for amx, avx512_bf16 in ((True, False), (False, True), (True, True)):
        _cpu_has(monkeypatch, amx, avx512_bf16)
        assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.bfloat16
        assert _encoder_dtype("auto", CPU, torch.float32, int8=False) == torch.float32    # float32 asked for
    _cpu_has(monkeypatch, False, False)                                                   # emulated: stays int8
    assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.float32
    _cpu_has(monkeypatch, True, True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)             # a torch without oneDNN
    assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.float32
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)   # a torch without the helpers
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.float32


def test_a_float32_encoder_beside_the_int8_decoder():
    """Where bfloat16 is emulated, ``float32`` buys the better encoder without quantising it."""
    engine = load_engine(model="tiny.en", encoder_dtype="float32", warmup=False)
    assert engine.dtype == "int8, encoder float32"
    encoder, decoder = engine.model.model.encoder, engine.model.model.decoder
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    assert type(encoder.layers[0].fc1) is torch.nn.Linear
    assert any("quantized" in type(m).__module__ for m in decoder.modules())
    assert engine.decoder.cross_dtype is None


@pytest.fixture(scope="module")
def bf16_engine():
    return load_engine(model="tiny.en", encoder_dtype="bfloat16")


def test_a_bfloat16_encoder_leaves_the_decoder_quantised(bf16_engine):
    assert bf16_engine.dtype == "int8, encoder bfloat16"
    encoder, decoder = bf16_engine.model.model.encoder, bf16_engine.model.model.decoder
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}
    assert type(encoder.layers[0].fc1) is torch.nn.Linear                      # not quantised there...
    quantised = [m for m in decoder.modules() if "quantized" in type(m).__module__]
    assert quantised and not any(type(m) is torch.nn.Linear for m in decoder.modules())   # ...all int8 here
    assert "quantized" in type(bf16_engine.model.proj_out).__module__


def test_the_bfloat16_encoder_is_nearer_float32_than_the_int8_one(bf16_engine, shared_data):
    float32 = load_engine(model="tiny.en", quantize="none", warmup=False)
    quantised = load_engine(model="tiny.en", encoder_dtype="model", warmup=False)
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    with torch.inference_mode():
        exact, ours, int8 = (e.encode([jfk]) for e in (float32, bf16_engine, quantised))
    assert ours.dtype == torch.float32                                         # the decoder gets float32

    def similarity(states):
        return torch.nn.functional.cosine_similarity(states[0], exact[0], dim=-1).mean()

    assert similarity(ours) > 0.999 and similarity(ours) > similarity(int8)     # measured 0.9999 and 0.989
    text, reference = (e.decode(DecodeRequest(jfk)).text for e in (bf16_engine, float32))
    assert word_distance(text, reference) <= 1


def test_cross_attention_keys_follow_a_bfloat16_encoder_on_amx_cpus_only(monkeypatch):
    _cpu_has(monkeypatch, amx=True, avx512_bf16=True)
    assert _cross_dtype("auto", CPU, torch.bfloat16) == torch.bfloat16
    assert _cross_dtype("auto", CPU, torch.float32) is None              # an int8/float32 encoder: its output's
    assert _cross_dtype("model", CPU, torch.bfloat16) is None
    assert _cross_dtype("bfloat16", CPU, torch.float32) == torch.bfloat16
    assert _cross_dtype("bfloat16", CUDA, torch.float16) is None          # typed static buffers there
    _cpu_has(monkeypatch, amx=False, avx512_bf16=True)                     # slower there (docs/engine.md)
    assert _cross_dtype("auto", CPU, torch.bfloat16) is None
    assert _cross_dtype("bfloat16", CPU, torch.bfloat16) == torch.bfloat16


def test_bfloat16_cross_attention_keys_keep_the_text(shared_data):
    """Half the bytes per decoder step (docs/engine.md); the text of jfk stays within a word of float32 keys."""
    bf16_keys = load_engine(model="tiny.en", encoder_dtype="bfloat16", cross_attention_dtype="bfloat16")
    assert bf16_keys.decoder.cross_dtype == torch.bfloat16
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    with torch.inference_mode():
        encoded = bf16_keys.encode([jfk])
        state = bf16_keys.decoder.start(encoded)
    assert {k.dtype for k in state.cross_k + state.cross_v} == {torch.bfloat16}
    assert all(k.is_contiguous() for k in state.cross_k + state.cross_v)
    float_keys = load_engine(model="tiny.en", encoder_dtype="bfloat16", cross_attention_dtype="model", warmup=False)
    assert float_keys.decoder.cross_dtype is None
    ours, reference = (e.decode(DecodeRequest(jfk)) for e in (bf16_keys, float_keys))
    assert word_distance(ours.text, reference.text) <= 1
    assert [w.word for w in ours.words][:5] == [w.word for w in reference.words][:5]


def test_one_window_projects_its_cross_attention_keys_once(bf16_engine, shared_data, monkeypatch):
    """The decode and the word-time pass start from the same encoder output: one projection, the same words."""
    jfk = load_audio(shared_data / "jfk/jfk.wav")
    decoder, calls = bf16_engine.decoder, []
    project = decoder._cross_projection
    monkeypatch.setattr(decoder, "_cross_projection", lambda *a: calls.append(1) or project(*a))
    per_projection = 2 * len(decoder.layers)           # keys and values of every layer
    shared = bf16_engine.decode(DecodeRequest(jfk))
    assert len(calls) == per_projection
    monkeypatch.setattr(decoder, "sharing_projections", lambda encoded: contextlib.nullcontext())
    unshared = bf16_engine.decode(DecodeRequest(jfk))
    assert len(calls) == per_projection * 3            # each pass projected again
    assert shared.text == unshared.text and shared.words == unshared.words
    monkeypatch.undo()
    with torch.inference_mode():
        encoded = bf16_engine.encode([jfk])
        with decoder.sharing_projections(encoded):
            first, second = decoder.start(encoded), decoder.start(encoded)
            other = decoder.start(encoded.clone())      # another tensor: its own projection
        after = decoder.start(encoded)
    assert first.cross_k[0] is second.cross_k[0] and other.cross_k[0] is not first.cross_k[0]
    assert after.cross_k[0] is not first.cross_k[0]    # nothing kept past the block
