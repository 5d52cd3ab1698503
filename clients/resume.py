"""The client's half of resuming a stream: what it keeps so another connection can carry on.

The server commits words up to some audio time and says so in every ``transcript``
(``committed_until``) together with a signed ``resume`` token (docs/protocol.md, "Resuming a
stream"). Everything the client sent after that time may still turn into words, so the client
keeps it; on a new connection it presents the token and replays exactly that audio, and the
server continues the same session: same id, ``seq`` going on, no word committed twice.

Sans-I/O: no sockets, no clock. Times are seconds on the *client's* timeline (all audio it ever
sent); a stream that had to start over as a new session is ``offset`` seconds into it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("streamer.client")


class RetainedAudio:
    """Audio sent but not yet committed, bounded to ``max_seconds`` (oldest dropped beyond that).

    Once audio is dropped unacknowledged the exact resume point is gone: :attr:`complete` turns
    False until the server acknowledges past the gap, and a reconnect then starts a new session
    (the audio still kept is replayed into it, so at most the dropped stretch is lost).
    """

    def __init__(self, bytes_per_second: int, max_seconds: float, frame_bytes: int = 1) -> None:
        self.bytes_per_second = bytes_per_second
        self.frame_bytes = max(1, frame_bytes)  # never split a sample (or a stereo frame) in two
        self.max_bytes = max(self.frame_bytes, int(max_seconds * bytes_per_second) // self.frame_bytes * self.frame_bytes)
        self.data = bytearray()
        self.start_byte = 0   # the client-timeline position of data[0], in bytes
        self.gap_until: int | None = None  # audio before this byte was dropped unacknowledged

    @property
    def start(self) -> float:
        """Client-timeline seconds where the kept audio begins."""
        return self.start_byte / self.bytes_per_second

    @property
    def end(self) -> float:
        """Client-timeline seconds of all audio sent so far."""
        return (self.start_byte + len(self.data)) / self.bytes_per_second

    @property
    def seconds(self) -> float:
        return len(self.data) / self.bytes_per_second

    @property
    def complete(self) -> bool:
        """Everything after the last acknowledgement is still here (a resume can be exact)."""
        return self.gap_until is None

    def append(self, chunk: bytes) -> None:
        """Keep a chunk that is about to be sent; drop the oldest audio past the bound."""
        self.data += chunk
        excess = len(self.data) - self.max_bytes
        if excess > 0:
            excess = -(-excess // self.frame_bytes) * self.frame_bytes
            del self.data[:excess]
            self.start_byte += excess
            self.gap_until = self.start_byte
            log.debug("retained audio over its bound: %.1f s dropped unacknowledged", excess / self.bytes_per_second)

    def ack(self, until: float) -> None:
        """The server committed everything before client-timeline second ``until``: forget it."""
        target = int(round(until * self.bytes_per_second)) // self.frame_bytes * self.frame_bytes
        drop = min(len(self.data), target - self.start_byte)
        if drop > 0:
            del self.data[:drop]
            self.start_byte += drop
        if self.gap_until is not None and target >= self.gap_until:
            self.gap_until = None

    def bytes(self) -> bytes:
        return bytes(self.data)


@dataclass
class ResumePoint:
    """The latest resume state the server signed for this stream (empty before ``ready``)."""

    session: str | None = None
    token: str | None = None
    seq: int = 0
    committed_until: float = 0.0  # on the *server session's* timeline

    def update(self, event: dict[str, Any]) -> bool:
        """Take the token from ``ready``, ``transcript`` or ``reconnect``; True when it moved on."""
        token = event.get("resume")
        if not token:
            return False
        self.token = str(token)
        self.session = str(event.get("session") or self.session or "")
        self.seq = int(event.get("seq", self.seq) or 0)
        self.committed_until = float(event.get("committed_until", self.committed_until) or 0.0)
        return True

    def claim(self, retained_seconds: float) -> dict[str, Any]:
        """The ``resume`` object of a ``start`` message (docs/protocol.md)."""
        return {"session": self.session, "token": self.token, "seq": self.seq,
                "committed_until": self.committed_until, "retained_seconds": round(retained_seconds, 3)}

    def clear(self) -> None:
        self.session, self.token, self.seq, self.committed_until = None, None, 0, 0.0
