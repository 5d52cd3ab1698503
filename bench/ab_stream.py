#!/usr/bin/env python3
"""One engine setting against the default, on streamed text and on cost per update.

Every file of the chosen groups is streamed through the core (a fast replay, the same policy as
the daemon) twice on the same loaded weights: with the default engine settings and with the
``--set`` ones (``engine.beam_size=4``, ``engine.encoder_buckets=[10,15,20]``, ...). Prints per
group the normalised WER of both, words committed on non-speech, the median seconds per decode
(encoder, decoder, alignment) of both, and the texts that differ, so they can be read.

    python bench/ab_stream.py --model base --set engine.beam_size=4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from streamer.audio import load_audio  # noqa: E402
from streamer.bench import textscore as ts  # noqa: E402
from streamer.bench.data import manifest  # noqa: E402
from streamer.config import StreamConfig, parse_set_flags  # noqa: E402
from streamer.engine.loader import load_engine  # noqa: E402


class Timed:
    """The engine, with every decode's wall time and stage split kept."""

    def __init__(self, engine) -> None:
        self.engine, self.decodes = engine, []
        self.max_window_seconds, self.max_prompt_tokens = engine.max_window_seconds, engine.max_prompt_tokens
        self.name, self.languages = engine.name, engine.languages

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def decode(self, request):
        return self.decode_batch([request])[0]

    def decode_batch(self, requests):
        t0 = time.perf_counter()
        out = self.engine.decode_batch(requests)
        self.decodes.append({"wall": time.perf_counter() - t0, **getattr(self.engine, "last_timing", {})})
        return out


def stream_text(engine, audio, config: StreamConfig) -> str:
    from streamer.replay import replay

    return replay(audio, engine, config, language="en").text


def median(values) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--set", action="append", default=[], metavar="engine.KEY=VALUE", required=True)
    parser.add_argument("--groups", default="ljspeech,longform,nonspeech")
    parser.add_argument("--json", default="bench_ab_stream.json")
    args = parser.parse_args()
    changes = {key.removeprefix("engine."): value for key, value in parse_set_flags(args.set).items()}
    base = load_engine(model=args.model)
    variant = base._view(**changes)  # validated; shares the loaded weights
    engines = {"default": Timed(base), "variant": Timed(variant)}
    groups = args.groups.split(",")
    clips = [c for c in manifest() if c.path.parent.name in groups]
    totals: dict[tuple[str, str], ts.Errors] = {}
    files = []
    config = StreamConfig()
    for i, clip in enumerate(clips, 1):
        group = clip.path.parent.name
        texts = {}
        audio = load_audio(clip.path)
        for name, engine in engines.items():
            texts[name] = stream_text(engine, audio, config)
            key = (group, name)
            totals[key] = totals.get(key, ts.NO_ERRORS) + ts.normalised_errors(clip.transcript, texts[name], "en")
        files.append({"file": f"{group}/{clip.path.name}", "reference": clip.transcript, **texts})
        print(f"{i}/{len(clips)} {group}/{clip.path.name}", file=sys.stderr, flush=True)
    print(f"{args.model}: default vs {' '.join(args.set)} ({time.strftime('%Y-%m-%d %H:%M')}, streamed replay)")
    print("\n| group | files | WER default | WER variant | words on non-speech default / variant |\n| --- | --- | --- | --- | --- |")
    for group in groups:
        a, b = totals.get((group, "default"), ts.NO_ERRORS), totals.get((group, "variant"), ts.NO_ERRORS)
        n = sum(1 for c in clips if c.path.parent.name == group)
        if group == "nonspeech":
            print(f"| {group} | {n} | - | - | {a.insertions} / {b.insertions} |")
        else:
            print(f"| {group} | {n} | {100 * (ts.rate(a) or 0):.2f} % | {100 * (ts.rate(b) or 0):.2f} % | - |")
    print("\n| engine | decodes | median s per decode | encoder | decoder | alignment |\n| --- | --- | --- | --- | --- | --- |")
    timing = {}
    for name, engine in engines.items():
        d = engine.decodes
        timing[name] = {k: median([x.get(k, 0.0) for x in d]) for k in ("wall", "encode", "decode", "align")}
        t = timing[name]
        print(f"| {name} | {len(d)} | {t['wall']} | {t['encode']} | {t['decode']} | {t['align']} |")
    differ = [f for f in files if f["default"] != f["variant"]]
    print(f"\n{len(differ)} of {len(files)} texts differ:")
    for f in differ:
        print(f"- {f['file']}\n    default: {f['default'][:400]}\n    variant: {f['variant'][:400]}")
    with open(args.json, "w") as out:
        json.dump({"model": args.model, "set": args.set, "files": files, "timing": timing,
                   "totals": {f"{g}/{n}": asdict(e) for (g, n), e in totals.items()}}, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
