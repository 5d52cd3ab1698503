#!/usr/bin/env python3
"""Whisper's encoder on shortened windows (``engine.encoder_buckets``): what it saves.

Encoder seconds for one window at 30 s (Whisper's input) and at each bucket, median of
``--repeats`` runs, and the ratio to 30 s, measured in the same run. What it costs in text is
``bench/ab_stream.py --set engine.encoder_buckets=[10,15,20]`` (the LJ clips, both long-form
files, the non-speech clips, streamed with and without).

    python bench/encoder_buckets.py --model base --buckets 10,15,20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from streamer.engine.encoder import encode  # noqa: E402
from streamer.engine.loader import load_engine  # noqa: E402


def time_encoder(engine, seconds: list[float], repeats: int) -> dict[float, float]:
    """Median encoder seconds per bucket length for one window of speech-like noise."""
    import torch

    audio = np.random.default_rng(0).normal(0, 0.05, 16000 * 30).astype(np.float32)
    feats = engine.features([audio], sampling_rate=16000, return_tensors="pt").input_features
    feats = feats.to(engine.torch_device, engine.torch_dtype)
    encoder = engine.model.model.encoder
    out = {}
    with torch.inference_mode():
        for length in seconds:
            encode(encoder, feats, length)  # warm
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                encode(encoder, feats, length)
                runs.append(time.perf_counter() - t0)
            out[length] = statistics.median(runs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--buckets", default="10,15,20")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default="bench_encoder_buckets.json")
    args = parser.parse_args()
    buckets = [float(b) for b in args.buckets.split(",")]
    full = load_engine(model=args.model)
    timing = time_encoder(full, [30.0, *sorted(buckets, reverse=True)], args.repeats)
    print(f"encoder, {args.model}, one window, median of {args.repeats} ({time.strftime('%Y-%m-%d')})")
    print("| window | encoder s | vs 30 s |\n| --- | --- | --- |")
    for length, seconds in timing.items():
        print(f"| {length:g} s | {seconds:.3f} | {seconds / timing[30.0]:.2f}x |")
    report = {"model": args.model, "buckets": buckets, "encoder_seconds": timing}
    with open(args.json, "w") as out:
        json.dump(report, out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
