"""Deepgram live with the official ``deepgram-sdk`` client, unmodified: only its base URL points here.

A real daemon on 127.0.0.1 with the real tiny.en model; the clip goes in as 100 ms chunks a little
faster than real time, as a live-caption app would send a microphone.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import ConnectionClosed
from deepgram.listen.v1.types import (ListenV1Metadata, ListenV1Results, ListenV1SpeechStarted,
                                      ListenV1UtteranceEnd)

from support import s16, scaled, wait_until, word_distance, words
from support.ws import run_stream
from streamer.audio import load_audio
from streamer.config import load_settings
from streamer.daemon.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.timeout(scaled(300))]

TOKEN = "deepgram-compat-token"
CHUNK = 3200  # 100 ms of 16 kHz 16-bit mono
LIVE = {"model": "nova-3", "encoding": "linear16", "sample_rate": 16000, "channels": 1, "language": "en-US",
        "interim_results": "true", "punctuate": "true", "endpointing": 300, "utterance_end_ms": 1000,
        "vad_events": "true"}


def dg_settings(**extra):
    return load_settings(None, {"engine.model": "tiny.en", "server.host": "127.0.0.1", "server.token": TOKEN,
                                **extra}, environ={})


def client_for(server, token: str = TOKEN) -> AsyncDeepgramClient:
    """The SDK as a user configures it: the environment's URLs point at the daemon's /deepgram."""
    base = f"{server.http_url}/deepgram"
    env = DeepgramClientEnvironment(base=base, production=f"{server.url}/deepgram", agent=base, agent_rest=base)
    return AsyncDeepgramClient(api_key=token, environment=env)


@pytest.fixture(scope="module")
def jfk(shared_data) -> bytes:
    return s16(load_audio(shared_data / "jfk/jfk.wav"))


@pytest.fixture(scope="module")
def reference(shared_data) -> str:
    return (shared_data / "jfk/jfk.txt").read_text()


async def listen(socket, into: list) -> None:
    """Every message until the server closes (the SDK raises on a close other than 1000)."""
    with contextlib.suppress(ConnectionClosed):
        async for message in socket:
            into.append(message)


def finals(messages: list) -> list[ListenV1Results]:
    return [m for m in messages if isinstance(m, ListenV1Results) and m.is_final]


def final_text(messages: list) -> str:
    return " ".join(m.channel.alternatives[0].transcript for m in finals(messages)
                    if m.channel.alternatives[0].transcript)


async def test_live_clip_gives_interim_and_final_results_and_metadata(tiny_engine, jfk, reference):
    silence = bytes(16000 * 2 * 2)  # 2 s after the clip: the utterance ends, UtteranceEnd follows
    messages: list = []
    async with running_server(dg_settings(), tiny_engine) as server:
        async with client_for(server).listen.v1.connect(**LIVE) as socket:
            reader = asyncio.ensure_future(listen(socket, messages))
            audio = jfk + silence
            for i in range(0, len(audio), CHUNK):
                await socket.send_media(audio[i:i + CHUNK])
                await asyncio.sleep(0.025)
                if i == CHUNK * 20:
                    await socket.send_keep_alive()  # accepted mid-stream, changes nothing
            await wait_until(lambda: any(isinstance(m, ListenV1UtteranceEnd) for m in messages), 60,
                             what="UtteranceEnd")
            await socket.send_close_stream()
            await asyncio.wait_for(reader, scaled(60))
        close_code = socket._websocket.close_code
    kinds = [type(m).__name__ for m in messages]
    assert close_code == 1000 and isinstance(messages[-1], ListenV1Metadata), kinds[-3:]
    for m in messages:  # every message passes the SDK's own models, strictly
        type(m).model_validate(m.model_dump())
    started = [m for m in messages if isinstance(m, ListenV1SpeechStarted)]
    assert started and started[0].timestamp < 1.0
    assert kinds.index("ListenV1SpeechStarted") < kinds.index("ListenV1Results")
    interim = [m for m in messages if isinstance(m, ListenV1Results) and not m.is_final]
    assert interim and all(not m.speech_final for m in interim)
    assert any(m.speech_final for m in finals(messages))
    text = final_text(messages)
    assert word_distance(text, reference) <= 3, text
    assert "," in text or "." in text  # punctuate=true
    final_words = [w for m in finals(messages) for w in m.channel.alternatives[0].words]
    assert [w.word for w in final_words] == words(text)
    assert all(w.punctuated_word and w.word == w.word.lower() for w in final_words)
    starts = [w.start for w in final_words]
    assert starts == sorted(starts) and starts[-1] <= 11.0
    tiles = finals(messages)  # final results tile the audio: each starts where the last ended
    assert all(abs(b.start - (a.start + a.duration)) < 0.002 for a, b in zip(tiles, tiles[1:]))
    ends = [(i, m) for i, m in enumerate(messages) if isinstance(m, ListenV1UtteranceEnd)]
    for i, end in ends:  # each comes after the final result holding the word it names (pauses >= 1 s)
        assert any(w.end == end.last_word_end for m in finals(messages[:i]) for w in m.channel.alternatives[0].words)
    assert 9.0 <= ends[-1][1].last_word_end <= 11.2
    meta = messages[-1]
    assert meta.duration == pytest.approx(13.0, abs=0.01) and meta.channels == 1 and len(meta.sha256) == 64


async def test_finalize_keepalive_and_v1_beside_it(tiny_engine, jfk, reference):
    """Finalize makes the words so far final at once (from_finalize) and the stream goes on with the
    client's own timeline; KeepAlive holds an idle stream open past the idle timeout; protocol v1's
    /v1/listen on the same daemon is untouched."""
    messages: list = []
    half = len(jfk) // 2 // CHUNK * CHUNK
    async with running_server(dg_settings(**{"server.idle_timeout": scaled(2.0)}), tiny_engine) as server:
        v1 = asyncio.ensure_future(run_stream(server.url, jfk, {"language": "en"}, frame=6400, pace=0.02,
                                              headers={"Authorization": f"Bearer {TOKEN}"}))
        async with client_for(server).listen.v1.connect(**{**LIVE, "punctuate": "false"}) as socket:
            reader = asyncio.ensure_future(listen(socket, messages))
            for i in range(0, half, CHUNK):
                await socket.send_media(jfk[i:i + CHUNK])
                await asyncio.sleep(0.02)
            await socket.send_finalize()
            waited = 0.0  # at least twice the idle timeout, kept open by KeepAlive alone
            while waited < scaled(4.0) or not any(m.from_finalize for m in finals(messages)):
                assert waited < scaled(60), "no finalized result"
                await asyncio.sleep(0.5)
                await socket.send_keep_alive()
                waited += 0.5
            for i in range(half, len(jfk), CHUNK):
                await socket.send_media(jfk[i:i + CHUNK])
                await asyncio.sleep(0.02)
            await socket.send_close_stream()
            await asyncio.wait_for(reader, scaled(60))
        v1_result = await v1
    flushed = next(m for m in finals(messages) if m.from_finalize)
    assert flushed.speech_final and flushed.channel.alternatives[0].words
    assert flushed.channel.alternatives[0].words[-1].end <= half / 32000 + 0.1
    later = finals(messages)[finals(messages).index(flushed) + 1:]
    assert all(w.start >= half / 32000 - 0.5 for m in later for w in m.channel.alternatives[0].words)
    text = final_text(messages)  # cut mid-phrase by the Finalize, so tiny.en may mishear the words around the cut
    assert word_distance(text, reference) <= 8 and {"americans", "ask", "country"} <= set(words(text)), text
    assert text == text.lower() and "," not in text  # punctuate=false
    starts = [w.start for m in finals(messages) for w in m.channel.alternatives[0].words]
    assert starts == sorted(starts) and starts[-1] <= 11.0  # the inserted silence is not in the client's times
    assert isinstance(messages[-1], ListenV1Metadata)
    assert messages[-1].duration == pytest.approx(len(jfk) / 32000, abs=0.01)
    assert v1_result.close_code == 1000 and {"ask", "country"} <= set(words(v1_result.text))


async def test_bad_requests_get_deepgram_errors_and_an_idle_stream_times_out(tiny_engine):
    async with running_server(dg_settings(**{"server.idle_timeout": scaled(1.0)}), tiny_engine) as server:
        with pytest.raises(ApiError) as bad_encoding:
            async with client_for(server).listen.v1.connect(**{**LIVE, "encoding": "opus"}):
                pass
        with pytest.raises(ApiError) as bad_language:
            async with client_for(server).listen.v1.connect(**{**LIVE, "language": "de"}):
                pass
        with pytest.raises(ApiError) as bad_token:
            async with client_for(server, token="wrong").listen.v1.connect(**LIVE):
                pass
        messages: list = []
        async with client_for(server).listen.v1.connect(**LIVE) as socket:
            await socket._websocket.send('{"type": "Flush"}')
            await socket.send_media(bytes(CHUNK))
            await asyncio.wait_for(listen(socket, messages), scaled(30))  # then nothing: the server gives up
            idle_close = socket._websocket.close_code, socket._websocket.close_reason
        assert server.host.live == {}
    assert bad_encoding.value.status_code == 400 and bad_language.value.status_code == 400
    assert bad_token.value.status_code == 401
    errors = [m for m in messages if isinstance(m, dict) or type(m).__name__ == "ListenV1Error"]
    variants = [getattr(m, "variant", None) for m in errors]
    assert "SchemaError" in variants and "NET-0001" in variants
    assert idle_close[0] == 1011 and idle_close[1].startswith("NET-0001")
    assert isinstance(messages[-1], ListenV1Metadata)  # what was received is still accounted for


def test_silence_insertion_stays_out_of_client_times():
    from streamer.compat.deepgram_events import Timeline

    timeline = Timeline()
    timeline.insert(2.0, 1.0)   # stream 2.0-3.0 is inserted
    timeline.insert(5.0, 0.5)   # client 5.0 = stream 6.0; 6.0-6.5 inserted
    assert [timeline.client(t) for t in (1.0, 2.5, 3.0, 4.0, 6.2, 7.0)] == [1.0, 2.0, 2.0, 3.0, 5.0, 5.5]
    assert np.isclose(timeline.inserted, 1.5)
