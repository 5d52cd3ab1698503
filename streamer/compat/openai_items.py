"""A stream's protocol v1 messages as OpenAI Realtime transcription events.

One :class:`ItemTranslator` per stream session: it receives the session's messages (it is the
host's subscriber for that session) and turns them into OpenAI's input-audio-buffer and
conversation-item events. Each utterance the VAD hears becomes one conversation item:

* ``speech`` started / stopped -> ``input_audio_buffer.speech_started`` / ``speech_stopped`` and,
  as OpenAI's server VAD does, ``input_audio_buffer.committed`` at the stop;
* committed words -> ``conversation.item.input_audio_transcription.delta`` for their item (a word
  belongs to the newest item that started before it);
* the ``final`` transcript flag -> ``...transcription.completed`` with the item's whole text.

The daemon holds a sentence's last punctuation mark until it hears what follows (or a long
silence); a completed item cannot change, so the mark the final update still holds is sent with
it, and the same mark committed later is dropped. Without turn detection every word goes to one
item, completed when the client commits. No I/O here: events go to ``send``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from streamer.protocol import Close, CloseCode, is_punctuation

log = logging.getLogger(__name__)

SLACK = 0.3  # s: a word starting this close before an utterance's VAD start still belongs to it


def event_id() -> str:
    return "event_" + uuid.uuid4().hex[:20]


def new_item_id() -> str:
    return "item_" + uuid.uuid4().hex[:20]


def error_event(message: str, *, code: str | None = None, param: str | None = None,
                kind: str = "invalid_request_error", client_event: str | None = None) -> dict:
    """OpenAI's realtime ``error`` event (the connection stays open)."""
    return {"type": "error", "event_id": event_id(),
            "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": client_event}}


@dataclass
class Item:
    id: str
    start: float            # s on the connection's audio timeline
    text: str = ""
    committed: bool = False  # input_audio_buffer.committed was sent


class Timeline:
    """The connection's state that outlives one stream: the audio clock and the last committed item."""

    def __init__(self) -> None:
        self.offset = 0.0                   # s of audio in earlier streams of this connection
        self.previous_item: str | None = None


class ItemTranslator:
    """Subscriber for one stream session (see the module docstring)."""

    def __init__(self, send: Callable[[dict], None], timeline: Timeline, *, turns: bool) -> None:
        self.send = send
        self.timeline = timeline
        self.turns = turns                  # server VAD: an item per utterance
        self.items: list[Item] = []         # open (not completed) items, oldest first
        self.audio_seconds = 0.0
        self.failed: str | None = None
        self.closed = False
        self._pending: tuple[Item, str] | None = None  # words of one item not yet sent

    # ----------------------------------------------------------------- subscriber interface
    def put(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "speech" and self.turns:
            self._speech(message["state"], self.timeline.offset + float(message["at"]))
        elif kind == "transcript":
            self.audio_seconds = float(message.get("audio_seconds", self.audio_seconds))
            self._transcript(message)
        elif kind == "end":
            self.audio_seconds = float(message.get("audio_seconds", self.audio_seconds))
        elif kind == "error":
            self.failed = message.get("message", "transcription failed")
            self.send(error_event(self.failed, code=message.get("code"), kind="server_error"))

    def close(self, close: Close) -> None:
        self.closed = True
        if close.code != CloseCode.NORMAL and self.failed is None:
            self.failed = close.reason

    # ----------------------------------------------------------------- events
    def _speech(self, state: str, at: float) -> None:
        if state == "started":
            item = Item(new_item_id(), at)
            self.items.append(item)
            self.send({"type": "input_audio_buffer.speech_started", "event_id": event_id(),
                       "audio_start_ms": int(at * 1000), "item_id": item.id})
            return
        item = next((i for i in reversed(self.items) if not i.committed), None)
        if item is None:
            return
        self.send({"type": "input_audio_buffer.speech_stopped", "event_id": event_id(),
                   "audio_end_ms": int(at * 1000), "item_id": item.id})
        self._commit(item)

    def _transcript(self, message: dict) -> None:
        for word in message.get("committed", ()):
            text, start = word["word"], self.timeline.offset + float(word["start"])
            item = self._item_for(text, start)
            gathered = self._pending is not None and self._pending[0] is item
            if item is None or (is_punctuation(text) and not item.text and not gathered):
                log.debug("dropping %r: its utterance was already completed", text)
                continue
            if self._pending is not None and self._pending[0] is not item:
                self._flush()
            self._pending = (item, (self._pending[1] if self._pending else "") + text)
        self._flush()
        if message.get("final") and self.turns and self.items:
            held = ""  # the sentence's last mark, which the daemon commits only once it hears what follows
            for word in message.get("tentative", ()):
                if not is_punctuation(word["word"]):
                    break
                held += word["word"]
            if held and self.items[0].text:
                self._delta(self.items[0], held)
            self._complete(self.items[0])

    def _item_for(self, text: str, start: float) -> Item | None:
        """The item a word starting at ``start`` belongs to; older items are done once a newer one's
        words begin (the daemon commits utterances in order)."""
        if not self.items:
            if is_punctuation(text):
                return None  # a held mark released after its utterance was completed
            self.items.append(Item(new_item_id(), start))  # no VAD start for it (turn detection off)
        while len(self.items) > 1 and start >= self.items[1].start - SLACK:
            self._flush()
            self._complete(self.items[0])
        return self.items[0]

    def _flush(self) -> None:
        """Send the words gathered for one item as one delta."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._delta(*pending)

    def _delta(self, item: Item, text: str) -> None:
        if not item.text:
            text = text.lstrip()
        if not text or (not item.text and is_punctuation(text)):
            return
        item.text += text
        self.send({"type": "conversation.item.input_audio_transcription.delta", "event_id": event_id(),
                   "item_id": item.id, "content_index": 0, "delta": text})

    def _commit(self, item: Item) -> None:
        if item.committed:
            return
        item.committed = True
        self.send({"type": "input_audio_buffer.committed", "event_id": event_id(),
                   "previous_item_id": self.timeline.previous_item, "item_id": item.id})
        self.timeline.previous_item = item.id

    def _complete(self, item: Item) -> None:
        self._commit(item)
        self.items.remove(item)
        self.send({"type": "conversation.item.input_audio_transcription.completed", "event_id": event_id(),
                   "item_id": item.id, "content_index": 0, "transcript": item.text.strip(),
                   "usage": {"type": "duration", "seconds": round(self.audio_seconds, 3)}})

    # ----------------------------------------------------------------- end of the stream
    def finish(self, empty_item: bool) -> None:
        """The stream ended (the client committed, or the connection closes): complete every open item,
        or one empty item if the client committed audio in which nothing was heard."""
        if not self.items and empty_item:
            self.items.append(Item(new_item_id(), self.timeline.offset))
        for item in list(self.items):
            self._complete(item)
        self.timeline.offset += self.audio_seconds
