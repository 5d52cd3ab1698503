"""The safety net under the VAD: loud sound it rejects is still decoded now and then, and judged."""

from __future__ import annotations

from streamer.config import StreamConfig
from streamer.core import StreamProcessor
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import DecodeRequest, Hypothesis, Word
from streamer.vad import ScriptedDetector
from support import feed_and_drain, noise, timeline

DEAF = ScriptedDetector([])  # a VAD that never hears speech


def test_speech_the_vad_misses_is_found_by_a_probe_and_committed():
    words = timeline(20, start=5.0, step=0.5)  # "speech" from 5 s to 15 s, inside loud sound
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(), DEAF)
    feed_and_drain(proc, engine, noise(20.0, level=0.05))
    heard = [w.word for w in proc.committed_words]
    late = [w.word for w in words if w.start >= 12.5]  # after the first probe that can hear speech
    assert late and all(w in heard for w in late), heard
    assert len(set(heard) & {w.word for w in words}) >= 10


def test_loud_non_speech_gets_a_few_probes_and_no_words():
    calls: list[DecodeRequest] = []

    def hallucinate(request: DecodeRequest) -> Hypothesis:  # what Whisper says to music
        calls.append(request)
        return Hypothesis((Word(" Thank", 0.2, 0.5, 0.3), Word(" you.", 0.5, 0.9, 0.5)), "en", -0.9, 0.7, 1.2)

    proc = StreamProcessor(StreamConfig(), DEAF)
    feed_and_drain(proc, ScriptedEngine(hallucinate), noise(120.0, level=0.05))
    assert proc.committed_words == []
    assert 3 <= len(calls) <= 5  # 4, 8, 16, 32, 32 s apart: the wait doubles after each rejection


def test_quiet_audio_is_never_probed():
    engine = ScriptedEngine(timeline_script(timeline(5)))
    proc = StreamProcessor(StreamConfig(), DEAF)
    feed_and_drain(proc, engine, noise(30.0, level=0.001))  # -60 dBFS
    assert engine.calls == []
