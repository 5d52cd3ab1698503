"""``server.bus``: caption subscribers on replica B follow a stream served by replica A through a real
Redis (Debian's redis-server on a free port), and a Redis restart is survived."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from streamer.audio import load_audio
from streamer.daemon.server import running_server
from support import s16, scaled, wait_until, words
from support.replicas import Redis
from support.ws import Result, collect, run_stream, settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def clip(shared_data) -> bytes:
    audio: np.ndarray = load_audio(shared_data / "ljspeech/LJ001-0004.wav")  # 5 s
    return s16(audio)


@pytest.fixture
def redis_server(tmp_path):
    server = Redis(tmp_path).start()
    yield server
    server.stop()


def bus_settings(url: str):
    return settings(**{"engine.model": "tiny.en", "stream.language": "en", "server.bus": url, "server.admission": "fixed"})


async def follow(url: str, query: str, into: Result) -> asyncio.Future:
    ws = await connect(f"{url}/v1/captions?{query}")
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready", ready
    return asyncio.ensure_future(collect(ws, into))


async def test_captions_on_b_follow_a_stream_on_a_and_survive_a_redis_restart(tiny_engine, clip, redis_server):
    async with running_server(bus_settings(redis_server.url), tiny_engine) as a, \
            running_server(bus_settings(redis_server.url), tiny_engine) as b:
        await wait_until(lambda: a.host.hub.bus.connected.is_set() and b.host.hub.bus.connected.is_set(), 10)
        by_source = Result()
        source_reader = await follow(b.url, "source=desk", by_source)
        # ?session=ID on B for a session that is live on A: B heard of it on the bus
        async with connect(a.url + "/v1/listen?source=desk") as ws:
            await ws.send(json.dumps({"type": "start", "language": "en"}))
            sid = json.loads(await ws.recv())["session"]
            await wait_until(lambda: b.host.hub.knows(sid), 10, what="B hearing of A's session")
            by_session = Result()
            session_reader = await follow(b.url, f"session={sid}", by_session)
            own = asyncio.ensure_future(collect(ws))
            for i in range(0, len(clip), 3200):
                await ws.send(clip[i:i + 3200])
                await asyncio.sleep(0.02)
            await ws.send(json.dumps({"type": "stop"}))
            streamed = await asyncio.wait_for(own, scaled(60))
        await asyncio.wait_for(session_reader, scaled(20))      # closed by the relayed ``end``
        assert streamed.text and by_session.text == streamed.text, (by_session.text, streamed.text)
        assert by_session.events[-1]["type"] == "end" and by_session.events[-1]["session"] == sid
        assert not [e for e in by_session.events if "resume" in e]  # tokens never leave the stream's client
        await wait_until(lambda: by_source.text == streamed.text, 10, what="the source subscriber")

        redis_server.stop()                                      # Redis goes away and comes back
        await wait_until(lambda: not b.host.hub.bus.connected.is_set(), 30, what="B noticing")
        during = await run_stream(a.url, clip[:32000 * 2], {"language": "en"}, pace=0.01)
        assert during.of("end")                                  # serving never depended on Redis
        redis_server.start()
        await wait_until(lambda: a.host.hub.bus.connected.is_set() and b.host.hub.bus.connected.is_set(), 30,
                         what="both replicas reconnecting to Redis")
        before = len(by_source.of("transcript"))
        again = await run_stream(a.url + "", clip, {"language": "en"}, pace=0.01, path="/v1/listen?source=desk")
        await wait_until(lambda: len(by_source.of("transcript")) > before and
                         {"book", "books", "printed", "block"} & set(words(" ".join(w["word"] for e in by_source.of("transcript")[before:]
                                                            for w in e["committed"]))), 20,
                         what="captions on B after the Redis restart")
        assert again.of("end")
        source_reader.cancel()


async def test_unknown_session_is_still_refused_with_a_bus(tiny_engine, redis_server):
    async with running_server(bus_settings(redis_server.url), tiny_engine) as b:
        result = await run_stream(b.url, b"", None, path="/v1/captions?session=nosuchsession", stop=False)
    assert result.errors == ["unknown_session"] and result.close_code == 1008


async def test_bus_closes_promptly_however_soon_after_start(redis_server):
    """redis-py can swallow the cancel of a pub/sub read; shutdown must still end, with no task left reconnecting."""
    from streamer.daemon.bus import CLOSE_WAIT, RedisBus

    delays = np.random.default_rng(0).uniform(0, 0.02, 100)  # close at every stage of connecting and subscribing
    for attempt, delay in enumerate(delays):
        bus = RedisBus(redis_server.url, lambda key, message: None)
        await bus.start()
        await asyncio.sleep(delay)
        bus.announce(f"s{attempt}")
        await asyncio.wait_for(bus.close(), CLOSE_WAIT * 2 + 1)
        await asyncio.sleep(0)
        assert all(task.done() for task in bus._tasks), attempt
