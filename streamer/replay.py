"""``streamer transcribe FILE``: run an audio file through the streaming core.

The same :class:`~streamer.core.StreamProcessor` the daemon uses, fed from a file: as fast
as the engine allows by default, or with ``--realtime`` paced by the wall clock, so that
audio keeps arriving while a decode runs, exactly as it would from a microphone. The
latter is what the streaming benchmark measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

import numpy as np

from streamer.config import StreamConfig
from streamer.core import StreamProcessor, TranscriptEvent
from streamer.core.language import fixed_or_among
from streamer.hypothesis import MAX_WINDOW_SECONDS, SAMPLE_RATE, DecodeRequest, Engine, Hypothesis, Word
from streamer.pacing import FRAME_SECONDS, DecodeWorker, Feeder
from streamer.vad import detector_for

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class TimedEvent:
    """A transcript event and its wall-clock time ``t``.

    ``t`` counts from the moment the stream's first sample was captured (audio time 0), so
    ``t - word.end`` is how long after being spoken a word was committed.
    """

    t: float
    event: TranscriptEvent

    def to_json(self) -> str:
        return json.dumps({"t": round(self.t, 3), **self.event.to_message()})


@dataclass
class ReplayResult:
    """Everything one replay produced, for output and for the benchmark."""

    words: list[Word]
    events: list[TimedEvent]
    decode_seconds: list[float] = field(default_factory=list)
    window_seconds: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    max_window_seconds: float = 0.0
    max_lag_seconds: float = 0.0  # audio spoken (real time) or fed (fast) but not yet decoded, worst case
    abandoned: int = 0  # updates given up for the pause or final decode due in their place (real time)

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words).strip()


class _Recorder:
    """Runs decodes with timing and keeps every event with its wall time."""

    def __init__(self, processor: StreamProcessor, engine: Engine, clock: Callable[[], float], t0: float,
                 on_event: Callable[[TimedEvent], None] | None) -> None:
        self.processor, self.engine, self.clock, self.t0 = processor, engine, clock, t0
        self.on_event = on_event
        self.events: list[TimedEvent] = []
        self.decode_seconds: list[float] = []
        self.window_seconds: list[float] = []
        self.abandoned = 0  # superseded updates given up (real time)
        self.max_lag = 0.0
        self.realtime, self.audio_end = False, 0.0

    def decode(self, request: DecodeRequest) -> None:
        """One decode, synchronously (fast mode: no audio arrives meanwhile)."""
        started = self.clock()
        hypothesis = self.engine.decode(request)
        self.complete(request, hypothesis, started)

    def complete(self, request: DecodeRequest, hypothesis: Hypothesis, started: float) -> None:
        self.decode_seconds.append(self.clock() - started)
        self.window_seconds.append(request.audio.size / SAMPLE_RATE)
        event = self.processor.complete(hypothesis)
        arrived = min(self.clock() - self.t0, self.audio_end) if self.realtime else self.processor.audio_seconds
        self.max_lag = max(self.max_lag, arrived - self.processor.decoded_seconds)
        self.record(event)

    def step(self, worker: DecodeWorker, feeder: Feeder) -> None:
        """Real time: take a finished decode, give up a superseded one, start the next one due."""
        if worker.busy and worker.ready():
            started = worker.started
            request, hypothesis = worker.result()
            if hypothesis is None:
                self._gave_up()
            else:
                self.complete(request, hypothesis, started)
        if worker.busy and self.processor.superseded:  # the simulated engine: it is not asked between steps
            worker.abandon()
            self._gave_up()
        if not worker.busy:
            request = self.processor.next_request()
            if request is not None:
                worker.start(request, lambda: feeder.catch_up() and self.processor.superseded)
            else:
                self.record(self.processor.poll())

    def _gave_up(self) -> None:
        self.processor.cancel()
        self.abandoned += 1
        log.debug("an update gave way to the decode due in its place")

    def record(self, event: TranscriptEvent | None) -> None:
        if event is not None:
            timed = TimedEvent(self.clock() - self.t0, event)
            self.events.append(timed)
            if self.on_event:
                self.on_event(timed)

    def drain(self) -> None:
        while (request := self.processor.next_request()) is not None:
            self.decode(request)
        self.record(self.processor.poll())


def replay(audio: np.ndarray, engine: Engine, config: StreamConfig, *, realtime: bool = False,
           language: str | None = None, task: str | None = None,
           on_event: Callable[[TimedEvent], None] | None = None,
           processor: StreamProcessor | None = None,
           clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep,
           decode_cost: Callable[[DecodeRequest], float] | None = None) -> ReplayResult:
    """Stream ``audio`` (16 kHz mono float32) through a processor and the engine until all is committed.

    Fast (the default): each frame is fed, then every decode due runs at once. ``realtime``: frames
    arrive by ``clock``, also while a decode runs (fed between the engine's steps; or, with
    ``decode_cost``, a decode takes that many seconds of ``clock``: the benchmark's simulated clock).
    """
    proc = processor or StreamProcessor(config, detector_for(config), language=language, task=task)
    t0 = clock()
    rec = _Recorder(proc, engine, clock, t0, on_event)
    rec.realtime, rec.audio_end = realtime, audio.size / SAMPLE_RATE  # lag counts audio spoken, fed or not
    if realtime:
        _feed_realtime(Feeder(proc, audio, clock, t0), rec, DecodeWorker(engine, clock, sleep, decode_cost), sleep)
    else:
        _feed_fast(proc, audio, rec)
    return ReplayResult(proc.committed_words, rec.events, rec.decode_seconds, rec.window_seconds,
                        proc.audio_seconds, clock() - t0, proc.max_window_seconds, rec.max_lag, rec.abandoned)


def _feed_fast(proc: StreamProcessor, audio: np.ndarray, rec: _Recorder) -> None:
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    for fed in range(0, audio.size, frame):
        proc.feed(audio[fed:fed + frame])
        rec.drain()
    proc.finish()
    rec.drain()


def _feed_realtime(feeder: Feeder, rec: _Recorder, worker: DecodeWorker, sleep: Callable[[float], None]) -> None:
    while not feeder.done:
        feeder.catch_up()
        rec.step(worker, feeder)
        if worker.busy:
            worker.wait(feeder.next_frame())
        else:
            sleep(max(0.0, feeder.next_frame() - rec.clock()))
    feeder.processor.finish()
    while True:
        rec.step(worker, feeder)
        if not worker.busy:
            break
        worker.wait(math.inf)


def transcribe_offline(engine: Engine, audio: np.ndarray, *, language: str | None = None,
                       task: str = "transcribe", prompt_chars: int = 200) -> list[Word]:
    """Plain sequential long-form decoding (30 s windows, no streaming): the quality baseline.

    Each window keeps the words that end well before its end and the next window starts
    between the last kept word and the next one, as Whisper's own long-form loop does with
    segment timestamps. The encoder always sees 30 s, as an offline tool's does (no encoder buckets).
    """
    if hasattr(engine, "with_encoder_buckets"):
        engine = engine.with_encoder_buckets([])
    fixed, among = fixed_or_among(language)  # "en,de": detect among those
    words: list[Word] = []
    pos = 0
    window = int(MAX_WINDOW_SECONDS * SAMPLE_RATE)
    while pos < audio.size - SAMPLE_RATE // 10:
        chunk = audio[pos:pos + window]
        prompt = "".join(w.word for w in words)[-prompt_chars:] if prompt_chars else ""
        offset = pos / SAMPLE_RATE
        hyp = engine.decode(DecodeRequest(chunk, prompt=prompt.lstrip(), language=fixed, task=task,
                                          offset=offset, languages=among))
        if pos + window >= audio.size:
            words += [w.shifted(offset) for w in hyp.words]
            break
        keep = [w for w in hyp.words if w.end < chunk.size / SAMPLE_RATE - 1.0]
        if not keep:
            pos += window - SAMPLE_RATE
            continue
        words += [w.shifted(offset) for w in keep]
        following = hyp.words[len(keep)] if len(keep) < len(hyp.words) else None
        cut = keep[-1].end if following is None else (keep[-1].end + max(following.start, keep[-1].end)) / 2
        pos += max(int(cut * SAMPLE_RATE), SAMPLE_RATE)
    return words


# ---------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transcribe", help="transcribe an audio file through the streaming core",
        description="Run any audio file (WAV/FLAC/OGG/MP3 via soundfile, anything else via ffmpeg; any rate, "
                    "any channel count) through the same streaming core as the daemon.")
    p.add_argument("file", nargs="?", help="audio file")
    p.add_argument("--sample", action="store_true",
                   help="transcribe the bundled sample recording (LJ Speech, public domain) instead of FILE")
    p.add_argument("--model", help="embedded name (base, tiny.en), hub id or local folder (default: config)")
    p.add_argument("--config", help="config profile (cpu, gpu) or TOML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set stream.min_chunk=0.5 (repeatable)")
    p.add_argument("--format", choices=["text", "txt", "srt", "vtt", "jsonl"],
                   help="output format (default: timestamped text, or the --output file's extension)")
    p.add_argument("--output", "-o", help="write the transcript here instead of stdout")
    p.add_argument("--realtime", action="store_true",
                   help="feed audio at real-time pace by the wall clock, so decode time counts as it would live")
    p.add_argument("--events", help="write every transcript event as JSON lines (with t = wall seconds)")
    p.add_argument("--language", help="language code, or the expected languages to detect among, e.g. en,de "
                   "(default: detect any, or the config's)")
    p.add_argument("--task", choices=["transcribe", "translate"], help="default: transcribe")
    # The transcript is the output: no INFO log lines unless -v (streamer/cli.py).
    p.set_defaults(func=main, log_level=logging.WARNING)


def main(args: argparse.Namespace) -> int:
    from streamer.audio import AudioError, load_audio
    from streamer.config import ConfigError, load_settings, parse_set_flags
    from streamer.formats import format_for_path, write
    from streamer.hypothesis import EngineError
    from streamer.resources import sample_path

    if bool(args.file) == bool(args.sample):
        print("streamer transcribe: give an audio FILE or --sample", file=sys.stderr)
        return 2
    try:
        overrides = parse_set_flags(args.set)
        overrides.update({"engine.model": args.model, "stream.language": args.language, "stream.task": args.task})
        settings = load_settings(args.config, overrides)
        audio = load_audio(args.file or sample_path())
    except (ConfigError, AudioError) as exc:
        print(f"streamer transcribe: {exc}", file=sys.stderr)
        return 2
    fmt = args.format or (format_for_path(args.output) if args.output else None) or "text"
    try:
        from streamer.engine.loader import load_engine

        engine = load_engine(settings.engine)
    except EngineError as exc:
        print(f"streamer transcribe: {exc}", file=sys.stderr)
        return 2
    events_file: TextIO | None = open(args.events, "w", encoding="utf-8") if args.events else None
    try:
        with _progress_bar(audio.size / SAMPLE_RATE) as bar:
            result = replay(audio, _ProgressEngine(engine, bar), settings.stream, realtime=args.realtime,
                            on_event=(lambda e: _write_event(events_file, e)) if events_file else None)
    finally:
        if events_file:
            events_file.close()
    print(f"streamer: {result.audio_seconds:.1f} s of audio in {result.wall_seconds:.1f} s "
          f"({settings.engine.model}, {len(result.decode_seconds)} decodes)", file=sys.stderr)
    write(result.words, fmt, Path(args.output) if args.output else sys.stdout)
    return 0


def _progress_bar(audio_seconds: float) -> "tqdm":
    """A bar of audio seconds decoded, on stderr only when it is a terminal (logs and pipes stay clean).

    It appears after a second (a run shorter than that never flickers one) and clears itself when
    done, leaving the one summary line.
    """
    from tqdm import tqdm

    return tqdm(total=round(audio_seconds, 1), unit="s", desc="transcribing", leave=False, delay=1.0,
                disable=not sys.stderr.isatty(), file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]")


class _ProgressEngine:
    """Passes decodes through to the engine and moves the bar to the end of each decoded window."""

    def __init__(self, engine: Engine, bar: "tqdm") -> None:
        self.engine, self.bar = engine, bar
        self.name = engine.name

    def decode(self, request: DecodeRequest) -> Hypothesis:
        hypothesis = self.engine.decode(request)
        self._advance([request])
        return hypothesis

    def decode_batch(self, requests: Sequence[DecodeRequest]) -> list[Hypothesis]:
        hypotheses = self.engine.decode_batch(requests)
        self._advance(requests)
        return hypotheses

    def _advance(self, requests: Sequence[DecodeRequest]) -> None:
        end = max(r.offset + r.audio.size / SAMPLE_RATE for r in requests)
        if end > self.bar.n:
            self.bar.update(min(end, self.bar.total) - self.bar.n)


def _write_event(out: TextIO, event: TimedEvent) -> None:
    out.write(event.to_json() + "\n")
    out.flush()
