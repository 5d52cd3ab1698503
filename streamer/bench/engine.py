"""``streamer bench engine``: how long one full-window re-decode takes, and how accurate it is.

The streaming core re-decodes its buffer every update, so the cost that matters is one
30 s window producing a fixed number of tokens (48 here), split into encoder and decoder.
Runs several times and prints medians/p95; optionally measures the faster-whisper backend
(CTranslate2, int8, the same weights) through the same Engine interface on the same window in
the same run as the baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from streamer.audio import load_audio
from streamer.bench.data import manifest, require_data_dir
from streamer.bench.metrics import wer
from streamer.config import EngineConfig
from streamer.engine.loader import load_engine
from streamer.hypothesis import DecodeRequest

log = logging.getLogger(__name__)


def corpus_wer(engine, folder: str, language: str | None = "en") -> tuple[float, list[str]]:
    """Greedy decode every clip of a shared-data folder; corpus WER against its transcripts."""
    clips = [c for c in manifest(folder) if c.seconds <= 30]
    texts = [engine.decode(DecodeRequest(load_audio(c.path), language=language)).text for c in clips]
    return wer([c.transcript for c in clips], texts), texts


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _window(seconds: float) -> np.ndarray:
    audio = load_audio(require_data_dir() / "longform" / "ljspeech_LJ001-0001_to_0032.wav")
    return audio[: int(seconds * 16000)]


def time_engine(engine, label: str, window: np.ndarray, runs: int) -> dict:
    """Median/p95 of ``runs`` decodes of ``window`` after one warm-up, split by the engine's ``last_timing``."""
    request = DecodeRequest(window, language="en")
    engine.decode(request)  # warm
    totals, encs, decs, counts = [], [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        hyp = engine.decode(request)
        totals.append(time.perf_counter() - started)
        timing = engine.last_timing
        encs.append(timing["encode"])
        decs.append(timing["decode"] + timing["align"])
        counts.append(timing["tokens"])
    return {"impl": label, "model": engine.name, "median_s": statistics.median(totals),
            "p95_s": _percentile(totals, 95), "encoder_s": statistics.median(encs),
            "decoder_s": statistics.median(decs), "tokens": statistics.median(counts), "text": hyp.text[:80]}


def streamer_engine(model: str, quantize: str, tokens: int, threads: int):
    """The whisper backend; ``compiled`` is the CUDA path's static cache + inductor step, tried on the CPU.

    ``int8+int8-encoder`` keeps the encoder's layers int8 too (``engine.encoder_dtype = "model"``);
    plain ``int8`` takes the default encoder (bfloat16 where the CPU has AMX tiles or AVX-512 BF16).
    """
    if quantize == "int8+int8-encoder":
        return load_engine(model=model, quantize="int8", encoder_dtype="model", max_new_tokens=tokens, threads=threads)
    if quantize != "compiled":
        return load_engine(model=model, quantize=quantize, max_new_tokens=tokens, threads=threads)
    from streamer.engine.gpu import CompileOptions
    from streamer.engine.whisper import load_whisper

    config = EngineConfig(model=model, quantize="none", max_new_tokens=tokens, threads=threads)
    return load_whisper(config, compile=CompileOptions(batch_sizes=(1,), mode=None))  # no CUDA graphs on a CPU


def time_faster_whisper(model: str, window: np.ndarray, tokens: int, runs: int, threads: int) -> list[dict]:
    """The faster-whisper backend (CTranslate2 int8, the same weights) on the same window, timed
    with word times spread over timestamp segments and with its cross-attention word alignment
    (streaming needs word times)."""
    if importlib.util.find_spec("faster_whisper") is None:
        log.warning("faster-whisper is not installed (pip install 'streamer[bench]'): no baseline rows")
        return []
    engine = load_engine(backend="faster-whisper", model=model, quantize="int8", max_new_tokens=tokens,
                         threads=threads)
    return [time_engine(engine.with_word_timestamps("segments"), "faster-whisper int8", window, runs),
            time_engine(engine.with_word_timestamps("dtw"), "faster-whisper +words", window, runs)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="base,tiny.en", help="comma-separated embedded models")
    parser.add_argument("--quantize", default="int8,int8+int8-encoder,none",
                        help="CPU variants to time: int8 (encoder per engine.encoder_dtype's default), "
                        "int8+int8-encoder, none (fp32), compiled (fp32 + static cache + inductor)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of speech in the window")
    parser.add_argument("--tokens", type=int, default=48, help="tokens each decode produces")
    parser.add_argument("--threads", type=int, default=0, help="torch / CTranslate2 threads (0 = all cores)")
    parser.add_argument("--no-baseline", action="store_true", help="skip faster-whisper")
    parser.add_argument("--json", type=Path, help="write results here")


def run(args: argparse.Namespace) -> int:
    import torch

    threads = args.threads or torch.get_num_threads()
    window = _window(args.window)
    rows = []
    for model in args.models.split(","):
        for quantize in args.quantize.split(","):
            engine = streamer_engine(model, quantize, args.tokens, threads)
            label = "streamer compiled" if quantize == "compiled" else f"streamer {engine.dtype}"
            rows.append(time_engine(engine, label, window, args.runs))
        if not args.no_baseline:
            rows.extend(time_faster_whisper(model, window, args.tokens, args.runs, threads))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# streamer bench engine: {args.window:.0f} s window, {args.tokens} tokens, {args.runs} runs, "
          f"{threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'model':8} {'implementation':32} {'median s':>9} {'p95 s':>7} {'encoder':>8} {'decoder':>8} "
          f"{'tokens':>6} {'vs fw+words':>11}")
    for row in rows:
        base = next((r for r in rows if r["model"] == row["model"] and r["impl"] == "faster-whisper +words"), None)
        ratio = f"{row['median_s'] / base['median_s']:.2f}x" if base else "-"
        print(f"{row['model']:8} {row['impl']:32} {row['median_s']:9.3f} {row['p95_s']:7.3f} "
              f"{row['encoder_s']:8.3f} {row['decoder_s']:8.3f} {row['tokens']:6.0f} {ratio:>11}")
    print(f"peak RSS {peak_mb:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peak_rss_mb": peak_mb, "threads": threads}, indent=1))
    return 0
