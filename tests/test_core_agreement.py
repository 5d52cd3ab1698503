"""LocalAgreement edge cases, on word lists (no audio, no engine)."""

from __future__ import annotations

from streamer.core.agreement import LocalAgreement, common_prefix_length, new_words_after, normalize_word
from streamer.hypothesis import Word


def words(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    """Words of ``text`` laid out every ``step`` seconds from ``start``."""
    return [Word(" " + t, start + i * step, start + i * step + step * 0.8) for i, t in enumerate(text.split())]


def texts(ws) -> list[str]:
    return [w.word.strip() for w in ws]


def test_normalize_ignores_case_and_punctuation():
    assert normalize_word(" Hello,") == normalize_word("hello") == "hello"
    assert normalize_word("don't") == "dont"
    assert normalize_word(" ...") == "..."  # punctuation-only tokens still compare as themselves


def test_common_prefix_is_case_and_punctuation_insensitive():
    assert common_prefix_length([words("Hello, world. How"), words("hello World how are")]) == 3


def test_word_changing_between_hypotheses():
    la = LocalAgreement(2)
    assert la.insert(words("the cat sat")) == []
    assert texts(la.tentative) == ["the", "cat", "sat"]
    assert texts(la.insert(words("the cat sad on"))) == ["the", "cat"]
    assert texts(la.tentative) == ["sad", "on"]
    assert texts(la.insert(words("the cat sat on the"))) == []  # "sad" -> "sat": no agreement yet
    assert texts(la.insert(words("the cat sat on the mat"))) == ["sat", "on", "the"]
    assert texts(la.committed) == ["the", "cat", "sat", "on", "the"]


def test_shrinking_hypothesis():
    la = LocalAgreement(2)
    la.insert(words("one two three four"))
    assert texts(la.insert(words("one two"))) == ["one", "two"]
    assert la.tentative == []
    assert texts(la.insert(words("one two three four five"))) == []  # the shrunk one had no tail to agree with
    assert texts(la.insert(words("one two three four five six"))) == ["three", "four", "five"]


def test_duplicated_overlap_at_trim_is_not_committed_twice():
    la = LocalAgreement(2)
    la.insert(words("a b c", start=2.0))
    la.insert(words("a b c d", start=2.0))
    assert texts(la.committed) == ["a", "b", "c"]
    last_end = la.committed[-1].end
    # after a trim at the committed end, the window starts with the tail of "c" again, with jitter
    dup = [Word(" C.", last_end - 0.05, last_end + 0.3), *words("d e f", start=last_end + 0.3)]
    assert new_words_after(la.committed, dup)[0].word == " d"
    la.insert(dup)
    la.insert(dup + words("g", start=last_end + 2.0))
    assert texts(la.committed) == ["a", "b", "c", "d", "e", "f"]


def test_new_word_with_early_timestamp_is_not_dropped():
    committed = words("in the", start=2.0)
    last_end = committed[-1].end
    hyp = [*committed, Word(" big", last_end - 0.4, last_end + 0.1), Word(" cat", last_end + 0.2, last_end + 0.6)]
    assert texts(new_words_after(committed, hyp)) == ["big", "cat"]


def test_repeated_word_far_after_commit_is_kept():
    committed = words("of the", start=0.0)
    hyp = [Word(" the", 5.0, 5.3), Word(" end", 5.3, 5.6)]
    assert texts(new_words_after(committed, hyp)) == ["the", "end"]


def test_agreement_n3_needs_three():
    la = LocalAgreement(3)
    assert la.insert(words("x y")) == []
    assert la.insert(words("x y z")) == []
    assert texts(la.insert(words("x y z w"))) == ["x", "y"]
    assert texts(la.insert(words("x y z w v"))) == ["z"]


def test_agreement_n1_commits_at_once():
    la = LocalAgreement(1)
    assert texts(la.insert(words("a b"))) == ["a", "b"]
    assert la.tentative == []


def test_commit_all_and_until():
    la = LocalAgreement(2)
    la.insert(words("a b c d"))
    assert texts(la.commit_until(words("a b c d"), until=1.0)) == ["a", "b"]
    assert texts(la.tentative) == ["c", "d"]
    assert texts(la.commit_all(words("a b c d e"))) == ["c", "d", "e"]
    assert la.tentative == []


def test_a_committed_word_heard_again_with_another_spelling_is_not_committed_twice():
    """Whisper re-spells a word at the buffer start ("Bazel" then "Basil"): commit it once."""
    from streamer.core.agreement import LocalAgreement
    from streamer.hypothesis import Word

    agreement = LocalAgreement(2)
    first = [Word(" in", 0.0, 0.2), Word(" Strasburg,", 0.2, 0.9), Word(" Bazel,", 1.0, 1.5)]
    agreement.insert(first)
    agreement.insert(first + [Word(" Lubeck", 1.6, 2.0)])
    assert [w.word for w in agreement.committed] == [" in", " Strasburg,", " Bazel,"]
    respelled = [Word(" Basil,", 1.02, 1.48), Word(" Lubeck", 1.6, 2.0), Word(" and", 2.1, 2.3)]
    agreement.insert(respelled)
    agreement.insert(respelled + [Word(" other", 2.4, 2.7)])
    assert [w.word for w in agreement.committed] == [" in", " Strasburg,", " Bazel,", " Lubeck", " and"]


def test_a_different_word_in_the_same_place_is_still_new():
    from streamer.core.agreement import new_words_after
    from streamer.hypothesis import Word

    committed = [Word(" the", 0.0, 0.2), Word(" cat", 0.2, 0.6)]
    assert [w.word for w in new_words_after(committed, [Word(" sat", 0.45, 0.8)])] == [" sat"]


def test_a_previewed_hypothesis_is_shown_but_does_not_vote():
    """What base heard in 1 s and 2 s of "Had he married a more amiable woman": without the
    preview the two agreed on "How do you marry a"."""
    la = LocalAgreement(2)
    la.preview(words("How do you marry a demon?"))
    assert texts(la.tentative) == ["How", "do", "you", "marry", "a", "demon?"]
    assert la.insert(words("How do you marry a more amiable woman?")) == []
    assert texts(la.insert(words("Had he married a more amiable woman he might"))) == []
    assert texts(la.insert(words("Had he married a more amiable woman he might have been"))) == \
        ["Had", "he", "married", "a", "more", "amiable", "woman", "he", "might"]


def test_the_same_word_far_apart_in_time_is_not_agreement():
    """Whisper skipped four seconds of audio in the second window: its "que" is a later one."""
    earlier = words("que la escribiese en la seguridad", start=31.0)
    skipped = words("que me daria mas", start=35.0)
    assert common_prefix_length([earlier, skipped]) == 0
    la = LocalAgreement(2)
    la.insert(earlier)
    assert la.insert(skipped) == [] and texts(la.tentative) == ["que", "me", "daria", "mas"]
    assert common_prefix_length([words("que la", start=31.0), words("que la", start=31.6)]) == 2  # jitter agrees


def test_a_committed_word_joined_by_a_hyphen_to_the_next_keeps_the_next():
    """The sonnet: "bud," was committed, then a pause window heard "bud-barreest thy content".
    The word after the hyphen is new (it was lost); "bud" is not written twice."""
    committed = [Word(" own", 38.6, 38.9), Word(" bud,", 38.9, 39.3)]
    before = [Word(" own", 38.6, 38.9), Word(" bud-barreest", 38.9, 39.9), Word(" thy", 40.0, 40.2)]
    assert [(w.word, w.start) for w in new_words_after(committed, before)] == [(" barreest", 39.3), (" thy", 40.0)]
    after = [Word(" own", 38.6, 38.9), Word(" bud-barreest", 39.2, 39.9), Word(" thy", 40.0, 40.2)]
    assert texts(new_words_after(committed, after)) == ["barreest", "thy"]
    # the same word heard again, hyphenated or not, and a hyphenated word that starts otherwise
    assert texts(new_words_after([Word(" self-substantial", 1.0, 1.8)],
                                 [Word(" self-substantial", 1.0, 1.8), Word(" fuel", 1.9, 2.2)])) == ["fuel"]
    assert texts(new_words_after([Word(" bud", 1.0, 1.3)], [Word(" bud-", 1.0, 1.6), Word(" x", 1.7, 1.9)])) == ["x"]
    assert texts(new_words_after([Word(" well", 1.0, 1.3)],
                                 [Word(" well", 1.0, 1.3), Word(" well-known", 1.4, 1.9)])) == ["well-known"]


def test_a_hyphen_joined_word_that_ends_with_the_committed_one_adds_nothing():
    committed = [Word(" self", 2.0, 2.5)]
    assert texts(new_words_after(committed, [Word(" self-thy", 2.0, 2.52), Word(" foe", 2.6, 2.9)])) == ["foe"]


def test_the_end_of_a_committed_compound_heard_as_its_own_word_is_not_committed_twice():
    """The sonnet: "thy self-difoe," committed, the next window heard "Thyself thy foe, to thy"."""
    committed = [Word(" thy", 25.65, 25.87), Word(" self-difoe,", 25.87, 26.95)]
    heard = [Word(" Thyself", 25.6, 26.1), Word(" thy", 26.1, 26.6), Word(" foe,", 26.6, 27.55),
             Word(" to", 27.55, 27.75), Word(" thy", 27.75, 28.0)]
    assert [w.word for w in new_words_after(committed, heard)] == [" to", " thy"]
    later = [Word(" foe,", 27.0, 27.5), Word(" to", 27.55, 27.75)]  # said again after it: a new word
    assert [w.word for w in new_words_after(committed, later)] == [" foe,", " to"]


def test_committed_words_timed_later_by_the_next_window_are_not_committed_again():
    """Real time, the 229 s LJ file: the window that committed "may just be considered," ended right
    after it and timed its words early; the next window timed them half a second later, the time
    split fell after "may", and "just be considered" was committed a second time."""
    committed = [Word(" century", 30.0, 30.4), Word(" may", 30.5, 30.6), Word(" just", 30.6, 30.7),
                 Word(" be", 30.7, 30.8), Word(" considered,", 30.8, 31.0)]
    later = [Word(" century", 30.0, 30.5), Word(" may", 30.6, 30.95), Word(" just", 31.0, 31.3),
             Word(" be", 31.3, 31.4), Word(" considered,", 31.5, 32.0), Word(" as", 32.1, 32.3),
             Word(" the", 32.3, 32.4), Word(" invention", 32.4, 33.0)]
    assert texts(new_words_after(committed, later)) == ["as", "the", "invention"]


def test_the_committed_tail_said_again_after_the_split_is_new():
    """The same words heard again after the committed ones (a real repeat) do not reach back across
    the split, so they stay new."""
    committed = words("I said go", start=0.0)
    again = [*committed, *words("I said go now", start=3.0)]
    assert texts(new_words_after(committed, again)) == ["I", "said", "go", "now"]


def test_a_capital_only_one_agreeing_hypothesis_has_is_not_committed():
    # The newer window put a sentence break before "And" that the older one (and the committed
    # comma) did not: the agreed word keeps the small initial, its own punctuation the newest's.
    la = LocalAgreement(2)
    la.insert(words("perfection, and it was net"))
    assert texts(la.insert(words("perfection. And it was natural, therefore"))) == \
        ["perfection.", "and", "it", "was"]
    la = LocalAgreement(2)
    la.insert(words("so the Middle Ages brought"))
    assert texts(la.insert(words("so The Middle Ages brought calligraphy"))) == \
        ["so", "the", "Middle", "Ages", "brought"]
    la = LocalAgreement(2)  # a window's first word, the stream's or an utterance's: the newest window's case
    la.insert(words("printing in the"))
    assert texts(la.insert(words("Printing in the only"))) == ["Printing", "in", "the"]
    la.insert(words("and Mr. John", start=5.0))
    assert texts(la.insert(words("And Mr. John Collier", start=5.0))) == ["And", "Mr.", "John"]
    la = LocalAgreement(2)
    la.insert(words("I met Gutenberg in"))
    assert texts(la.insert(words("I met Gutenberg in Mainz"))) == ["I", "met", "Gutenberg", "in"]


def test_a_pause_commit_keeps_the_small_initial_the_previous_hypothesis_wrote():
    """The 229 s LJ file: the update heard "whatever they were, the forms" (its comma committed), the
    pause decode after a trim "whatever they were. The forms", and committed "were, The forms"."""
    la = LocalAgreement(2)
    la.insert(words("whatever they were"))
    la.insert(words("whatever they were, the forms of"))
    new = la.commit_until(words("they were. The forms of printed", start=0.5), 10.0)
    assert texts(new) == ["the", "forms", "of", "printed"]
    la = LocalAgreement(2)  # a window's first word, and a word the previous hypothesis did not have, keep theirs
    la.insert(words("Mainz is where"))
    assert texts(la.commit_until(words("And Mainz is where Gutenberg"), 10.0)) == \
        ["And", "Mainz", "is", "where", "Gutenberg"]
