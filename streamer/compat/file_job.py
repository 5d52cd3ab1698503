"""A whole audio file through a live session on the host: what an upload API runs.

Not a second pipeline: the file is decoded block by block (``streamer.audio.AudioFileReader``,
on a worker thread) and fed to an ordinary :class:`~streamer.daemon.session.Session`, so it is
gated by the same VAD, decoded by the same scheduler and model, and committed by the same
LocalAgreement policy as a live stream. It is fed as fast as the engine takes it, but never
more than ``stream.min_chunk`` ahead of the decoder (as ``streamer transcribe`` does), so each
decode adds one chunk of new audio and memory stays flat for any length. The session is marked
``batch``: it takes its turn in every scheduler round like a live stream, but its decode time
does not count toward the capacity that admits live streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from streamer.audio import AudioFileReader
from streamer.daemon.host import SessionHost, session_keys
from streamer.daemon.session import Session
from streamer.hypothesis import Word
from streamer.protocol import Close, CloseCode, StartParams

log = logging.getLogger(__name__)


class JobError(Exception):
    """The session failed (the engine raised, or the start was refused); the message says why."""


@dataclass
class Update:
    """What one transcript update added: newly committed words, and whether an utterance ended."""

    words: list[Word]
    final: bool = False


@dataclass
class Outcome:
    """The finished transcript of a file."""

    words: list[Word] = field(default_factory=list)
    text: str = ""
    language: str | None = None
    duration: float = 0.0


class FileTranscription:
    """One file as one batch session; its events arrive through :meth:`put` / :meth:`close`
    (the host's subscriber interface) and come out of :meth:`updates` in order."""

    def __init__(self, host: SessionHost, params: StartParams) -> None:
        self.host = host
        self.params = params
        self.outcome = Outcome()
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self._error: str | None = None
        self._failed = False

    # ----------------------------------------------------------------- subscriber side (the host calls these)
    def put(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "transcript":
            words = [Word(w["word"], w["start"], w["end"], w.get("probability", 1.0)) for w in message["committed"]]
            self.outcome.words += words
            self.outcome.language = message.get("language") or self.outcome.language
            if words or message.get("final"):
                self._queue.put_nowait(Update(words, bool(message.get("final"))))
        elif kind == "end":
            self.outcome.text = message.get("text", "")
            self.outcome.duration = float(message.get("audio_seconds", 0.0))
        elif kind == "error":
            self._error = message.get("message", "transcription failed")

    def close(self, close: Close) -> None:
        if close.code != CloseCode.NORMAL:
            self._failed = True

    # ----------------------------------------------------------------- running
    async def updates(self, reader: AudioFileReader) -> AsyncIterator[Update]:
        """Run the file and yield each update as its words commit; ends when every word is in
        (:attr:`outcome` then holds the whole transcript).

        Raises :class:`JobError` if the session fails. If the consumer stops early (a client hung
        up), the session is dropped without decoding the rest.
        """
        runner = asyncio.ensure_future(self.run(reader))
        try:
            while (item := await self._queue.get()) is not None:
                yield item
            await runner
        finally:
            if not runner.done():
                runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def run(self, reader: AudioFileReader) -> Outcome:
        """Feed the whole file, wait until every word is committed, and return the transcript."""
        try:
            await self._run(reader)
        finally:
            self._queue.put_nowait(None)
        if self._failed:
            raise JobError(self._error or "transcription failed")
        if not self.outcome.text:
            self.outcome.text = "".join(w.word for w in self.outcome.words).strip()
        return self.outcome

    async def _run(self, reader: AudioFileReader) -> None:
        host = self.host
        session = host.new_session(self.params, autostart=True, prefix="file-", resumable=False)
        session.batch = True
        started = await host.scheduler.call(session.start, {})
        if session.ended:
            self._failed = True
            self._error = next((m["message"] for m in started if isinstance(m, dict) and m.get("type") == "error"),
                               "the session could not start")
            return
        host.register(session, self, session_keys(session.id))
        finished = False
        try:
            loop = asyncio.get_running_loop()
            while True:
                block: np.ndarray = await loop.run_in_executor(None, reader.read)
                if block.size == 0:
                    break
                await self._paced(session)
                if not session.active:
                    break
                await host.feed(session, block)
            await host.finalise(session)
            finished = True
        finally:
            if not finished:  # the client went away, or reading failed: nothing more is wanted
                await asyncio.shield(host.detach(session))

    async def _paced(self, session: Session) -> None:
        """Wait while more than one chunk of this file waits for the decoder (memory stays flat, and
        each decode sees one chunk of new audio, as in a live stream)."""
        bound = self.host.settings.stream.min_chunk
        scheduler = self.host.scheduler
        while session.active and session.lag > bound:
            scheduler.wake()
            await scheduler.progressed(session, timeout=5.0)
            if not session.in_flight and session.lag > bound:
                return  # nothing due although audio waits (silence, or a short tail): keep feeding
