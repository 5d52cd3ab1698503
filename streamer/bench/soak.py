"""``streamer bench soak``: does a long-running daemon stay flat?

One daemon runs as a child process (so its resident memory, open file descriptors and
threads are its own); this process plays clients that join, stream a random stretch of a
clip at real-time pace, and leave: most stop politely, some drop the connection mid-stream,
some send garbage first. Every few seconds the daemon's RSS, fds, threads and asyncio tasks
are sampled; the report gives each one's least-squares slope per hour over the second half
of the run (the first half warms caches and allocator pools). Anything that grows with the
number of sessions served (a per-decode list, a per-session label) shows up as a slope.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CLIP = "longform/ljspeech_LJ001-0001_to_0032.wav"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--clients", type=int, default=2, help="clients streaming at once (default 2)")
    parser.add_argument("--model", default="tiny.en", help="engine.model (default tiny.en)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("bench_soak.json"), help="write samples and slopes here")


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int
    tasks: int
    sessions_started: int


@dataclass
class SoakResult:
    minutes: float
    model: str
    clients: int
    sessions: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    slopes_per_hour: dict[str, float] = field(default_factory=dict)
    daemon_exit: int | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid: int, url: str, t: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()

    def metric(name: str) -> int:
        found = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", metrics, re.MULTILINE)
        return int(float(found.group(1))) if found else -1

    return Sample(round(t, 1), round(rss, 1), fds, threads, metric("streamer_asyncio_tasks"),
                  metric("streamer_sessions_started"))


def slope_per_hour(samples: list[Sample], name: str) -> float:
    """Least-squares slope of the second half of the samples, in units per hour."""
    tail = samples[len(samples) // 2:]
    if len(tail) < 3:
        return float("nan")
    t = np.array([s.t for s in tail]) / 3600
    y = np.array([getattr(s, name) for s in tail], dtype=float)
    return round(float(np.polyfit(t, y, 1)[0]), 2)


async def one_client(url: str, pcm: bytes, rng: random.Random, result: SoakResult) -> None:
    """Join, stream 3-20 s from a random point at real-time pace, then stop or drop the connection."""
    from websockets.asyncio.client import connect

    step = 3200  # 100 ms of s16 at 16 kHz
    start = rng.randrange(0, len(pcm) - 20 * 32000) // 2 * 2
    stop_at = start + int(rng.uniform(3, 20) * 32000) // 2 * 2
    ending = rng.choices(["stop", "drop", "garbage"], weights=[6, 3, 1])[0]
    async with connect(f"{url}/v1/listen", max_size=None) as ws:
        if ending == "garbage":
            await ws.send("{not json")
        await ws.send(json.dumps({"type": "start", "language": "en"}))
        while json.loads(await ws.recv()).get("type") != "ready":
            pass  # the garbage frame's error comes first
        result.sessions += 1
        t0 = time.perf_counter()
        for k, i in enumerate(range(start, stop_at, step)):
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.1 - time.perf_counter()))
            await ws.send(pcm[i:i + step])
        if ending == "drop":
            result.dropped += 1
            ws.transport.abort()  # no close frame: what a dead network looks like to the daemon
            return
        await ws.send(json.dumps({"type": "stop"}))
        async for message in ws:
            if json.loads(message).get("type") == "end":
                break


async def clients_loop(url: str, pcm: bytes, deadline: float, rng: random.Random, result: SoakResult) -> None:
    while time.perf_counter() < deadline:
        try:
            await one_client(url, pcm, rng, result)
        except Exception as exc:  # a refused or broken client is a result, not a crash
            if len(result.errors) < 20:
                result.errors.append(f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(rng.uniform(0.2, 2.0))


def wait_healthy(url: str, daemon: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.returncode} while starting")
        try:
            if urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError("daemon not healthy in time")


def run(args: argparse.Namespace) -> int:
    from streamer.audio import load_audio
    from streamer.bench.data import require_data_dir

    audio = load_audio(require_data_dir() / CLIP)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon_log = args.json.with_suffix(".daemon.log")
    with open(daemon_log, "wb") as sink:  # a file, not a pipe: an unread pipe would block the daemon
        daemon = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--model", args.model,
                                   "--port", str(port)], stdout=sink, stderr=sink)
    try:
        wait_healthy(url, daemon)
        result = asyncio.run(soak(args, daemon.pid, url, pcm))
    finally:
        daemon.send_signal(2)
        try:
            code = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = -9
    result.daemon_exit = code
    print(format_report(result))
    args.json.write_text(json.dumps(asdict(result), indent=1))
    print(f"samples written to {args.json}, the daemon's log to {daemon_log}")
    return 0 if code == 0 else 1


async def soak(args: argparse.Namespace, pid: int, url: str, pcm: bytes) -> SoakResult:
    """Clients speak ws://, the sampler reads http:// on the same port."""
    result = SoakResult(args.minutes, args.model, args.clients)
    ws_url = url.replace("http://", "ws://")
    t0 = time.perf_counter()
    deadline = t0 + args.minutes * 60
    rng = random.Random(args.seed)
    clients = [asyncio.ensure_future(clients_loop(ws_url, pcm, deadline, random.Random(rng.random()), result))
               for _ in range(args.clients)]
    while time.perf_counter() < deadline:
        await asyncio.sleep(args.sample_every)
        sample = await asyncio.to_thread(proc_sample, pid, url, time.perf_counter() - t0)
        result.samples.append(sample)
        log.info("t=%.0f s rss=%.0f MiB fds=%d threads=%d tasks=%d sessions=%d", sample.t, sample.rss_mb,
                 sample.fds, sample.threads, sample.tasks, sample.sessions_started)
    await asyncio.gather(*clients)
    await asyncio.sleep(2)  # let the last sessions close, then one sample at rest
    result.samples.append(await asyncio.to_thread(proc_sample, pid, url, time.perf_counter() - t0))
    for name in ("rss_mb", "fds", "threads", "tasks"):
        result.slopes_per_hour[name] = slope_per_hour(result.samples, name)
    return result


def format_report(result: SoakResult) -> str:
    first, last = result.samples[0], result.samples[-1]
    lines = [(f"soak: {result.minutes:g} min, {result.model}, {result.clients} clients at a time, "
             f"{result.sessions} sessions ({result.dropped} dropped mid-stream), daemon exit {result.daemon_exit}"),
             "| measure | first sample | last sample (at rest) | slope per hour (second half) |",
             "| --- | --- | --- | --- |"]
    for name in ("rss_mb", "fds", "threads", "tasks"):
        lines.append(f"| {name} | {getattr(first, name)} | {getattr(last, name)} | {result.slopes_per_hour[name]} |")
    if result.errors:
        lines.append("client errors: " + "; ".join(result.errors[:5]))
    return "\n".join(lines)
