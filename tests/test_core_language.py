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


def test_the_stream_core_never_commits_a_window_decoded_in_a_guessed_language():
    """Spanish throughout; one short window's detector says Portuguese, and a Portuguese decode of
    it would be garbage. Then German speech: it takes over after two clear windows."""
    from streamer.config import StreamConfig
    from streamer.core import StreamProcessor
    from streamer.engine.scripted import ScriptedEngine
    from streamer.hypothesis import SAMPLE_RATE, DecodeRequest, Hypothesis, Word
    from support import feed_and_drain, noise

    spoken = [Word(f" es{i}", 0.2 + 0.5 * i, 0.5 + 0.5 * i) for i in range(16)] + \
             [Word(f" de{i}", 8.2 + 0.5 * i, 8.5 + 0.5 * i) for i in range(16)]
    calls = []

    def script(request: DecodeRequest) -> Hypothesis:
        start, end = request.offset, request.offset + request.audio.size / SAMPLE_RATE
        truth = "de" if end > 9.0 else "es"
        detected = "pt" if len(calls) == 3 else truth  # one flaky guess
        calls.append((request.language, detected))
        decoded_in = request.language or detected
        heard = [w.shifted(-start) for w in spoken if w.start >= start and w.end <= end]
        if decoded_in != truth:  # a window decoded in the wrong language is nonsense
            heard = [Word(" xx", w.start, w.end) for w in heard]
        runner_up = "es" if detected != "es" else "de"
        return Hypothesis(tuple(heard), decoded_in, -0.2, 0.01, 1.2, language_probs=((detected, 0.9), (runner_up, 0.05)))

    proc = StreamProcessor(StreamConfig(use_vad=False, min_chunk=1.0))
    events = feed_and_drain(proc, ScriptedEngine(script), noise(16.0))
    text = proc.committed_text
    assert "xx" not in text, text
    assert text.split()[:16] == [f"es{i}" for i in range(16)]
    assert {e.language for e in events if e.committed} <= {"es", "de"}
    assert "de15" in text.split()
    assert calls[0][0] is None and all(lang in ("es", "de") for lang, _ in calls[1:])


def test_expected_languages_are_detected_among_and_kept_steady():
    policy = LanguagePolicy("EN, de,en")
    assert policy.fixed is None and policy.choice() == LanguageChoice(None, True, ("en", "de"))
    policy.observe("en", [("en", 0.9), ("de", 0.1)], 2.0)
    assert policy.choice() == LanguageChoice("en", True, ("en", "de"))
    assert LanguagePolicy("de,").choice() == LanguageChoice("de", False)  # one code: fixed
