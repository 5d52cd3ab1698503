"""The static-cache decode path that CUDA compiles, traced here by dynamo on the CPU.

backend="eager" runs dynamo's full-graph trace (a graph break would fail) without inductor's
code generation, so the CPU suite proves the compiled path gives the same words as the
eager path and never recompiles after warm-up; bench/gpu_engine.py measures it on a GPU.
"""

from __future__ import annotations

import soundfile as sf

from streamer.engine.gpu import CompiledDecoder, compile_count
from streamer.engine.loader import load_engine
from streamer.hypothesis import DecodeRequest


def test_compiled_static_cache_matches_eager_and_never_recompiles(shared_data):
    engine = load_engine(model="tiny.en", quantize="none", warmup=False)
    audio, _ = sf.read(shared_data / "jfk" / "jfk.wav", dtype="float32")
    requests = [DecodeRequest(audio), DecodeRequest(audio[:80000], prompt="Kennedy"), DecodeRequest(audio[32000:])]
    eager = [h.text for h in engine.decode_batch(requests)]

    compiled = CompiledDecoder(engine.decoder, engine.tokens, [1, 4], engine.device, engine.dtype,
                               backend="eager")
    compiled.warmup(engine.model.config.d_model, [[engine.tokens.sot]], engine.device, engine.dtype, steps=2)
    engine.compiled = compiled
    before = compile_count()
    static = [h.text for h in engine.decode_batch(requests)]  # 3 rows -> padded to the warmed size 4
    single = engine.decode(DecodeRequest(audio[:50000], prompt="a longer prompt than any seen in warm-up"))
    assert compile_count() == before, "serving shapes recompiled after warm-up"
    assert static == eager
    assert "fellow" in single.text
