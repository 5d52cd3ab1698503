#!/usr/bin/env python3
"""kill -9 of a serving replica, measured: does every stream finish whole, and how fast does it recover?

Two ``streamer serve`` replicas (tiny.en, one torch thread each, sharing a resume secret) behind
Debian's HAProxy running deploy/haproxy.cfg; ``--clients`` real-time streams of the client library
(``LiveSession``), each a different 60 s stretch of the 229 s LJ long-form file. Run twice in the
same invocation: undisturbed, then with the replica serving the most streams SIGKILLed at
``--kill-at`` seconds. Per stream: normalised WER against the reference segments, repeated word
pairs, resumes, and lag (wall clock at commit minus the time the word's audio was spoken): p50/p90
over the stream, and after the kill: seconds until the first word committed by the other replica
and p90 lag of words spoken more than 3 s after the kill.

    python bench/failover.py --clients 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the replica and HAProxy helpers the deployment tests use

from streamer.audio import load_audio  # noqa: E402
from streamer.bench import textscore as ts  # noqa: E402
from streamer.bench.data import require_data_dir  # noqa: E402
from streamer.protocol import StartParams  # noqa: E402
from streamer_clients.client import Endpoint  # noqa: E402
from streamer_clients.live import LiveSession  # noqa: E402
from support.replicas import Daemon, HAProxy  # noqa: E402

LONGFORM = "longform/ljspeech_LJ001-0001_to_0032.wav"
SETTINGS = ("server.resume_secret=bench-failover", "server.drain_notice=1.5", "server.admission=fixed")


def stretches(clients: int, seconds: float) -> list[tuple[np.ndarray, str, float]]:
    """``clients`` stretches of the long-form file, each with the reference text of the segments inside it."""
    data = require_data_dir()
    audio = load_audio(data / LONGFORM)
    segments = json.loads((data / LONGFORM).with_suffix(".segments.json").read_text())
    total = audio.size / 16000
    out = []
    for i in range(clients):
        start = round(i * (total - seconds) / max(1, clients - 1), 1)
        inside = [s for s in segments if s["start"] >= start and s["end"] <= start + seconds]
        begin, end = inside[0]["start"], inside[-1]["end"] + 0.2   # whole segments only
        out.append((audio[int(begin * 16000):int(end * 16000)], " ".join(s["text"] for s in inside), begin))
    return out


class Stream:
    """One client: real-time audio on an absolute schedule, every committed word's lag recorded."""

    def __init__(self, url: str, audio: np.ndarray) -> None:
        self.audio, self.lags = audio, []  # (audio end s, wall time of commit s since start, lag s)
        self.session = LiveSession(Endpoint(url), StartParams(encoding="pcm_f32le", language="en"),
                                   on_update=self._on_update)
        self.t0 = 0.0

    def _on_update(self, transcript, new) -> None:
        now = time.monotonic() - self.t0
        for word in new:
            self.lags.append((word.end, now, now - word.end))

    async def chunks(self, block: float = 0.1):
        step = int(16000 * block)
        for i, at in enumerate(range(0, self.audio.size, step)):
            yield self.audio[at:at + step].astype("<f4").tobytes()
            await asyncio.sleep(max(0.0, self.t0 + (i + 1) * block - time.monotonic()))

    async def run(self) -> None:
        self.t0 = time.monotonic()
        await self.session.run(self.chunks())


async def one_run(clips, kill_at: float | None, log_dir: Path) -> dict:
    daemons = [Daemon(log_dir, f"d{i}", *SETTINGS).start() for i in (1, 2)]
    proxy = None
    try:
        for d in daemons:
            await asyncio.to_thread(d.wait_healthy)
        proxy = HAProxy(log_dir, *daemons).start()
        streams = [Stream(proxy.url, audio) for audio, _, _ in clips]
        runs = [asyncio.ensure_future(s.run()) for s in streams]
        killed_at = None
        if kill_at is not None:
            await asyncio.sleep(kill_at)
            counts = [await asyncio.to_thread(d.live_sessions) for d in daemons]
            victim = daemons[int(np.argmax(counts))]
            victim.proc.kill()
            killed_at = time.monotonic() - streams[0].t0
            print(f"  killed {victim.name} (serving {max(counts)} of {len(streams)}) at {killed_at:.1f} s",
                  file=sys.stderr)
        await asyncio.wait_for(asyncio.gather(*runs), 600)
        return {"streams": [summary(s, reference, killed_at) for s, (_, reference, _) in zip(streams, clips)],
                "killed_at": killed_at}
    finally:
        if proxy is not None:
            proxy.stop()
        for d in daemons:
            d.stop()


def summary(stream: Stream, reference: str, killed_at: float | None) -> dict:
    text = stream.session.transcript.committed_text
    errors = ts.normalised_errors(reference, text, "en")
    said = ts.normalise(text, "en").split()
    ref = ts.normalise(reference, "en").split()
    pairs, ref_pairs = Counter(zip(said, said[1:])), Counter(zip(ref, ref[1:]))
    lags = [lag for _, _, lag in stream.lags]
    out = {"wer": ts.rate(errors), "errors": errors.errors, "reference_words": errors.reference,
           "repeated_pairs": sum(n - max(1, ref_pairs[p]) for p, n in pairs.items() if n > max(1, ref_pairs[p])),
           "resumes": stream.session.resumes, "sessions": len(set(stream.session.sessions)),
           "lag_p50": round(statistics.median(lags), 2) if lags else None,
           "lag_p90": round(float(np.percentile(lags, 90)), 2) if lags else None, "text": text}
    if killed_at is not None:
        after = [(end, wall, lag) for end, wall, lag in stream.lags if wall > killed_at]
        out["first_word_after_kill_s"] = round(after[0][1] - killed_at, 2) if after else None
        settled = [lag for end, _, lag in after if end > killed_at + 3.0]
        out["lag_p90_after_kill_plus_3s"] = round(float(np.percentile(settled, 90)), 2) if settled else None
    return out


def print_table(name: str, result: dict) -> None:
    print(f"\n{name}" + (f" (kill -9 at {result['killed_at']:.1f} s)" if result["killed_at"] else ""))
    print("| stream | WER | repeated pairs | resumes | lag p50 / p90 s | first word after kill s | "
          "lag p90 from kill+3 s |\n| --- | --- | --- | --- | --- | --- | --- |")
    for i, s in enumerate(result["streams"], 1):
        print(f"| {i} | {100 * (s['wer'] or 0):.1f} % | {s['repeated_pairs']} | {s['resumes']} | "
              f"{s['lag_p50']} / {s['lag_p90']} | {s.get('first_word_after_kill_s', '-')} | "
              f"{s.get('lag_p90_after_kill_plus_3s', '-')} |")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, default=25.0)
    parser.add_argument("--json", default="bench_failover.json")
    args = parser.parse_args()
    clips = stretches(args.clients, args.seconds)
    report = {"date": time.strftime("%Y-%m-%d"), "clients": args.clients}
    with tempfile.TemporaryDirectory() as tmp:
        report["undisturbed"] = await one_run(clips, None, Path(tmp))
        report["kill"] = await one_run(clips, args.kill_at, Path(tmp))
    print_table("undisturbed", report["undisturbed"])
    print_table("kill -9", report["kill"])
    for i, (a, b) in enumerate(zip(report["undisturbed"]["streams"], report["kill"]["streams"]), 1):
        if a["text"] != b["text"]:
            print(f"\nstream {i} undisturbed: {a['text']}\nstream {i} with kill:  {b['text']}")
    Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
