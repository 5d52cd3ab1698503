"""Property-based fuzzing of the protocol v1 session and the stream core (the ``hypothesis`` package).

Random frame sizes and boundaries, random JSON, random interleavings of start / audio / stop /
resume / decode / disconnect. Invariants: no exception escapes (bad input becomes an ``error``
message), committed words never change, and every accepted sample is on the timeline once.
"""

from __future__ import annotations

import json
import os

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamer import protocol
from streamer.compat.deepgram_params import BadRequest, parse_query
from streamer.compat.openai_realtime import Config, RealtimeError, _configured
from streamer.config import StreamConfig
from streamer.core import StreamProcessor, run_until_idle
from streamer.daemon.resume import ResumeTokens, TokenResumer
from streamer.daemon.session import Session
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import SAMPLE_RATE, Word
from streamer.protocol import Close, SessionState, StartError, parse_start

WORDS = [Word(f" w{i}", 0.3 + 0.8 * i, 0.8 + 0.8 * i) for i in range(12)]
ENGINE = ScriptedEngine(timeline_script(WORDS, unstable_tail=True))  # the last word heard is garbled at first
STEADY = ScriptedEngine(timeline_script(WORDS))
# The same examples on every run (a red CI must mean a change broke something); a longer random search:
# STREAMER_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py
SEARCH = int(os.environ.get("STREAMER_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=SEARCH or 100, derandomize=not SEARCH, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
start_fields = st.fixed_dictionaries({}, optional={
    "sample_rate": st.sampled_from([8000, 16000, 44100, 48000, 7999, "16000", True, 1.5, None]),
    "encoding": st.sampled_from(["pcm_s16le", "pcm_f32le", "mp3", "", 3]),
    "channels": st.sampled_from([1, 2, 3, 0, "2", None]),
    "language": st.sampled_from(["en", "de", None, "xx", "", 5, "en; rm"]),
    "task": st.sampled_from(["transcribe", "translate", "dance"]),
    "prompt": st.text(max_size=30) | st.integers(),
    "vad_events": st.booleans() | st.sampled_from(["yes", 2]),
    "resume": json_values,
})


def parsed_or_explained(parse, value, error: type[Exception]):
    """``parse(value)``; None if it raised ``error`` with a message (any other exception fails the test)."""
    try:
        return parse(value)
    except error as exc:
        assert str(exc)
        return None


def config() -> StreamConfig:
    return StreamConfig(use_vad=False, min_chunk=1.0, max_buffer=20.0, trim_to=10.0)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6) | start_fields)
@example({"encoding": []})  # unhashable values once raised TypeError from a dict lookup (CI, 12-06)
@example({"task": {"x": 1}})
def test_start_parsing_accepts_or_explains(fields):
    """Any JSON object: start parameters, or a StartError that says what is wrong; nothing else."""
    params = parsed_or_explained(parse_start, fields, StartError)
    if params is not None:
        assert params.sample_rate > 0 and params.channels in (1, 2) and params.frame_bytes > 0


realtime_sessions = st.fixed_dictionaries({}, optional={
    "input_audio_format": st.sampled_from(["pcm16", "g711_ulaw", {"type": "audio/pcm", "rate": 16000}]) | json_values,
    "input_audio_transcription": st.fixed_dictionaries({}, optional={
        "language": json_values, "prompt": json_values, "model": json_values}) | json_values,
    "turn_detection": st.fixed_dictionaries({"type": st.sampled_from(["server_vad", "none"]) | json_values},
                                            optional={"silence_duration_ms": json_values}) | json_values,
    "audio": st.fixed_dictionaries({"input": json_values}) | json_values,
})


@FUZZ
@given(realtime_sessions | st.dictionaries(st.text(max_size=12), json_values, max_size=4))
def test_realtime_session_updates_configure_or_explain(session):
    """OpenAI Realtime ``session.update``: a configuration that starts a stream, or a RealtimeError; nothing else."""
    try:
        config = _configured(Config(), session)
    except RealtimeError as exc:
        assert str(exc) and exc.param
        return
    # a StartError here is answered as a RealtimeError too
    parsed_or_explained(parse_start, {"sample_rate": config.rate, "encoding": "pcm_s16le",
                                      "language": config.language, "prompt": config.prompt}, StartError)


deepgram_queries = st.fixed_dictionaries({}, optional={
    name: st.sampled_from(values) | st.text(max_size=8) for name, values in {
        "encoding": ["linear16", "opus", ""], "sample_rate": ["16000", "8000", "0", "1e5", "-1", "16000.5"],
        "channels": ["1", "2", "3"], "language": ["en", "en-US", "multi", "xx", ""],
        "endpointing": ["true", "false", "300", "-5", "nan"], "utterance_end_ms": ["1000", "0", "x"],
        "interim_results": ["true", "false", "yes"], "multichannel": ["false", "true"],
        "keywords": ["Streamer:2", ""], "vad_events": ["true", "1"]}.items()})


@FUZZ
@given(deepgram_queries | st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=6))
def test_deepgram_queries_parse_or_explain(query):
    """Deepgram's ``/v1/listen`` query: parameters within their limits, or a BadRequest that says why."""
    params = parsed_or_explained(parse_query, query, BadRequest)
    if params is not None:
        assert protocol.MIN_RATE <= params.sample_rate <= protocol.MAX_RATE and params.channels in (1, 2)


operations = st.lists(st.one_of(
    st.tuples(st.just("text"), st.text(max_size=40)),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("start"), start_fields),
    st.tuples(st.just("audio"), st.integers(0, 40000)),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
    st.tuples(st.just("decode"), st.just(None)),
    st.tuples(st.just("stop"), st.just(None)),
    st.tuples(st.just("disconnect"), st.just(None)),
), max_size=25)


def speech_bytes(offset: int, count: int, width: int) -> bytes:
    """``count`` bytes of a 200 Hz tone continuing at sample ``offset`` (whole samples or not)."""
    n = count // width + 1
    t = (offset + np.arange(n)) / SAMPLE_RATE
    samples = 0.3 * np.sin(2 * np.pi * 200 * t)
    data = (samples * 32767).astype("<i2").tobytes() if width == 2 else samples.astype("<f4").tobytes()
    return data[:count]


@FUZZ
@given(operations)
def test_random_sessions_never_raise_and_never_rewrite_words(ops):
    clock = [1000.0]
    session = Session("fz", config(), model="scripted", max_frame_bytes=32000,
                      resumer=TokenResumer(ResumeTokens("secret"), 30.0, lambda: clock[0]))
    committed: list[str] = []
    sent_bytes = 0
    for kind, value in ops:
        if kind == "text":
            out = session.receive_text(value)
        elif kind == "json":
            out = session.receive_text(json.dumps(value))
        elif kind == "start":
            out = session.receive_text(json.dumps({"type": "start", **value}))
        elif kind in ("audio", "bytes"):
            width = 2 if session.params is None else session.params.frame_bytes // session.params.channels
            data = speech_bytes(sent_bytes // 2, value, width) if kind == "audio" else value
            out = session.receive_binary(data)
            if session.state is SessionState.STARTED and len(data) <= 32000:
                sent_bytes += len(data)
        elif kind == "decode":
            out = []
            while (request := session.next_request()) is not None:
                out += session.complete(ENGINE.decode(request))
        elif kind == "stop":
            out = session.stop()
        else:
            session.abandon()
            break
        params = session.params
        if params is not None and (params.sample_rate, params.channels, params.encoding) == (16000, 1, "pcm_s16le"):
            assert session.audio_seconds == (sent_bytes // 2) / SAMPLE_RATE  # every accepted sample once
        for item in out:
            assert isinstance(item, (dict, Close)), item
            if isinstance(item, dict):
                assert item["type"] in {"ready", "transcript", "end", "error", "speech", "reconnect"}, item
                if item["type"] == "transcript":
                    committed += [w["word"] for w in item["committed"]]
                if item["type"] == "end":
                    assert item["text"].split() == "".join(committed).split()
    if session.processor is not None and session.state is not SessionState.ENDED:
        assert "".join(committed).strip() == session.processor.committed_text.strip()[:len("".join(committed).strip())]


@FUZZ
@given(st.lists(st.integers(1, 12000), min_size=1, max_size=40), st.booleans())
def test_any_frame_boundaries_commit_each_word_once_in_order(frames, decode_often):
    """However the audio is cut into frames, and whenever decodes run, every accepted sample is on the
    timeline once and the committed words are the timeline's, each once, in order."""
    audio = 0.1 * np.sin(2 * np.pi * 200 * np.arange(sum(frames)) / SAMPLE_RATE).astype(np.float32)
    processor = StreamProcessor(config())
    events, at = [], 0
    for size in frames:
        processor.feed(audio[at:at + size])
        at += size
        if decode_often:
            events += run_until_idle(processor, STEADY)
    assert processor.audio_seconds == at / SAMPLE_RATE
    processor.finish()
    events += run_until_idle(processor, STEADY)
    words = [w for e in events for w in e.committed]
    assert [w.word for w in words] == [w.word for w in WORDS if w.end <= at / SAMPLE_RATE]
    starts = [w.start for w in words]
    assert starts == sorted(starts)
