"""Admission by measured capacity: numbers in (no clock), and a real server refusing the stream too many."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamer.daemon.capacity import ASSUMED_FIXED, Capacity, fit_round_cost
from streamer.daemon.server import running_server
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import DecodeAbandoned
from support import pcm16, scaled, timeline, wait_until
from support.ws import http_get, run_stream, settings

pytestmark = pytest.mark.timeout(scaled(120))


def busy(capacity: Capacity, fraction: float, seconds: float = 30.0, start: float = 100.0) -> float:
    """Feed ``seconds`` of history in which the engine was busy ``fraction`` of the time; the end time."""
    for i in range(int(seconds)):
        capacity.decoded(start + i + 1, fraction)
    return start + seconds


def rounds(capacity: Capacity, costs: dict[int, float], seconds: float = 30.0, start: float = 100.0) -> float:
    """Feed one round a second for ``seconds``, cycling through the round sizes in ``costs``; the end time."""
    sizes = list(costs)
    for i in range(int(seconds)):
        rows = sizes[i % len(sizes)]
        capacity.decoded(start + i + 1, costs[rows], rows)
    return start + seconds


def test_a_new_daemon_admits_and_utilisation_is_measured():
    capacity = Capacity(target=0.85)
    assert capacity.verdict(0.0, 0, 0.0).admit
    now = busy(capacity, 0.4)
    assert capacity.utilisation(now) == pytest.approx(0.4, abs=0.02)


def test_the_round_cost_line_is_fitted_through_each_sizes_median():
    cost = fit_round_cost([(1, 0.44), (1, 0.46), (1, 3.0), (3, 0.75), (3, 0.74), (3, 0.76)])  # 3.0: an outlier
    assert cost.fixed == pytest.approx(0.315) and cost.per_row == pytest.approx(0.145)  # medians 0.46, 0.75
    assert cost.rounds(3, max_batch=4) == pytest.approx(0.75, abs=0.01)
    assert cost.rounds(6, max_batch=4) == pytest.approx(cost.rounds(4, 4) + cost.rounds(2, 4))


def test_one_round_size_or_a_falling_line_takes_a_fixed_share_that_errs_toward_refusing():
    one = fit_round_cost([(1, 0.5)] * 4)
    assert one.fixed == pytest.approx(ASSUMED_FIXED * 0.5) and one.rounds(1, 4) == pytest.approx(0.5)
    assert one.rounds(2, 4) > 0.5 * 1.5  # more than a measured line here would say (fixed share 0.37-0.65)
    noisy = fit_round_cost([(1, 0.6), (2, 0.5)])
    assert noisy.per_row > 0 and noisy.fixed >= 0


def test_a_second_stream_is_admitted_when_batching_makes_it_cheap_and_refused_when_it_does_not():
    cheap = Capacity(target=0.85, min_chunk=1.0, max_batch=4)      # base with encoder buckets: 0.44 s a window
    assert cheap.verdict(rounds(cheap, {1: 0.44}), 1, 0.5).admit
    dear = Capacity(target=0.85, min_chunk=1.0, max_batch=4)       # base with the full encoder: 0.80 s
    refused = dear.verdict(rounds(dear, {1: 0.80}), 1, 0.5)
    assert not refused.admit and refused.retry_after > 0 and "would take" in refused.reason


def test_measured_rounds_of_several_sizes_admit_up_to_the_limit_and_no_further():
    capacity = Capacity(target=0.85, min_chunk=1.0, max_batch=4)
    now = rounds(capacity, {1: 0.44, 2: 0.59, 3: 0.75})            # 0.285 + 0.155 per window
    assert capacity.verdict(now, 2, 0.5).admit and capacity.verdict(now, 2, 0.5).headroom == 1
    assert not capacity.verdict(now, 3, 0.5).admit                 # 4 windows: 0.905 s > 0.85


def test_beam_rounds_are_busy_time_but_not_samples_of_the_greedy_round_cost():
    greedy_only, with_beams = Capacity(min_chunk=1.0, max_batch=4), Capacity(min_chunk=1.0, max_batch=4)
    now = rounds(greedy_only, {1: 0.3, 2: 0.4})
    rounds(with_beams, {1: 0.3, 2: 0.4})
    for i in range(10):  # a lone stream decoded with a beam: twice the cost of its greedy rounds
        with_beams.decoded(now + 0.1 * (i + 1), 0.6, 1, sample=False)
    assert with_beams.round_cost(now + 1) == greedy_only.round_cost(now + 1)
    assert with_beams.utilisation(now + 1) > greedy_only.utilisation(now + 1) + 0.1


def test_a_stream_past_its_latency_budget_stops_admissions():
    capacity = Capacity(target=0.85, latency_budget=2.0)
    now = busy(capacity, 0.1)
    verdict = capacity.verdict(now, 1, 3.5)
    assert not verdict.admit and "behind" in verdict.reason


def test_files_cost_rounds_but_not_live_utilisation():
    capacity = Capacity()
    for i in range(10):
        capacity.decoded(101.0 + i, 0.9, rows=2, live_share=0.0)
    assert capacity.utilisation(110.0) == 0.0 and capacity.round_cost(110.0) is not None


def test_history_older_than_the_window_is_forgotten():
    capacity = Capacity()
    now = busy(capacity, 0.9)
    assert capacity.utilisation(now + 60) == 0.0 and capacity.round_cost(now + 60) is None


class CostlyEngine:
    """A scripted engine whose every window costs a fixed time (like a model on a busy CPU)."""

    def __init__(self, words, cost: float) -> None:
        self.inner, self.cost = ScriptedEngine(timeline_script(words)), cost
        self.name, self.languages, self.max_prompt_tokens = "costly", ("en",), 223
        self.beam_search = True

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


class RecordingEngine(CostlyEngine):
    """The costly engine, remembering one request field (``asked``) of each round's windows."""

    encoder_cuts = True

    def __init__(self, words, asked: str) -> None:
        super().__init__(words, cost=0.05)
        self.asked = asked
        self.rounds: list[list[object]] = []

    def decode_batch(self, requests):
        self.rounds.append([getattr(r, self.asked) for r in requests])
        return super().decode_batch(requests)


async def test_the_beam_serves_a_lone_stream_and_every_window_is_greedy_once_more_streams_are_live():
    words = timeline(6)
    engine = RecordingEngine(words, "beam_size")
    cfg = settings(**{"engine.beam_size": 3, "server.beam_streams": 1, "server.max_batch": 4})
    async with running_server(cfg, engine) as server:
        alone = await run_stream(server.url, pcm16(6.0), {}, pace=0.02)
        alone_rounds, engine.rounds[:] = list(engine.rounds), []
        together = await asyncio.gather(*(run_stream(server.url, pcm16(6.0), {}, pace=0.02) for _ in range(2)))
    assert alone_rounds and all(beams == [3] for beams in alone_rounds)
    pairs = [beams for beams in engine.rounds if len(beams) == 2]
    assert pairs and all(beams == [1, 1] for beams in pairs)  # both streams live: greedy
    for result in (alone, *together):  # and every stream's text in full either way
        assert result.close_code == 1000 and len(result.committed) == len([w for w in words if w.end <= 6.0])


async def test_an_engine_without_beam_search_gets_greedy_rounds_that_count_toward_capacity():
    """The compiled CUDA loop decodes greedily whatever beam is configured: its rounds are greedy samples."""
    words = timeline(6)
    engine = RecordingEngine(words, "beam_size")
    engine.beam_search = False
    cfg = settings(**{"engine.beam_size": 3, "server.beam_streams": 1, "server.max_batch": 4})
    async with running_server(cfg, engine) as server:
        alone = await run_stream(server.url, pcm16(6.0), {}, pace=0.02)
        samples = len(server.host.scheduler.capacity._rounds)
    assert engine.rounds and all(beams == [1] for beams in engine.rounds)
    assert samples == len(engine.rounds)       # every round a sample of the cost line (a beam round is not)
    assert alone.close_code == 1000 and len(alone.committed) == len([w for w in words if w.end <= 6.0])


async def test_a_lone_stream_gets_the_full_encoder_and_a_crowd_a_cut_one():
    words = timeline(6)
    engine = RecordingEngine(words, "encoder_buckets")
    cfg = settings(**{"server.bucket_streams": 1, "server.encoder_buckets": [15, 10], "server.max_batch": 4})
    async with running_server(cfg, engine) as server:
        alone = await run_stream(server.url, pcm16(6.0), {}, pace=0.02)
        alone_rounds, engine.rounds[:] = list(engine.rounds), []
        samples_alone = len(server.host.scheduler.capacity._rounds)
        together = await asyncio.gather(*(run_stream(server.url, pcm16(6.0), {}, pace=0.02) for _ in range(2)))
    assert alone_rounds and all(asked == [None] for asked in alone_rounds)   # the engine's own: 30 s
    assert samples_alone == 0                 # full-encoder rounds are no sample of a crowded round's cost
    pairs = [asked for asked in engine.rounds if len(asked) == 2]
    assert pairs and all(asked == [(10.0, 15.0)] * 2 for asked in pairs)
    for result in (alone, *together):
        assert result.close_code == 1000 and len(result.committed) == len([w for w in words if w.end <= 6.0])


class SteppingEngine(CostlyEngine):
    """The costly engine working in 10 ms steps, stopping once every window of its round was given up
    (``DecodeRequest.abandoned``), as the Whisper engine checks between decoder steps."""

    def __init__(self, words, cost: float) -> None:
        super().__init__(words, cost)
        self.stopped = 0

    def decode_batch(self, requests):
        for _ in range(int(self.cost / 0.01)):
            if all(r.abandoned is not None and r.abandoned() for r in requests):
                self.stopped += 1
                raise DecodeAbandoned("every window given up")
            time.sleep(0.01)
        return [self.inner.decode(r) for r in requests]


@pytest.mark.parametrize("preempt", [True, False])
async def test_a_stop_gives_up_the_update_in_flight_and_the_final_decode_commits_everything(preempt):
    """The client stops while a slow update runs: the final decode due now commits every word the update
    could have, so the round is given up and the final decode runs at once (``stream.preempt_updates``)."""
    words = timeline(6)
    engine = SteppingEngine(words, cost=1.5)
    cfg = settings(**{"stream.min_chunk": 0.5, "stream.preempt_updates": preempt})
    async with running_server(cfg, engine) as server:
        began = time.perf_counter()
        result = await run_stream(server.url, pcm16(4.0), {}, pace=0.02)
        took = time.perf_counter() - began
        stopped_rounds = server.host.scheduler.stats.abandoned
    assert result.close_code == 1000 and result.committed == [w.word for w in words]
    assert engine.stopped == stopped_rounds == (1 if preempt else 0)
    if preempt:  # one update cut short and the final decode, not two whole decodes
        assert took < 2 * 1.5 + 0.5


def test_bucket_lengths_are_checked():
    with pytest.raises(Exception, match="server.encoder_buckets must lie between 1 and 30 s"):
        settings(**{"server.encoder_buckets": [40]})
