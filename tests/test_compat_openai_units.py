"""The OpenAI adapters' pure parts, with scripted protocol v1 messages: which item a word belongs to,
when an item completes, and how session updates and response formats are read. Milliseconds, no model."""

from __future__ import annotations

import pytest

from streamer.compat import openai_formats as fmt
from streamer.compat.openai_items import ItemTranslator, Timeline
from streamer.compat.openai_realtime import Config, RealtimeError, _configured
from streamer.hypothesis import Word
from streamer.protocol import speech, transcript


def w(text: str, start: float, end: float | None = None) -> Word:
    return Word(text, start, start + 0.3 if end is None else end, 0.9)


def run(messages: list[dict], turns: bool = True) -> tuple[list[dict], ItemTranslator]:
    sent: list[dict] = []
    items = ItemTranslator(sent.append, Timeline(), turns=turns)
    for message in messages:
        items.put(message)
    return sent, items


def kinds(events: list[dict]) -> list[str]:
    return [e["type"].rsplit(".", 1)[-1] if "transcription" in e["type"] else e["type"] for e in events]


def test_utterances_become_items_with_their_own_words_and_held_marks():
    sent, _ = run([
        speech("started", 0.5), transcript(1, [w(" And", 0.6), w(" so", 0.9)], [w(" my", 1.2)], "en", 2.0),
        speech("stopped", 2.4),
        speech("started", 3.0),  # the next utterance starts before the first one's final decode
        transcript(2, [w(" my", 1.2), w(" friends", 1.5)], [w(".", 1.8)], "en", 3.2, final=True),
        transcript(3, [w(".", 1.8), w(" Ask", 3.1)], [], "en", 4.0),  # the held mark commits with the next word
        speech("stopped", 4.5), transcript(4, [w(" not", 3.5)], [], "en", 5.0, final=True),
    ])
    assert kinds(sent) == ["input_audio_buffer.speech_started", "delta", "input_audio_buffer.speech_stopped",
                           "input_audio_buffer.committed", "input_audio_buffer.speech_started", "delta", "delta",
                           "completed", "delta", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                           "delta", "completed"]
    first, second = sent[0]["item_id"], sent[4]["item_id"]
    completed = [e for e in sent if e["type"].endswith("completed")]
    assert [(e["item_id"], e["transcript"]) for e in completed] == [(first, "And so my friends."), (second, "Ask not")]
    deltas = [(e["item_id"], e["delta"]) for e in sent if e["type"].endswith("delta")]
    assert deltas == [(first, "And so"), (first, " my friends"), (first, "."), (second, "Ask"), (second, " not")]
    committed = [e for e in sent if e["type"] == "input_audio_buffer.committed"]
    assert [(e["previous_item_id"], e["item_id"]) for e in committed] == [(None, first), (first, second)]
    assert sent[0]["audio_start_ms"] == 500 and sent[2]["audio_end_ms"] == 2400


def test_words_of_a_newer_utterance_complete_the_older_one_even_without_its_final():
    sent, _ = run([speech("started", 0.0), speech("stopped", 1.0), speech("started", 2.0),
                   transcript(1, [w(" one", 0.1), w(" two", 2.1)], [], "en", 3.0)])
    completed = [e for e in sent if e["type"].endswith("completed")]
    assert [e["transcript"] for e in completed] == ["one"]
    assert sent[-1]["type"].endswith("delta") and sent[-1]["delta"] == "two"


def test_without_turn_detection_everything_is_one_item_completed_at_commit():
    sent, items = run([speech("started", 0.0), transcript(1, [w(" one", 0.1)], [], "en", 1.0, final=True),
                       transcript(2, [w(" two", 2.1)], [], "en", 3.0, final=True)], turns=False)
    assert kinds(sent) == ["delta", "delta"]
    items.put({"type": "end", "audio_seconds": 3.5})
    items.finish(empty_item=True)
    assert kinds(sent)[-2:] == ["input_audio_buffer.committed", "completed"]
    assert sent[-1]["transcript"] == "one two" and items.timeline.offset == 3.5


def test_a_commit_of_silence_completes_one_empty_item_and_errors_are_openai_events():
    sent, items = run([{"type": "error", "code": "internal_error", "message": "decoding failed"}])
    assert sent[0]["type"] == "error" and sent[0]["error"]["code"] == "internal_error"
    assert set(sent[0]["error"]) == {"type", "code", "message", "param", "event_id"}
    items.finish(empty_item=True)
    assert sent[-1]["transcript"] == "" and sent[-2]["type"] == "input_audio_buffer.committed"


def test_session_updates_in_both_dialects():
    ga = _configured(Config(), {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "transcription": {"language": "de", "prompt": "Kafka"},
        "turn_detection": None}}})
    assert (ga.rate, ga.language, ga.prompt, ga.turns) == (16000, "de", "Kafka", False)
    beta = _configured(ga, {"input_audio_format": "pcm16",
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}})
    assert (beta.rate, beta.language, beta.turns, beta.silence) == (24000, "de", True, 0.8)
    for bad, param in (({"input_audio_format": "g711_ulaw"}, "session.input_audio_format"),
                       ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 96000}}}},
                        "session.audio.input.format.rate"),
                       ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection"),
                       ({"turn_detection": {"type": "server_vad", "silence_duration_ms": 20}},
                        "session.turn_detection.silence_duration_ms")):
        with pytest.raises(RealtimeError) as exc:
            _configured(Config(), bad)
        assert exc.value.param == param


def test_verbose_words_join_punctuation_and_segments_follow_cues():
    words = [w(" Hello", 0.0), w(",", 0.3), w(" world", 0.4), w(".", 0.7), w(" Again", 3.0)]
    merged = fmt.merged_words(words)
    assert [x.word for x in merged] == [" Hello,", " world.", " Again"]
    segments = fmt.segments(words, 0.0)
    assert [s["text"] for s in segments] == [" Hello, world.", " Again"] and segments[1]["start"] == 3.0
    assert all(s["avg_logprob"] < 0 for s in segments)
    assert fmt.error_body("nope", 413, param="file") == {
        "error": {"message": "nope", "type": "invalid_request_error", "param": "file", "code": None}}
