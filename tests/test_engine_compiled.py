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


def test_compiled_draft_verification_gives_plain_greedy_tokens_on_warmed_graphs(shared_data):
    """The CUDA path's drafted loop (blocks padded to fixed widths, one graph each) on the CPU."""
    plain = load_engine(model="tiny.en", quantize="none", warmup=False)
    audio, _ = sf.read(shared_data / "jfk" / "jfk.wav", dtype="float32")
    windows = [audio, audio[:80000], audio[32000:]]
    expected = [plain.decode(DecodeRequest(w)).tokens for w in windows]

    compiled = load_whisper(EngineConfig(model="tiny.en", quantize="none", warmup=False, drafts=True),
                            compile=CompileOptions(batch_sizes=(1, 4), draft_widths=(8, 49), backend="eager",
                                                   warmup_steps=2))
    assert compiled.compiled.draft_widths == (1, 8, 49)
    before = compile_count()
    drafts = [tuple(expected[0]), tuple(expected[1][:len(expected[1]) // 2]), tuple(expected[2][:-3])]
    hyps = compiled.decode_batch([DecodeRequest(w, draft=d) for w, d in zip(windows, drafts)])
    assert compiled.last_timing["accepted"] >= len(expected[0]) + len(expected[1]) // 2 - 2
    assert compiled.last_timing["passes"] < max(len(t) for t in expected) / 2  # far fewer passes than tokens
    single = compiled.decode(DecodeRequest(windows[1], draft=tuple(expected[0][5:])))  # a draft that does not line up
    assert compile_count() == before, "a draft block's shape recompiled after warm-up"
    assert [h.tokens for h in hyps] == expected
    assert single.tokens == expected[1]
