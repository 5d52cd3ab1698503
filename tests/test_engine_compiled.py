"""The static-cache decode path that CUDA compiles, traced here by dynamo on the CPU.

backend="eager" runs dynamo's full-graph trace (a graph break would fail) without inductor's
code generation, so the CPU suite proves the compiled path gives the same words as the
eager path and never recompiles after warm-up; bench/gpu_engine.py measures it on a GPU.
The engine builds and warms its compiled decoder itself, from the options it is loaded with.
"""

from __future__ import annotations

import soundfile as sf

from streamer.config import EngineConfig
from streamer.engine.gpu import CompileOptions, compile_count
from streamer.engine.loader import load_engine
from streamer.engine.whisper import load_whisper
from streamer.hypothesis import DecodeRequest


def test_compiled_static_cache_matches_eager_and_never_recompiles(shared_data):
    engine = load_engine(model="tiny.en", quantize="none", warmup=False)
    audio, _ = sf.read(shared_data / "jfk" / "jfk.wav", dtype="float32")
    requests = [DecodeRequest(audio), DecodeRequest(audio[:80000], prompt="Kennedy"), DecodeRequest(audio[32000:])]
    eager = [h.text for h in engine.decode_batch(requests)]

    compiled = load_whisper(EngineConfig(model="tiny.en", quantize="none", warmup=False),
                            compile=CompileOptions(batch_sizes=(1, 4), backend="eager", warmup_steps=2))
    assert compiled.compiled is not None and compiled.compiled.batch_sizes == [1, 4]
    before = compile_count()
    static = [h.text for h in compiled.decode_batch(requests)]  # 3 rows -> padded to the warmed size 4
    longer = "a prompt longer than the twenty-token prefix of the warm-up, so the prefix pass runs at a length " \
             "that no warm-up decode has seen"
    single = compiled.decode(DecodeRequest(audio[:50000], prompt=longer))
    assert compile_count() == before, "serving shapes recompiled after warm-up"
    assert static == eager
    assert "fellow" in single.text
