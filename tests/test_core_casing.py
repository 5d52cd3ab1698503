"""A sentence's first word is capitalised by what was committed before it, not by the window that wrote it."""

from __future__ import annotations

import pytest

from streamer.bench.textscore import false_breaks, unreferenced_breaks
from streamer.core.casing import SentenceCase, ends_sentence, unshouted
from streamer.hypothesis import Word


def _words(*texts: str) -> list[Word]:
    return [Word(t, i, i + 0.5) for i, t in enumerate(texts)]


def _text(words: list[Word]) -> str:
    return "".join(w.word for w in words).strip()


def test_a_word_after_a_committed_sentence_mark_starts_with_a_capital() -> None:
    case = SentenceCase()
    first = case.apply(_words(" never", " been", " surpassed", "."), "en")
    then = case.apply(_words(" printing", " then,", " for"), "en")
    assert _text(first + then) == "never been surpassed. Printing then, for"  # a stream's first word keeps its case


def test_marks_within_one_commit_and_other_marks() -> None:
    out = SentenceCase("so it goes").apply(_words(" on.", " is", " it?", " yes!", " no", " ok"), "en")
    assert _text(out) == "on. Is it? Yes! No ok"


@pytest.mark.parametrize("tail", ["in black letter, i.e.", "it was Mr.", "and then...", "and then…", "one, two,",
                                  "the year 1455", "missals, psalters, etc.", "Äpfel, Birnen usw.", "Etc."])
def test_no_capital_after_abbreviations_ellipses_or_mid_sentence(tail: str) -> None:
    assert not ends_sentence(tail)
    assert _text(SentenceCase(tail).apply(_words(" the"), "en")) == "the"


def test_quotes_digits_and_caseless_scripts() -> None:
    assert _text(SentenceCase("Done.").apply(_words(' "well'), "en")) == '"Well'
    assert _text(SentenceCase("Done.").apply(_words(" 1455"), "en")) == "1455"
    assert _text(SentenceCase("終わり。").apply(_words("次に"), "ja")) == "次に"
    assert _text(SentenceCase("Tamam.").apply(_words(" iyi"), "tr")) == "İyi"
    assert _text(SentenceCase("Gut.").apply(_words(" über"), "de")) == "Über"


def test_a_resumed_stream_continues_the_committed_text() -> None:
    case = SentenceCase()
    case.resume("we are at present concerned")
    assert _text(case.apply(_words(" with"), "en")) == "with"
    case.resume("It ended here.")
    assert _text(case.apply(_words(" next"), "en")) == "Next"


def test_capitals_do_not_hide_a_false_break_from_the_text_benchmark() -> None:
    reference = "Das ist gut. Ganz neu ist es."
    assert false_breaks("Das ist. Gut ganz neu ist es.") == 0  # the lower-case count misses it
    assert unreferenced_breaks(reference, "Das ist. Gut ganz neu ist es.", "de") == 1
    assert unreferenced_breaks(reference, "Das ist gut. Ganz neu ist es.", "de") == 0
    assert unreferenced_breaks("no marks at all", "no. marks", "en") is None


def test_a_dotted_abbreviation_is_no_false_break() -> None:
    """The LJ reference itself has "printed in black letter, i.e. the letter which was"."""
    assert false_breaks("printed in black letter, i.e. the letter") == 0
    assert false_breaks("we are concerned different. from most") == 1
    assert false_breaks("e.g. this. and that") == 1   # the abbreviation is skipped, the break after it is not


def test_a_hypothesis_all_in_capitals_is_written_in_sentence_case() -> None:
    assert _text(unshouted(_words(" ASK", " NOT!"))) == "Ask not!"
    assert _text(unshouted(_words(" ASK", " WHAT", " YOU", " CAN", " DO", " FOR", " YOUR", " COUNTRY."))) == \
        "Ask what you can do for your country."
    assert _text(unshouted(_words(" I", " SAID", " NO!"))) == "I said no!"  # one-letter words take no part
    assert [w.start for w in unshouted(_words(" ASK", " NOT!"))] == [0, 1]


def test_acronyms_and_uncased_scripts_keep_their_capitals() -> None:
    kept = [_words(" the", " FBI", " said"), _words(" NASA."), _words(" ASK", " what", " you"),
            _words("東京", "タワー"), _words(" I", " A")]
    for words in kept:
        assert unshouted(words) == words
