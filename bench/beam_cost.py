#!/usr/bin/env python3
"""What a beam costs per decode against greedy, on real windows with real prompts.

Windows of the 229 s LJ long-form file (6, 9, 12, 4, 10 and 8 s, each with a prompt of 170 characters
of related text, as a stream's rolling prompt would be, that none of them repeats) are decoded on the
same loaded weights greedily and with beams of 2 and 4, alone and batched as several sessions'
windows would be. Prints the median wall time per call and the decoder part of it (the beam only
changes the decoder loop), and the ratio to greedy.

    python bench/beam_cost.py --model base --runs 5

It uses only ``engine.with_beam_size``, so the same script times an older checkout (run it from a
git worktree of that commit) in the same hour, for a before/after on this noisy machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from streamer.audio import load_audio  # noqa: E402
from streamer.bench.data import require_data_dir  # noqa: E402
from streamer.config import load_settings  # noqa: E402
from streamer.engine.loader import load_engine  # noqa: E402
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest  # noqa: E402

FILE = "longform/ljspeech_LJ001-0001_to_0032.wav"
WINDOWS = [(10, 6), (40, 9), (80, 12), (120, 4), (150, 10), (190, 8)]  # (start, seconds)
PROMPT = ("The printers of that age cut their own punches and cast their own types, and the books they made were "
          "sold in many cities. Their letters followed the hand of the scribes they replaced.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--beams", default="1,2,4")
    parser.add_argument("--batches", default="1,3")
    args = parser.parse_args()
    engine = load_engine(load_settings("cpu", overrides={"engine.model": args.model}).engine)
    audio = load_audio(require_data_dir() / FILE)
    requests = [DecodeRequest(audio[int(s * SAMPLE_RATE):int((s + n) * SAMPLE_RATE)], prompt=PROMPT, language="en")
                for s, n in WINDOWS]
    print(f"| windows per call | beam | call s | decoder s | decoder / greedy | ({args.model}, medians of {args.runs})")
    print("| --- | --- | --- | --- | --- |")
    for batch in [int(b) for b in args.batches.split(",")]:
        greedy_decoder = None
        for beam in [int(b) for b in args.beams.split(",")]:
            view = engine.with_beam_size(beam)
            calls, decoders = [], []
            for run in range(args.runs + 1):  # the first call of each setting warms up, untimed
                for first in range(0, len(requests) - batch + 1, batch):
                    t0 = time.perf_counter()
                    view.decode_batch(requests[first:first + batch])
                    if run:
                        calls.append(time.perf_counter() - t0)
                        decoders.append(view.last_timing["decode"])
            decoder = statistics.median(decoders)
            greedy_decoder = greedy_decoder or decoder
            call = statistics.median(calls)
            print(f"| {batch} | {beam} | {call:.3f} | {decoder:.3f} | {decoder / greedy_decoder:.2f} |", flush=True)


if __name__ == "__main__":
    main()
