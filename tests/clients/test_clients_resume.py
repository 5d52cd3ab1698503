"""The client library resumes a stream: a network blip and a draining daemon cost no word and repeat none.

Real daemons (tiny.en) on 127.0.0.1, the real client library, and a TCP proxy that cuts the
connection, so the failure is a genuine socket reset rather than a simulated one.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.daemon.server import running_server
from streamer.hypothesis import DecodeRequest
from streamer.protocol import StartParams
from streamer_clients.client import Endpoint
from streamer_clients.live import LiveSession
from streamer_clients.resume import ResumePoint, RetainedAudio
from support import scaled, wait_until, word_distance, words
from support.proxy import BlipProxy
from client_helpers import client_settings


JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def test_retained_audio_keeps_what_is_not_committed_within_its_bound() -> None:
    kept = RetainedAudio(bytes_per_second=100, max_seconds=2.0, frame_bytes=2, context_seconds=0)
    kept.append(b"a" * 150)
    kept.ack(0.5)                                 # the server committed the first half second
    assert kept.start == 0.5 and kept.seconds == 1.0 and kept.complete
    kept.append(b"b" * 150)                       # 2.5 s unacknowledged: the oldest half second goes
    assert kept.seconds == 2.0 and kept.start == 1.0 and not kept.complete
    kept.ack(0.9)                                 # an ack before the gap does not close it
    assert not kept.complete
    kept.ack(1.2)
    assert kept.complete and kept.start == 1.2 and kept.end == 3.0


def test_retained_audio_keeps_committed_context_that_never_opens_a_gap() -> None:
    kept = RetainedAudio(bytes_per_second=100, max_seconds=3.0, frame_bytes=2, context_seconds=0.5)
    kept.append(b"a" * 150)
    kept.ack(1.0)                                 # committed up to 1 s: half a second before it stays
    assert kept.start == 0.5 and kept.seconds == 1.0 and kept.context_seconds == 0.5
    kept.append(b"b" * 220)                       # over the bound: context goes first, no gap
    assert kept.start == 0.7 and kept.context_seconds == pytest.approx(0.3) and kept.complete
    kept.append(b"c" * 40)                        # now uncommitted audio is dropped: a gap
    assert kept.start == 1.1 and kept.context_seconds == 0 and not kept.complete
    kept.ack(1.6)
    assert kept.complete and kept.start == 1.1 and kept.context_seconds == 0.5
    kept.drop_context(keep=0.2)
    assert kept.start == 1.4 and kept.context_seconds == pytest.approx(0.2)
    kept.drop_context()                           # a new session gets no committed audio
    assert kept.start == 1.6 and kept.context_seconds == 0


def test_resume_point_follows_the_latest_token() -> None:
    point = ResumePoint()
    assert not point.update({"type": "transcript", "seq": 1})        # no token (a subscriber's copy)
    point.update({"type": "ready", "session": "abc", "resume": "r1.x.y"})
    point.update({"type": "transcript", "seq": 4, "committed_until": 2.5, "resume": "r1.z.w"})
    assert point.claim(1.25) == {"session": "abc", "token": "r1.z.w", "seq": 4, "committed_until": 2.5,
                                 "retained_seconds": 1.25}
    assert point.claim(3.0, 1.5)["context_seconds"] == 1.5


@pytest.fixture(scope="module")
def jfk(shared_data) -> np.ndarray:
    return load_audio(shared_data / "jfk/jfk.wav")


async def real_time(audio: np.ndarray, block: float = 0.1, speed: float = 1.0):
    """pcm_f32le chunks at real time, as a microphone delivers them."""
    step = int(16000 * block)
    for i in range(0, audio.size, step):
        yield audio[i:i + step].astype("<f4").tobytes()
        await asyncio.sleep(block / speed)


def check_continuous(session: LiveSession, engine, audio: np.ndarray, sessions: int = 1) -> str:
    """One session id throughout, the whole clip, and no committed word twice on the timeline.

    tiny.en streamed at 1.5x beside another replica mishears a word or two of the clip's start now
    and then ("America", "Oh, my fellow"), with or without a resume; what a lost or replayed stretch
    of audio does is drop or repeat a phrase (7 words, "your country can do for you, ask what"),
    which the distance bound, the two "country" and the repeat check all catch."""
    text = session.transcript.committed_text
    assert len(set(session.sessions)) == sessions, session.sessions
    assert word_distance(text, engine.decode(DecodeRequest(audio, language="en")).text) <= 4, text
    starts = [w.start for w in session.transcript.committed]
    assert starts == sorted(starts), [(w.word, w.start, w.end) for w in session.transcript.committed]
    spoken, said = Counter(words(text)), Counter(JFK.split())
    assert spoken["country"] == 2, text
    assert not [w for w in spoken if spoken[w] > said[w] and w in said], text   # no word twice
    return text


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_five_second_network_blip_is_resumed_with_nothing_lost_or_repeated(tiny_engine, jfk) -> None:
    settings = client_settings(**{"stream.language": "en", "server.admission": "fixed"})
    async with running_server(settings, tiny_engine) as server, BlipProxy(("127.0.0.1", server.port)) as proxy:
        session = LiveSession(Endpoint(proxy.url), StartParams(encoding="pcm_f32le", language="en"))
        streaming = asyncio.ensure_future(session.run(real_time(jfk)))
        await wait_until(lambda: session.transcript.committed, 30, what="a committed word")
        await wait_until(lambda: session.sent_seconds > 4.0, 30, what="4 s streamed")
        await proxy.blip(5.0)
        await asyncio.wait_for(streaming, scaled(90))
    assert session.resumes >= 1 and proxy.connections >= 2
    check_continuous(session, tiny_engine, jfk)
    assert session.end_event is not None and session.end_event["session"] == session.sessions[0]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("secret_b", ["shared-by-replicas", "another-secret"])
async def test_a_draining_daemon_hands_the_stream_to_another(tiny_engine, jfk, secret_b) -> None:
    """``reconnect`` + close 1012 from A: the client resumes on B when B shares A's secret; when it does
    not, B refuses the claim (``resume_invalid``) and the kept audio starts a new session there,
    its words shifted onto the stream's timeline: still nothing lost, nothing twice."""
    def replica(secret: str):
        return running_server(client_settings(**{"stream.language": "en", "server.resume_secret": secret,
                                                "server.admission": "fixed"}),
                              tiny_engine)

    async with replica("shared-by-replicas") as a, replica(secret_b) as b, \
            BlipProxy(("127.0.0.1", a.port), ("127.0.0.1", b.port)) as proxy:
        session = LiveSession(Endpoint(proxy.url), StartParams(encoding="pcm_f32le", language="en"))
        streaming = asyncio.ensure_future(session.run(real_time(jfk, speed=1.5)))
        await wait_until(lambda: session.transcript.committed, 30, what="a committed word")
        proxy.current = 1                              # the balancer sends new connections to B
        await a.drain(grace=scaled(5))
        await asyncio.wait_for(streaming, scaled(90))
        served_by_b = b.metrics.sessions_total._value.get()
    assert served_by_b == 1
    if secret_b == "shared-by-replicas":
        assert session.resumes == 1
        check_continuous(session, tiny_engine, jfk)
    else:
        assert session.resumes == 0 and session.last_error["code"] == "resume_invalid"
        check_continuous(session, tiny_engine, jfk, sessions=2)
