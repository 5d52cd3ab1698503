"""Bad resume claims over real websockets while another stream is live: each is refused with its own
clear error and continues as a fresh session, and the live stream they name is not disturbed
(a claim that fails must never take over, or cut, the stream it points at)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from streamer.audio import load_audio
from streamer.daemon.server import running_server
from support import s16, scaled, wait_until, words
from support.ws import Result, collect, run_stream, settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def jfk(shared_data) -> np.ndarray:
    return load_audio(shared_data / "jfk/jfk.wav")


async def test_bad_resume_claims_get_clear_errors_and_leave_the_live_stream_alone(tiny_engine, jfk):
    audio = s16(jfk)
    cfg = settings(**{"engine.model": "tiny.en", "stream.language": "en", "server.max_resume_audio": 20.0,
                      "server.admission": "fixed"})  # a loaded CI machine must not refuse the claims as busy
    async with running_server(cfg, tiny_engine) as server:
        async with connect(server.url + "/v1/listen") as ws:
            await ws.send(json.dumps({"type": "start", "language": "en"}))
            live = Result()
            reader = asyncio.ensure_future(collect(ws, live))
            half = len(audio) // 2 // 2 * 2
            for i in range(0, half, 6400):
                await ws.send(audio[i:i + 6400])
                await asyncio.sleep(0.05)
            await wait_until(lambda: live.of("transcript"), 60, what="the live stream's first update")
            latest = [e for e in live.events if e.get("resume")][-1]
            sid, token = live.events[0]["session"], latest["resume"]
            good = {"session": sid, "token": token, "seq": latest.get("seq", 0),
                    "committed_until": latest.get("committed_until", 0.0), "retained_seconds": 1.0}
            claims = {
                "unknown session": ({**good, "session": "nosuchsession"}, "resume_invalid"),
                "wrong token": ({**good, "token": token[:-4] + "AAAA"}, "resume_invalid"),
                "committed-until in the future": ({**good, "committed_until": 999.0}, "resume_mismatch"),
                "retained audio over the bound": ({**good, "retained_seconds": 25.0}, "resume_too_long"),
            }
            results = await asyncio.gather(*(run_stream(server.url, audio[:32000], {"language": "en", "resume": c})
                                             for c, _ in claims.values()))
            for i in range(half, len(audio), 6400):                     # the live stream goes on
                await ws.send(audio[i:i + 6400])
                await asyncio.sleep(0.02)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(reader, scaled(150))
    for (what, (_, code)), result in zip(claims.items(), results):
        assert result.errors == [code], (what, result.events)
        message = result.of("error")[0]["message"]
        assert "new session" in message, message                         # says what happens next
        ready = result.of("ready")[0]
        assert ready["session"] != sid and not ready.get("resumed"), what
        assert result.of("end") and result.close_code == 1000, what
    assert live.close_code == 1000 and live.of("end")[0]["session"] == sid
    assert {"americans", "country"} <= set(words(live.text)), live.text
    assert words(live.text).count("country") == 2, live.text
