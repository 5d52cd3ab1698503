"""``streamer bench load``: N concurrent real-time clients against one daemon.

For each N the daemon (in this process, one model) serves N websocket clients that all
stream the long-form clip at real-time pace, as microphones would. Reported per N:
sentence-completion latency (wall time at which a sentence's last word was committed,
minus the time its audio ended; p50/p90/max over all sentences of all clients), the worst
per-session lag (audio received minus audio decoded), decode batch sizes, the event loop's
longest stall, CPU use and peak memory. "Holds real time" means every client got ``end``
within a few seconds of its audio ending and p90 latency is under 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.daemon.scheduler import DecodeStats
from streamer.protocol import CloseCode

log = logging.getLogger(__name__)

LONGFORM = "longform/ljspeech_LJ001-0001_to_0032.wav"
FRAME_SECONDS = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", default="1,2,4,8", help="comma-separated N values (default 1,2,4,8)")
    parser.add_argument("--file", help=f"WAV to stream (default $STREAMER_DATA/{LONGFORM})")
    parser.add_argument("--seconds", type=float, default=0.0, help="stream only the first S seconds (0 = all)")
    parser.add_argument("--speed", type=float, default=1.0, help="pace relative to real time (1.0 = live)")
    parser.add_argument("--config", default="cpu", help="profile in configs/ or a TOML path (default cpu)")
    parser.add_argument("--model", help="engine.model (e.g. tiny.en, base)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--arrive-every", type=float, default=0.0, metavar="SECONDS",
                        help="clients arrive this far apart instead of together (admission control can then measure "
                             "the load before each one; refused clients are counted, not failed)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")


@dataclass
class LevelResult:
    clients: int
    audio_seconds: float
    sentences: int
    completed: int
    latency_p50: float | None
    latency_p90: float | None
    latency_max: float | None
    worst_lag: float
    finish_delay_max: float
    batch_mean: float
    batch_max: int
    batches: int
    decode_p50: float
    loop_stall_max: float
    cpu_cores: float
    peak_rss_mb: float
    holds_real_time: bool
    errors: list[str] = field(default_factory=list)
    refused: int = 0          # clients turned away with server_busy (admission control)


@dataclass
class ClientLog:
    events: list[tuple[float, dict]] = field(default_factory=list)
    finished_at: float | None = None
    error: str | None = None
    refused: bool = False  # the daemon answered server_busy (admission control): a result, not a failure


def load_segments(wav: Path, seconds: float) -> list[dict]:
    path = wav.with_suffix(".segments.json")
    if not path.is_file():
        return []
    segments = json.loads(path.read_text())
    return [s for s in segments if not seconds or s["end"] <= seconds]


async def stream_client(url: str, audio: np.ndarray, speed: float, token: str | None, t0: float) -> ClientLog:
    """One real-time client: 100 ms s16 frames paced by the wall clock, then stop; records every event."""
    from websockets.asyncio.client import connect

    record = ClientLog()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    step = int(FRAME_SECONDS * 16000) * 2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with connect(f"{url}/v1/listen", additional_headers=headers, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))

            async def reader() -> None:
                async for message in ws:
                    event = json.loads(message)
                    record.events.append((time.perf_counter() - t0, event))
                    if event.get("type") == "error" and event.get("code") == "server_busy":
                        record.refused = True
                        return
                    if event.get("type") == "end":
                        record.finished_at = time.perf_counter() - t0
                        return

            reading = asyncio.ensure_future(reader())
            for k, i in enumerate(range(0, len(pcm), step)):
                if record.refused:
                    return record
                delay = t0 + (k + 1) * FRAME_SECONDS / speed - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(pcm[i:i + step])
            await ws.send(json.dumps({"type": "stop"}))
            await reading
    except Exception as exc:  # a failed client is a result, not a crash of the benchmark
        received = getattr(exc, "rcvd", None)
        record.refused = record.refused or getattr(received, "code", None) == CloseCode.TRY_AGAIN  # server_busy
        if not record.refused:
            record.error = f"{type(exc).__name__}: {exc}"
    return record


async def arriving(delay: float, *args: Any) -> ClientLog:
    """A client that connects ``delay`` seconds after the first (its times count from its own start)."""
    await asyncio.sleep(delay)
    return await stream_client(*args)


def sentence_latencies(record: ClientLog, segments: list[dict], speed: float) -> list[float]:
    """Per sentence: wall time its last word was committed minus when its audio ended.

    The same alignment as ``streamer bench stream`` (committed words matched to the reference
    text), with the sentence end times scaled to the wall clock when ``speed`` is not 1.
    """
    from streamer.bench.metrics import CommittedWord
    from streamer.bench.metrics import sentence_latencies as aligned_latencies

    committed = [CommittedWord(w["word"], w["start"], w["end"], t) for t, event in record.events
                 if event.get("type") == "transcript" for w in event["committed"]]
    scaled = [{**seg, "end": seg["end"] / speed} for seg in segments]
    return [x for x in aligned_latencies(scaled, committed) if x is not None]


async def run_level(settings: Any, engine: Any, audio: np.ndarray, segments: list[dict], n: int,
                    speed: float, arrive_every: float = 0.0) -> LevelResult:
    from streamer.daemon.server import running_server

    async with running_server(settings, engine) as server:
        server.host.monitor.reset()
        lag = {"worst": 0.0}

        async def sample_lag() -> None:
            while True:
                lag["worst"] = max([lag["worst"]] + [live.session.lag for live in server.host.live.values()])
                await asyncio.sleep(0.25)

        sampler = asyncio.ensure_future(sample_lag())
        usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        t0 = time.perf_counter() + 0.2
        logs = await asyncio.gather(*(arriving(k * arrive_every, f"ws://127.0.0.1:{server.port}", audio, speed,
                                               settings.server.token, t0 + k * arrive_every) for k in range(n)))
        wall = time.perf_counter() - wall0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        sampler.cancel()
        stats = server.host.scheduler.stats
        stall = server.host.monitor.max_stall
    return summarise(n, audio, segments, speed, logs, lag["worst"], stats, stall,
                     (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / wall,
                     usage1.ru_maxrss / 1024)


def summarise(n: int, audio: np.ndarray, segments: list[dict], speed: float, logs: list[ClientLog],
              worst_lag: float, stats: DecodeStats, stall: float, cpu: float, rss_mb: float) -> LevelResult:
    admitted = [r for r in logs if not r.refused]
    latencies = [x for record in admitted for x in sentence_latencies(record, segments, speed)]
    duration = len(audio) / 16000 / speed
    finish = [r.finished_at - duration if r.finished_at is not None else float("inf") for r in admitted] or [0.0]
    pct = (lambda q: float(np.percentile(latencies, q))) if latencies else (lambda q: None)
    p90 = pct(90)
    holds = all(f < 5.0 for f in finish) and (p90 is None or p90 < 3.0) and not any(r.error for r in logs)
    return LevelResult(
        clients=n, audio_seconds=round(len(audio) / 16000, 2), sentences=len(segments) * len(admitted),
        completed=len(latencies), latency_p50=pct(50), latency_p90=p90, latency_max=max(latencies, default=None),
        worst_lag=round(worst_lag, 2), finish_delay_max=round(max(finish), 2),
        batch_mean=round(stats.mean_batch, 2), batch_max=stats.largest_batch, batches=stats.batches,
        decode_p50=round(statistics.median(stats.recent_seconds), 3) if stats.recent_seconds else 0.0,
        loop_stall_max=round(stall, 4), cpu_cores=round(cpu, 2), peak_rss_mb=round(rss_mb, 1),
        holds_real_time=holds, errors=[r.error for r in logs if r.error], refused=len(logs) - len(admitted))


def format_table(results: list[LevelResult], model: str) -> str:
    head = (f"streamer bench load | model {model} | {platform.processor() or platform.machine()} "
            f"| {__import__('os').cpu_count()} cores | {time.strftime('%Y-%m-%d')}\n"
            "  N  lat p50  lat p90  lat max  worst lag  batch mean/max  decode p50  loop stall  CPU cores  RSS MB"
            "  real time  refused")
    rows = []
    fmt = lambda v: f"{v:7.2f}" if v is not None else "      -"  # noqa: E731
    for r in results:
        rows.append(f"{r.clients:3d}  {fmt(r.latency_p50)}  {fmt(r.latency_p90)}  {fmt(r.latency_max)}  "
                    f"{r.worst_lag:9.2f}  {r.batch_mean:6.2f}/{r.batch_max:<6d}  {r.decode_p50:10.3f}  "
                    f"{r.loop_stall_max:10.4f}  {r.cpu_cores:9.2f}  {r.peak_rss_mb:6.0f}  "
                    f"{'yes' if r.holds_real_time else 'NO ':9s}  {r.refused:7d}")
    return "\n".join([head, *rows])


def run(args: argparse.Namespace) -> int:
    from streamer.audio import load_audio
    from streamer.bench.data import data_dir
    from streamer.config import load_settings, parse_set_flags
    from streamer.engine.loader import load_engine

    overrides = parse_set_flags(args.set)
    if args.model:
        overrides["engine.model"] = args.model
    settings = load_settings(args.config, overrides)
    counts = [int(x) for x in args.clients.split(",") if x.strip()]
    settings.server.max_sessions = max(settings.server.max_sessions, max(counts))
    wav = Path(args.file) if args.file else (data_dir() or Path("missing")) / LONGFORM
    if not wav.is_file():
        log.error("audio not found: %s (set STREAMER_DATA or pass --file)", wav)
        return 2
    audio = load_audio(wav)
    if args.seconds:
        audio = audio[: int(args.seconds * 16000)]
    segments = load_segments(wav, args.seconds)
    engine = load_engine(settings.engine)
    sys.setswitchinterval(0.001)  # as `streamer serve` does
    results = []
    for n in counts:
        log.info("load level N=%d: %d clients x %.0f s", n, n, len(audio) / 16000)
        results.append(asyncio.run(run_level(settings, engine, audio, segments, n, args.speed, args.arrive_every)))
        print(format_table(results[-1:], settings.engine.model).splitlines()[-1], flush=True)
    print(format_table(results, settings.engine.model))
    holding = [r.clients for r in results if r.holds_real_time]
    print(f"largest N holding real time with p90 < 3 s: {max(holding) if holding else 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"model": settings.engine.model, "file": str(wav),
                                         "results": [asdict(r) for r in results]}, indent=2))
    return 0
