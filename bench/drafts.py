#!/usr/bin/env python3
"""Draft verification on a real replay: same tokens as plain greedy? how much decoder time saved?

Replays a long-form file through the streaming core as fast as the engine allows. Every
window the core asks for is decoded twice on the same engine and weights: plainly (greedy
step by step; this hypothesis drives the replay, so the windows are plain greedy's) and with
the draft the core attached (the previous hypothesis' tokens for that utterance). Reports the
fraction of windows whose tokens differ, with each difference's position and tokens, and
decoder and decoder+alignment seconds per update (medians) with and without drafts.
``--legacy`` also decodes each window on an engine loaded without drafts (torch's per-tensor
int8 decoder, today's numerics) to show what row-wise quantisation changes and costs.

    python bench/drafts.py --model tiny.en ../shared/data/longform/ljspeech_LJ001-0001_to_0010_with_10s_silence_and_10s_noise.wav
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from streamer.audio import load_audio  # noqa: E402
from streamer.config import StreamConfig  # noqa: E402
from streamer.engine.loader import load_engine  # noqa: E402
from streamer.hypothesis import DecodeRequest  # noqa: E402
from streamer.replay import replay  # noqa: E402


class Compare:
    """An engine for the replay: plain greedy drives it, the drafted decode of the same window is compared."""

    def __init__(self, drafted, legacy=None):
        self.drafted, self.plain, self.legacy = drafted, drafted.with_drafts(False), legacy
        self.rows: list[dict] = []

    def decode(self, request: DecodeRequest):
        plain = self.plain.decode(request)
        plain_t = dict(self.plain.last_timing)
        drafted = self.drafted.decode(request)
        drafted_t = dict(self.drafted.last_timing)
        row = {"window": round(request.audio.size / 16000, 2), "draft": len(request.draft),
               "tokens": len(plain.tokens), "same": drafted.tokens == plain.tokens,
               "plain_decode": plain_t["decode"], "plain_align": plain_t["align"],
               "drafted_decode": drafted_t["decode"], "drafted_align": drafted_t["align"],
               "passes": drafted_t.get("passes", float(len(plain.tokens))), "accepted": drafted_t.get("accepted", 0.0)}
        if not row["same"]:
            at = next((i for i, (a, b) in enumerate(zip(plain.tokens, drafted.tokens)) if a != b),
                      min(len(plain.tokens), len(drafted.tokens)))
            row["differs_at"] = {"index": at, "plain": plain.tokens[at:at + 3], "drafted": drafted.tokens[at:at + 3],
                                 "plain_text": plain.text, "drafted_text": drafted.text}
        if self.legacy is not None:
            legacy = self.legacy.decode(request)
            row["legacy_decode"] = self.legacy.last_timing["decode"]
            row["legacy_align"] = self.legacy.last_timing["align"]
            row["legacy_same_text"] = legacy.text == plain.text
        self.rows.append(row)
        return plain

    def decode_batch(self, requests):
        return [self.decode(r) for r in requests]


def summary(rows: list[dict]) -> dict:
    """Medians over windows that had a draft (the first window of an utterance has none)."""
    drafted = [r for r in rows if r["draft"]] or rows
    med = lambda key, rs=drafted: round(statistics.median(r[key] for r in rs), 4)  # noqa: E731
    out = {"windows": len(rows), "with_draft": sum(1 for r in rows if r["draft"]),
           "differ": sum(1 for r in rows if not r["same"]),
           "differ_fraction": round(sum(1 for r in rows if not r["same"]) / max(1, len(rows)), 4),
           "median_tokens": med("tokens"), "median_passes_drafted": med("passes"),
           "decode_plain_s": med("plain_decode"), "decode_drafted_s": med("drafted_decode"),
           "decode_align_plain_s": round(statistics.median(r["plain_decode"] + r["plain_align"] for r in drafted), 4),
           "decode_align_drafted_s": round(statistics.median(r["drafted_decode"] + r["drafted_align"] for r in drafted), 4),
           "decode_ratio": round(sum(r["drafted_decode"] for r in drafted) / sum(r["plain_decode"] for r in drafted), 3)}
    if "legacy_decode" in rows[0]:
        out["decode_legacy_s"] = med("legacy_decode")
        out["legacy_text_differs"] = sum(1 for r in rows if not r["legacy_same_text"])
    out["differences"] = [r["differs_at"] for r in rows if not r["same"]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--legacy", action="store_true", help="also decode on a per-tensor int8 engine (no drafts)")
    parser.add_argument("--quantize", default="auto", choices=["auto", "none", "int8"],
                        help="the drafted engine's weights (none: float32, where float order is the only difference)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the drafted engine's float type (bfloat16: unquantised, on AMX tiles if the CPU has them)")
    parser.add_argument("--out", help="write the per-window rows and the summary as JSON")
    args = parser.parse_args()
    engine = load_engine(model=args.model, drafts=True, quantize=args.quantize, dtype=args.dtype)
    legacy = load_engine(model=args.model, drafts=False) if args.legacy else None
    compare = Compare(engine, legacy)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    result = replay(load_audio(args.audio), compare, StreamConfig())
    report = {"model": args.model, "quantize": args.quantize, "dtype": engine.dtype,
              "audio": os.path.basename(args.audio), "load_at_start": round(load, 2),
              "load_at_end": round(os.getloadavg()[0], 2), "seconds": round(time.perf_counter() - started, 1),
              "text": result.text, **summary(compare.rows)}
    print(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**report, "rows": compare.rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
