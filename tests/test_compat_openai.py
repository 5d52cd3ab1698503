"""The OpenAI-compatible surface, driven by the official ``openai`` package (unmodified) pointed with
``base_url`` at a real daemon on 127.0.0.1 with the real tiny.en model.

REST: every response format, streaming (server-sent events), a 229 s file alongside a live
protocol v1 stream, and the refusals (empty, not audio, too big, wrong token) in OpenAI's error
shape. Realtime: the SDK's GA client (``client.realtime``, server VAD, 24 kHz) and its beta
client (``client.beta.realtime``, 16 kHz, manual commit), plus bad events that leave the
connection usable.
"""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import openai
import pytest
import soxr
from openai import AsyncOpenAI

from support import s16, scaled, word_distance, words
from support.ws import run_stream
from streamer.audio import load_audio
from streamer.bench.metrics import wer
from streamer.config import load_settings
from streamer.daemon.server import running_server
from streamer.subtitles import parse_srt

pytestmark = [pytest.mark.data, pytest.mark.timeout(scaled(600))]

JFK_WORDS = ("ask", "not", "what", "your", "country", "can", "do", "for", "you")


def e2e_settings(**extra):
    return load_settings(None, {"engine.model": "tiny.en", "server.host": "127.0.0.1", **extra}, environ={})


def client_for(server, api_key: str = "sk-local") -> AsyncOpenAI:
    # websocket_base_url: the SDK's beta realtime client assumes wss:// unless told
    return AsyncOpenAI(base_url=server.http_url + "/v1", websocket_base_url=server.url + "/v1", api_key=api_key,
                       max_retries=0, timeout=scaled(600))


@pytest.fixture(scope="module")
def jfk_bytes(shared_data) -> bytes:
    return (shared_data / "jfk/jfk.wav").read_bytes()


@pytest.fixture(scope="module")
def jfk(shared_data) -> np.ndarray:
    return load_audio(shared_data / "jfk/jfk.wav")


def assert_jfk(text: str) -> None:
    got = words(text)
    assert sum(w in got for w in JFK_WORDS) >= len(JFK_WORDS) - 1, text


# --------------------------------------------------------------------------- REST
@pytest.mark.slow
async def test_every_response_format_and_translation(tiny_engine, jfk_bytes):
    async with running_server(e2e_settings(), tiny_engine) as server:
        client = client_for(server)
        models = [m.id for m in (await client.models.list()).data]
        assert models[0] == tiny_engine.name and "whisper-1" in models
        create = client.audio.transcriptions.create
        file = ("jfk.wav", jfk_bytes, "audio/wav")
        # all at once: six batch sessions share the scheduler's rounds
        as_json, as_text, as_srt, as_vtt, verbose, translated = await asyncio.gather(
            create(file=file, model="whisper-1", language="en"),
            create(file=file, model="whisper-1", response_format="text"),
            create(file=file, model=tiny_engine.name, response_format="srt"),
            create(file=file, model="whisper-1", response_format="vtt"),
            create(file=file, model="whisper-1", response_format="verbose_json",
                   timestamp_granularities=["word", "segment"], temperature=0.0),
            client.audio.translations.create(file=file, model="whisper-1"))
    assert_jfk(as_json.text)
    assert as_json.usage.type == "duration" and as_json.usage.seconds == 11
    assert isinstance(as_text, str) and word_distance(as_text, as_json.text) <= 2
    cues = parse_srt(as_srt)
    assert len(cues) >= 2 and 0 <= cues[0].start < cues[-1].end <= 11.1
    assert word_distance(" ".join(c.text for c in cues), as_json.text) <= 2
    assert as_vtt.startswith("WEBVTT\n\n")
    vtt_times = [line for line in as_vtt.splitlines() if "-->" in line]
    vtt_text = " ".join(line for line in as_vtt.splitlines()[2:] if line and "-->" not in line)
    assert len(vtt_times) >= 2 and word_distance(vtt_text, as_json.text) <= 2
    assert verbose.language == "english" and abs(verbose.duration - 11.0) < 0.1
    assert verbose.segments and all(0 <= s.start < s.end <= 11.1 for s in verbose.segments)
    assert word_distance(" ".join(s.text for s in verbose.segments), verbose.text) == 0
    assert verbose.words and [w.start for w in verbose.words] == sorted(w.start for w in verbose.words)
    assert all(w.start <= w.end and not w.word.startswith(" ") for w in verbose.words)
    assert words(" ".join(w.word for w in verbose.words)) == words(verbose.text)
    assert_jfk(verbose.text)
    assert_jfk(translated.text)  # tiny.en writes English: its transcript is the translation


@pytest.mark.slow
async def test_stream_true_sends_deltas_as_words_commit_then_done(tiny_engine, jfk_bytes):
    async with running_server(e2e_settings(), tiny_engine) as server:
        stream = await client_for(server).audio.transcriptions.create(
            file=("jfk.wav", jfk_bytes), model="whisper-1", stream=True)
        events, arrived = [], []
        async for event in stream:
            events.append(event)
            arrived.append(time.perf_counter())
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2, deltas  # words come as they commit, not in one piece at the end
    assert "".join(deltas) == events[-1].text
    assert_jfk(events[-1].text)
    assert events[-1].usage.seconds == 11


async def test_refusals_are_openai_errors(tiny_engine, jfk_bytes, tmp_path):
    settings = e2e_settings(**{"server.token": "right-token", "compat.max_upload_mb": 0.3})
    async with running_server(settings, tiny_engine) as server:
        client = client_for(server, api_key="right-token")
        create = client.audio.transcriptions.create
        with pytest.raises(openai.BadRequestError) as empty:
            await create(file=("empty.wav", b""), model="whisper-1")
        with pytest.raises(openai.BadRequestError) as not_audio:
            await create(file=("notes.mp3", b"these are notes, not audio\n" * 40), model="whisper-1")
        with pytest.raises(openai.BadRequestError) as bad_format:
            await create(file=("jfk.wav", jfk_bytes[:20000]), model="whisper-1", response_format="docx")
        with pytest.raises(openai.APIStatusError) as too_big:  # 352 kB over a 300 kB limit, read and counted
            await create(file=("jfk.wav", jfk_bytes), model="whisper-1")
        with pytest.raises(openai.APIStatusError) as far_too_big:  # refused by its Content-Length alone
            await create(file=("big.wav", jfk_bytes * 3), model="whisper-1")
        with pytest.raises(openai.AuthenticationError) as wrong:
            await client_for(server, api_key="wrong-token").audio.transcriptions.create(
                file=("jfk.wav", jfk_bytes), model="whisper-1")
        with pytest.raises(openai.AuthenticationError):
            await client_for(server, api_key="wrong-token").models.list()
        assert next(m.id for m in (await client.models.list()).data) == tiny_engine.name
    for exc, status, param in ((empty, 400, "file"), (not_audio, 400, "file"), (bad_format, 400, "response_format"),
                               (too_big, 413, "file"), (far_too_big, 413, "file"), (wrong, 401, None)):
        assert exc.value.status_code == status
        body = exc.value.response.json()["error"]
        assert set(body) == {"message", "type", "param", "code"} and body["message"]
        assert body["type"] == "invalid_request_error" and body["param"] == param, body
    assert "empty" in empty.value.response.json()["error"]["message"]
    assert too_big.value.response.json()["error"]["code"] == "file_too_large"
    assert wrong.value.response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.slow
@pytest.mark.timeout(scaled(1200))  # about 2 min on an idle 2-core machine; 7 min with four other jobs on it
async def test_long_file_runs_at_full_speed_beside_a_live_stream(tiny_engine, shared_data, jfk):
    """229 s through one batch session: bounded lead over the decoder, the whole text, and a live v1
    stream started meanwhile is admitted and served with its usual words."""
    path = shared_data / "longform/ljspeech_LJ001-0001_to_0032.wav"
    reference = path.with_suffix(".txt").read_text()
    async with running_server(e2e_settings(), tiny_engine) as server:
        host = server.host
        leads: list[float] = []

        async def watch():
            while True:
                leads.extend(live.session.lag for live in host.live.values() if live.session.batch)
                await asyncio.sleep(0.2)

        watcher = asyncio.ensure_future(watch())
        started = time.perf_counter()
        with path.open("rb") as handle:
            job = asyncio.ensure_future(client_for(server).audio.transcriptions.create(
                file=("long.wav", handle.read()), model="whisper-1", response_format="verbose_json"))
        await asyncio.sleep(scaled(10))
        assert not job.done() and host.admission().admit  # the file does not close admission for live streams
        live = await run_stream(server.url, s16(jfk), {"language": "en"}, frame=3200, pace=0.1)
        result = await job
        elapsed = time.perf_counter() - started
        watcher.cancel()
    assert live.close_code == 1000 and live.events[-1]["type"] == "end"
    assert_jfk(live.text)
    assert abs(result.duration - 229.0) < 2
    error = wer(reference, result.text)
    assert error < 0.2, (error, result.text)
    assert result.segments[-1].end > 200
    # never more than a chunk and a block ahead of the decoder, plus one block fed while an update waits in the
    # first 0.2 s of a pause for the pause decode (nothing is due until more audio says which comes)
    assert leads and max(leads) < 3.5, max(leads)
    print(f"229 s file: {elapsed:.0f} s wall, WER {error:.3f}, max lead {max(leads):.2f} s")


# --------------------------------------------------------------------------- realtime
def pcm16(audio: np.ndarray, rate: int) -> bytes:
    if rate != 16000:
        audio = soxr.resample(audio, 16000, rate, quality="HQ")
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def append_all(connection, pcm: bytes, rate: int, pace: float = 0.0) -> None:
    step = rate * 2 // 5  # 200 ms per append
    for i in range(0, len(pcm), step):
        await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step]).decode())
        if pace:
            await asyncio.sleep(pace)


@pytest.mark.slow
async def test_realtime_ga_client_server_vad_24k(tiny_engine, jfk):
    pcm = pcm16(np.concatenate([jfk, np.zeros(16000 * 3, np.float32)]), 24000)  # trailing silence ends the turn
    async with running_server(e2e_settings(), tiny_engine) as server:
        client = client_for(server)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            created = await connection.recv()
            await connection.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
            updated = await connection.recv()
            sender = asyncio.ensure_future(append_all(connection, pcm, 24000, pace=0.05))
            events = []
            while True:
                # the last item may complete before the sender has sent the trailing silence: check
                # again when no event comes, instead of waiting for one that will not
                try:
                    event = await asyncio.wait_for(connection.recv(), 1.0)
                except asyncio.TimeoutError:
                    event = None
                if event is not None:
                    events.append(event)
                    if event.type == "error":
                        break
                done = [e for e in events if e.type.endswith("transcription.completed")]
                started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
                if sender.done() and started and len(done) >= len(started):
                    break
            await sender
    assert created.type == "session.created" and created.session.type == "transcription"
    assert updated.type == "session.updated" and updated.session.audio.input.format.rate == 24000
    kinds = [e.type for e in events]
    assert "error" not in kinds, [e for e in events if e.type == "error"]
    starts = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    stops = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert starts and len(starts) == len(stops) == len(committed) == len(completed)
    assert [e.item_id for e in starts] == [e.item_id for e in stops] == [e.item_id for e in completed]
    assert [e.previous_item_id for e in committed] == [None] + [e.item_id for e in committed[:-1]]
    assert 0 <= starts[0].audio_start_ms < 1500 and stops[-1].audio_end_ms <= 11500
    for item in completed:  # each item's deltas add up to its transcript
        deltas = [e.delta for e in events if e.type.endswith("transcription.delta") and e.item_id == item.item_id]
        assert "".join(deltas).strip() == item.transcript
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index(item.type)
    assert sum(1 for e in events if e.type.endswith("transcription.delta")) >= 2
    assert_jfk(" ".join(e.transcript for e in completed))


@pytest.mark.slow
async def test_realtime_beta_client_manual_commit_16k_and_bad_events(tiny_engine, jfk):
    async with running_server(e2e_settings(), tiny_engine) as server:
        client = client_for(server)
        async with client.beta.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as connection:
            created = await connection.recv()
            await connection.transcription_session.update(session={
                "input_audio_format": {"type": "audio/pcm", "rate": 16000},  # streamer's extension: 16 kHz as is
                "input_audio_transcription": {"model": "whisper-1", "language": "en", "prompt": "Americans"},
                "turn_detection": None})
            updated = await connection.recv()
            await connection.input_audio_buffer.commit()  # nothing appended yet
            empty = await connection.recv()
            await connection.input_audio_buffer.append(audio="not base64 at all!")
            bad_audio = await connection.recv()
            await connection.transcription_session.update(session={"input_audio_format": "g711_ulaw"})
            bad_format = await connection.recv()
            await append_all(connection, pcm16(jfk, 16000), 16000)
            await connection.input_audio_buffer.commit()
            events = []
            async for event in connection:
                events.append(event)
                if event.type.endswith("transcription.completed") or event.type == "error":
                    break
            # the connection is still usable: a second turn, then clear
            await append_all(connection, pcm16(jfk[:16000 * 3], 16000), 16000)
            await connection.input_audio_buffer.clear()
            cleared = await connection.recv()
    assert created.type == "transcription_session.created"
    assert updated.type == "transcription_session.updated" and updated.session.turn_detection is None
    for event, code in ((empty, "input_audio_buffer_commit_empty"), (bad_audio, "invalid_audio"),
                        (bad_format, "unsupported_format")):
        assert event.type == "error" and event.error.code == code and event.error.message, event
    kinds = [e.type for e in events]
    assert "error" not in kinds and "input_audio_buffer.speech_started" not in kinds  # turn detection off
    assert kinds[0] == "input_audio_buffer.committed" or "input_audio_buffer.committed" in kinds
    completed = events[-1]
    assert completed.type == "conversation.item.input_audio_transcription.completed"
    deltas = [e.delta for e in events if e.type.endswith("transcription.delta")]
    assert "".join(deltas).strip() == completed.transcript
    assert_jfk(completed.transcript)
    assert cleared.type == "input_audio_buffer.cleared"


async def test_realtime_refuses_other_intents_and_wrong_tokens(tiny_engine):
    import websockets

    async with running_server(e2e_settings(**{"server.token": "right-token"}), tiny_engine) as server:
        async with client_for(server, "right-token").realtime.connect(model="gpt-realtime") as connection:
            event = await connection.recv()
            assert event.type == "error" and event.error.code == "invalid_intent"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with client_for(server, "wrong-token").realtime.connect(extra_query={"intent": "transcription"}):
                pass
        assert refused.value.response.status_code == 401
