"""``streamer bench align``: how accurate are word times? Measured against sentence boundaries.

The long-form files carry per-sentence start/end times. Windows of whole sentences (at most
25 s) are decoded; each sentence's first and last reference words are matched to the
decoded words, and their start/end times compared with the sentence boundaries. Reported
for each word-timing method: cross-attention DTW, timestamp tokens alone, and DTW clamped
to timestamp segments; with ``--fused``, the DTW methods also with the attention recorded by the
decode loop itself (``engine.fused_alignment``) instead of a second pass.
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
from pathlib import Path

import numpy as np

from streamer.audio import load_audio
from streamer.bench.data import require_data_dir
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest

METHODS = ("dtw", "segments", "both")


def _norm(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


def sentence_windows(segments: list[dict], max_seconds: float = 25.0) -> list[list[dict]]:
    windows, current = [], []
    for seg in segments:
        if current and seg["end"] - current[0]["start"] > max_seconds:
            windows.append(current)
            current = []
        current.append(seg)
    if current:
        windows.append(current)
    return windows


def boundary_errors(sentences: list[dict], words, offset: float) -> tuple[list[float], list[float]]:
    """Signed start and end errors (decoded minus reference) for sentences whose edge words matched."""
    ref, owner = [], []
    for i, seg in enumerate(sentences):
        for w in seg["text"].split():
            if _norm(w):
                ref.append(_norm(w))
                owner.append(i)
    hyp = [_norm(w.word) for w in words]
    matched: dict[int, int] = {}
    for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            matched[block.a + k] = block.b + k
    starts, ends = [], []
    for i, seg in enumerate(sentences):
        idx = [k for k, o in enumerate(owner) if o == i]
        if idx and idx[0] in matched:
            starts.append(words[matched[idx[0]]].start + offset - seg["start"])
        if idx and idx[-1] in matched:
            ends.append(words[matched[idx[-1]]].end + offset - seg["end"])
    return starts, ends


def timing_views(engine, fused: bool) -> dict[str, object]:
    """One engine view per method label; ``fused`` adds the DTW methods on the loop's own attention."""
    views = {method: engine.with_word_timestamps(method).with_fused_alignment(False) for method in METHODS}
    if fused:
        views |= {f"{method}+fused": engine.with_word_timestamps(method).with_fused_alignment(True)
                  for method in ("dtw", "both")}
    return views


def measure(engine, files: list[Path], fused: bool = False) -> dict[str, dict[str, float]]:
    """Boundary errors for every method; ``engine`` offers ``with_word_timestamps`` (both backends do)."""
    timed = timing_views(engine, fused)
    errors = {m: {"start": [], "end": []} for m in timed}
    for path in files:
        audio = load_audio(path)
        segments = json.loads(path.with_suffix(".segments.json").read_text())
        for window in sentence_windows(segments):
            begin = max(0.0, window[0]["start"] - 0.1)
            end = window[-1]["end"] + 0.3
            chunk = audio[int(begin * SAMPLE_RATE): int(end * SAMPLE_RATE)]
            for method in timed:
                hyp = timed[method].decode(DecodeRequest(chunk, language="en"))
                s, e = boundary_errors(window, hyp.words, begin)
                errors[method]["start"] += s
                errors[method]["end"] += e
    summary = {}
    for method, errs in errors.items():
        row = {}
        for edge in ("start", "end"):
            values = np.abs(errs[edge])
            row[f"{edge}_median"] = float(np.median(values)) if len(values) else float("nan")
            row[f"{edge}_p90"] = float(np.percentile(values, 90)) if len(values) else float("nan")
            row[f"{edge}_bias"] = float(statistics.median(errs[edge])) if errs[edge] else float("nan")
            row[f"{edge}_n"] = len(values)
        summary[method] = row
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="base,tiny.en")
    parser.add_argument("--backend", default="whisper", help="engine backend (whisper, faster-whisper)")
    parser.add_argument("--fused", action="store_true", help="also the DTW methods on the decode loop's attention")
    parser.add_argument("--json", type=Path)


def run(args: argparse.Namespace) -> int:
    from streamer.engine.loader import load_engine

    files = sorted((require_data_dir() / "longform").glob("*.wav"))
    report = {}
    print("# word-time error vs sentence boundaries (seconds, |decoded - reference|), long-form files")
    print(f"{'model':8} {'method':9} {'start med':>9} {'start p90':>9} {'end med':>8} {'end p90':>8} "
          f"{'end bias':>8} {'n':>4}")
    for model in args.models.split(","):
        report[model] = measure(load_engine(backend=args.backend, model=model), files, args.fused)
        for method, r in report[model].items():
            print(f"{model:8} {method:11} {r['start_median']:9.3f} {r['start_p90']:9.3f} {r['end_median']:8.3f} "
                  f"{r['end_p90']:8.3f} {r['end_bias']:8.3f} {r['end_n']:4d}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0
