"""Output formats and file replay (scripted engine; the real-model runs are in test_core_e2e.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from streamer.bench.stream import SimulatedClock
from streamer.bench.metrics import CommittedWord, pauses, sentence_latencies, wer, word_edit_distance, words_in_spans
from streamer.config import StreamConfig
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.formats import format_for_path, render
from streamer.hypothesis import SAMPLE_RATE, DecodeAbandoned, DecodeRequest, Hypothesis, Word
from streamer.pacing import DecodeWorker
from streamer.replay import replay, transcribe_offline
from streamer.vad import ScriptedDetector
from streamer.core import StreamProcessor

WORDS = [Word(" Hello", 0.5, 0.9, 0.9), Word(" world.", 1.0, 1.4, 0.8), Word(" This", 3.5, 3.8),
         Word(" is", 3.8, 3.9), Word(" a", 3.9, 4.0), Word(" test,", 4.0, 4.4), Word(" okay?", 4.5, 5.0)]


def test_text_format_has_timestamps_and_cues_at_sentences_and_pauses():
    out = render(WORDS, "text").splitlines()
    assert out == ["[00:00:00.500 --> 00:00:01.400] Hello world.",
                   "[00:00:03.500 --> 00:00:05.000] This is a test, okay?"]


def test_srt_vtt_txt():
    srt = render(WORDS, "srt")
    assert srt.startswith("1\n00:00:00,500 --> 00:00:01,400\nHello world.\n\n2\n00:00:03,500 --> ")
    vtt = render(WORDS, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\nHello world.\n")
    assert render(WORDS, "txt") == "Hello world.\nThis is a test, okay?\n"


def test_jsonl_keeps_every_word_in_its_cue():
    lines = [json.loads(line) for line in render(WORDS, "jsonl").splitlines()]
    assert [c["text"] for c in lines] == ["Hello world.", "This is a test, okay?"]
    assert [w["word"] for c in lines for w in c["words"]] == [w.word for w in WORDS]
    assert lines[0]["words"][0] == {"word": " Hello", "start": 0.5, "end": 0.9, "probability": 0.9}


def test_long_speech_is_split_into_short_cues():
    words = [Word(f" word{i}", i * 0.3, i * 0.3 + 0.25) for i in range(100)]
    lines = render(words, "txt").splitlines()
    assert len(lines) > 5 and all(len(line) <= 84 for line in lines)
    assert " ".join(lines).split() == [w.word.strip() for w in words]


def test_format_helpers():
    assert format_for_path("a/b.SRT") == "srt" and format_for_path("x.wav") is None
    with pytest.raises(ValueError, match="unknown format"):
        render(WORDS, "docx")


def test_realtime_replay_is_paced_by_the_clock_and_counts_decode_time():
    timeline = [Word(f" w{i}", 1.0 + 0.4 * i, 1.3 + 0.4 * i) for i in range(20)]
    clock = SimulatedClock()  # sleeping and decoding advance it
    inner = timeline_script(timeline, unstable_tail=True)

    def checked(request: DecodeRequest) -> Hypothesis:
        end = request.offset + request.audio.size / SAMPLE_RATE
        assert end <= clock.now + 1e-6, "decoded audio that had not arrived yet"
        return inner(request)

    audio = np.zeros(12 * SAMPLE_RATE, dtype=np.float32)
    proc = StreamProcessor(StreamConfig(), ScriptedDetector([(0.9, 9.3)]))
    result = replay(audio, ScriptedEngine(checked), StreamConfig(), realtime=True, processor=proc,
                    clock=clock, sleep=clock.sleep, decode_cost=lambda request: 0.7)  # each decode takes 0.7 s
    assert [w.word for w in result.words] == [w.word for w in timeline[:19]] + [result.words[-1].word]
    assert result.wall_seconds >= 12.0
    assert all(d == pytest.approx(0.7) for d in result.decode_seconds)
    committed = [CommittedWord(w.word, w.start, w.end, e.t) for e in result.events for w in e.event.committed]
    assert all(c.committed_at >= c.end for c in committed)
    assert max(c.committed_at - c.end for c in committed) < 4.0
    line = json.loads(result.events[0].to_json())
    assert line["type"] == "transcript" and "t" in line


def test_fast_replay_and_offline_agree_on_a_scripted_stream():
    timeline = [Word(f" w{i}", 1.0 + 0.4 * i, 1.3 + 0.4 * i) for i in range(150)]
    engine = ScriptedEngine(timeline_script(timeline))
    audio = np.zeros(62 * SAMPLE_RATE, dtype=np.float32)
    streamed = replay(audio, engine, StreamConfig(use_vad=False))
    offline = transcribe_offline(engine, audio)
    assert [w.word for w in offline] == [w.word for w in timeline]
    assert streamed.text == " ".join(w.word.strip() for w in timeline)


def test_metrics():
    assert wer("Hello, World!", "hello world") == 0.0
    assert wer(["the cat sat down"], ["the cat down"]) == 0.25
    assert word_edit_distance("The cat sat.", "the cat sat on") == 1
    segments = [{"start": 0.0, "end": 2.0, "text": "Hello there."}, {"start": 5.0, "end": 7.0, "text": "Good bye now."}]
    committed = [CommittedWord(" hello", 0.2, 0.8, 1.5), CommittedWord(" their", 1.0, 1.9, 3.1),
                 CommittedWord(" good", 5.1, 5.5, 6.0), CommittedWord(" bye", 5.6, 6.0, 6.5)]
    assert sentence_latencies(segments, committed) == [1.1, -0.5]   # misrecognised last word still counts
    assert sentence_latencies(segments, committed[:1]) == [-0.5, None]
    # a sentence's period committed later, as its own item: the word's latency, or with marks=True the period's
    with_mark = [*committed[:2], CommittedWord(".", 1.9, 1.9, 5.4), *committed[2:]]
    assert sentence_latencies(segments, with_mark) == [1.1, -0.5]
    assert sentence_latencies(segments, with_mark, marks=True) == [3.4, -0.5]
    assert pauses(segments, min_gap=2.0, margin=0.5) == [(2.5, 4.5)]
    assert words_in_spans([CommittedWord(" ghost", 3.0, 3.2, 4.0)] + committed, [(2.5, 4.5)])[0].word == " ghost"


def test_simulated_clock_replay_for_the_benchmark():
    from streamer.bench.stream import simulated_replay

    timeline = [Word(f" w{i}", 1.0 + 0.4 * i, 1.3 + 0.4 * i) for i in range(20)]
    audio = np.zeros(12 * SAMPLE_RATE, dtype=np.float32)
    result = simulated_replay(audio, ScriptedEngine(timeline_script(timeline)), StreamConfig(use_vad=False), "en",
                              "0.5,0.05")
    assert all(d == pytest.approx(0.5 + 0.05 * w) for d, w in zip(result.decode_seconds, result.window_seconds))
    assert 0.5 < result.max_lag_seconds < 3.0           # decode time shows up as lag in real time
    assert result.wall_seconds >= 12.0 and len(result.words) == 20


def _sentence_end_waits(preempt: bool) -> tuple[list[float], int, list[str]]:
    """Three 'sentences' of seven words with 1.2 s pauses, replayed in real time with 0.8 s decodes every 0.5 s:
    how long after its end each sentence's last word was committed, the updates given up, the words."""
    sentences = [(1.0 + 4.0 * k, f"s{k}w") for k in range(3)]
    timeline = [w for start, prefix in sentences for w in [Word(f" {prefix}{i}", start + 0.4 * i, start + 0.4 * i + 0.3)
                                                         for i in range(7)]]
    speech = [(start - 0.05, start + 2.75) for start, _ in sentences]
    config = StreamConfig(min_chunk=0.5, preempt_updates=preempt)
    proc = StreamProcessor(config, ScriptedDetector(speech))
    clock = SimulatedClock()
    result = replay(np.zeros(14 * SAMPLE_RATE, dtype=np.float32), ScriptedEngine(timeline_script(timeline)), config,
                    realtime=True, processor=proc, clock=clock, sleep=clock.sleep, decode_cost=lambda r: 0.8)
    committed_at = {w.word: e.t - w.end for e in result.events for w in e.event.committed}
    return [committed_at[f" s{k}w6"] for k in range(3)], result.abandoned, [w.word for w in result.words]


def test_a_realtime_replay_gives_up_an_update_that_a_pause_decode_supersedes():
    waits, abandoned, words = _sentence_end_waits(preempt=True)
    old_waits, old_abandoned, old_words = _sentence_end_waits(preempt=False)
    assert abandoned >= 1 and old_abandoned == 0
    assert words == old_words and len(words) == 21  # the same words, none lost to a given-up decode
    assert max(waits) < max(old_waits) and sum(waits) < sum(old_waits)
    assert max(waits) <= 0.2 + 0.1 + 0.8 + 0.15  # pause, a frame, one decode (and the VAD's frame granularity)


class _CooperativeEngine:
    """An engine that asks ``abandoned`` between 'steps', as the Whisper engine does."""

    name = "cooperative"

    def __init__(self) -> None:
        self.steps = 0

    def decode(self, request: DecodeRequest) -> Hypothesis:
        for _ in range(50):
            if request.abandoned is not None and request.abandoned():
                raise DecodeAbandoned("given up")
            self.steps += 1
        return Hypothesis((Word(" done", 0.0, 0.5),))


def test_the_realtime_worker_asks_between_the_engines_steps_and_gives_up_when_told():
    engine = _CooperativeEngine()
    worker = DecodeWorker(engine, time.perf_counter, time.sleep)
    request = DecodeRequest(np.zeros(SAMPLE_RATE, dtype=np.float32))
    asked = []
    worker.start(request, lambda: asked.append(1) or len(asked) > 5)  # "superseded" at the sixth question
    assert worker.ready() and worker.result() == (request, None) and engine.steps == 5 and not worker.busy
    worker.start(request, lambda: False)
    assert worker.result()[1].text == "done" and engine.steps == 55
