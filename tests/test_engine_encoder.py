"""Encoder buckets (``engine.encoder_buckets``): the cut encoder is Whisper's at 30 s, and shorter only when asked."""

from __future__ import annotations

import numpy as np
import torch

from streamer.audio import load_audio
from streamer.engine.encoder import bucket_for, encode
from streamer.hypothesis import DecodeRequest
from support import word_distance


def test_a_window_goes_to_the_smallest_bucket_that_holds_it():
    assert bucket_for(7.2, [10, 15, 20]) == 10
    assert bucket_for(10.0, [10, 15, 20]) == 10
    assert bucket_for(10.01, [10, 15, 20]) == 15
    assert bucket_for(22.0, [10, 15, 20]) == 30          # longer than every bucket: Whisper's 30 s
    assert bucket_for(5.0, []) == 30


def test_the_full_length_path_is_the_models_own_encoder(tiny_engine):
    audio = np.random.default_rng(1).normal(0, 0.05, 16000 * 4).astype(np.float32)
    feats = tiny_engine.features([audio], sampling_rate=16000, return_tensors="pt").input_features
    feats = feats.to(tiny_engine.encoder_dtype)                  # bfloat16 where the CPU has it natively
    encoder = tiny_engine.model.model.encoder
    with torch.inference_mode():
        ours = encode(encoder, feats, 30.0)
        theirs = encoder(feats).last_hidden_state
        short = encode(encoder, feats, 10.0)
    assert torch.equal(ours, theirs)
    assert short.shape[1] == 500 and ours.shape[1] == 1500   # 50 frames a second
    # the first frames differ (attention sees less padding) but stay close to the full encoder's
    assert torch.nn.functional.cosine_similarity(short[0, :100], theirs[0, :100], dim=-1).mean() > 0.9


def test_a_bucketed_engine_still_transcribes_the_clip(tiny_engine, shared_data):
    jfk = load_audio(shared_data / "jfk/jfk.wav")                  # 11 s: the 15 s bucket
    full = tiny_engine.decode(DecodeRequest(jfk, language="en"))
    short = tiny_engine.with_encoder_buckets([10, 15, 20]).decode(DecodeRequest(jfk, language="en"))
    assert tiny_engine.config.encoder_buckets == []               # a view: the loaded engine is unchanged
    assert word_distance(short.text, full.text) <= 2, (short.text, full.text)
    assert short.words[-1].end <= 11.1


def test_windows_whose_language_is_detected_keep_the_full_encoder(base_engine, shared_data):
    # detection on a cut encoder took Spanish for Catalan and Greek: only a fixed language gets a bucket
    jfk = load_audio(shared_data / "jfk/jfk.wav")[: 16000 * 6]
    bucketed = base_engine.with_encoder_buckets([10, 15, 20])
    for request in (DecodeRequest(jfk), DecodeRequest(jfk, language="en", detect_language=True)):
        assert bucketed.decode(request).tokens == base_engine.decode(request).tokens
    fixed = DecodeRequest(jfk, language="en")
    assert bucketed.decode(fixed).words != base_engine.decode(fixed).words      # the 10 s bucket: not the same sums


def test_an_english_only_model_cuts_every_window(tiny_engine, shared_data):
    # tiny.en detects nothing (every window is English), so a window without a language is cut too
    jfk = load_audio(shared_data / "jfk/jfk.wav")[: 16000 * 6]
    bucketed = tiny_engine.with_encoder_buckets([10, 15, 20])
    unset = bucketed.decode(DecodeRequest(jfk)).words
    assert unset == bucketed.decode(DecodeRequest(jfk, language="en")).words
    assert unset != tiny_engine.decode(DecodeRequest(jfk)).words


def test_a_request_may_ask_for_buckets_or_for_the_full_encoder(tiny_engine, shared_data):
    # the daemon cuts every window of a round while many streams are live (server.bucket_streams)
    jfk = load_audio(shared_data / "jfk/jfk.wav")[: 16000 * 6]
    bucketed = tiny_engine.with_encoder_buckets([10, 15, 20])
    cut = tiny_engine.decode(DecodeRequest(jfk, language="en", encoder_buckets=(10.0, 15.0, 20.0)))
    assert tiny_engine.encoder_cuts and cut.words == bucketed.decode(DecodeRequest(jfk, language="en")).words
    full = bucketed.decode(DecodeRequest(jfk, language="en", encoder_buckets=()))
    assert full.words == tiny_engine.decode(DecodeRequest(jfk, language="en")).words
