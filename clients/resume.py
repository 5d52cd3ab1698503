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

    Up to ``context_seconds`` of already-committed audio before the acknowledged point is kept
    too: a resume replays it first, as context for the new connection's first window (a window
    that starts right at the uncommitted words, mid-sentence, is where Whisper drops words); the
    server decodes it and commits nothing from it again.

    Once uncommitted audio is dropped unacknowledged the exact resume point is gone:
    :attr:`complete` turns False until the server acknowledges past the gap, and a reconnect then
    starts a new session (the audio still kept is replayed into it, so at most the dropped stretch is lost).
    """

    def __init__(self, bytes_per_second: int, max_seconds: float, frame_bytes: int = 1,
                 context_seconds: float = 2.0) -> None:
        self.bytes_per_second = bytes_per_second
        self.frame_bytes = max(1, frame_bytes)  # never split a sample (or a stereo frame) in two
        self.max_bytes = self._frames(max_seconds * bytes_per_second)
        self.context_bytes = self._frames(context_seconds * bytes_per_second) if context_seconds > 0 else 0
        self.data = bytearray()
        self.start_byte = 0   # the client-timeline position of data[0], in bytes
        self.acked_byte = 0   # audio before this byte is committed (what is kept of it is context)
        self.gap_until: int | None = None  # audio before this byte was dropped unacknowledged

    def _frames(self, nbytes: float) -> int:
        return max(self.frame_bytes, int(nbytes) // self.frame_bytes * self.frame_bytes)

    @property
    def start(self) -> float:
        """Client-timeline seconds where the kept audio begins (context included)."""
        return self.start_byte / self.bytes_per_second

    @property
    def end(self) -> float:
        """Client-timeline seconds of all audio sent so far."""
        return (self.start_byte + len(self.data)) / self.bytes_per_second

    @property
    def seconds(self) -> float:
        """Everything a resume replays, context included."""
        return len(self.data) / self.bytes_per_second

    @property
    def context_seconds(self) -> float:
        """How much of the kept audio is committed context (before the acknowledged point)."""
        return max(0, min(len(self.data), self.acked_byte - self.start_byte)) / self.bytes_per_second

    @property
    def complete(self) -> bool:
        """Everything after the last acknowledgement is still here (a resume can be exact)."""
        return self.gap_until is None

    def append(self, chunk: bytes) -> None:
        """Keep a chunk that is about to be sent; drop the oldest audio past the bound."""
        self.data += chunk
        excess = len(self.data) - self.max_bytes
        if excess > 0:
            self._drop(-(-excess // self.frame_bytes) * self.frame_bytes)
            if self.start_byte > self.acked_byte:
                self.gap_until = self.start_byte
                log.debug("retained audio over its bound: %.1f s dropped unacknowledged",
                          (self.start_byte - self.acked_byte) / self.bytes_per_second)

    def ack(self, until: float) -> None:
        """The server committed everything before client-timeline second ``until``: keep only context."""
        target = int(round(until * self.bytes_per_second)) // self.frame_bytes * self.frame_bytes
        if target <= self.acked_byte:
            return
        self.acked_byte = target
        self._drop(min(len(self.data), target - self.context_bytes - self.start_byte))
        if self.gap_until is not None and target >= self.gap_until:
            self.gap_until = None

    def drop_context(self, keep: float = 0.0) -> None:
        """Keep at most ``keep`` seconds of committed context (a new session gets none: it would
        commit those words again)."""
        keep_bytes = self._frames(keep * self.bytes_per_second) if keep > 0 else 0
        self._drop(min(len(self.data), self.acked_byte - keep_bytes - self.start_byte))

    def _drop(self, nbytes: int) -> None:
        if nbytes > 0:
            del self.data[:nbytes]
            self.start_byte += nbytes

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

    def claim(self, retained_seconds: float, context_seconds: float = 0.0) -> dict[str, Any]:
        """The ``resume`` object of a ``start`` message (docs/protocol.md)."""
        claim = {"session": self.session, "token": self.token, "seq": self.seq,
                 "committed_until": self.committed_until, "retained_seconds": round(retained_seconds, 3)}
        if context_seconds > 0:
            claim["context_seconds"] = round(context_seconds, 6)
        return claim

    def clear(self) -> None:
        self.session, self.token, self.seq, self.committed_until = None, None, 0, 0.0
