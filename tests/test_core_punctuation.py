"""Trailing punctuation decided with context (a scripted 'Whisper' that ends every window with a period)."""

from __future__ import annotations

from streamer.config import StreamConfig
from streamer.core import StreamProcessor
from streamer.core.punctuation import HeldPunctuation, split_trailing
from streamer.engine.scripted import ScriptedEngine
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest, Hypothesis, Word
from streamer.protocol import is_punctuation, word as wire_word
from streamer.vad import ScriptedDetector
from support import feed_and_drain, noise

# "we are at present concerned with printing. only" spoken from 1.0 s, a 0.3 s pause after "concerned"
SPOKEN = [Word(" We", 1.0, 1.2), Word(" are", 1.3, 1.5), Word(" at", 1.6, 1.7), Word(" present", 1.8, 2.2),
          Word(" concerned", 2.3, 2.8), Word(" with", 3.1, 3.3), Word(" printing.", 3.4, 3.9),
          Word(" Only", 4.3, 4.6), Word(" that.", 4.7, 5.0)]


def window_end_period(request: DecodeRequest) -> Hypothesis:
    """Hears the words inside the window; like Whisper, the window's last word ends with a period."""
    start, end = request.offset, request.offset + request.audio.size / SAMPLE_RATE
    heard = [w for w in SPOKEN if w.start >= start - 1e-6 and w.end <= end + 1e-6]
    words = [w.shifted(-start) for w in heard]
    if words and not words[-1].word.endswith("."):
        last = words[-1]
        words[-1] = Word(last.word + ".", last.start, last.end, last.probability)
    return Hypothesis(tuple(words), "en", -0.2, 0.01, 1.2)


def run(detector_spans, seconds: float, **config):
    cfg = StreamConfig(**{"min_chunk": 0.5, "end_silence": 0.6, **config})
    proc = StreamProcessor(cfg, ScriptedDetector(detector_spans))
    events = feed_and_drain(proc, ScriptedEngine(window_end_period), noise(seconds))
    return proc, events


def test_a_period_at_a_window_end_is_not_committed_when_the_sentence_goes_on():
    proc, events = run([(1.0, 2.8), (3.1, 3.9), (4.3, 5.0)], 8.0)
    assert proc.committed_text == "We are at present concerned with printing. Only that."
    committed = [w.word for e in events for w in e.committed]
    assert " concerned" in committed and " concerned." not in committed   # pause commit, period held
    assert committed.count(".") == 2  # the two real sentence ends, each decided after the audio that followed


def test_the_held_mark_shows_in_the_tentative_tail_until_decided():
    proc, events = run([(1.0, 2.8), (3.1, 3.9), (4.3, 5.0)], 8.0)
    held = [e for e in events if e.tentative and is_punctuation(e.tentative[0].word)]
    assert held, "a held mark is shown as tentative"


def test_the_stream_end_releases_a_held_mark():
    proc, events = run([(1.0, 2.8)], 3.2)  # stops right after "concerned": the period stands
    assert proc.committed_text == "We are at present concerned."
    assert events[-1].committed[-1].word == "." and proc.done


def test_a_long_silence_releases_a_held_mark_without_a_decode():
    proc, events = run([(1.0, 2.8)], 2.8 + 2.6, long_silence=2.0)
    # the stream has not ended, but two seconds of silence follow the word
    assert proc.committed_words[-1].word == "."


def test_the_next_words_case_decides_when_the_word_left_the_window():
    held = HeldPunctuation()
    first = held.settle([Word(" different.", 1.0, 1.5)], [Word(" different.", 1.0, 1.5)])
    assert [w.word for w in first] == [" different"] and held.pending
    out = held.settle([Word(" from", 9.0, 9.2)], [Word(" from", 9.0, 9.2)])  # a new utterance, lowercase
    assert [w.word for w in out] == [" from"] and held.mark == ""  # "from" waits for its own mark, if any
    held.settle([Word(" end.", 1.0, 1.5)], [Word(" end.", 1.0, 1.5)])
    out = held.settle([Word(" Next", 9.0, 9.2)], [Word(" Next", 9.0, 9.2)])
    assert [w.word for w in out] == [".", " Next"]


def test_split_trailing_and_wire_shape():
    assert split_trailing(" different.") == (" different", ".")
    assert split_trailing(" U.S.,") == (" U.S", ".,")
    assert split_trailing(" ...") == (" ...", "")
    assert split_trailing("今日は。") == ("今日は", "。")
    assert wire_word(Word(".", 1.0, 1.0)) == {"word": ".", "start": 1.0, "end": 1.0, "probability": 1.0,
                                              "punctuation": True}
    assert "punctuation" not in wire_word(Word(" yes", 1.0, 1.2))


def test_a_mark_followed_by_a_tentative_word_waits_for_the_next_hypothesis():
    """"lower case." agreed with "lower case. Then ..." must not commit its period before the next
    hypothesis ("lower case than the capital letters") has had its say."""
    held = HeldPunctuation()
    case = Word(" case.", 4.0, 4.3)
    committed = held.settle([Word(" lower", 3.6, 3.9), case, Word(" Then", 4.5, 4.7)], [case])
    assert [w.word for w in committed] == [" case"] and held.pending
    decided = held.settle([Word(" case", 4.0, 4.3), Word(" than", 4.5, 4.7), Word(" the", 4.8, 4.9)], [])
    assert decided == [] and not held.pending           # no period: the sentence went on


def test_a_held_word_heard_again_respelt_is_found_by_its_time():
    held = HeldPunctuation()
    held.settle([Word(" basil.", 2.7, 3.1)], [Word(" basil.", 2.7, 3.1)])
    decided = held.settle([Word(" Basel,", 2.68, 3.12), Word(" Paris.", 3.3, 3.8)], [])
    assert [w.word for w in decided] == [","]            # the comma the later hypothesis heard


def test_a_word_committed_without_a_mark_gets_the_one_a_later_hypothesis_hears():
    """A pause decode of the LJ long-form file committed "concerned" bare; the next window, which heard
    "concerned, differs from most", had the comma the offline decode writes, and it was lost."""
    held = HeldPunctuation()
    concerned = Word(" concerned", 3.6, 4.2)
    assert held.settle([concerned], [concerned]) == [concerned]
    assert held.pending and held.tentative == []          # nothing to show while no mark is known
    decided = held.settle([Word(" concerned,", 3.6, 4.2), Word(" differs", 4.4, 4.8)], [])
    assert [w.word for w in decided] == [","] and not held.pending


def test_a_bare_word_stays_bare_when_nothing_more_is_heard():
    held = HeldPunctuation()
    held.settle([Word(" so", 1.0, 1.2)], [Word(" so", 1.0, 1.2)])
    assert held.release() == [] and not held.pending
    held.settle([Word(" so", 1.0, 1.2)], [Word(" so", 1.0, 1.2)])
    assert held.settle([Word(" so", 1.0, 1.2), Word(" far", 1.3, 1.5)], []) == []   # heard on: still no mark


def test_the_final_decode_decides_the_mark_of_its_last_word():
    """jfk: a pause decode committed "country!"; the final decode of the utterance, which heard the
    silence after it, wrote "country." - that is the mark, not the pause decode's guess."""
    held = HeldPunctuation()
    country = Word(" country!", 9.9, 10.4)
    held.settle([Word(" your", 9.6, 9.8), country], [country])
    final = [Word(" your", 9.6, 9.8), Word(" country.", 9.9, 10.45)]
    assert held.settle(final, []) == [] and held.pending              # an update: no word after it yet
    assert [w.word for w in held.settle(final, [], ended=True)] == ["."] and not held.pending


def test_a_lone_mark_is_not_held_as_a_word():
    held = HeldPunctuation()
    dots = Word(" ...", 2.0, 2.2)
    assert held.settle([dots], [dots]) == [dots] and not held.pending
