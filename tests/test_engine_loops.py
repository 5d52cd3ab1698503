"""The loop stop's rule on token ids alone (the real-model check is in test_engine_drafts.py)."""

from __future__ import annotations

from streamer.engine.loops import compression_ratio, ends_periodic, looping

EOT = 1000


def text_of(ids: list[int]) -> str:
    return "".join(f" w{i}" for i in ids)


def test_a_tail_of_three_copies_is_periodic_two_is_not():
    assert ends_periodic([5, 1, 2, 3, 1, 2, 3, 1, 2, 3])
    assert not ends_periodic([5, 1, 2, 3, 1, 2, 3])
    assert ends_periodic([7, 7, 7])
    assert not ends_periodic([1, 2, 3, 4, 5, 6])
    assert not ends_periodic(list(range(10)) * 3, max_period=9)  # a period longer than allowed
    assert ends_periodic(list(range(10)) * 3, max_period=10)


def test_a_row_stops_only_when_it_loops_and_compresses_past_the_ratio():
    phrase = [11, 12, 13, 14]
    loop = [1, 2, 3] + phrase * 6
    assert compression_ratio(text_of(loop)) > 2.4
    assert looping(loop, 2.4, EOT, text_of)
    assert not looping(loop, None, EOT, text_of)  # no ratio: decode as Whisper does
    assert not looping(loop, 50.0, EOT, text_of)  # loops, but not (yet) past the caller's ratio
    assert not looping(loop + [EOT + 5], 2.4, EOT, text_of)  # a timestamp adds no text: checked before
    three = list(range(40)) + phrase * 3  # three times after much varied text: still under the ratio
    assert compression_ratio(text_of(three)) < 2.4 and not looping(three, 2.4, EOT, text_of)


def test_timestamp_tokens_between_repetitions_do_not_hide_a_loop():
    stamped = []
    for i in range(6):
        stamped += [EOT + 2 * i, 21, 22, 23, EOT + 2 * i + 1]
    stamped += [21, 22, 23]
    assert looping(stamped, 2.4, EOT, text_of)
