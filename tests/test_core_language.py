"""The stream's language: steady against one short window's guess, following a real change."""

from __future__ import annotations

from streamer.core.language import LanguageChoice, LanguagePolicy


def test_a_fixed_language_is_never_detected_or_changed():
    policy = LanguagePolicy("de")
    policy.observe("es", [("es", 0.99)], 10.0)
    assert policy.choice() == LanguageChoice("de", False) and not policy.unsure


def test_a_confident_or_long_window_establishes_the_language():
    policy = LanguagePolicy()
    assert policy.choice() == LanguageChoice(None, True)
    policy.observe("pt", [("pt", 0.55), ("es", 0.40)], 1.0)  # unsure and short: keep detecting
    assert policy.current is None
    policy.observe("es", [("es", 0.85), ("pt", 0.10)], 2.0)
    assert policy.current == "es" and policy.choice() == LanguageChoice("es", True)
    late = LanguagePolicy()
    late.observe("es", [("es", 0.5), ("pt", 0.45)], 3.5)
    assert late.current == "es"


def test_one_windows_guess_does_not_flip_the_language():
    policy = LanguagePolicy()
    policy.observe("es", [("es", 0.9)], 2.0)
    policy.observe("es", [("pt", 0.7), ("es", 0.25)], 1.0)  # a clear challenger, once
    assert policy.current == "es" and policy.unsure
    policy.observe("es", [("es", 0.8), ("pt", 0.15)], 2.0)  # back to Spanish: challenger dropped
    assert policy.current == "es" and not policy.unsure
    policy.observe("es", [("ar", 0.5), ("es", 0.4)], 1.0)   # not clear enough to even challenge
    assert not policy.unsure


def test_a_language_that_wins_clearly_on_consecutive_windows_takes_over():
    policy = LanguagePolicy()
    policy.observe("en", [("en", 0.95)], 2.0)
    policy.observe("en", [("de", 0.8), ("en", 0.1)], 1.0)
    assert policy.current == "en" and policy.unsure
    policy.observe("en", [("de", 0.9), ("en", 0.05)], 2.0)
    assert policy.current == "de" and not policy.unsure and policy.choice().language == "de"


def test_alternating_challengers_never_accumulate():
    policy = LanguagePolicy()
    policy.observe("es", [("es", 0.9)], 2.0)
    for challenger in ("pt", "it", "pt", "gl"):
        policy.observe("es", [(challenger, 0.7), ("es", 0.2)], 1.0)
    assert policy.current == "es"


def test_without_probabilities_the_decoded_language_is_the_evidence():
    policy = LanguagePolicy()
    policy.observe("en", [], 4.0)
    assert policy.current == "en"
