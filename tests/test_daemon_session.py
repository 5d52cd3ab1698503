"""Protocol v1 session state machine, without any network: every bad input is a plain call."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.config import StreamConfig
from streamer.daemon.session import Session
from streamer.protocol import Close, CloseCode, StartError, StartParams, parse_start
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import Word
from support import drive_session, pcm16

WORDS = [Word(" one", 0.3, 0.7), Word(" two", 1.2, 1.6), Word(" three", 2.1, 2.6), Word(" four", 3.2, 3.6),
         Word(" five", 4.4, 4.9)]


def config() -> StreamConfig:
    return StreamConfig(use_vad=False, min_chunk=1.0, max_buffer=20.0, trim_to=10.0)


def new_session(**kwargs) -> Session:
    return Session("s1", config(), model="scripted", **kwargs)


def kinds(items: list) -> list[str]:
    return [i["type"] if isinstance(i, dict) else f"close:{i.code}" for i in items]


def codes(items: list) -> list[str]:
    return [i["code"] for i in items if isinstance(i, dict) and i["type"] == "error"]


def test_start_defaults_and_ready():
    s = new_session()
    out = s.receive_text(json.dumps({"type": "start"}))
    assert out == [{"type": "ready", "session": "s1", "protocol": 1, "model": "scripted", "sample_rate": 16000}]
    assert s.params == StartParams()


@pytest.mark.parametrize("fields, fragment", [
    ({"sample_rate": 7999}, "sample_rate"), ({"sample_rate": 48001}, "sample_rate"),
    ({"sample_rate": "fast"}, "integer"), ({"sample_rate": True}, "integer"), ({"sample_rate": 16000.5}, "integer"),
    ({"encoding": "mp3"}, "encoding"), ({"channels": 3}, "channels"), ({"channels": 0}, "channels"),
    ({"task": "dance"}, "task"), ({"language": 5}, "language"), ({"language": "en; rm -rf"}, "language"),
    ({"language": "en,"}, "language"), ({"language": ["en", 5]}, "language"), ({"language": []}, "language"),
])
def test_invalid_start_is_fatal_1003(fields, fragment):
    s = new_session()
    out = s.receive_text(json.dumps({"type": "start", **fields}))
    assert codes(out) == ["invalid_start"] and fragment in out[0]["message"]
    assert out[-1] == Close(CloseCode.UNSUPPORTED, "invalid start")
    assert s.ended


def test_query_strings_parse_like_json():
    params = parse_start({"sample_rate": "44100", "channels": "2", "encoding": "pcm_f32le", "language": "null"})
    assert params == StartParams(44100, "pcm_f32le", 2, None, "transcribe")
    assert parse_start({"language": "EN"}).language == "en"
    among = parse_start({"language": "en, DE,en"}).language
    assert among == parse_start({"language": ["en", "de"]}).language == "en,de"
    with pytest.raises(StartError):
        parse_start({"sample_rate": "-1"})


@pytest.mark.parametrize("text, code", [
    ("not json", "invalid_json"), ("[1, 2]", "invalid_json"), ('"start"', "invalid_json"),
    ('{"type": "pause"}', "unknown_type"), ('{"no_type": 1}', "unknown_type"),
])
def test_bad_text_frames_are_not_fatal(text, code):
    s = new_session()
    s.receive_text('{"type": "start"}')
    out = s.receive_text(text)
    assert codes(out) == [code] and len(out) == 1
    assert s.state == "started"
    assert s.receive_binary(pcm16(0.1)) == []


def test_binary_before_start_is_fatal_1008():
    s = new_session()
    out = s.receive_binary(pcm16(0.1))
    assert codes(out) == ["not_started"] and out[-1].code == CloseCode.POLICY


def test_autostart_from_query_parameters():
    s = new_session(defaults=StartParams(sample_rate=8000), autostart=True)
    out = s.receive_binary(pcm16(0.5, rate=8000))
    assert kinds(out) == ["ready"] and out[0]["sample_rate"] == 8000
    s.receive_text('{"type": "stop"}')  # flushes the resampler's filter delay
    assert s.audio_seconds == pytest.approx(0.5, abs=0.01)


def test_second_start_is_ignored():
    s = new_session()
    s.receive_text('{"type": "start", "sample_rate": 16000}')
    out = s.receive_text('{"type": "start", "sample_rate": 8000}')
    assert codes(out) == ["already_started"] and len(out) == 1
    assert s.params.sample_rate == 16000 and s.state == "started"


@pytest.mark.parametrize("encoding, width", [("pcm_s16le", 2), ("pcm_f32le", 4)])
def test_partial_samples_are_buffered_not_dropped(encoding, width):
    s = new_session()
    s.receive_text(json.dumps({"type": "start", "encoding": encoding}))
    samples = np.linspace(-0.5, 0.5, 1601, dtype=np.float32)
    data = (samples * 32767).astype("<i2").tobytes() if width == 2 else samples.astype("<f4").tobytes()
    cuts = [0, 1, 2, 3, 5, 1001, 2999, len(data)]
    for a, b in zip(cuts, cuts[1:]):
        assert s.receive_binary(data[a:b]) == []
    assert s.processor.audio_seconds * 16000 == pytest.approx(1601)


def test_stereo_frames_split_inside_a_frame():
    s = new_session()
    s.receive_text('{"type": "start", "channels": 2}')
    data = pcm16(1.0, channels=2)
    for i in range(0, len(data), 333):
        s.receive_binary(data[i:i + 333])
    assert s.audio_seconds == pytest.approx(1.0, abs=1e-3)


def test_nan_and_inf_are_replaced_and_reported_once():
    s = new_session()
    s.receive_text('{"type": "start", "encoding": "pcm_f32le"}')
    bad = np.array([0.1, np.nan, np.inf, -np.inf, 0.2] * 100, dtype="<f4").tobytes()
    out = s.receive_binary(bad)
    assert codes(out) == ["invalid_audio"] and s.state == "started"
    assert s.receive_binary(bad) == []  # once per session
    assert s.audio_seconds == pytest.approx(1000 / 16000)


def test_frame_over_limit_is_fatal_1009():
    s = new_session(max_frame_bytes=4096)
    s.receive_text('{"type": "start"}')
    out = s.receive_binary(b"\0" * 4097)
    assert codes(out) == ["frame_too_large"] and out[-1].code == CloseCode.TOO_BIG
    assert s.receive_binary(b"\0" * 4096) == []


def test_stop_commits_every_word_then_end_and_close():
    engine = ScriptedEngine(timeline_script(WORDS, unstable_tail=True))
    s = new_session()
    s.receive_text('{"type": "start"}')
    data = pcm16(6.0)  # the scripted tail is unstable within 1 s of the window end
    events = []
    for i in range(0, len(data), 3200):
        events += s.receive_binary(data[i:i + 3200])
        events += drive_session(s, engine)
    events += s.receive_text('{"type": "stop"}')
    events += drive_session(s, engine)
    assert kinds(events)[-2:] == ["end", f"close:{CloseCode.NORMAL}"]
    transcripts = [e for e in events if isinstance(e, dict) and e["type"] == "transcript"]
    committed = [w["word"] for e in transcripts for w in e["committed"]]
    assert committed == [w.word for w in WORDS]  # each word once, in order, none revised
    assert [e["seq"] for e in transcripts] == list(range(1, len(transcripts) + 1))
    end = events[-2]
    assert end["text"] == "one two three four five" and end["audio_seconds"] == pytest.approx(6.0, abs=0.01)
    assert s.ended and s.next_request() is None
    assert codes(s.receive_binary(pcm16(0.1))) == ["stopped"]


def test_stop_before_start_ends_cleanly():
    s = new_session()
    out = s.receive_text('{"type": "stop"}')
    assert kinds(out) == ["end", f"close:{CloseCode.NORMAL}"] and out[0]["text"] == ""


def test_resampled_input_keeps_the_audio_timeline():
    s = new_session()
    s.receive_text('{"type": "start", "sample_rate": 44100, "channels": 2}')
    data = pcm16(2.0, rate=44100, channels=2)
    for i in range(0, len(data), 8820):
        s.receive_binary(data[i:i + 8820])
    s.receive_text('{"type": "stop"}')
    assert s.audio_seconds == pytest.approx(2.0, abs=0.01)


def test_engine_failure_ends_only_this_session():
    s = new_session()
    s.receive_text('{"type": "start"}')
    s.receive_binary(pcm16(1.5))
    assert s.next_request() is not None
    out = s.fail(RuntimeError("boom"))
    assert codes(out) == ["internal_error"] and out[-1].code == 1011 and s.ended


# ----------------------------------------------------------------------------- resume
def resumable(tokens=None, **kwargs) -> Session:
    from streamer.daemon.resume import ResumeTokens, TokenResumer

    clock = kwargs.pop("clock", lambda: 1000.0)
    resumer = TokenResumer(tokens or ResumeTokens("secret"), 30.0, clock)
    return Session(kwargs.pop("sid", "s1"), config(), model="scripted", resumer=resumer, **kwargs)


@pytest.mark.parametrize("context", [0.0, 1.0])
def test_a_resumed_stream_continues_the_timeline_seq_and_text_without_repeating_a_word(context):
    """``context`` seconds of committed audio replayed before the resume point are decoded as
    context: the words heard there ("two", partly "one") are not committed again."""
    from streamer.daemon.resume import ResumeTokens

    engine = ScriptedEngine(timeline_script(WORDS))
    tokens = ResumeTokens("secret")
    first = resumable(tokens)
    out = first.receive_text('{"type": "start"}')
    assert out[0]["resume"]
    events = []
    for second_of_audio in range(3):
        first.receive_binary(pcm16(1.0))
        events += [m for m in drive_session(first, engine) if m["type"] == "transcript"]
    last = events[-1]
    committed = [w["word"] for e in events for w in e["committed"]]
    assert committed == [" one", " two"] and last["committed_until"] == pytest.approx(1.6, abs=0.01)
    # the connection drops; a new one (any daemon with the same secret) resumes from the last event
    audio = np.frombuffer(pcm16(5.0), dtype="<i2")
    retained = audio[int((last["committed_until"] - context) * 16000):].tobytes()
    second = resumable(tokens, sid="fresh")
    claim = {"session": "s1", "token": last["resume"], "seq": last["seq"], "committed_until": last["committed_until"],
             "retained_seconds": len(retained) / 32000, "context_seconds": context}
    ready = second.receive_text(json.dumps({"type": "start", "resume": claim}))
    assert ready[0]["session"] == "s1" and ready[0]["resumed"] is True
    second.receive_binary(retained)
    later = drive_session(second, engine)
    later += second.stop()
    later = [m for m in later + drive_session(second, engine) if isinstance(m, dict)]
    transcripts = [m for m in later if m["type"] == "transcript"]
    assert transcripts[0]["seq"] == last["seq"] + 1
    words = [w for e in transcripts for w in e["committed"]]
    assert [w["word"].strip(" .") for w in words] == ["three", "four", "five"]   # nothing twice, nothing lost
    assert words[0]["start"] == pytest.approx(2.1, abs=0.05)                     # on the original timeline
    assert later[-1]["type"] == "end" and later[-1]["audio_seconds"] == pytest.approx(5.0, abs=0.01)


@pytest.mark.parametrize("change, code", [
    ({"token": "r1.garbage.sig"}, "resume_invalid"),
    ({"session": "someone-else"}, "resume_invalid"),
    ({"committed_until": 99.0}, "resume_mismatch"),
    ({"retained_seconds": 31.0}, "resume_too_long"),
    ({"context_seconds": 0.5}, "resume_mismatch"),     # before the stream's start
    ({"context_seconds": 6.0, "retained_seconds": 8.0}, "resume_mismatch"),
    ({"expired": True}, "resume_expired"),
])
def test_a_bad_resume_is_refused_clearly_and_the_connection_starts_fresh(change, code):
    from streamer.daemon.resume import ResumeTokens

    tokens = ResumeTokens("secret", ttl=60)
    first = resumable(tokens)
    token = first.receive_text('{"type": "start"}')[0]["resume"]
    claim = {"session": "s1", "token": token, "seq": 0, "committed_until": 0.0, "retained_seconds": 1.0}
    claim.update({k: v for k, v in change.items() if k != "expired"})
    later = 1000.0 + (120 if change.get("expired") else 0)
    second = resumable(tokens, sid="fresh", clock=lambda: later)
    out = second.receive_text(json.dumps({"type": "start", "resume": claim}))
    assert codes(out) == [code] and out[-1]["type"] == "ready" and out[-1]["session"] == "fresh"
    assert second.state.value == "started" and second.resumed is None


def test_a_token_from_another_secret_is_not_accepted():
    from streamer.daemon.resume import ResumeTokens

    token = resumable(ResumeTokens("one")).receive_text('{"type": "start"}')[0]["resume"]
    other = resumable(ResumeTokens("two"), sid="fresh")
    out = other.receive_text(json.dumps({"type": "start", "resume": {"token": token, "committed_until": 0.0}}))
    assert codes(out) == ["resume_invalid"]
