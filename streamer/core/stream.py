"""The stream processor: audio in, decode requests out, hypotheses in, transcript events out.

Sans-I/O and deterministic: no asyncio, sockets, threads or wall clock. The caller (file
replay, daemon, tests) feeds audio, asks for the next due decode, runs it on an engine
however it likes (batched across streams, on a worker thread...) and hands the hypothesis
back. Time here is only the stream's audio timeline.

Policy, in order of the audio's path:

1. VAD gating (:mod:`streamer.core.gate`): only speech (plus padding) enters an utterance
   buffer; long pauses are cut; ``end_silence`` of silence closes the utterance.
2. Scheduling: an open utterance is re-decoded once ``min_chunk`` seconds of new audio
   arrived; a closed one gets one final decode at once. One request in flight at a time,
   so a slow engine just means fewer, larger updates.
3. Agreement (:mod:`streamer.core.agreement`): LocalAgreement-n commits the stable prefix;
   a final decode commits all remaining words of the utterance, a pause decode the words
   before the pause (:mod:`streamer.core.commits`).
4. Bound: after an update, a buffer longer than ``trim_to`` is cut at the last committed
   word; a buffer over ``max_buffer`` is decoded in its oldest ``max_buffer`` seconds and the
   words in the first part are committed, so the window never exceeds the cap whatever
   Whisper does (also :mod:`streamer.core.commits`).
5. Guards (:mod:`streamer.core.guards`) on every hypothesis, and the prompt reset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from streamer.config import StreamConfig
from streamer.core.agreement import LocalAgreement, new_words_after
from streamer.core.buffer import TimeMap
from streamer.core.casing import SentenceCase, unshouted
from streamer.core.commits import Committer
from streamer.core.events import SpeechBoundary, TranscriptEvent
from streamer.core.floor import CommitFloor, in_time_order
from streamer.core.guards import assess, find_repetition_loop, prompt_may_have_failed
from streamer.core.language import LanguagePolicy
from streamer.core.probe import convincing
from streamer.core.prompt import PROMPT_TOLERANCE, PromptBuilder
from streamer.core.punctuation import HeldPunctuation
from streamer.core.segmenter import PAUSE_MIN_WINDOW, Segmenter, Utterance
from streamer.core.window import stream_words
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest, Engine, Hypothesis, Word
from streamer.vad import SpeechDetector

log = logging.getLogger(__name__)

Kind = Literal["update", "final", "forced", "pause", "probe"]


@dataclass
class _InFlight:
    utterance: Utterance
    kind: Kind
    timemap: TimeMap
    pause_start: float = 0.0
    prompt: str = ""
    language: str | None = None  # what the window was decoded in (None: as the engine detected)


class StreamProcessor:
    """One stream's transcription state. See the module docstring for the policy."""

    def __init__(self, config: StreamConfig, detector: SpeechDetector | None = None, *,
                 language: str | None = None, task: str | None = None, vocabulary: str = "") -> None:
        if config.use_vad and detector is None:
            raise ValueError("stream.use_vad needs a speech detector: pass streamer.vad.detector_for(config)")
        self.config = config
        self.language = language if language is not None else config.language  # "en", "en,de" (expected), None
        self.task = task or config.task
        self.vocabulary = vocabulary  # names and terms for every decode's context, never trimmed
        self._audio = Segmenter(config, detector, busy=self._decoding, on_settled=self._retire)
        self._agreement = LocalAgreement(config.agreement_n)
        self._commits = Committer(config, self._agreement, self._audio)
        self._held = HeldPunctuation()
        self._case = SentenceCase()
        self._committed: list[Word] = []                # what clients got: words and decided marks
        self._prompt = PromptBuilder(config.prompt_chars)
        self._inflight: _InFlight | None = None
        self._finished = False
        self._seq = 0
        self._language = LanguagePolicy(self.language)
        self._last_language: str | None = self._language.fixed
        self._last_tentative: tuple[Word, ...] = ()
        self._utterance_done = False  # an utterance was completed since the last event
        # the last hypothesis' token ids and the utterance it decoded: the next decode of the same
        # utterance hands them to the engine as a draft (opaque ids; the engine may verify them in one pass)
        self._draft: tuple[Utterance | None, tuple[int, ...]] = (None, ())
        self._floor = CommitFloor()  # a resumed stream's resume point (audio before it is context)
        self.max_window_seconds = 0.0  # largest decode window requested (bench / tests)

    # ----------------------------------------------------------------- public API

    def feed(self, samples: np.ndarray) -> None:
        """Add 16 kHz mono float32 audio (any length)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._audio.feed(samples)

    def next_request(self) -> DecodeRequest | None:
        """The decode that is due now, if any (at most one in flight)."""
        if self._inflight is not None:
            return None
        utterance = self._audio.current()
        if utterance is None and self._audio.probe_due():
            return self._request(self._audio.probe_utterance(), "probe")
        kind = self._due(utterance) if utterance is not None else None
        return self._request(utterance, kind) if kind else None

    def complete(self, hypothesis: Hypothesis) -> TranscriptEvent | None:
        """Apply the result of the in-flight request; an event if the transcript changed."""
        inflight = self._inflight
        if inflight is None:
            raise RuntimeError("complete() without a request in flight (call next_request() first)")
        self._inflight = None
        self._draft = (inflight.utterance, hypothesis.tokens)
        verdict = assess(hypothesis, self.config)
        if inflight.kind == "probe":
            return self._probe_result(inflight, hypothesis, verdict)
        if verdict.rejected:
            log.debug("hypothesis rejected (%s): %r", ",".join(verdict.reasons), hypothesis.text)
        heard = self._stream_words(verdict.words, inflight.timemap)
        if (loop_at := find_repetition_loop(heard)) is not None:  # a loop whose tail lay past the audio
            heard, verdict = heard[:loop_at], replace(verdict, suspect=True, reasons=(*verdict.reasons, "repetition"))
        words = self._floor.fresh(heard, inflight.timemap.start)
        utterance = inflight.utterance
        if inflight.prompt and inflight.kind in ("final", "forced") and prompt_may_have_failed(heard, verdict):
            # This window's audio leaves the buffer after this decode, so it is tried once more
            # unprompted when the prompt may be what failed it: Whisper sometimes ends at once when
            # prompted (tiny.en on LJ001-0001 from 1.23 s to 9.65 s, prompt "printing in the": no
            # words, no-speech 0.02; from 1.27 s, or without the prompt, all 24 words), or loops on
            # the prompt's punctuation (tiny.en, prompt ". Ask, not": ". . . . . ." for "what your
            # country can do for you", a whole utterance lost after a resumed stream).
            log.debug("%s decode with a prompt heard nothing or looped: retrying without it", inflight.kind)
            self._prompt.reset(len(self._committed))
            return None
        if not verdict.rejected and self._context_drowned_it(inflight, words):
            return None
        if not verdict.rejected and self._wrong_language(inflight, hypothesis):
            if inflight.kind in ("final", "forced"):
                return None  # this window's audio is about to leave the buffer: decode it again in the new language
            return self._event([])  # nothing from a window that may be in the wrong language
        new = self._commits.apply(inflight.kind, inflight.utterance, inflight.timemap, words, verdict.rejected,
                                  inflight.pause_start)
        if inflight.kind == "final":
            self._retire(inflight.utterance)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s [%.2f-%.2f] prompt %r heard %r -> committed %r, tentative %r", inflight.kind,
                      inflight.timemap.start, inflight.timemap.end, inflight.prompt[-40:],
                      "".join(w.word for w in words), "".join(w.word for w in new),
                      "".join(w.word for w in self._agreement.tentative))
        new = self._held.settle(heard, new, ended=inflight.kind == "final" and not verdict.rejected)
        if self.done:
            new += self._held.release()
        self._last_language = self._language.current or hypothesis.language or self._last_language
        new = self._commit(self._case.apply(new, self._last_language))
        if verdict.suspect:
            self._prompt.reset(len(self._committed))
        utterance.decoded_until = max(utterance.decoded_until, inflight.timemap.end)
        return self._event(new)

    def _context_drowned_it(self, inflight: _InFlight, words: list[Word]) -> bool:
        """A window led by the last utterance's words (``carry_context``) heard nothing after them.

        Then its own words were lost in the context (the German LibriVox reading's short "Das
        ist." after "Simplicissimus" came back as "zu verholen.", all of it timed in the context,
        and the utterance ended without its words): the context is dropped and the window is
        decoded again on its own audio.
        """
        utterance, committed = inflight.utterance, self._agreement.committed
        alone = inflight.kind in ("pause", "final", "forced")  # an update's window is decoded again anyway
        if not alone or utterance.context_end is None or new_words_after(committed, words):
            return False
        if committed and committed[-1].end > utterance.context_end:
            return False  # its own words were committed already: nothing new is news here
        log.debug("%s decode heard nothing past the carried context: decoding its own audio again", inflight.kind)
        self._audio.drop_context(utterance)
        if inflight.kind == "pause":
            utterance.pause_at = inflight.pause_start
        return True

    def _wrong_language(self, inflight: _InFlight, hypothesis: Hypothesis) -> bool:
        """Weigh the window's language evidence; True if its words must not be trusted.

        That is when another language is challenging the stream's (pending, or it just took
        over: then the earlier hypotheses, in the old language, are forgotten too).
        """
        window = sum(n for _, n in inflight.timemap.runs) / SAMPLE_RATE
        before = self._language.current
        self._language.observe(hypothesis.language, hypothesis.language_probs, window)
        switched = before is not None and self._language.current != before
        if switched:
            log.info("language %s -> %s", before, self._language.current)
            self._agreement.reset_history()
        return switched or self._language.unsure

    def _probe_result(self, inflight: _InFlight, hypothesis: Hypothesis, verdict) -> TranscriptEvent | None:
        """Speech the VAD missed is adopted as an utterance; its words start the agreement."""
        if verdict.rejected or verdict.suspect or not convincing(hypothesis):
            log.debug("probe rejected: %r", hypothesis.text)
            self._audio.reject_probe()
            return None
        log.info("a probe heard speech the VAD missed at %.1f s: %r", inflight.timemap.start, hypothesis.text)
        self._audio.adopt_probe(inflight.utterance)
        self._agreement.insert(self._stream_words(verdict.words, inflight.timemap))
        inflight.utterance.decoded_until = inflight.timemap.end
        return self._event([])

    @property
    def superseded(self) -> bool:
        """The in-flight update is worth less than the decode now due in its place: give it up (:meth:`cancel`).

        A pause decode that commits on its own (a window of ``PAUSE_MIN_WINDOW``) or the final decode of a
        closed utterance commits every word the update could have, and the words after them. Waiting for the
        update first made a sentence's last words wait for two decodes (``stream.preempt_updates``).
        """
        inflight = self._inflight
        if inflight is None or inflight.kind != "update" or not self.config.preempt_updates:
            return False
        utterance = inflight.utterance
        if utterance.closed:
            return True
        return self._audio.pause_due(utterance) and utterance.buffer.seconds >= PAUSE_MIN_WINDOW

    def cancel(self) -> None:
        """Forget the in-flight request (the engine failed, or the caller gave up a :attr:`superseded` update).

        What it would have decoded is asked for again, after any decode due in its place."""
        if self._inflight is not None:
            utterance = self._inflight.utterance
            utterance.new_samples = max(utterance.new_samples, int(self.config.min_chunk * SAMPLE_RATE))
            if self._inflight.kind == "pause":
                utterance.pause_at = self._inflight.pause_start
        self._inflight = None

    def finish(self) -> None:
        """No more audio: the remaining speech is queued for final decodes."""
        if not self._finished:
            self._finished = True
            self._audio.finish()

    @property
    def done(self) -> bool:
        """Finished, and every word is committed."""
        return self._finished and self._inflight is None and self._audio.current() is None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def in_flight(self) -> bool:
        return self._inflight is not None

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received."""
        return self._audio.received / SAMPLE_RATE

    @property
    def decoded_seconds(self) -> float:
        """Stream time up to which all audio has been dealt with (decoded, or skipped as non-speech)."""
        return self._audio.decoded_seconds

    @property
    def committed_words(self) -> list[Word]:
        """Everything committed so far, in order: words, and decided marks as their own items."""
        return list(self._committed)

    @property
    def committed_text(self) -> str:
        return "".join(w.word for w in self._committed).strip()

    @property
    def tentative_words(self) -> list[Word]:
        return list(self._last_tentative)

    @property
    def buffer_seconds(self) -> float:
        """Audio held for decoding now (open and closed utterances)."""
        return self._audio.buffer_seconds

    def resume(self, committed_until: float, seq: int, tail: str = "", held: str = "", context: float = 0.0) -> None:
        """Continue a stream another core was serving: same timeline, ``seq`` and context.

        Audio fed from now on starts ``context`` seconds before ``committed_until`` (everything
        before that point is committed: the context is decoded, never committed again; see
        :mod:`streamer.core.floor`); ``tail`` is the end of the committed text (the next decodes'
        prompt), ``held`` a trailing mark that was still waiting for what follows the last committed word.
        """
        self._audio.start_at(int(round(max(0.0, committed_until - context) * SAMPLE_RATE)))
        self._floor = CommitFloor(committed_until, tail)
        self._seq = seq
        self._prompt.earlier = tail
        self._prompt.earlier_until = committed_until
        self._case.resume(tail)
        last = tail.split()[-1] if tail.split() else ""
        self._held.hold(Word(" " + last, committed_until, committed_until), held if last else "")

    def committed_until(self) -> float:
        """Audio before this stream time is fully committed: a resumed stream replays only what follows.

        The end of the last committed word, or where the oldest audio still to decode begins;
        with nothing left to decode, everything received so far.
        """
        utterance = self._audio.current()
        if utterance is None:
            return self._floor.clamp(self.decoded_seconds)
        last_end = self._committed[-1].end if self._committed else 0.0
        return self._floor.clamp(min(max(utterance.buffer.start, last_end), self._audio.position / SAMPLE_RATE))

    @property
    def seq(self) -> int:
        """The last transcript event's number."""
        return self._seq

    @property
    def held_mark(self) -> str:
        """The trailing mark waiting for what follows the last committed word ("" if none)."""
        return self._held.mark

    def take_boundaries(self) -> list[SpeechBoundary]:
        """Speech starts and stops the VAD saw since the last call (for clients that asked for them)."""
        return self._audio.take_boundaries()

    def _decoding(self, utterance: Utterance) -> bool:
        return self._inflight is not None and self._inflight.utterance is utterance

    # ----------------------------------------------------------------- scheduling

    def _due(self, utterance: Utterance) -> Kind | None:
        over_cap = utterance.buffer.seconds > self.config.max_buffer
        if utterance.closed:
            return "forced" if over_cap else "final"
        if over_cap:
            return "forced"
        if self._audio.pause_due(utterance):
            return "pause"
        if utterance.new_samples >= self.config.min_chunk * SAMPLE_RATE and not self._audio.pause_pending(utterance):
            return "update"
        return None

    def _request(self, utterance: Utterance, kind: Kind) -> DecodeRequest:
        self._audio.drop_long_context(utterance)
        audio, timemap = utterance.buffer.window(self.config.max_buffer)
        utterance.new_samples = 0
        pause_start = 0.0
        if kind == "pause":
            pause_start, utterance.pause_at = utterance.pause_at, None
            utterance.heard_speech = False
        prompt = self._prompt.build(self._committed, before=timemap.start)
        last = self._committed[-1] if self._committed else None
        prompt += self._held.in_prompt(last, timemap.start, PROMPT_TOLERANCE) if prompt else ""
        choice = self._language.choice()
        self._inflight = _InFlight(utterance, kind, timemap, pause_start, prompt, choice.language)
        self.max_window_seconds = max(self.max_window_seconds, audio.size / SAMPLE_RATE)
        drafted, draft = self._draft
        return DecodeRequest(audio=audio, prompt=prompt, language=choice.language, task=self.task,
                             offset=timemap.start, vocabulary=self.vocabulary, detect_language=choice.detect,
                             languages=choice.among,
                             draft=draft if drafted is utterance else (),
                             stop_ratio=self.config.compression_ratio_threshold, beam_size=self._beam_size(kind))

    def _beam_size(self, kind: Kind) -> int | None:
        """A decode that commits on its own (no later hypothesis votes on its words) may get a wider search."""
        alone = kind in ("pause", "final", "forced")
        return self.config.commit_beam_size if alone and self.config.commit_beam_size else None

    # ----------------------------------------------------------------- results

    def _stream_words(self, words: tuple[Word, ...], timemap: TimeMap) -> list[Word]:
        return unshouted(stream_words(words, timemap, self._audio.speech_regions()))

    def _retire(self, utterance: Utterance) -> None:
        self._utterance_done = True
        self._agreement.reset_history()
        carry = self.config.carry_context
        keep = [w.start for w in self._agreement.committed if w.start >= utterance.buffer.end - carry] if carry else []
        self._audio.retire(utterance, context_from=min(keep) if keep else None)

    def poll(self) -> TranscriptEvent | None:
        """Updates that wait for time, not for a decode: a held mark at the end or after a long
        silence, and the end of an utterance that needed no final decode."""
        if self._inflight is not None:
            return None
        new: list[Word] = []
        if self._held.pending and (self.done or self._audio.silence_seconds() >= self.config.long_silence):
            new = self._commit(self._case.apply(self._held.release(), self._last_language))
        return self._event(new) if new or self._utterance_done else None

    def _commit(self, new: list[Word]) -> list[Word]:
        """Append to the committed words, in time order (see :func:`in_time_order`)."""
        new = in_time_order(new, self._committed[-1].start if self._committed else 0.0)
        self._committed += new
        return new

    def _event(self, new: list[Word]) -> TranscriptEvent | None:
        tentative = tuple(self._held.tentative + self._agreement.tentative)
        final, self._utterance_done = self._utterance_done, False
        if not new and not final and tentative == self._last_tentative:
            return None
        self._last_tentative = tentative
        self._seq += 1
        return TranscriptEvent(seq=self._seq, committed=tuple(new), tentative=tentative,
                               language=self._last_language, audio_seconds=self.audio_seconds, final=final)


def run_until_idle(processor: StreamProcessor, engine: Engine) -> list[TranscriptEvent]:
    """Run every decode that is due now, synchronously, then any due time-based commit; the events."""
    events = []
    while (request := processor.next_request()) is not None:
        event = processor.complete(engine.decode(request))
        if event is not None:
            events.append(event)
    if (event := processor.poll()) is not None:
        events.append(event)
    return events
