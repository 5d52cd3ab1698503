"""The hypothesis guards on their own: repetition loops of every phrase length, and what they leave."""

from __future__ import annotations

from streamer.config import StreamConfig
from streamer.core.guards import assess, find_repetition_loop
from streamer.hypothesis import Hypothesis, Word


def words_of(text: str) -> list[Word]:
    return [Word(" " + w, 0.3 * i, 0.3 * i + 0.25) for i, w in enumerate(text.split())]


def test_a_clause_looped_at_the_window_end_is_cut_after_its_first_occurrence():
    # base with encoder buckets heard this in a 3.7 s pause window of the LJ long-form file
    text = ("surpassed. Printing then for our purpose, printing then for our purpose, "
            "printing then for our purpose,")
    verdict = assess(Hypothesis(tuple(words_of(text)), language="en"), StreamConfig())
    assert "".join(w.word for w in verdict.words).strip() == "surpassed. Printing then for our purpose,"
    assert verdict.suspect and not verdict.rejected and verdict.reasons == ("repetition",)


def test_every_phrase_length_up_to_twelve_words_is_caught_three_times_over():
    for n in range(3, 13):
        phrase = " ".join(f"w{i}" for i in range(n))
        words = words_of(f"start {phrase} {phrase} {phrase} end")
        assert find_repetition_loop(words) == 1 + n, n


def test_a_speaker_restart_is_speech_not_a_loop():
    for text in ("I think that we should, I think that we should go home.",
                 "no no no no",                        # a word four times
                 "very very good, very very good",     # two words twice
                 "one two three four one two three four five"):
        assert find_repetition_loop(words_of(text)) is None, text


def test_loops_of_short_units_keep_their_thresholds():
    assert find_repetition_loop(words_of("go go go go go")) == 1
    assert find_repetition_loop(words_of("thank you thank you thank you thank you")) == 2
    assert find_repetition_loop(words_of("and then we and then we and then we")) == 3


def test_a_phrase_said_twice_to_the_hypothesis_end_is_a_loop():
    # base with encoder buckets, a pause window of the LJ long-form file with silence and noise
    text = ("as all books, not primarily intended as picture books, "
            "as all books, not primarily intended as picture books,")
    assert find_repetition_loop(words_of(text)) == 9
    # with the start of a third time
    assert find_repetition_loop(words_of("the art of making books the art of making books the art")) == 5
    # twice, then the speaker goes on: a restart, kept
    assert find_repetition_loop(words_of("we should go to the, we should go to the station.")) is None
    # three words twice at the end: too short to tell from speech
    assert find_repetition_loop(words_of("I said go home, go home,")) is None


def test_a_loop_that_trips_the_compression_ratio_keeps_the_words_before_it():
    # base with the cut encoder, three streams on the LJ long-form file: a pause decode of the first sentence
    text = ("Printing, in the only sense with which we are at present concerned, differs from most if not from "
            "all the arts and crafts represented in the exhibition, " + "in the exhibition, " * 20)
    looped = Hypothesis(tuple(words_of(text)), language="en", avg_logprob=-0.3, no_speech_prob=0.01,
                        compression_ratio=4.2)
    verdict = assess(looped, StreamConfig())
    assert "".join(w.word for w in verdict.words).strip().endswith("arts and crafts represented in the exhibition,")
    assert verdict.suspect and not verdict.rejected             # the prompt is reset all the same


def test_a_loop_with_little_before_it_or_no_speech_is_still_rejected():
    thanks = Hypothesis(tuple(words_of("Thank you. " * 12)), language="en", compression_ratio=5.0)
    assert assess(thanks, StreamConfig()).rejected
    quiet = Hypothesis(tuple(words_of("we went down to the river, to the river, " + "to the river, " * 10)),
                       language="en", avg_logprob=-1.5, no_speech_prob=0.9, compression_ratio=4.0)
    verdict = assess(quiet, StreamConfig())
    assert verdict.rejected and verdict.reasons == ("no_speech", "compression_ratio")
