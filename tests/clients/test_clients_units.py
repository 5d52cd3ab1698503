"""Fast checks of the client library pieces that need no daemon: punctuation, subtitles, endpoint
resolution, backoff, WAV-on-a-pipe parsing, transcript folding and terminal rendering."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from client_helpers import DICTATION_WAV
from streamer import subtitles
from streamer_clients.capture import CaptureError, read_wav_header
from streamer_clients.captions import LineRenderer, LiveRenderer, ends_sentence
from streamer_clients.client import Backoff, Endpoint, Transcript, Word, resolve_endpoint
from streamer_clients.overlay import streams_for
from streamer_clients.punctuation import SpokenPunctuation
from streamer_clients.typer import command_for


def spoken(*batches: list[str], enabled: bool = True) -> str:
    p = SpokenPunctuation(enabled)
    return "".join(p.feed(batch) for batch in batches) + p.flush()


def test_spoken_punctuation_replaces_whisper_marks_and_spans_batches() -> None:
    assert spoken([" Hello,", " comma,", " world", " period."]) == "Hello, world."
    assert spoken([" test", " period.", " New"], [" line.", " next", " question"], [" mark"]) == "test.\nNext?"
    assert spoken([" a", " new", " car."]) == "a new car."  # "new" alone is just a word
    assert spoken([" one", " new", " paragraph", " two"]) == "one\n\nTwo"
    # the daemon commits a held sentence mark as its own item once audio after it is heard
    assert spoken([" test", " new", " line"], ["."], [" Thank", " you."]) == "test\nThank you."
    assert spoken([" Hi", " comma"], ["."], [" there"]) == "Hi, there"
    assert spoken([" Hello", " comma", " world"], enabled=False) == "Hello comma world"


def _words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(w, s, e) for w, s, e in spec]


def test_subtitles_cut_at_sentences_and_pauses_and_round_trip() -> None:
    words = _words((" Hello", 0.0, 0.4), (" there.", 0.5, 0.9), (" After", 1.0, 1.3), (" a", 1.4, 1.5),
                   (" pause", 4.0, 4.5))
    cues = subtitles.cues(words)
    assert [c.text for c in cues] == ["Hello there.", "After a", "pause"]
    parsed = subtitles.parse_srt(subtitles.to_srt(words))
    assert [(c.start, c.end, c.text) for c in parsed] == [(c.start, c.end, c.text) for c in cues]
    assert subtitles.to_vtt(words).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nHello there.\n")
    assert subtitles.stamp(3725.5, ",") == "01:02:05,500"
    with pytest.raises(ValueError):
        subtitles.parse_srt("1\n00:00:01 --> 00:00:02\nbad timing\n")


def test_a_mark_committed_after_its_word_stays_in_the_words_cue() -> None:
    """Protocol v1 commits a held trailing mark as its own item; it never starts a cue of its own."""
    long_cue = _words(*[(f" word{i:02d}", i * 0.3, i * 0.3 + 0.2) for i in range(11)], (" word11x", 3.3, 3.5))
    assert len("".join(w.word for w in long_cue).strip()) == subtitles.MAX_CUE_CHARS  # full: one more char breaks
    words = long_cue + _words((".", 3.5, 3.5), (" Next", 5.5, 5.8))
    assert [c.text for c in subtitles.cues(words)] == ["".join(w.word for w in long_cue).strip() + ".", "Next"]


def test_endpoint_precedence_flags_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "client.toml"
    cfg.write_text('url = "ws://file:1"\ntoken = "filetoken"\n')
    args = argparse.Namespace(url=None, token=None, client_config=cfg)
    assert resolve_endpoint(args, environ={}) == Endpoint("ws://file:1", "filetoken")
    assert resolve_endpoint(args, environ={"STREAMER_URL": "ws://env:2"}) == Endpoint("ws://env:2", "filetoken")
    args.url, args.token = "ws://flag:3", "flagtoken"
    assert resolve_endpoint(args, environ={"STREAMER_URL": "ws://env:2"}) == Endpoint("ws://flag:3", "flagtoken")
    empty = argparse.Namespace(url=None, token=None, client_config=tmp_path / "missing.toml")
    assert resolve_endpoint(empty, environ={}) == Endpoint("ws://127.0.0.1:8765", None)
    endpoint = Endpoint("http://host:9/", "t")
    assert endpoint.ws_url("/v1/captions", source="mic", session=None) == "ws://host:9/v1/captions?source=mic"
    assert endpoint.headers() == {"Authorization": "Bearer t"}


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(first=0.5, maximum=4.0)
    delays = [b.next_delay() for _ in range(6)]
    assert delays[0] < 0.7 and delays[2] > 1.5 and max(delays) <= 4.0 * 1.2
    b.reset()
    assert b.next_delay() < 0.7


class Pipe(io.RawIOBase):
    """A non-seekable stream, like standard input from a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(len(buffer), 1000))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_wav_header_on_a_pipe() -> None:
    data = DICTATION_WAV.read_bytes()
    pipe = io.BufferedReader(Pipe(data))
    fmt, rest = read_wav_header(pipe, pipe.read(4))
    assert (fmt.sample_rate, fmt.encoding, fmt.channels) == (16000, "pcm_s16le", 1)
    assert len(rest) + len(pipe.read()) == len(data) - 44
    with pytest.raises(CaptureError):
        read_wav_header(io.BytesIO(b"RIFF\0\0\0\0WAVEdata\0\0\0\0"), b"")


def test_transcript_folds_events_on_one_timeline() -> None:
    t = Transcript()
    t.apply({"committed": [{"word": " Hi", "start": 0.1, "end": 0.3}], "tentative": [{"word": " th", "start": 0.4,
                                                                                       "end": 0.5}]})
    assert (t.committed_text, t.tentative_text) == ("Hi", " th")
    t.finish_segment()
    t.offset = 10.0  # a reconnected session restarts its clock
    new = t.apply({"committed": [{"word": " again", "start": 0.2, "end": 0.6}], "tentative": []})
    assert new[0].start == pytest.approx(10.2) and t.committed_text == "Hi again" and t.tentative_text == ""


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_renderers() -> None:
    out = io.StringIO()
    lines = LineRenderer(out)
    t = Transcript()
    lines.update(t, _words((" One", 0, 0.2), (" two.", 0.3, 0.5), (" Three", 0.6, 0.8)))
    lines.update(t, _words((" four", 3.0, 3.2)))  # after a pause: a new line
    lines.finish(t)
    assert out.getvalue() == "One two.\nThree\nfour\n"
    assert ends_sentence('He said "yes."') and not ends_sentence("and")

    tty = FakeTty()
    live = LiveRenderer(tty, err=io.StringIO())
    t.tentative = _words((" maybe", 1.0, 1.2))
    live.update(t, _words((" Hello", 0.0, 0.5)))
    assert tty.getvalue().endswith("\r\x1b[KHello\x1b[2m maybe\x1b[0m")
    t.tentative = []
    live.update(t, _words((" world", 0.6, 0.9)))
    assert tty.getvalue().endswith("\r\x1b[KHello world")  # the tentative tail was rewritten in place


def test_overlay_rows_and_typer_commands() -> None:
    assert [s.label for s in streams_for("both", None)] == ["Me", "Others"]
    assert streams_for("desk", None)[0].source == "desk"
    assert streams_for(None, "abcdef123456")[0].session == "abcdef123456"
    assert command_for("xdotool", "hi\n")[-2:] == ["--", "hi\n"]
    assert command_for("wtype", "-x") == ["wtype", "--", "-x"]
