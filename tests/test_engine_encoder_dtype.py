"""A bfloat16 encoder on the CPU (``engine.encoder_dtype``): AMX tiles run it, the decoder stays int8."""

from __future__ import annotations

import pytest
import torch

from streamer.audio import load_audio
from streamer.engine.loader import load_engine
from streamer.engine.whisper import _encoder_dtype
from streamer.hypothesis import DecodeRequest
from support import word_distance

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_encoder_dtype_is_bfloat16_only_where_asked_or_where_amx_runs_it(monkeypatch):
    assert _encoder_dtype("model", CPU, torch.float32, int8=True) == torch.float32
    assert _encoder_dtype("bfloat16", CPU, torch.float32, int8=False) == torch.bfloat16
    assert _encoder_dtype("bfloat16", CUDA, torch.float16, int8=False) == torch.float16   # the GPU keeps fp16
    assert _encoder_dtype("auto", CPU, torch.bfloat16, int8=False) == torch.bfloat16      # already all bf16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.bfloat16
    assert _encoder_dtype("auto", CPU, torch.float32, int8=False) == torch.float32        # float32 asked for
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.float32
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)   # a torch without the helper
    assert _encoder_dtype("auto", CPU, torch.float32, int8=True) == torch.float32


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
