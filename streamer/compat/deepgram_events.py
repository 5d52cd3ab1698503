"""Protocol v1 events as Deepgram live messages (sans-I/O: no sockets, no clock).

Deepgram's model of a stream: ``Results`` with ``is_final: false`` are interim guesses at the
audio since the last final one; ``is_final: true`` results are never revised and tile the
audio; ``speech_final: true`` marks the final result that ends an utterance (endpointing);
``UtteranceEnd`` follows a gap of ``utterance_end_ms`` after the last word; ``SpeechStarted``
is the VAD's. Protocol v1 says the same things differently: committed words (final), the
tentative tail (interim), ``final`` on the update that completes an utterance, ``speech``.

One difference matters: v1 may commit a word before its trailing punctuation is decided (the
mark follows as its own item). A Deepgram final word cannot be amended, so the newest
committed word waits for the next committed word (and its mark) before it is sent as final;
it shows in interim results meanwhile. At an utterance's end everything is sent, with a
mark still undecided taken as Whisper wrote it.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from streamer import __version__
from streamer.compat.deepgram_params import DeepgramParams

CHANNEL = [0, 1]  # channel_index: this result's channel, of how many (one mixed channel)


def _strip_punctuation(text: str) -> str:
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    return text[start:end]


@dataclass
class Timeline:
    """Silence the adapter inserted (to finalize) is not the client's audio: stream time -> client time."""

    gaps: list[tuple[float, float]] = field(default_factory=list)  # (stream time, seconds)

    @property
    def inserted(self) -> float:
        return sum(length for _, length in self.gaps)

    def insert(self, client_at: float, seconds: float) -> None:
        self.gaps.append((client_at + self.inserted, seconds))

    def client(self, t: float) -> float:
        shift = 0.0
        for start, length in self.gaps:
            if t >= start + length:
                shift += length
            elif t > start:
                shift += t - start
        return round(max(0.0, t - shift), 3)


class Translator:
    """One Deepgram stream's view of its session's v1 events."""

    def __init__(self, params: DeepgramParams, model: str, request_id: str | None = None) -> None:
        self.params = params
        self.request_id = request_id or str(uuid.uuid4())
        self.model = model
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"streamer:{model}"))
        self.timeline = Timeline()
        self.cursor = 0.0              # client time where the last final result ended
        self.held: list[dict] = []     # committed items not yet sent as final
        self.tentative: list[dict] = []
        self.in_speech = False
        self._held_out: list[dict] | None = None  # messages held back while a Finalize completes
        self._last_interim = ""
        self._last_word_end: float | None = None
        self._words_since_end = False  # words heard since the last UtteranceEnd

    # ------------------------------------------------------------- v1 in
    def transcript(self, message: dict) -> list[dict]:
        """A v1 ``transcript``: final results for words that can no longer change, then an interim."""
        self.held += [self._client_times(w) for w in message["committed"]]
        self.tentative = [self._client_times(w) for w in message["tentative"]]
        ended = bool(message.get("final"))
        if ended:  # a mark still held is taken as written: the utterance is over
            release = self.held + [w for w in self.tentative if w.get("punctuation")]
            self.held, self.tentative = [], [w for w in self.tentative if not w.get("punctuation")]
        else:
            release, self.held = self._split_settled(self.held)
        out: list[dict] = []
        words = self.words(release)
        if words:
            end = max(self.cursor, words[-1]["end"])
            out.append(self.results(words, self.cursor, end, final=True,
                                    speech_final=ended and self.params.speech_final))
            self.cursor, self._last_interim = end, ""
            self._note_words(words)
        audio = self.timeline.client(message.get("audio_seconds", 0.0))
        interim = self.words(self.held + self.tentative)
        text = self.text(interim)
        if self.params.interim_results and interim and text != self._last_interim:
            out.append(self.results(interim, self.cursor, max(audio, interim[-1]["end"]), final=False))
            self._last_interim = text
            self._words_since_end = True  # heard; UtteranceEnd names a final word's end (below)
        return out + self.tick(audio)

    def speech(self, message: dict) -> list[dict]:
        """A v1 ``speech`` boundary: SpeechStarted when asked for (VAD events)."""
        self.in_speech = message.get("state") == "started"
        if self.in_speech and self.params.vad_events:
            return [{"type": "SpeechStarted", "channel": CHANNEL, "timestamp": self.timeline.client(message["at"])}]
        return []

    def tick(self, audio_seconds: float) -> list[dict]:
        """``UtteranceEnd`` once ``utterance_end_ms`` of audio passed the last word with every word final."""
        gap = self.params.utterance_end
        if (gap is None or not self._words_since_end or self.pending or self.in_speech
                or self._last_word_end is None or audio_seconds - self._last_word_end < gap):
            return []
        self._words_since_end = False
        return [{"type": "UtteranceEnd", "channel": CHANNEL, "last_word_end": self._last_word_end}]

    @property
    def pending(self) -> bool:
        """Words not yet final (or speech not yet decoded): a Finalize has something to flush."""
        return bool(self.held or [w for w in self.tentative if not w.get("punctuation")])

    # ------------------------------------------------------------- Finalize
    @property
    def finalizing(self) -> bool:
        return self._held_out is not None

    def finalize(self) -> None:
        """A Finalize began: hold messages back until :meth:`finalized`, so the last final result
        it produced can say ``from_finalize``."""
        if self._held_out is None:
            self._held_out = []

    def outgoing(self, messages: list[dict]) -> list[dict]:
        """What to send now (nothing while a Finalize completes)."""
        if self._held_out is None:
            return messages
        self._held_out += messages
        return []

    def finalized(self) -> list[dict]:
        """Every word heard before the Finalize is final: the held messages, the last final result
        marked ``from_finalize`` (an empty one if the Finalize made nothing final)."""
        out, self._held_out = self._held_out or [], None
        last = next((m for m in reversed(out) if m.get("type") == "Results" and m["is_final"]), None)
        if last is not None:
            last["from_finalize"] = True
        else:
            out.append(self.results([], self.cursor, self.cursor, final=True, from_finalize=True))
        return out

    # ------------------------------------------------------------- Deepgram out
    def words(self, items: list[dict]) -> list[dict]:
        """v1 items as Deepgram words: a mark item joins the word before it (``punctuated_word``)."""
        out: list[dict] = []
        for item in items:
            text = item["word"].strip()
            if item.get("punctuation"):
                if out:  # else its word was sent as final already: it cannot be amended
                    out[-1]["punctuated_word"] += text
                continue
            plain = _strip_punctuation(text).lower()
            if not plain:
                continue
            out.append({"word": plain, "start": item["start"], "end": item["end"],
                        "confidence": item.get("probability", 1.0), "punctuated_word": text})
        if not self.params.punctuate:
            for w in out:
                del w["punctuated_word"]
        return out

    def text(self, words: list[dict]) -> str:
        return " ".join(w.get("punctuated_word", w["word"]) for w in words)

    def results(self, words: list[dict], start: float, end: float, *, final: bool, speech_final: bool = False,
                from_finalize: bool = False) -> dict:
        confidence = sum(w["confidence"] for w in words) / len(words) if words else 0.0
        return {
            "type": "Results", "channel_index": CHANNEL, "duration": round(max(0.0, end - start), 3),
            "start": round(start, 3), "is_final": final, "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": self.text(words), "confidence": round(confidence, 3),
                                          "words": words}]},
            "metadata": {"request_id": self.request_id, "model_uuid": self.model_uuid,
                         "model_info": {"name": self.model, "version": __version__, "arch": "whisper"}},
        }

    def metadata(self, duration: float, sha256: str, channels: int) -> dict:
        """The last message before a normal close: what was transcribed."""
        return {"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                "sha256": sha256, "created": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "duration": round(duration, 3), "channels": channels, "models": [self.model_uuid],
                "model_info": {self.model_uuid: {"name": self.model, "version": __version__, "arch": "whisper"}}}

    @staticmethod
    def error(variant: str, description: str, **extra) -> dict:
        return {"type": "Error", "variant": variant, "description": description, **extra}

    # ------------------------------------------------------------- helpers
    def _client_times(self, word: dict) -> dict:
        return {**word, "start": self.timeline.client(word["start"]), "end": self.timeline.client(word["end"])}

    @staticmethod
    def _split_settled(items: list[dict]) -> tuple[list[dict], list[dict]]:
        """Everything before the newest word (its mark may still come) is settled."""
        last = max((i for i, w in enumerate(items) if not w.get("punctuation")), default=None)
        return (items, []) if last is None else (items[:last], items[last:])

    def _note_words(self, words: list[dict]) -> None:
        """Final words: UtteranceEnd's ``last_word_end`` is the end of a word a final result carried (an
        interim word's end, from an earlier decode, may not be any final word's)."""
        if words:
            self._words_since_end = True
            self._last_word_end = max(self._last_word_end or 0.0, words[-1]["end"])
