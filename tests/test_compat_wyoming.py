"""Wyoming (Home Assistant's protocol) with the ``wyoming`` package's own async TCP client.

A real daemon on 127.0.0.1 with the real tiny.en model; the client is unmodified. The clip goes
in as Home Assistant sends it (16 kHz, 16-bit mono chunks) and in a format it must convert.
"""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
import soxr
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong

from support import s16, scaled, wait_until, word_distance, words
from streamer.audio import load_audio
from streamer.compat.wyoming import WyomingSurface, start_wyoming
from streamer.config import load_settings
from streamer.daemon.app import serve_forever
from streamer.daemon.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.timeout(scaled(300))]


def wyoming_settings(**extra):
    return load_settings(None, {"engine.model": "tiny.en", "server.host": "127.0.0.1",
                                "server.wyoming": "tcp://127.0.0.1:0", **extra}, environ={})


@pytest.fixture(scope="module")
def jfk(shared_data) -> np.ndarray:
    return load_audio(shared_data / "jfk/jfk.wav")


@pytest.fixture(scope="module")
def reference(shared_data) -> str:
    return (shared_data / "jfk/jfk.txt").read_text()


async def read_until(client: AsyncTcpClient, kind: str, into: list) -> None:
    """Collect events (as they arrive, into ``into``) until one of type ``kind``."""
    while True:
        event = await asyncio.wait_for(client.read_event(), scaled(60))
        assert event is not None, f"connection closed before {kind}"
        into.append(event)
        if event.type == kind:
            return


async def transcribe(port: int, audio: bytes, rate: int, width: int, channels: int, *, chunk_seconds: float = 0.1,
                     pace: float = 0.0, language: str | None = "en", words_first: bool = False) -> tuple[list, int]:
    """What Home Assistant does: transcribe, audio-start, chunks, audio-stop; read to ``transcript``.

    ``words_first`` waits for a ``transcript-chunk`` before audio-stop (words stream while the
    utterance is open). Returns the events and how many had arrived before audio-stop was sent."""
    events: list = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        reader = asyncio.ensure_future(read_until(client, "transcript", events))
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        step = int(rate * chunk_seconds) * width * channels
        for i in range(0, len(audio), step):
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                audio=audio[i:i + step]).event())
            if pace:
                await asyncio.sleep(pace)
        if words_first:
            await wait_until(lambda: any(e.type == "transcript-chunk" for e in events), 60, what="a transcript-chunk")
        before_stop = len(events)
        await client.write_event(AudioStop().event())
        await asyncio.wait_for(reader, scaled(120))
    return events, before_stop


async def test_describe_then_stream_the_clip_like_home_assistant(tiny_engine, jfk, reference):
    async with running_server(wyoming_settings(), tiny_engine) as server:
        surface = await start_wyoming(server)
        async with AsyncTcpClient("127.0.0.1", surface.port) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await asyncio.wait_for(client.read_event(), scaled(10)))
            await client.write_event(Ping(text="hi").event())
            pong = Pong.from_event(await asyncio.wait_for(client.read_event(), scaled(10)))
        events, before_stop = await transcribe(surface.port, s16(jfk), 16000, 2, 1, pace=0.02, words_first=True)
        sessions = server.metrics.sessions_total._value.get()
    program = info.asr[0]
    assert program.models[0].name == "tiny.en" and "en" in program.models[0].languages
    assert program.supports_transcript_streaming and program.installed
    assert pong.text == "hi"
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript-stop", "transcript"], kinds
    assert set(kinds[1:-2]) == {"transcript-chunk"}
    assert "transcript-chunk" in kinds[:before_stop] and "transcript" not in kinds[:before_stop]
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk")
    final = Transcript.from_event(events[-1])
    assert final.text == chunks.strip() and final.language == "en"
    assert TranscriptStart.from_event(events[0]).language == "en"
    assert word_distance(final.text, reference) <= 3, final.text
    assert sessions == 1  # one ordinary host session


async def test_any_rate_width_and_channels_are_converted(tiny_engine, jfk, reference):
    """48 kHz, 24-bit, stereo: converted to what the core hears; a wrong conversion gives garbage."""
    resampled = soxr.resample(jfk, 16000, 48000, quality="HQ")
    ints = (np.clip(resampled, -1, 1) * (2 ** 23 - 1)).astype("<i4")
    stereo = np.repeat(ints[:, None], 2, axis=1).reshape(-1)
    packed = stereo.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # little-endian: the low 3 bytes
    async with running_server(wyoming_settings(), tiny_engine) as server:
        surface = await start_wyoming(server)
        events, _ = await transcribe(surface.port, packed, 48000, 3, 2, language="en-US")
    final = Transcript.from_event(events[-1])
    assert word_distance(final.text, reference) <= 4, final.text


async def refused_utterance(port: int, *events) -> tuple[Error, bool]:
    """Send ``events`` as Home Assistant would; the server's error, and whether it then closed the connection
    (Home Assistant 2024.3 ignores errors and waits for a transcript: only a close ends its wait)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event.event())
        error = Error.from_event(await asyncio.wait_for(client.read_event(), scaled(10)))
        closed = await asyncio.wait_for(client.read_event(), scaled(10)) is None
    return error, closed


async def test_bad_input_gets_wyoming_errors_and_other_clients_carry_on(tiny_engine, jfk):
    async with running_server(wyoming_settings(), tiny_engine) as server:
        surface = await start_wyoming(server)
        healthy = asyncio.ensure_future(transcribe(surface.port, s16(jfk), 16000, 2, 1, pace=0.02))
        rate_error = await refused_utterance(surface.port, AudioStart(rate=96000, width=2, channels=1))
        width_error = await refused_utterance(surface.port, AudioStart(rate=16000, width=7, channels=1))
        language_error = await refused_utterance(surface.port, Transcribe(language="xx"),
                                                 AudioStart(rate=16000, width=2, channels=1))
        async with AsyncTcpClient("127.0.0.1", surface.port) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStop().event())  # an utterance without audio is no error
            await client.write_event(Describe().event())
            assert Info.is_type((await asyncio.wait_for(client.read_event(), scaled(10))).type)
        reader, writer = await asyncio.open_connection("127.0.0.1", surface.port)
        writer.write(b'{"type": "audio-chunk", "payload_length": 99999999999}\n')
        await writer.drain()
        garbage = await asyncio.wait_for(reader.read(), scaled(10))  # an error event, then the server closes
        writer.close()
        events, _ = await asyncio.wait_for(healthy, scaled(120))
    assert rate_error[0].code == "invalid_start" and "sample_rate" in rate_error[0].text and rate_error[1]
    assert width_error[0].code == "invalid_start" and "width" in width_error[0].text and width_error[1]
    assert language_error[0].code == "invalid_start" and "xx" in language_error[0].text and language_error[1]
    assert b'"error"' in garbage and b"payload_length" in garbage
    assert {"ask", "country"} <= set(words(Transcript.from_event(events[-1]).text))


async def test_while_the_model_loads_describe_waits_and_audio_is_refused_at_once(tiny_engine):
    """Home Assistant's set-up keeps the languages of the first ``info``: none is sent before they are known."""
    async with running_server(wyoming_settings(), None) as loading:
        surface = await start_wyoming(loading)
        error, closed = await refused_utterance(surface.port, Transcribe(language="en"),
                                                AudioStart(rate=16000, width=2, channels=1))
        async with AsyncTcpClient("127.0.0.1", surface.port) as client:
            await client.write_event(Describe().event())
            early = asyncio.ensure_future(client.read_event())
            await asyncio.sleep(0.5)
            assert not early.done()
            loading.host.attach_engine(tiny_engine)
            info = Info.from_event(await asyncio.wait_for(early, scaled(10)))
    assert error.code == "not_ready" and closed
    assert "en" in info.asr[0].models[0].languages


async def test_serve_with_wyoming_sigint_finishes_the_utterance(tiny_engine, jfk):
    """What ``streamer serve --wyoming`` runs: zeroconf stays off, and Ctrl+C mid-utterance still
    sends that utterance's transcript before the daemon exits 0."""
    started: asyncio.Future = asyncio.get_running_loop().create_future()
    daemon = asyncio.ensure_future(serve_forever(wyoming_settings(**{"server.port": 0}), engine=tiny_engine,
                                                 on_started=started.set_result))
    server = await asyncio.wait_for(started, scaled(30))
    surface = next(b for b in server.background if isinstance(b, WyomingSurface))
    assert surface.zeroconf is None and not server.settings.server.wyoming_zeroconf
    events: list = []
    async with AsyncTcpClient("127.0.0.1", surface.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=s16(jfk)).event())
        await asyncio.sleep(scaled(1))
        os.kill(os.getpid(), signal.SIGINT)
        await read_until(client, "transcript", events)
    assert await asyncio.wait_for(daemon, scaled(60)) == 0
    assert {"ask", "country"} <= set(words(Transcript.from_event(events[-1]).text))
