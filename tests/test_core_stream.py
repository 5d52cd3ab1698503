"""StreamProcessor policy with a scripted engine: milliseconds, no model."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from streamer.config import StreamConfig
from streamer.core import StreamProcessor, run_until_idle
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest, Hypothesis, Word
from streamer.vad import ScriptedDetector
from support import feed_and_drain, noise
from support import timeline as _timeline

timeline = partial(_timeline, start=1.0, step=0.4)  # this file's words: from 1 s, one every 0.4 s

SR = SAMPLE_RATE


def committed_of(events) -> list[Word]:
    return [w for e in events for w in e.committed]


def test_finish_commits_every_word_and_events_are_consistent():
    words = timeline(20)
    engine = ScriptedEngine(timeline_script(words, unstable_tail=True))
    proc = StreamProcessor(StreamConfig(), ScriptedDetector([(0.9, 9.2)]))
    events = feed_and_drain(proc, engine, noise(11))
    assert proc.done
    assert [w.word for w in proc.committed_words][:19] == [w.word for w in words][:19]
    assert committed_of(events) == proc.committed_words          # events carry each commit exactly once
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].tentative == ()
    msg = events[0].to_message()
    assert msg["type"] == "transcript" and set(msg) == {"type", "seq", "committed", "tentative", "language",
                                                        "audio_seconds"}


def test_committed_words_are_never_revised():
    """Whatever the engine says later, an emitted commit stays as it was, in order, without repeats."""
    rng = np.random.default_rng(1)
    words = timeline(60, step=0.3)

    def flaky(request: DecodeRequest) -> Hypothesis:
        hyp = timeline_script(words, unstable_tail=True)(request)
        ws = list(hyp.words)
        if ws and rng.random() < 0.4:   # sometimes drop, change or truncate words
            i = int(rng.integers(0, len(ws)))
            choice = rng.integers(0, 3)
            if choice == 0:
                ws[i] = Word(" changed", ws[i].start, ws[i].end)
            elif choice == 1:
                ws = ws[:i]
            else:
                del ws[i]
        return Hypothesis(tuple(ws), "en", -0.2, 0.01, 1.2)

    proc = StreamProcessor(StreamConfig(min_chunk=0.5, trim_to=4, max_buffer=8),
                           ScriptedDetector([(0.9, 19.0)]))
    seen: list[Word] = []
    for i in range(0, 20 * SR, 1600):
        proc.feed(noise(0.1, seed=i))
        for event in run_until_idle(proc, ScriptedEngine(flaky)):
            assert proc.committed_words[:len(seen)] == seen      # earlier commits untouched
            seen += list(event.committed)
    proc.finish()
    for event in run_until_idle(proc, ScriptedEngine(flaky)):
        seen += list(event.committed)
    assert proc.committed_words == seen
    starts = [w.start for w in seen]
    assert starts == sorted(starts)
    keys = [w.word for w in seen if w.word != " changed"]
    assert len(keys) == len(set(keys))                            # nothing committed twice


def test_end_silence_closes_utterance_and_commits_all_at_once():
    words = timeline(5, start=1.0) + timeline(5, start=6.0, prefix="v")
    engine = ScriptedEngine(timeline_script(words))
    cfg = StreamConfig(end_silence=0.5, min_chunk=1.0)
    proc = StreamProcessor(cfg, ScriptedDetector([(0.95, 2.95), (5.95, 8.0)]))
    events = feed_and_drain(proc, engine, noise(3.6), finish=False)
    assert [w.word.strip() for w in proc.committed_words] == [f"w{i}" for i in range(5)]
    assert events[-1].tentative == ()
    assert proc.buffer_seconds == 0.0                             # utterance closed: buffer reset
    calls_before = len(engine.calls)
    feed_and_drain(proc, engine, noise(2.0), finish=False)                # 3.6 .. 5.6 s: silence
    assert len(engine.calls) == calls_before
    feed_and_drain(proc, engine, noise(4.0))
    assert [w.word.strip() for w in proc.committed_words][5:] == [f"v{i}" for i in range(5)]
    # every decode window starts near speech: padding, not the preceding silence
    for call in engine.calls:
        assert call.offset >= 0.95 - cfg.speech_pad - 0.04


def test_long_pause_is_cut_out_of_the_buffer():
    words = timeline(3, start=1.0) + timeline(3, start=5.0, prefix="v")
    engine = ScriptedEngine(lambda r: Hypothesis((), "en", -0.2, 0.01, 1.0))
    # pause_commit 0: no decode at the pause, one final decode of the whole utterance
    cfg = StreamConfig(end_silence=3.0, speech_pad=0.2, min_chunk=5.0, pause_commit=0)
    proc = StreamProcessor(cfg, ScriptedDetector([(1.0, 2.2), (5.0, 6.2)]))
    feed_and_drain(proc, engine, noise(9.5))
    final = engine.calls[-1]
    # one utterance (pause 2.8 s < end_silence); the 2.8 s pause keeps only 2 x pad
    assert len(engine.calls) == 1
    assert final.audio.size / SR == pytest.approx(1.2 + 1.2 + 4 * 0.2, abs=0.15)
    assert final.offset == pytest.approx(0.8, abs=0.04)
    del words


def test_timemap_maps_words_across_a_cut_pause():
    words = timeline(2, start=1.0) + timeline(2, start=5.0, prefix="v")
    seen = []

    def script(request: DecodeRequest) -> Hypothesis:
        seen.append(request)
        # the window holds [0.8, 2.2+0.2] then [4.8, ...]: the 3rd word lies after the cut
        return Hypothesis((Word(" w0", 0.2, 0.5), Word(" v0", 2.0, 2.3)), "en", -0.2, 0.01, 1.0)

    proc = StreamProcessor(StreamConfig(end_silence=4.0, min_chunk=5.0, speech_pad=0.2, pause_commit=0),
                           ScriptedDetector([(1.0, 1.8), (5.0, 5.8)]))
    feed_and_drain(proc, ScriptedEngine(script), noise(11.0))
    assert len(seen) == 1
    # window = [0.77, 2.02) (speech 1.0-1.8 with ~0.22 s pads), then the cut, then [4.77, ...)
    first_run = 1.8 + 0.224 - 0.768
    w0, v0 = proc.committed_words
    assert w0.start == pytest.approx(0.768 + 0.2, abs=0.01)
    assert v0.start == pytest.approx(4.768 + (2.0 - first_run), abs=0.04)
    del words


def test_buffer_cap_holds_on_a_ten_minute_stream():
    words = timeline(int(590 / 0.4), start=1.0)
    engine = ScriptedEngine(timeline_script(words, unstable_tail=True))
    cfg = StreamConfig(use_vad=False, max_buffer=20.0, trim_to=10.0, min_chunk=1.0)
    proc = StreamProcessor(cfg)
    block = np.zeros(SR, dtype=np.float32)
    for second in range(600):
        proc.feed(block)
        run_until_idle(proc, engine)
        assert proc.buffer_seconds <= cfg.max_buffer
    proc.finish()
    run_until_idle(proc, engine)
    assert proc.max_window_seconds <= cfg.max_buffer
    assert max(c.audio.size for c in engine.calls) / SR <= cfg.max_buffer
    got = [w.word for w in proc.committed_words]
    assert got[:-1] == [w.word for w in words][:len(got) - 1]
    assert len(got) == len(words)
    assert proc.audio_seconds == 600.0 and proc.done


def test_buffer_cap_holds_when_hypotheses_never_agree():
    """An engine that never agrees with itself: forced commits keep the window under the cap."""
    counter = iter(range(10**6))

    def unstable(request: DecodeRequest) -> Hypothesis:
        n = int(request.audio.size / SR / 0.5)
        k = next(counter)
        return Hypothesis(tuple(Word(f" x{k}_{i}", i * 0.5, i * 0.5 + 0.4) for i in range(n)), "en", -0.3, 0.01, 1.3)

    cfg = StreamConfig(use_vad=False, max_buffer=12.0, trim_to=6.0)
    proc = StreamProcessor(cfg)
    engine = ScriptedEngine(unstable)
    for _ in range(120):
        proc.feed(np.zeros(SR, dtype=np.float32))
        run_until_idle(proc, engine)
        assert proc.buffer_seconds <= cfg.max_buffer + 1.0
    assert max(c.audio.size for c in engine.calls) / SR <= cfg.max_buffer
    assert len(proc.committed_words) > 100   # forced commits happened
    starts = [w.start for w in proc.committed_words]
    assert starts == sorted(starts)


def test_slow_engine_never_sees_a_window_over_the_cap():
    """Audio piles up while a decode is in flight; the next windows still respect the cap."""
    words = timeline(100, start=0.5)
    engine = ScriptedEngine(timeline_script(words))
    cfg = StreamConfig(use_vad=False, max_buffer=10.0, trim_to=5.0)
    proc = StreamProcessor(cfg)
    proc.feed(np.zeros(2 * SR, dtype=np.float32))
    request = proc.next_request()
    proc.feed(np.zeros(40 * SR, dtype=np.float32))                 # 40 s arrive during one decode
    assert proc.next_request() is None                              # one in flight at a time
    proc.complete(engine.decode(request))
    proc.finish()
    run_until_idle(proc, engine)
    assert max(c.audio.size for c in engine.calls) <= 10 * SR
    assert [w.word for w in proc.committed_words] == [w.word for w in words]


def test_update_scheduling_by_min_chunk():
    engine = ScriptedEngine(timeline_script(timeline(30)))
    proc = StreamProcessor(StreamConfig(use_vad=False, min_chunk=2.0))
    feed_and_drain(proc, engine, noise(10.0), chunk=0.1, finish=False)
    assert len(engine.calls) == 5
    proc2 = StreamProcessor(StreamConfig(use_vad=False, min_chunk=0.5))
    engine2 = ScriptedEngine(timeline_script(timeline(30)))
    feed_and_drain(proc2, engine2, noise(10.0), chunk=0.1, finish=False)
    assert len(engine2.calls) == 20


def test_silence_is_never_decoded_with_scripted_vad():
    engine = ScriptedEngine(timeline_script([]))
    proc = StreamProcessor(StreamConfig(), ScriptedDetector([]))
    feed_and_drain(proc, engine, noise(30.0))
    assert engine.calls == [] and proc.done
    assert proc.decoded_seconds == pytest.approx(proc.audio_seconds, abs=0.04)


def test_vad_blip_is_not_decoded():
    engine = ScriptedEngine(timeline_script([Word(" you", 1.0, 1.1)]))
    proc = StreamProcessor(StreamConfig(), ScriptedDetector([(1.0, 1.1)]))
    feed_and_drain(proc, engine, noise(4.0))
    assert engine.calls == []


def hypothesis(*ws: Word, **kw) -> Hypothesis:
    fields = dict(language="en", avg_logprob=-0.2, no_speech_prob=0.01, compression_ratio=1.2) | kw
    return Hypothesis(tuple(ws), **fields)


def test_no_speech_hypothesis_commits_nothing_and_resets_prompt():
    calls: list[DecodeRequest] = []
    replies = iter([
        hypothesis(Word(" Hello", 0.2, 0.5), Word(" there.", 0.5, 0.9)),
        hypothesis(Word(" Thank", 0.2, 0.5), Word(" you.", 0.5, 0.9), no_speech_prob=0.9, avg_logprob=-1.5),
        hypothesis(Word(" Again", 0.2, 0.5)),
    ])

    def script(request):
        calls.append(request)
        return next(replies)

    cfg = StreamConfig(end_silence=0.5, min_chunk=10, pause_commit=0)
    proc = StreamProcessor(cfg, ScriptedDetector([(1.0, 2.0), (4.0, 5.0), (7.0, 8.0)]))
    feed_and_drain(proc, ScriptedEngine(script), noise(10.0))
    assert proc.committed_text == "Hello there. Again"
    assert calls[1].prompt == "Hello there."   # the held period (undecided) ends the prompt: Whisper starts a sentence
    assert calls[2].prompt == ""                                   # reset after the suspect one


def test_prompt_is_the_bounded_tail_of_committed_text_before_the_window():
    words = timeline(200, step=0.4)
    inner = timeline_script(words)
    seen: list[tuple[DecodeRequest, list[Word]]] = []

    def script(request: DecodeRequest) -> Hypothesis:
        seen.append((request, proc.committed_words))
        return inner(request)

    proc = StreamProcessor(StreamConfig(use_vad=False, prompt_chars=30))
    feed_and_drain(proc, ScriptedEngine(script), noise(60.0), finish=False)
    request, committed = seen[-1]
    before = "".join(w.word for w in committed if w.end <= request.offset).strip()
    assert 0 < len(request.prompt) <= 30
    assert before.endswith(request.prompt)
    assert before[-len(request.prompt) - 1] == " "                   # starts at a word boundary
    # words whose audio is inside the window are decoded again: never in the prompt
    inside = [w.word.strip() for w in committed if w.start >= request.offset]
    assert inside and not set(inside) & set(request.prompt.split())


def test_repetition_loop_is_truncated():
    loop = [Word(" go", 0.2 + i * 0.1, 0.3 + i * 0.1) for i in range(8)]
    engine = ScriptedEngine(lambda r: hypothesis(Word(" Let's", 0.0, 0.2), *loop))
    proc = StreamProcessor(StreamConfig(min_chunk=10), ScriptedDetector([(1.0, 2.5)]))
    feed_and_drain(proc, engine, noise(4.0))
    assert proc.committed_text == "Let's go"


def test_a_loop_whose_tail_lies_past_the_audio_is_cut_too():
    # the raw hypothesis goes on past the window's audio (dropped as invented): only then does the
    # phrase said twice end the words, as base heard "Printing then for our purpose, printing then ..."
    def script(request: DecodeRequest) -> Hypothesis:
        length = len(request.audio) / 16000
        phrase = [" printing", " then", " for", " our", " purpose,"]
        words = [Word(w, 0.1 + 0.15 * i, 0.2 + 0.15 * i) for i, w in enumerate(phrase * 2)]
        return hypothesis(*words, Word(" may", length + 0.5, length + 0.7), Word(" be", length + 0.8, length + 0.9))

    proc = StreamProcessor(StreamConfig(min_chunk=10), ScriptedDetector([(1.0, 2.5)]))
    feed_and_drain(proc, ScriptedEngine(script), noise(4.0))
    assert proc.committed_text == "printing then for our purpose,"


def test_high_compression_ratio_is_rejected():
    engine = ScriptedEngine(lambda r: hypothesis(Word(" la", 0.2, 0.4), compression_ratio=3.1))
    proc = StreamProcessor(StreamConfig(min_chunk=10), ScriptedDetector([(1.0, 2.5)]))
    feed_and_drain(proc, engine, noise(4.0))
    assert proc.committed_text == "" and len(engine.calls) == 2   # at the pause, and the final one


def test_words_in_vad_nonspeech_are_dropped():
    # speech 3.0-4.0 in a window that (with a long end_silence) spans a pause; a word in the pause is invented
    def script(request: DecodeRequest) -> Hypothesis:
        to_window = lambda t: t - request.offset  # noqa: E731  (no cut pause in this window)
        return hypothesis(Word(" real", to_window(1.2), to_window(1.6)),
                          Word(" ghost", to_window(2.5), to_window(2.8)),
                          Word(" also", to_window(3.2), to_window(3.6)))

    cfg = StreamConfig(end_silence=3.0, speech_pad=0.5, min_chunk=10)   # the 1 s pause stays in the buffer
    proc = StreamProcessor(cfg, ScriptedDetector([(1.0, 2.0), (3.0, 4.0)]))
    feed_and_drain(proc, ScriptedEngine(script), noise(8.0))
    assert proc.committed_text == "real also"


def test_feed_rejects_bad_samples():
    proc = StreamProcessor(StreamConfig(use_vad=False))
    with pytest.raises(ValueError, match="NaN"):
        proc.feed(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="infinite"):
        proc.feed(np.array([np.inf], dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        proc.feed(np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        proc.feed(np.zeros(10, dtype=np.int16))
    with pytest.raises(RuntimeError):
        proc.complete(hypothesis())
    proc.finish()
    with pytest.raises(RuntimeError):
        proc.feed(np.zeros(10, dtype=np.float32))


def test_lag_during_speech_and_silence():
    words = timeline(10)
    engine = ScriptedEngine(timeline_script(words))
    waiting = StreamProcessor(StreamConfig(min_chunk=1.0), ScriptedDetector([(1.0, 5.0)]))
    waiting.feed(noise(4.0))                                       # speech not yet decoded is lag
    assert waiting.audio_seconds - waiting.decoded_seconds == pytest.approx(4.0 - 0.8, abs=0.05)
    proc = StreamProcessor(StreamConfig(min_chunk=1.0), ScriptedDetector([(1.0, 5.0)]))
    feed_and_drain(proc, engine, noise(20.0), finish=False)
    assert proc.audio_seconds - proc.decoded_seconds < 0.1       # silence after speech counts as handled
    proc.feed(noise(0.5))
    assert 0 <= proc.audio_seconds - proc.decoded_seconds < 0.05  # and so does silence as it arrives


def test_language_and_task_reach_the_engine():
    engine = ScriptedEngine(timeline_script(timeline(5)))
    proc = StreamProcessor(StreamConfig(use_vad=False), language="de", task="translate")
    feed_and_drain(proc, engine, noise(3.0))
    assert {(c.language, c.task) for c in engine.calls} == {("de", "translate")}


def test_pause_commits_the_words_before_it_without_waiting_for_agreement():
    """Speech 1.0-3.8, a 0.3 s pause (shorter than end_silence), speech again."""
    words = timeline(7, start=1.0) + timeline(4, start=4.1, prefix="v")
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(min_chunk=5.0, end_silence=0.5), ScriptedDetector([(0.95, 3.75),
                                                                                        (4.05, 5.75)]))
    feed_and_drain(proc, engine, noise(4.0), finish=False)
    # one decode, at the pause, committed all seven words on its own (min_chunk 5 s never came due)
    assert len(engine.calls) == 1
    assert [w.word.strip() for w in proc.committed_words] == [f"w{i}" for i in range(7)]
    feed_and_drain(proc, engine, noise(2.5), finish=False)    # speech resumes, ends; 5.8-6.5 s silence
    assert [w.word.strip() for w in proc.committed_words][7:] == [f"v{i}" for i in range(4)]
    calls = len(engine.calls)
    feed_and_drain(proc, engine, noise(1.0))                   # utterance closes: already settled, no final decode
    assert len(engine.calls) == calls and proc.done


def test_a_pause_window_too_short_for_context_commits_only_by_agreement():
    """1.5 s of speech and a pause: one hypothesis of so little audio is shown, not committed.

    base heard jfk's 1.6 s "ask not" alone as "is not." or "ASK NOT!", and every longer window as
    "Ask not what"; on the 33 LJ clips this rule took streamed WER from 8.2 to 7.4 % (offline 7.2).
    """
    words = timeline(3, start=1.0)
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(min_chunk=5.0, end_silence=2.0), ScriptedDetector([(0.95, 2.25)]))
    feed_and_drain(proc, engine, noise(2.6), finish=False)
    assert len(engine.calls) == 1 and engine.calls[0].audio.size < 2.5 * SR    # the pause decode ran
    assert proc.committed_text == "" and [w.word for w in proc.tentative_words] == [" w0", " w1", " w2"]
    feed_and_drain(proc, engine, noise(0.5))                                   # the final decode commits them
    assert proc.committed_text == "w0 w1 w2"


def test_pause_decode_is_not_triggered_by_a_blip():
    engine = ScriptedEngine(timeline_script([Word(" uh", 1.0, 1.1)]))
    proc = StreamProcessor(StreamConfig(), ScriptedDetector([(1.0, 1.1)]))
    feed_and_drain(proc, engine, noise(3.0))
    assert engine.calls == []


def test_cancel_asks_for_the_same_audio_again():
    engine = ScriptedEngine(timeline_script(timeline(5)))
    proc = StreamProcessor(StreamConfig(use_vad=False))
    proc.feed(noise(1.5))
    first = proc.next_request()
    proc.cancel()                                   # the engine failed
    again = proc.next_request()
    assert again is not None and again.audio.size == first.audio.size and again.offset == first.offset
    proc.complete(engine.decode(again))
    proc.finish()
    proc.finish()                                   # idempotent
    run_until_idle(proc, engine)
    assert proc.done


def test_state_stays_flat_on_a_long_utterance_without_end_silence():
    """20 minutes of speech with only short pauses: one utterance that never closes."""
    words = timeline(int(1190 / 0.4), start=1.0)
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(), ScriptedDetector(lambda t: 0.0 if t % 2.0 > 1.8 else 1.0))
    block = np.zeros(SAMPLE_RATE, dtype=np.float32)
    for _ in range(1200):
        proc.feed(block)
        run_until_idle(proc, engine)
        assert proc.buffer_seconds <= 20.0
        assert len(proc._audio.speech_regions()) < 20  # VAD spans are forgotten as the buffer trims
    assert proc.audio_seconds - proc.decoded_seconds < 2.0
    proc.finish()
    run_until_idle(proc, engine)
    assert [w.word for w in proc.committed_words] == [w.word for w in words]


def test_fed_arrays_are_copied():
    seen = []
    engine = ScriptedEngine(lambda r: seen.append(r.audio.copy()) or hypothesis())
    proc = StreamProcessor(StreamConfig(use_vad=False, min_chunk=1.0))
    frame = np.full(SR // 2, 0.5, dtype=np.float32)
    for _ in range(2):
        proc.feed(frame)
        frame[:] = 0.0                                # the caller reuses its buffer
    run_until_idle(proc, engine)
    assert np.all(seen[0][: SR // 2] == 0.5)


def test_utterance_settled_by_its_pause_decode_needs_no_final_decode():
    words = timeline(7, start=1.0)
    engine = ScriptedEngine(timeline_script(words))
    cfg = StreamConfig(min_chunk=5.0, end_silence=0.5, speech_pad=0.1)   # the pause decode had all the padding
    proc = StreamProcessor(cfg, ScriptedDetector([(0.95, 3.75)]))
    feed_and_drain(proc, engine, noise(6.0), finish=False)
    assert len(engine.calls) == 1 and proc.committed_text == "w0 w1 w2 w3 w4 w5 w6"
    assert proc.buffer_seconds == 0.0
    # with more trailing padding than the pause decode saw, the final decode still runs (it may hear more)
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(min_chunk=5.0, end_silence=0.5, speech_pad=0.3),
                           ScriptedDetector([(0.95, 3.75)]))
    feed_and_drain(proc, engine, noise(6.0), finish=False)
    assert len(engine.calls) == 2 and proc.committed_text == "w0 w1 w2 w3 w4 w5 w6"


def test_only_decodes_that_commit_on_their_own_ask_for_the_commit_beam():
    """Updates are voted on by the next hypothesis; a pause or final decode decides alone (near-ties become text)."""
    words = timeline(12, start=1.0)
    detector = [(0.95, 3.75), (4.05, 5.75)]
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(min_chunk=1.0, commit_beam_size=4), ScriptedDetector(detector))
    feed_and_drain(proc, engine, noise(7.0))
    beams = {(call.offset, round(call.audio.size / SR, 2)): call.beam_size for call in engine.calls}
    assert set(beams.values()) == {None, 4} and len(engine.calls) >= 4
    plain = ScriptedEngine(timeline_script(words))
    feed_and_drain(StreamProcessor(StreamConfig(min_chunk=1.0), ScriptedDetector(detector)), plain, noise(7.0))
    windows = [(call.offset, round(call.audio.size / SR, 2)) for call in plain.calls]
    assert windows == list(beams) and {call.beam_size for call in plain.calls} == {None}


def test_pause_seen_while_a_decode_was_in_flight_still_commits():
    """The engine is busy when the pause happens; the pause decode runs later, after speech resumed."""
    words = timeline(5, start=1.0) + timeline(3, start=3.3, prefix="v")
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(min_chunk=1.0), ScriptedDetector([(0.95, 2.95), (3.25, 5.0)]))
    proc.feed(noise(2.9))
    request = proc.next_request()                     # an update, in flight during the pause
    proc.feed(noise(0.6))                             # 2.9-3.5 s: the pause, then speech again
    proc.complete(engine.decode(request))
    follow = proc.next_request()
    assert follow is not None and follow.offset + follow.audio.size / SR > 3.4
    proc.complete(engine.decode(follow))
    assert proc.committed_text == "w0 w1 w2 w3 w4"    # committed by the late pause decode


def test_unsure_thank_you_on_music_is_dropped():
    """What tiny.en says on music: no-speech 0.68, log-probability -0.77, words at 0.02 and 0.77."""
    engine = ScriptedEngine(lambda r: hypothesis(Word(" Thank", 0.1, 0.3, 0.02), Word(" you.", 0.3, 0.6, 0.77),
                                                 no_speech_prob=0.68, avg_logprob=-0.77))
    proc = StreamProcessor(StreamConfig(), ScriptedDetector([(1.0, 1.6), (5.0, 5.6)]))
    feed_and_drain(proc, engine, noise(8.0))
    assert engine.calls and proc.committed_text == ""


def test_pause_commit_stops_at_an_unsure_word():
    engine = ScriptedEngine(lambda r: hypothesis(Word(" sure", 0.3, 0.6, 0.9), Word(" mumble", 0.7, 1.0, 0.05)))
    proc = StreamProcessor(StreamConfig(min_chunk=5.0, end_silence=2.0), ScriptedDetector([(1.0, 3.4)]))
    feed_and_drain(proc, engine, noise(3.7), finish=False)  # a pause window of over 2.5 s
    assert proc.committed_text == "sure"                   # the pause decode trusted only the sure word
    assert [w.word for w in proc.tentative_words] == [" mumble"]


def test_a_rejected_final_decode_keeps_the_tentative_words():
    """End of stream: if the last decode is rejected as no-speech, the words heard before are committed."""
    from streamer.config import StreamConfig
    from streamer.core.stream import StreamProcessor
    from streamer.engine.scripted import ScriptedEngine
    from streamer.hypothesis import Hypothesis, Word

    words = (Word(" do", 0.1, 0.3), Word(" for", 0.3, 0.5), Word(" your", 0.5, 0.7), Word(" country.", 0.7, 1.2))
    calls = []

    def script(request):
        calls.append(request)
        if len(calls) == 1:  # one accepted hypothesis: nothing agreed yet, all tentative
            return Hypothesis(words=words, language="en", avg_logprob=-0.2, no_speech_prob=0.01)
        return Hypothesis(words=words, language="en", avg_logprob=-1.5, no_speech_prob=0.95)  # rejected

    engine = ScriptedEngine(script)
    processor = StreamProcessor(StreamConfig(use_vad=False, min_chunk=1.0))
    processor.feed(np.zeros(16000 * 1, dtype=np.float32))
    processor.complete(engine.decode(processor.next_request()))
    assert processor.committed_words == [] and [w.word for w in processor.tentative_words][-1] == " country."
    processor.finish()
    while (request := processor.next_request()) is not None:
        processor.complete(engine.decode(request))
    assert processor.done
    assert processor.committed_text == "do for your country."


def test_a_rejected_forced_decode_keeps_the_words_before_the_cut():
    """At the buffer cap the window's first part is cut away: if that decode is rejected, the words
    earlier decodes heard there are committed rather than trimmed away unheard."""
    words = tuple(Word(f" w{i}", 0.5 + i * 0.5, 0.9 + i * 0.5) for i in range(22))  # 0.5 s .. 11.4 s
    hear = timeline_script(words)

    def script(request: DecodeRequest) -> Hypothesis:
        seen = request.audio.size / SR
        guess = Word(f" guess{len(engine.calls)}", seen - 0.3, seen, 0.9)  # never agrees: nothing commits
        heard = hear(request)
        heard = replace(heard, words=heard.words + (guess,))
        if seen > 9.97:  # the forced decode of the cap's 10 s: rejected as no-speech
            return replace(heard, avg_logprob=-1.5, no_speech_prob=0.95)
        return heard

    cfg = StreamConfig(use_vad=False, min_chunk=9.9, agreement_n=3, max_buffer=10.0, trim_to=5.0)
    proc = StreamProcessor(cfg)
    engine = ScriptedEngine(script)
    proc.feed(np.zeros(int(9.95 * SR), dtype=np.float32))
    run_until_idle(proc, engine)             # one accepted decode of 9.95 s: everything tentative
    assert proc.committed_words == [] and len(proc.tentative_words) == 20
    proc.feed(np.zeros(int(1.0 * SR), dtype=np.float32))
    run_until_idle(proc, engine)             # over the cap: forced decode, rejected
    cut = cfg.max_buffer - cfg.trim_to
    assert [w.word for w in proc.committed_words] == [w.word for w in words if w.end <= cut]
    assert proc.buffer_seconds <= cfg.max_buffer


def test_a_final_decode_that_hears_nothing_with_a_prompt_is_retried_without_it():
    """Whisper can end at once when the prompt seems to cover the audio; the utterance's last
    window leaves the buffer after its final decode, so it is decoded again without the prompt."""
    words = timeline(20, start=0.5, step=0.5)  # 0.5 s .. 10.3 s
    hear = timeline_script(words)

    def script(request: DecodeRequest) -> Hypothesis:
        if request.prompt and request.audio.size / SR > 8.0:  # the big final window, prompted: nothing
            return Hypothesis((), "en", -1.4, 0.02)
        return hear(request)

    engine = ScriptedEngine(script)
    proc = StreamProcessor(StreamConfig(use_vad=False, min_chunk=2.0, pause_commit=0, trim_to=3.0, max_buffer=12.0))
    proc.feed(np.zeros(2 * SR, dtype=np.float32))
    run_until_idle(proc, engine)
    proc.feed(np.zeros(2 * SR, dtype=np.float32))
    run_until_idle(proc, engine)   # two agreeing hypotheses: the first words commit, the buffer is trimmed
    assert proc.committed_words
    proc.feed(np.zeros(int(6.8 * SR), dtype=np.float32))
    proc.finish()
    run_until_idle(proc, engine)
    assert proc.done
    assert [w.word for w in proc.committed_words] == [w.word for w in words]
    finals = engine.calls[-2:]
    assert finals[0].prompt and finals[1].prompt == "" and finals[0].offset == finals[1].offset


def test_a_final_decode_that_loops_on_its_prompt_is_retried_without_it():
    """tiny.en prompted ". Ask, not" heard "what your country can do for you" as ". . . . . . ." (rejected
    by the compression ratio): the utterance's only decode, so without a retry the words were lost."""
    hear = timeline_script(timeline(4, start=0.6) + timeline(4, start=4.6, prefix="v"))

    def script(request: DecodeRequest) -> Hypothesis:
        if request.offset >= 3.0 and request.prompt:
            dots = tuple(Word(" .", 0.1 * i, 0.1 * i + 0.05) for i in range(15))
            return Hypothesis(dots, "en", -0.3, 0.02, compression_ratio=4.0)
        return hear(request)

    engine = ScriptedEngine(script)
    proc = StreamProcessor(StreamConfig(min_chunk=10.0, end_silence=0.5, pause_commit=0),  # final decodes only
                           ScriptedDetector([(0.5, 2.5), (4.5, 6.5)]))
    feed_and_drain(proc, engine, noise(8.0))
    proc.finish()
    run_until_idle(proc, engine)
    text = [w.word.strip(" .") for w in proc.committed_words if w.word.strip(" .")]
    assert text == ["w0", "w1", "w2", "w3", "v0", "v1", "v2", "v3"], text
    retried = [c for c in engine.calls if c.offset >= 3.0]
    assert [bool(c.prompt) for c in retried] == [True, False]


def test_marks_alone_before_a_windows_first_word_are_not_committed():
    """Prompted with committed text that ends in a mark, Whisper may start the next window with a lone
    "." (a resumed page read "Ask, not! . What your country"): nothing closes before the first word."""
    hear = timeline_script(timeline(6, start=0.6))

    def script(request: DecodeRequest) -> Hypothesis:
        heard = hear(request)
        return replace(heard, words=(Word(" .", 0.0, 0.1), Word(" ,", 0.1, 0.2)) + heard.words)

    engine = ScriptedEngine(script)
    proc = StreamProcessor(StreamConfig(use_vad=False, min_chunk=1.0))
    proc.feed(np.zeros(4 * SR, dtype=np.float32))
    proc.finish()
    run_until_idle(proc, engine)
    assert proc.committed_text.startswith("w0"), proc.committed_text


def test_speech_boundaries_and_the_final_update_of_each_utterance():
    """What adapters (Deepgram SpeechStarted/UtteranceEnd, OpenAI speech_started/completed) build on."""
    words = timeline(4) + timeline(4, start=5.0, prefix="v")
    engine = ScriptedEngine(timeline_script(words))
    proc = StreamProcessor(StreamConfig(min_chunk=0.5, end_silence=0.5), ScriptedDetector([(1.0, 2.5), (5.0, 6.5)]))
    events = feed_and_drain(proc, engine, noise(9.0))
    boundaries = proc.take_boundaries()
    assert [(b.kind, round(b.at, 1)) for b in boundaries] == [("started", 1.0), ("stopped", 2.5),
                                                               ("started", 5.0), ("stopped", 6.5)]
    assert proc.take_boundaries() == []
    finals = [e for e in events if e.final]
    assert len(finals) == 2 and finals[-1] is events[-1]
    # everything of the first utterance is committed by its final update
    first_final = events.index(finals[0])
    committed_by_then = [w.word.strip(" .") for e in events[:first_final + 1] for w in e.committed]
    assert [w for w in committed_by_then if w] == ["w0", "w1", "w2", "w3"]
    assert finals[0].to_message()["final"] is True and "final" not in events[0].to_message()


def test_a_window_shorter_than_min_agreement_window_does_not_vote():
    """Whisper on 1 s of audio mishears; the next window agreeing with it used to commit the mishear."""
    words = timeline(12, start=0.1, step=0.25, length=0.2)
    hear = timeline_script(words)

    def script(request: DecodeRequest) -> Hypothesis:
        heard = hear(request)
        if request.audio.size / SR < 2.5:  # the 1 s and 2 s windows mishear the first word alike
            return replace(heard, words=(replace(heard.words[0], word=" How"),) + heard.words[1:])
        return heard

    for window, first in ((1.5, "w0"), (0.0, "How")):
        proc = StreamProcessor(StreamConfig(use_vad=False, min_chunk=1.0, min_agreement_window=window))
        engine = ScriptedEngine(script)
        for _ in range(4):
            proc.feed(noise(1.05))
            run_until_idle(proc, engine)
        assert proc.committed_words and proc.committed_words[0].word.strip() == first


def test_a_pause_decode_that_skips_audio_does_not_lose_what_earlier_decodes_heard():
    """tiny.en's pause and final decodes of a quiet window heard only "the" where the decode before
    had "the woodcutters of the Netherlands by a similar process": those words must still commit."""
    words = timeline(10)                                     # 1.0 s .. 4.9 s
    hear = timeline_script(words)

    def script(request: DecodeRequest) -> Hypothesis:
        heard = hear(request)
        if request.offset + request.audio.size / SR > 5.15:  # the decodes after speech stopped skip its end
            return replace(heard, words=tuple(w for w in heard.words if w.end <= request.offset + 0.5))
        return heard

    # speech until 5.1 s, so the update at 5.09 s falls in speech (in the pause it would wait for the pause decode)
    proc = StreamProcessor(StreamConfig(min_chunk=1.0, end_silence=0.5), ScriptedDetector([(0.95, 5.1)]))
    feed_and_drain(proc, ScriptedEngine(script), noise(7.0))
    assert [w.word for w in proc.committed_words] == [w.word for w in words]


def test_an_update_due_in_a_starting_pause_waits_for_the_pause_decode():
    """An update started just before a pause decode comes due holds the engine when the sentence's
    last words need it: the update waits (at most ``pause_commit``) and the pause decode runs at once."""
    def ends(speech_end: float, resumes: bool) -> list[float]:
        spans = [(0.95, speech_end)] + ([(speech_end + 0.15, 7.0)] if resumes else [])
        proc = StreamProcessor(StreamConfig(min_chunk=1.0, end_silence=0.5), ScriptedDetector(spans))
        engine = ScriptedEngine(timeline_script(timeline(12)))
        feed_and_drain(proc, engine, noise(6.0), finish=False)
        return [round(c.offset + c.audio.size / SR, 2) for c in engine.calls]

    # speech ends at 5.0 s; the update due at 5.09 s waits, the pause decode (0.2 s of pause) covers it
    assert ends(5.0, resumes=False) == [1.79, 2.88, 4.0, 5.22]
    # a pause shorter than pause_commit: the update runs once speech resumes, no pause decode
    after = ends(5.0, resumes=True)
    assert after[:3] == [1.79, 2.88, 4.0] and 5.09 < after[3] <= 5.22
    # a pause window under PAUSE_MIN_WINDOW commits only by agreement: the update it agrees with still runs
    assert ends(2.8, resumes=False)[:3] == [1.79, 2.88, 3.01]


def _two_utterances(second_words: int, carry: float):
    """Five words, a 0.9 s pause, then ``second_words`` more; VAD and recogniser scripted."""
    first = timeline(5, start=1.0)
    second = timeline(second_words, start=4.9, prefix="v")
    engine = ScriptedEngine(timeline_script(first + second))
    second_end = 4.9 + 0.6 * second_words
    proc = StreamProcessor(StreamConfig(min_chunk=0.5, end_silence=0.5, carry_context=carry),
                           ScriptedDetector([(0.95, 3.75), (4.85, second_end)]))
    feed_and_drain(proc, engine, noise(second_end + 1.0))
    own = [c for c in engine.calls if c.offset + c.audio.size / SR > 4.9]  # the decodes of the second utterance
    return proc, own


def test_a_short_utterance_is_decoded_after_the_last_ones_tail():
    """carry_context: the short second utterance's windows start in the first one's last words."""
    proc, own = _two_utterances(2, carry=1.5)
    assert own and all(c.offset < 4.0 for c in own)
    assert proc.committed_text == "w0 w1 w2 w3 w4 v0 v1"    # the context is heard again, never committed twice


def test_a_long_utterance_drops_the_carried_context_once_it_has_its_own():
    proc, own = _two_utterances(8, carry=1.5)
    assert own[0].offset < 4.0                                   # its first window still starts in the context
    longer = [c for c in own if c.offset + c.audio.size / SR - 4.85 >= 2.5 + 0.5]
    assert longer and all(c.offset >= 4.85 - 0.2 - 0.05 for c in longer)   # then only its own audio (and pad)
    assert proc.committed_text == "w0 w1 w2 w3 w4 " + " ".join(f"v{i}" for i in range(8))


def test_without_carry_context_no_window_reaches_back():
    proc, own = _two_utterances(2, carry=0.0)
    assert all(c.offset >= 4.85 - 0.2 - 0.05 for c in own)
    assert proc.committed_text == "w0 w1 w2 w3 w4 v0 v1"


def test_a_window_that_hears_nothing_past_the_carried_context_is_decoded_again_on_its_own():
    """The context must not cost the short utterance its words (German LibriVox: "Das ist." was lost)."""
    first = timeline(5, start=1.0)
    second = timeline(2, start=4.9, prefix="v")
    plain = timeline_script(first + second)

    def drowned(request: DecodeRequest) -> Hypothesis:
        heard = plain(request)
        if request.offset < 4.0:  # led by the first utterance's tail: its own words are not heard
            heard = replace(heard, words=tuple(w for w in heard.words if w.word.strip().startswith("w")))
        return heard

    engine = ScriptedEngine(drowned)
    proc = StreamProcessor(StreamConfig(min_chunk=0.5, end_silence=0.5, carry_context=1.5),
                           ScriptedDetector([(0.95, 3.75), (4.85, 6.1)]))
    feed_and_drain(proc, engine, noise(7.1))
    own = [c for c in engine.calls if c.offset + c.audio.size / SR > 4.9]
    assert any(c.offset < 4.0 for c in own) and any(c.offset >= 4.6 for c in own)
    assert proc.committed_text == "w0 w1 w2 w3 w4 v0 v1"


def _update_in_flight_at(proc: StreamProcessor, engine, audio: np.ndarray, ask_after: float) -> int:
    """Feed 0.1 s pieces, decoding at once, until a decode is asked for after ``ask_after`` s: leave it in
    flight (an update, in these tests). Returns how many samples were fed."""
    step = SR // 10
    fed = 0
    while fed < audio.size:
        proc.feed(audio[fed:fed + step])
        fed += step
        request = proc.next_request()
        if request is not None and fed / SR <= ask_after:
            proc.complete(engine.decode(request))
        elif request is not None:
            return fed
    raise AssertionError("no decode was asked for after that point")


def test_an_update_in_flight_gives_way_to_the_pause_decode_that_supersedes_it():
    """Speech 1.0-3.8 s, then a pause: an update asked for at 3.7 s is still decoding when the pause decode
    comes due. That decode commits every word before the pause on its own, so the update is given up."""
    words = timeline(7, start=1.0)
    engine = ScriptedEngine(timeline_script(words))
    audio = noise(6.0)
    for preempt in (True, False):
        proc = StreamProcessor(StreamConfig(min_chunk=0.9, end_silence=2.0, preempt_updates=preempt),
                               ScriptedDetector([(0.95, 3.75)]))
        fed = _update_in_flight_at(proc, engine, audio, ask_after=3.6)
        assert proc.in_flight and not proc.superseded  # speech still going: the update is wanted
        flags = []
        while fed < 4.5 * SR:
            proc.feed(audio[fed:fed + SR // 10])
            fed += SR // 10
            flags.append(proc.superseded)
        if not preempt:
            assert not any(flags)
            continue
        assert not flags[0] and flags[-1]  # from the moment the 0.2 s pause decode came due
        proc.cancel()
        request = proc.next_request()
        assert request.audio.size / SR >= 3.0  # the pause decode, over the whole utterance so far
        proc.complete(engine.decode(request))
        assert proc.committed_text == " ".join(f"w{i}" for i in range(7))


def test_a_short_pause_window_keeps_its_update_until_the_utterance_closes():
    """A pause window under 2.5 s commits only by agreement, so the update it would agree with still counts;
    once the utterance closes, the final decode commits everything and the update is superseded."""
    words = timeline(3, start=1.0)
    engine = ScriptedEngine(timeline_script(words))
    audio = noise(4.0)
    proc = StreamProcessor(StreamConfig(min_chunk=1.0, end_silence=0.5), ScriptedDetector([(0.95, 2.25)]))
    fed = _update_in_flight_at(proc, engine, audio, ask_after=1.7)
    flags = []
    while fed < audio.size:
        proc.feed(audio[fed:fed + SR // 10])
        fed += SR // 10
        flags.append((fed / SR, proc.superseded))
    assert not any(flag for t, flag in flags if t < 2.6)   # the pause is due, but its window is short
    assert flags[-1][1]                                    # closed after 0.5 s of silence: the final decode
