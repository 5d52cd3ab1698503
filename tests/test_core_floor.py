"""A resumed stream's floor and prompt: context audio is decoded, never committed again or prompted over."""

from __future__ import annotations

from streamer.core.floor import CommitFloor
from streamer.core.prompt import PromptBuilder
from streamer.hypothesis import Word


def w(text: str, start: float, end: float) -> Word:
    return Word(" " + text, start, end)


def test_context_words_that_repeat_the_committed_tail_are_not_new() -> None:
    floor = CommitFloor(3.0, "ask not what your")
    heard = [w("not", 1.2, 1.5), w("what", 1.5, 2.0), w("your", 2.1, 2.9), w("country", 3.1, 3.6)]
    assert [x.word for x in floor.fresh(heard, window_start=1.0)] == [" country"]


def test_a_new_word_that_starts_just_before_the_floor_starts_at_it() -> None:
    floor = CommitFloor(3.0, "your")
    fresh = floor.fresh([w("your", 2.4, 2.9), w("country", 2.98, 3.5)], window_start=2.0)
    assert [(x.word, x.start, x.end) for x in fresh] == [(" country", 3.0, 3.5)]


def test_windows_past_the_floor_pass_through_and_times_never_go_back() -> None:
    floor = CommitFloor(3.0, "your")
    heard = [w("your", 3.2, 3.4)]  # said again after the floor: a new word
    assert floor.fresh(heard, window_start=3.0) == heard
    assert floor.clamp(2.5) == 3.0 and floor.clamp(4.0) == 4.0


def test_the_resumed_tail_is_no_prompt_over_its_own_audio() -> None:
    prompt = PromptBuilder(max_chars=100)
    prompt.earlier, prompt.earlier_until = "ask not what your", 3.0
    assert prompt.build([], before=1.0) == ""          # a context window: its words are in the audio
    assert prompt.build([], before=3.0) == "ask not what your"
    prompt.reset(0)                                      # after a suspect or an empty prompted decode
    assert prompt.build([], before=3.0) == ""


def test_a_prompt_of_marks_alone_is_no_prompt() -> None:
    """After a reset, the first commit may be the held period of the word before it: no context."""
    prompt = PromptBuilder(max_chars=100)
    words = [w("cruel", 1.0, 1.4), Word(".", 1.4, 1.4)]  # a decided mark: its own item, no space
    prompt.reset(1)
    assert prompt.build(words) == ""
    prompt.reset(0)
    assert prompt.build(words) == "cruel."


def test_committed_words_stay_in_time_order_whatever_a_later_window_says():
    """A later window may time a word before one already committed; the timeline clients get stays ordered."""
    from streamer.core.floor import in_time_order

    new = [Word(" b", 5.672, 5.9), Word(" c", 5.95, 6.2), Word(" d", 5.9, 5.91)]
    ordered = in_time_order(new, after=5.692)
    assert [(w.word, w.start, w.end) for w in ordered] == [(" b", 5.692, 5.9), (" c", 5.95, 6.2), (" d", 5.95, 5.95)]
    assert in_time_order(new[1:2], after=1.0) == new[1:2]  # words already in order are left as they are
