"""``streamer bench stream``: quality and latency of one real-time stream, per model.

For each model, each long-form file of the shared data is replayed through the streaming
core at real-time pace (decode time counts, as live), and decoded offline by the same model
in the same run. Reported:

* WER of the committed text and of the offline decode (Whisper English normaliser);
* sentence completion latency: when each sentence's last word was committed, minus the
  sentence's end (p50, p90, max; and p90 of the first and last quarter, to show growth);
* words committed in the long pauses of a file, and on the ``nonspeech/`` clips
  (hallucinations; the clips are replayed fast: VAD gating and guards are identical and
  fast replay decodes more often, so it is the stricter test);
* decode time per update (p50, p95), the largest decode window, peak RSS.

Real-time numbers move between runs (decode times shift the update points, and with them
what gets committed), so ``--runs N`` replays every file N times and adds a median row; the
offline baseline is deterministic and decoded once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from streamer.bench import textscore as ts
from streamer.bench.metrics import (CommittedWord, pauses, percentile, sentence_latencies, wer,
                                    words_in_spans)
from streamer.hypothesis import SAMPLE_RATE

log = logging.getLogger(__name__)

LONGFORM = ["ljspeech_LJ001-0001_to_0032.wav", "ljspeech_LJ001-0001_to_0010_with_10s_silence_and_10s_noise.wav"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="base,tiny.en", help="comma-separated models (default base,tiny.en)")
    parser.add_argument("--data", type=Path, help="shared data folder (default $STREAMER_DATA or ../shared/data)")
    parser.add_argument("--files", default=",".join(LONGFORM), help="comma-separated files under longform/")
    parser.add_argument("--limit", type=float, default=0.0, help="use only the first SECONDS of every file (smoke)")
    parser.add_argument("--config", default="cpu", help="profile in configs/ or a TOML path (default cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key (repeatable), e.g. stream.min_chunk=0.5")
    parser.add_argument("--language", default="en", help="language passed to the engine (default en; '' = detect)")
    parser.add_argument("--fast", action="store_true", help="replay as fast as possible instead of real time")
    parser.add_argument("--simulate", metavar="FIXED,PER_SECOND",
                        help="real time on a simulated clock: each decode takes FIXED + PER_SECOND x window "
                             "seconds (policy exploration on a busy machine; not a measurement)")
    parser.add_argument("--runs", type=int, default=1, help="replay every file this many times; adds medians")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline decode baseline")
    parser.add_argument("--no-nonspeech", action="store_true", help="skip the nonspeech/ clips")
    parser.add_argument("--json", type=Path, default=Path("bench_stream.json"), help="write results here")


@dataclass
class FileResult:
    model: str
    file: str
    audio_seconds: float
    wall_seconds: float
    wer: float
    offline_wer: float | None
    cased_wer: float | None     # words as written: case and attached punctuation count
    offline_cased_wer: float | None
    false_breaks: int           # sentence marks followed by a lower-case word
    offline_false_breaks: int | None
    sentences: int
    missing_sentences: int
    latency_p50: float | None
    latency_p90: float | None
    latency_max: float | None
    latency_p90_first_quarter: float | None
    latency_p90_last_quarter: float | None
    mark_latency_p90: float | None  # when the sentence's final punctuation arrived (it waits for audio after the word)
    pause_words: int
    decodes: int
    decode_p50: float | None
    decode_p95: float | None
    max_window_seconds: float
    max_lag_seconds: float
    text: str
    offline_text: str | None
    run: int = 1  # 1..N; 0 marks the median row of several runs
    # per reference sentence: (its end in the audio, s; latency of its last word, s, or None if never committed)
    sentence_latencies: list[tuple[float, float | None]] = field(default_factory=list)
    abandoned: int = 0  # updates given up for the pause or final decode due in their place (stream.preempt_updates)


SLOW_SENTENCE = 3.0  # s: a sentence this late is logged with its text (to find the rare outliers)

MEDIAN_FIELDS = ("wer", "cased_wer", "false_breaks", "latency_p50", "latency_p90", "latency_max",
                 "latency_p90_first_quarter", "latency_p90_last_quarter", "mark_latency_p90", "missing_sentences",
                 "pause_words", "decodes", "decode_p50", "decode_p95", "max_window_seconds", "max_lag_seconds",
                 "wall_seconds")


def median_result(runs: list[FileResult]) -> FileResult:
    """One row of per-metric medians over several runs of the same model and file (``run`` 0)."""
    def med(name: str):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        return _r(statistics.median(values), 4) if values else None

    return FileResult(**{**asdict(runs[0]), **{name: med(name) for name in MEDIAN_FIELDS}, "run": 0,
                         "text": "", "offline_text": None, "sentence_latencies": []})


@dataclass
class NonspeechResult:
    model: str
    clips: int
    seconds: float
    words: int
    by_clip: dict[str, str]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def load_longform(path: Path, limit: float) -> tuple[np.ndarray, list[dict], str]:
    """Audio, sentence segments and reference text, truncated to ``limit`` seconds."""
    from streamer.audio import load_audio

    audio = load_audio(path)
    # segments without text (the noise of the silence-and-noise file) are pauses, not sentences
    segments = [s for s in json.loads(path.with_suffix(".segments.json").read_text()) if s["text"].strip()]
    if limit:  # whole sentences only, cut in the gap after the last one that fits
        kept = [s for s in segments if s["end"] <= limit]
        following = segments[len(kept)] if len(kept) < len(segments) else None
        cut = limit if not kept else kept[-1]["end"] + (0.1 if following is None else
                                                       (following["start"] - kept[-1]["end"]) / 2)
        audio = audio[: int(min(cut, limit) * SAMPLE_RATE)]
        segments = kept
        reference = " ".join(s["text"] for s in segments)
    else:
        reference = path.with_suffix(".txt").read_text()
    return audio, segments, reference


def bench_file(model: str, engine, settings, path: Path, args: argparse.Namespace, *,
               offline_text: str | None = None, run: int = 1) -> FileResult:
    """One real-time replay of one file; the offline decode too unless given (or ``--no-offline``)."""
    from streamer.replay import replay, transcribe_offline

    language = args.language or None
    audio, segments, reference = load_longform(path, args.limit)
    log.info("%s: %s, %.0f s, %s", model, path.name, audio.size / SAMPLE_RATE, "fast" if args.fast else "real time")
    if getattr(args, "simulate", None):
        result = simulated_replay(audio, engine, settings.stream, language, args.simulate)
    else:
        result = replay(audio, engine, settings.stream, realtime=not args.fast, language=language)
    committed = [CommittedWord(w.word, w.start, w.end, e.t) for e in result.events for w in e.event.committed]
    latencies = sentence_latencies(segments, committed)
    done = [lat for lat in latencies if lat is not None]
    duration = audio.size / SAMPLE_RATE
    first = [lat for lat, s in zip(latencies, segments) if lat is not None and s["end"] <= duration / 4]
    last = [lat for lat, s in zip(latencies, segments) if lat is not None and s["end"] > duration * 3 / 4]
    for lat, segment in zip(latencies, segments):
        if lat is not None and lat > SLOW_SENTENCE:
            log.info("slow sentence: %.1f s for the one ending at %.1f s: %r", lat, segment["end"],
                     segment.get("text", "")[-80:])
    if offline_text is None and not args.no_offline:
        offline_text = "".join(w.word for w in transcribe_offline(engine, audio, language=language)).strip()
    cased = text_measures(reference, result.text)
    offline_cased = text_measures(reference, offline_text) if offline_text is not None else (None, None)
    return FileResult(
        model=model, file=path.name, audio_seconds=round(duration, 2), wall_seconds=round(result.wall_seconds, 2),
        wer=round(wer(reference, result.text), 4),
        offline_wer=None if offline_text is None else round(wer(reference, offline_text), 4),
        cased_wer=cased[0], offline_cased_wer=offline_cased[0], false_breaks=cased[1],
        offline_false_breaks=offline_cased[1],
        sentences=len(segments), missing_sentences=len(latencies) - len(done),
        latency_p50=_r(percentile(done, 50)), latency_p90=_r(percentile(done, 90)),
        latency_max=_r(max(done) if done else None),
        latency_p90_first_quarter=_r(percentile(first, 90)), latency_p90_last_quarter=_r(percentile(last, 90)),
        mark_latency_p90=_r(percentile([lat for lat in sentence_latencies(segments, committed, marks=True)
                                        if lat is not None], 90)),
        pause_words=len(words_in_spans(committed, pauses(segments))),
        decodes=len(result.decode_seconds), decode_p50=_r(percentile(result.decode_seconds, 50)),
        decode_p95=_r(percentile(result.decode_seconds, 95)), max_window_seconds=round(result.max_window_seconds, 2),
        max_lag_seconds=round(result.max_lag_seconds, 2), text=result.text, offline_text=offline_text, run=run,
        sentence_latencies=[(round(s["end"], 2), _r(lat)) for lat, s in zip(latencies, segments)],
        abandoned=result.abandoned)


class SimulatedClock:
    """A wall clock that only moves when the replay sleeps or the engine 'works'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-3)


def simulated_replay(audio: np.ndarray, engine, config, language: str | None, model: str):
    """Real-time replay where each decode costs ``fixed + per_second * window`` simulated seconds."""
    from streamer.replay import replay

    fixed, per_second = (float(x) for x in model.split(","))
    clock = SimulatedClock()
    return replay(audio, engine, config, realtime=True, language=language, clock=clock, sleep=clock.sleep,
                  decode_cost=lambda request: fixed + per_second * request.audio.size / SAMPLE_RATE)


def bench_nonspeech(model: str, engine, settings, data: Path, args: argparse.Namespace) -> NonspeechResult:
    from streamer.audio import load_audio
    from streamer.replay import replay

    by_clip, seconds = {}, 0.0
    for clip in sorted((data / "nonspeech").glob("*.wav")):
        audio = load_audio(clip)
        if args.limit:
            audio = audio[: int(args.limit * SAMPLE_RATE)]
        seconds += audio.size / SAMPLE_RATE
        by_clip[clip.stem] = replay(audio, engine, settings.stream, language=args.language or None).text
    words = sum(len(text.split()) for text in by_clip.values())
    return NonspeechResult(model, len(by_clip), round(seconds, 1), words, by_clip)


def warm_up(engine, language: str | None) -> None:
    """One throwaway decode, so first-call costs do not show up as a latency outlier."""
    from streamer.hypothesis import DecodeRequest

    tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    engine.decode(DecodeRequest(tone, language=language))


def machine() -> dict:
    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def mode(args: argparse.Namespace) -> str:
    if getattr(args, "simulate", None):
        return f"simulated clock, decode = {args.simulate.replace(',', ' s + ')} s/s of window"
    return "fast" if args.fast else "real time"


def text_measures(reference: str, text: str) -> tuple[float | None, int]:
    """Cased WER against the (punctuated) reference and false sentence breaks, as ``bench text`` counts them."""
    return ts.rate(ts.cased_errors(reference, text, "en")), ts.false_breaks(text)


def format_table(files: list[FileResult], nonspeech: list[NonspeechResult], info: dict, realtime: str) -> str:
    def f(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    def pct(v):
        return f(None if v is None else v * 100)

    def breaks(r: FileResult) -> str:
        return f"{r.false_breaks:g} / {'-' if r.offline_false_breaks is None else r.offline_false_breaks}"

    lines = [f"# streamer bench stream ({realtime}), {info['date']}, "
             f"{info['processor']}, {info['cpus']} CPUs, torch {info['torch']} ({info['torch_threads']} threads)"
             + (f", {info['cuda']}" if info["cuda"] else ""),
             f"{'model':8} {'file':14} {'run':>3} {'audio s':>7} {'WER %':>6} {'offline':>7} {'cased':>6} "
             f"{'offline':>7} {'breaks':>9} {'lat p50':>7} {'p90':>5} {'max':>5} {'p90 Q1':>6} {'p90 Q4':>6} "
             f"{'mark p90':>8} {'miss':>4} {'pause w':>7} {'dec p50':>7} {'p95':>5} {'max win':>7} {'max lag':>7}"]
    for r in files:
        name = "silence+noise" if "silence" in r.file else "32 sentences"
        lines.append(
            f"{r.model:8} {name:14} {'med' if r.run == 0 else r.run:>3} {r.audio_seconds:7.1f} {r.wer * 100:6.2f} "
            f"{pct(r.offline_wer):>7} {pct(r.cased_wer):>6} {pct(r.offline_cased_wer):>7} "
            f"{breaks(r):>9} {f(r.latency_p50):>7} "
            f"{f(r.latency_p90):>5} {f(r.latency_max):>5} {f(r.latency_p90_first_quarter):>6} "
            f"{f(r.latency_p90_last_quarter):>6} {f(r.mark_latency_p90):>8} {r.missing_sentences:>4g} "
            f"{r.pause_words:>7g} {f(r.decode_p50):>7} {f(r.decode_p95):>5} {r.max_window_seconds:7.1f} "
            f"{r.max_lag_seconds:7.1f}")
    for n in nonspeech:
        lines.append(f"{n.model:8} nonspeech: {n.words} words on {n.clips} clips ({n.seconds:.0f} s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from streamer.bench.data import data_dir
    from streamer.config import load_settings, parse_set_flags
    from streamer.engine.loader import load_engine

    data = args.data or data_dir()
    if data is None or not (data / "longform").is_dir():
        log.error("shared data not found (set STREAMER_DATA or pass --data)")
        return 2
    paths = [data / "longform" / name for name in args.files.split(",") if name.strip()]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        log.error("missing: %s", ", ".join(map(str, missing)))
        return 2
    if args.runs < 1:
        log.error("--runs must be at least 1")
        return 2
    files, nonspeech, peaks = [], [], {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        settings = load_settings(args.config, {**parse_set_flags(args.set), "engine.model": model})
        engine = load_engine(settings.engine)
        warm_up(engine, args.language or None)
        for path in paths:
            runs: list[FileResult] = []
            for run_number in range(1, args.runs + 1):
                offline = runs[0].offline_text if runs else None
                runs.append(bench_file(model, engine, settings, path, args, offline_text=offline, run=run_number))
                print(format_table(runs[-1:], [], machine(), mode(args)).splitlines()[-1], flush=True)
            files.extend(runs)
            if len(runs) > 1:
                files.append(median_result(runs))
        if not args.no_nonspeech:
            nonspeech.append(bench_nonspeech(model, engine, settings, data, args))
        peaks[model] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        del engine
    info = machine()
    print(format_table(files, nonspeech, info, mode(args)))
    print("peak RSS MiB (process, cumulative): " + ", ".join(f"{m} {v:.0f}" for m, v in peaks.items()))
    report = {"machine": info, "mode": mode(args), "limit": args.limit, "settings": args.set,
              "config": args.config, "files": [asdict(r) for r in files],
              "nonspeech": [asdict(n) for n in nonspeech], "peak_rss_mb": peaks}
    args.json.write_text(json.dumps(report, indent=1))
    print(f"results written to {args.json}")
    return 0
