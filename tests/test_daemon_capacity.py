"""Admission by measured capacity: numbers in (no clock), and a real server refusing the stream too many."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.daemon.capacity import Capacity
from streamer.daemon.server import running_server
from streamer.engine.scripted import ScriptedEngine, timeline_script
from support import pcm16, scaled, timeline, wait_until
from support.ws import http_get, run_stream, settings

pytestmark = pytest.mark.timeout(scaled(120))


def busy(capacity: Capacity, fraction: float, seconds: float = 30.0, start: float = 100.0) -> float:
    """Feed ``seconds`` of history in which the engine was busy ``fraction`` of the time; the end time."""
    for i in range(int(seconds)):
        capacity.decoded(start + i + 1, fraction)
    return start + seconds


def test_a_new_daemon_admits_and_utilisation_is_measured():
    capacity = Capacity(target=0.85)
    assert capacity.verdict(0.0, 0, 0.0).admit
    now = busy(capacity, 0.4)
    assert capacity.utilisation(now) == pytest.approx(0.4, abs=0.02)


def test_one_more_stream_is_admitted_only_while_the_prediction_stays_under_target():
    capacity = Capacity(target=0.85)
    now = busy(capacity, 0.5)
    two = capacity.verdict(now, 2, 0.5)  # 0.25 per stream: room for one more
    assert two.admit and two.headroom == pytest.approx(1.4, abs=0.1)
    now = busy(Capacity(target=0.85), 0.8)
    full = Capacity(target=0.85)
    now = busy(full, 0.8)
    refused = full.verdict(now, 2, 0.5)
    assert not refused.admit and refused.retry_after > 0 and "busy" in refused.reason


def test_a_stream_past_its_latency_budget_stops_admissions():
    capacity = Capacity(target=0.85, latency_budget=2.0)
    now = busy(capacity, 0.1)
    verdict = capacity.verdict(now, 1, 3.5)
    assert not verdict.admit and "behind" in verdict.reason


def test_history_older_than_the_window_is_forgotten():
    capacity = Capacity()
    now = busy(capacity, 0.9)
    assert capacity.utilisation(now + 60) == 0.0


class CostlyEngine:
    """A scripted engine whose every window costs a fixed time (like a model on a busy CPU)."""

    def __init__(self, words, cost: float) -> None:
        self.inner, self.cost = ScriptedEngine(timeline_script(words)), cost
        self.name, self.languages, self.max_prompt_tokens = "costly", ("en",), 223

    def prompt_tokens(self, text: str) -> int:
        return len(text.split())

    def decode(self, request):
        time.sleep(self.cost)
        return self.inner.decode(request)

    def decode_batch(self, requests):
        return [self.decode(r) for r in requests]


async def test_the_stream_that_would_overload_the_engine_is_refused_and_the_others_keep_up():
    words = timeline(20)
    cfg = settings(**{"stream.min_chunk": 0.5, "server.max_batch": 1, "server.target_utilisation": 0.85})
    async with running_server(cfg, CostlyEngine(words, cost=0.18)) as server:
        # two real-time streams: each needs a 0.18 s decode per 0.5 s of audio, 0.72 of the engine together
        first = [asyncio.ensure_future(run_stream(server.url, pcm16(12.0), {}, pace=0.1)) for _ in range(2)]
        await wait_until(lambda: server.host.scheduler.capacity.utilisation(time.perf_counter()) > 0.6
                         and time.perf_counter() - server.host.scheduler.capacity._started > 6, 30,
                         what="measured load")
        extra = await run_stream(server.url, b"", {}, stop=False)
        health = await http_get(server.http_url + "/healthz")
        metrics = (await http_get(server.http_url + "/metrics"))[2].decode()
        results = await asyncio.gather(*first)
    assert extra.errors == ["server_busy"] and extra.close_code == 1013
    assert extra.of("error")[0]["retry_after"] > 0
    assert health[0] == 503 and health[2].strip() == b"saturated"
    assert "streamer_engine_utilisation" in metrics and "streamer_capacity_headroom 0.0" in metrics
    for result in results:  # the admitted streams were served in full
        assert result.close_code == 1000 and len(result.committed) == len([w for w in words if w.end <= 12.0])
