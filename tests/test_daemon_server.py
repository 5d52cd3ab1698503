"""The websocket daemon over a real socket on 127.0.0.1, with a scripted engine.

Protocol behaviour only: every bad input of issue 4, isolation between sessions, auth,
origins, HTTP routes, backpressure, idle timeout, slow readers, subscribers and shutdown.
The real model's end-to-end cases live in test_daemon_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import string
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support import pcm16, scaled, timeline, wait_until
from support.ws import Result, collect, http_get, run_stream, settings
from streamer.daemon.server import running_server
from streamer.engine.scripted import ScriptedEngine, timeline_script
from streamer.hypothesis import EngineError, Word

pytestmark = pytest.mark.timeout(scaled(60))

WORDS = timeline(20)  # a word every 0.6 s for 12 s


def scripted(words=WORDS, delay: float = 0.0) -> ScriptedEngine:
    script = timeline_script(words)
    if not delay:
        return ScriptedEngine(script)

    def slow(request):
        time.sleep(delay)
        return script(request)

    return ScriptedEngine(slow)


def expected(seconds: float) -> list[str]:
    return [w.word for w in WORDS if w.end <= seconds]


# ----------------------------------------------------------------------------- happy path
async def test_stream_stop_returns_every_word_then_end():
    async with running_server(settings(), scripted()) as server:
        result = await run_stream(server.url, pcm16(8.0), {"sample_rate": 16000})
    assert [e["type"] for e in result.events][0] == "ready"
    assert result.events[-1]["type"] == "end" and result.close_code == 1000
    assert result.committed == expected(8.0)
    assert result.events[-1]["text"] == "".join(expected(8.0)).strip()
    assert result.events[-1]["audio_seconds"] == pytest.approx(8.0, abs=0.01)
    assert all(e["tentative"] is not None and "language" in e for e in result.of("transcript"))


async def test_query_parameters_start_the_session_without_a_start_message():
    async with running_server(settings(), scripted()) as server:
        result = await run_stream(server.url, pcm16(3.0, rate=8000), None,
                                  path="/v1/listen?sample_rate=8000&encoding=pcm_s16le")
    assert result.events[0]["type"] == "ready" and result.events[0]["sample_rate"] == 8000
    assert result.committed == expected(3.0) and result.close_code == 1000


# ----------------------------------------------------------------------------- bad input
async def test_bad_text_frames_do_not_end_the_session():
    async with running_server(settings(), scripted()) as server:
        async with connect(server.url + "/v1/listen") as ws:
            reader = asyncio.ensure_future(collect(ws))
            await ws.send('{"type": "start"}')
            for bad in ("{not json", "[1]", '{"type": "rewind"}', '{"type": "start", "sample_rate": 8000}'):
                await ws.send(bad)
            audio = pcm16(2.0)
            await ws.send(audio[:1001])      # odd byte count: the half sample waits for the next frame
            await ws.send(audio[1001:])
            await ws.send('{"type": "stop"}')
            result = await reader
    assert result.errors == ["invalid_json", "invalid_json", "unknown_type", "already_started"]
    assert result.close_code == 1000 and result.committed == expected(2.0)
    assert result.events[-1]["audio_seconds"] == pytest.approx(2.0, abs=1e-3)


async def test_nan_and_inf_floats_are_reported_not_fatal():
    floats = np.zeros(32000, dtype="<f4")
    floats[::7] = np.nan
    floats[::11] = np.inf
    async with running_server(settings(), scripted()) as server:
        result = await run_stream(server.url, floats.tobytes()[:-2], {"encoding": "pcm_f32le"}, frame=4001)
    assert result.errors == ["invalid_audio"] and result.close_code == 1000
    assert result.committed == expected(1.99)


@pytest.mark.parametrize("start, code, close", [
    ({"sample_rate": 7000}, "invalid_start", 1003), ({"sample_rate": 96000}, "invalid_start", 1003),
    ({"encoding": "opus"}, "invalid_start", 1003), ({"channels": 6}, "invalid_start", 1003),
    ({"task": "summarise"}, "invalid_start", 1003),
])
async def test_invalid_start_closes_1003(start, code, close):
    async with running_server(settings(), scripted()) as server:
        result = await run_stream(server.url, b"", start, stop=False)
    assert result.errors == [code] and result.close_code == close


async def test_invalid_query_parameters_close_1003():
    async with running_server(settings(), scripted()) as server:
        result = await run_stream(server.url, b"", None, stop=False, path="/v1/listen?sample_rate=4000")
    assert result.errors == ["invalid_start"] and result.close_code == 1003


async def test_binary_before_start_closes_1008():
    async with running_server(settings(), scripted()) as server:
        result = await run_stream(server.url, pcm16(0.5), None, stop=False)
    assert result.errors == ["not_started"] and result.close_code == 1008


async def test_frame_over_limit_closes_1009_and_other_sessions_continue():
    cfg = settings(**{"server.max_frame_bytes": 64 * 1024})
    async with running_server(cfg, scripted(delay=0.01)) as server:
        good = asyncio.ensure_future(run_stream(server.url, pcm16(6.0), {}, pace=0.01))
        await wait_until(lambda: server.host.live, 10, what="the good session")
        big = await run_stream(server.url, b"\0" * (64 * 1024 + 2), {}, frame=64 * 1024 + 2, stop=False)
        huge = await run_stream(server.url, b"\0" * (1 << 20), {}, frame=1 << 20, stop=False)
        garbage = await run_stream(server.url, b"", None, stop=False, before=["nonsense", b"\1\2\3"])
        result = await good
    assert big.errors == ["frame_too_large"] and big.close_code == 1009
    assert huge.close_code == 1009  # far over the limit: refused by the websocket layer itself
    assert garbage.errors == ["invalid_json", "not_started"] and garbage.close_code == 1008
    assert result.committed == expected(6.0) and result.close_code == 1000


async def test_max_sessions_refuses_with_1013():
    async with running_server(settings(**{"server.max_sessions": 2}), scripted()) as server:
        async with connect(server.url + "/v1/listen") as a, connect(server.url + "/v1/listen") as b:
            await a.send('{"type": "start"}')
            await b.send('{"type": "start"}')
            await a.recv(), await b.recv()
            extra = await run_stream(server.url, b"", {}, stop=False)
    assert extra.errors == ["server_busy"] and extra.close_code == 1013


async def test_a_connection_reset_mid_stream_ends_only_that_session(caplog):
    """A client whose TCP connection dies right after a ping (aiohttp answers pings inside receive, on a
    now-closing transport): its session is finished quietly and the next client is served."""
    async with running_server(settings(), scripted()) as server:
        async with connect(server.url + "/v1/listen") as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(pcm16(2.0))
            await ws.ping()
            ws.transport.abort()
        await wait_until(lambda: not server.host.live, scaled(10), what="the reset session to end")
        result = await run_stream(server.url, pcm16(4.0), {})
    assert result.close_code == 1000 and result.committed == expected(4.0)
    assert "Error handling request" not in caplog.text


async def test_idle_client_is_finished_and_closed():
    async with running_server(settings(**{"server.idle_timeout": 0.5}), scripted()) as server:
        async with connect(server.url + "/v1/listen") as ws:
            await ws.send('{"type": "start"}')
            await ws.send(pcm16(2.0))
            result = await asyncio.wait_for(collect(ws), scaled(10))
    assert result.errors == ["idle_timeout"] and result.close_code == 1008
    assert result.events[-1]["type"] == "end" and result.committed == expected(2.0)


async def test_backpressure_bounds_pending_audio_and_keeps_every_word():
    """A client sending 12 s as fast as it can, to a slow engine: reading pauses, nothing is lost."""
    cfg = settings(**{"server.max_pending_audio": 2.0})
    async with running_server(cfg, scripted(delay=0.05)) as server:
        worst = 0.0

        async def watch():
            nonlocal worst
            while True:
                worst = max([worst] + [live.session.lag for live in server.host.live.values()])
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        result = await run_stream(server.url, pcm16(12.0), {}, frame=1600)
        watcher.cancel()
    assert result.committed == expected(12.0) and result.close_code == 1000
    assert 1.0 < worst <= 2.0 + 0.1 + 0.5  # bound + one frame + one update interval of slack


async def test_client_that_never_reads_is_dropped():
    rng = random.Random(4)  # incompressible, so the hallucination guards let the words through
    huge = [Word(" " + "".join(rng.choices(string.ascii_letters, k=20000)), w.start, w.end) for w in WORDS]
    cfg = settings(**{"server.send_queue": 4})
    async with running_server(cfg, scripted(huge)) as server:
        for listening in server.sockets:  # accepted sockets inherit a small send buffer
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        audio = pcm16(12.0)
        async with connect(server.url + "/v1/listen", sock=sock, max_queue=1, max_size=None,
                           close_timeout=0.5) as ws:
            await ws.send('{"type": "start"}')
            try:
                for i in range(0, len(audio), 3200):
                    await ws.send(audio[i:i + 3200])
                    await asyncio.sleep(0.01)  # 10x real time: one update (a huge event) per 0.5 s of audio
            except Exception:
                pass  # the server may drop us mid-send
            await wait_until(lambda: not server.host.live, 10, what="the non-reading client to be dropped")
        ok = await run_stream(server.url, pcm16(2.0), {})
        _, _, metrics = await http_get(server.http_url + "/metrics")
    assert [w[:9] for w in ok.committed] == [w.word[:9] for w in huge if w.end <= 2.0]
    assert b'streamer_errors_total{code="slow_reader"} 1.0' in metrics


# ----------------------------------------------------------------------------- auth, origin, HTTP
async def test_token_is_required_at_the_handshake():
    async with running_server(settings(**{"server.token": "s3cret"}), scripted()) as server:
        for headers, path in (({}, "/v1/listen"), ({"Authorization": "Bearer wrong"}, "/v1/listen"),
                              ({}, "/v1/captions?source=mic"), ({}, "/v1/listen?token=s3cre")):
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.url + path, additional_headers=headers):
                    pass
            assert info.value.response.status_code == 401
        by_header = await run_stream(server.url, pcm16(1.0), {}, headers={"Authorization": "Bearer s3cret"})
        by_query = await run_stream(server.url, pcm16(1.0), {}, path="/v1/listen?token=s3cret")
        status, _, _ = await http_get(server.http_url + "/metrics")
        status_ok, _, _ = await http_get(server.http_url + "/metrics", {"Authorization": "Bearer s3cret"})
    assert by_header.close_code == 1000 and by_query.close_code == 1000
    assert (status, status_ok) == (401, 200)


async def test_origin_allow_list():
    cfg = settings(**{"server.allowed_origins": ["https://captions.example"]})
    async with running_server(cfg, scripted()) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url + "/v1/listen", origin="https://evil.example"):
                pass
        assert info.value.response.status_code == 403
        allowed = await run_stream(server.url, pcm16(0.6), {}, headers={"Origin": "https://captions.example"})
        same_host = await run_stream(server.url, pcm16(0.6), {},
                                     headers={"Origin": f"http://127.0.0.1:{server.port}"})
        no_origin = await run_stream(server.url, pcm16(0.6), {})
    assert allowed.close_code == same_host.close_code == no_origin.close_code == 1000


async def test_healthz_metrics_and_static_files():
    async with running_server(settings(), None) as loading:
        assert (await http_get(loading.http_url + "/healthz"))[0] == 503
        refused = await run_stream(loading.url, b"", {}, stop=False)
        assert refused.errors == ["not_ready"] and refused.close_code == 1013
    async with running_server(settings(), scripted()) as server:
        status, _, body = await http_get(server.http_url + "/healthz")
        assert (status, body.strip()) == (200, b"ok")
        await run_stream(server.url, pcm16(3.0), {})
        await run_stream(server.url, b"", None, before=["{"])
        status, ctype, body = await http_get(server.http_url + "/metrics")
        text = body.decode()
        assert status == 200 and ctype.startswith("text/plain")
        for name in ("streamer_sessions ", "streamer_audio_seconds_total 3.0", "streamer_decode_seconds_bucket",
                     "streamer_decode_batch_size", "streamer_queue_depth", "streamer_max_lag_seconds",
                     'streamer_errors_total{code="invalid_json"} 1.0', "streamer_loop_stall_max_seconds"):
            assert name in text, name
        status, ctype, body = await http_get(server.http_url + "/")
        assert status == 200 and ctype.startswith("text/html") and b"<html" in body.lower()
        status_js, ctype_js, js = await http_get(server.http_url + "/app.js")
        assert status_js == 200 and ctype_js.startswith("text/javascript") and b"WebSocket" in js
        for path in ("/nope.html", "/../pyproject.toml", "/%2e%2e/pyproject.toml"):
            assert (await http_get(server.http_url + path))[0] == 404, path


# ----------------------------------------------------------------------------- subscribers, shutdown
async def test_caption_subscribers_see_the_same_events():
    async with running_server(settings(), scripted(delay=0.01)) as server:
        async with connect(server.url + "/v1/captions?source=meeting") as by_source:
            assert json.loads(await by_source.recv())["type"] == "ready"
            source_events = asyncio.ensure_future(collect(by_source))
            async with connect(server.url + "/v1/listen?source=meeting") as ws:
                await ws.send('{"type": "start"}')
                ready = json.loads(await ws.recv())
                async with connect(server.url + f"/v1/captions?session={ready['session']}") as by_id:
                    sub_ready = json.loads(await by_id.recv())
                    assert sub_ready["session"] == ready["session"]
                    id_events = asyncio.ensure_future(collect(by_id))
                    audio = pcm16(4.0)
                    for i in range(0, len(audio), 3200):
                        await ws.send(audio[i:i + 3200])
                        await asyncio.sleep(0.005)
                    await ws.send('{"type": "stop"}')
                    own = await collect(ws)
                    followed = await asyncio.wait_for(id_events, scaled(10))
        unknown = await run_stream(server.url, b"", None, stop=False, path="/v1/captions?session=nope")
        missing = await run_stream(server.url, b"", None, stop=False, path="/v1/captions")
    source = await source_events
    assert own.committed == expected(4.0)
    assert followed.committed == own.committed and followed.events[-1]["type"] == "end"
    assert followed.close_code == 1000
    assert source.committed == own.committed
    assert unknown.errors == ["unknown_session"] and unknown.close_code == 1008
    assert missing.errors == ["invalid_subscription"]


async def test_shutdown_flushes_live_sessions():
    async with running_server(settings(), scripted(delay=0.02)) as server:
        async with connect(server.url + "/v1/listen") as ws:
            reader = asyncio.ensure_future(collect(ws))
            await ws.send('{"type": "start"}')
            await ws.send(pcm16(5.0))
            await wait_until(lambda: any(live.session.audio_seconds >= 5.0 for live in server.host.live.values()),
                             10, what="all audio received")
            await server.shutdown()
            result = await reader
    assert result.events[-1]["type"] == "end" and result.close_code == 1001
    assert result.committed == expected(5.0)


async def test_tls_serves_wss(tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not found: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    cfg = settings(**{"server.certfile": str(cert), "server.keyfile": str(key)})
    client_ssl = ssl.create_default_context(cafile=str(cert))
    async with running_server(cfg, scripted()) as server:
        assert server.url.startswith("wss://")
        async with connect(server.url + "/v1/listen", ssl=client_ssl) as ws:
            await ws.send('{"type": "start"}')
            await ws.send(pcm16(1.5))
            await ws.send('{"type": "stop"}')
            result = await collect(ws)
    assert result.committed == expected(1.5) and result.close_code == 1000


def test_serve_flags_become_settings():
    from streamer.cli import build_parser
    from streamer.daemon.app import captures_from_args, settings_from_args

    args = build_parser().parse_args(["serve", "--config", "cpu", "--model", "tiny.en", "--port", "0", "--token", "t",
                                      "--mic", "2", "--source", "monitor", "--set", "stream.min_chunk=0.5",
                                      "--set", "server.max_sessions=3"])
    cfg = settings_from_args(args)
    assert (cfg.engine.model, cfg.server.port, cfg.server.token) == ("tiny.en", 0, "t")
    assert (cfg.mic.device, cfg.mic.source, cfg.stream.min_chunk, cfg.server.max_sessions) == ("2", "monitor", 0.5, 3)
    assert [(c.source, c.device) for c in captures_from_args(args, cfg)] == [("monitor", "2")]
    both = build_parser().parse_args(["serve", "--mic", "--monitor", "sink.monitor"])
    assert [(c.source, c.device) for c in captures_from_args(both, settings_from_args(both))] == [
        ("mic", None), ("monitor", "sink.monitor")]
    none = build_parser().parse_args(["serve"])
    assert captures_from_args(none, settings_from_args(none)) == []


def test_bench_subcommands_import_lazily(capsys):
    from streamer.cli import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "load", "--help"])
    assert info.value.code == 0 and "--clients" in capsys.readouterr().out


class BatchCostEngine:
    """A scripted engine whose batched call costs a fixed time whatever its size (like a GPU)."""

    name = "batch-cost"
    beam_search = True

    def __init__(self, words, cost: float) -> None:
        self.inner, self.cost, self.sizes = scripted(words), cost, []

    def decode(self, request):
        return self.decode_batch([request])[0]

    def decode_batch(self, requests):
        time.sleep(self.cost)
        self.sizes.append(len(requests))
        return [self.inner.decode(r) for r in requests]


async def test_overload_degrades_every_stream_evenly():
    """Six streams at 4x real time, an engine that cannot keep up at batch size 2: all slow down alike."""
    engine = BatchCostEngine(WORDS, cost=0.12)
    cfg = settings(**{"server.max_batch": 2, "stream.min_chunk": 0.3})
    async with running_server(cfg, engine) as server:
        lags: dict[str, float] = {}

        async def watch():
            while True:
                for sid, live in server.host.live.items():
                    lags[sid] = max(lags.get(sid, 0.0), live.session.lag)
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch())
        results = await asyncio.gather(*(run_stream(server.url, pcm16(8.0), {}, frame=3200, pace=0.025)
                                         for _ in range(6)))
        watcher.cancel()
    updates = [len(r.of("transcript")) for r in results]
    assert all(r.committed == expected(8.0) for r in results)
    assert max(engine.sizes) == 2
    assert max(updates) - min(updates) <= 2, updates          # fair: same number of updates each
    assert max(lags.values()) - min(lags.values()) < 1.0, lags  # and the same lag, not one starving


async def test_a_window_the_engine_rejects_fails_only_its_own_session():
    script = timeline_script(WORDS)

    def picky(request):
        if "Zyzzogeton" in request.vocabulary:
            raise EngineError("this window cannot be decoded")
        return script(request)

    async with running_server(settings(**{"server.max_batch": 4}), ScriptedEngine(picky)) as server:
        good, bad = await asyncio.gather(run_stream(server.url, pcm16(4.0), {}, pace=0.005),
                                         run_stream(server.url, pcm16(4.0), {"prompt": "Zyzzogeton"}, pace=0.005))
        healthy = (await http_get(server.http_url + "/healthz"))[0]
    assert good.committed == expected(4.0) and good.close_code == 1000
    assert bad.errors == ["internal_error"] and bad.close_code == 1011, bad.events
    assert "cannot be decoded" in bad.of("error")[0]["message"]
    assert healthy == 200


async def test_a_language_or_prompt_the_model_cannot_take_is_refused_at_start():
    engine = ScriptedEngine(timeline_script(WORDS))
    async with running_server(settings(), engine) as server:
        unknown = await run_stream(server.url, b"", {"language": "xx"}, stop=False)
        long = await run_stream(server.url, b"", {"prompt": "word " * 300}, stop=False)
        ok = await run_stream(server.url, pcm16(1.0), {"language": "de", "prompt": "Zyzzogeton, Kaltenbrunner"})
        ok_call = engine.calls[-1]
        unknown_among = await run_stream(server.url, b"", {"language": "en,xx"}, stop=False)
        among = await run_stream(server.url, pcm16(1.0), {"language": "en,de"})
    assert unknown.errors == ["invalid_start"] and unknown.close_code == 1003
    assert "'xx'" in unknown.of("error")[0]["message"] and "de, " in unknown.of("error")[0]["message"]
    assert unknown_among.errors == ["invalid_start"] and "'xx'" in unknown_among.of("error")[0]["message"]
    assert among.close_code == 1000 and engine.calls[-1].languages == ("en", "de")
    assert long.errors == ["invalid_start"] and "limit" in long.of("error")[0]["message"]
    assert ok.close_code == 1000 and ok_call.vocabulary == "Zyzzogeton, Kaltenbrunner"


async def test_late_subscriber_gets_a_snapshot_then_every_later_word_once():
    async with running_server(settings(), scripted(delay=0.01)) as server:
        async with connect(server.url + "/v1/listen?source=talk") as ws:
            await ws.send('{"type": "start"}')
            ready = json.loads(await ws.recv())
            own = asyncio.ensure_future(collect(ws))
            audio = pcm16(8.0)
            half = len(audio) // 2
            for i in range(0, half, 3200):
                await ws.send(audio[i:i + 3200])
                await asyncio.sleep(0.003)
            live = server.host.live[ready["session"]]
            await wait_until(lambda: live.session.processor.committed_words, 10, what="a committed word")
            async with connect(server.url + "/v1/captions?source=talk") as late:
                assert json.loads(await late.recv())["session"] == ready["session"]
                seen = Result()
                followed = asyncio.ensure_future(collect(late, seen))
                for i in range(half, len(audio), 3200):
                    await ws.send(audio[i:i + 3200])
                    await asyncio.sleep(0.003)
                await ws.send('{"type": "stop"}')
                mine = await own
                await wait_until(lambda: seen.of("end"), 10, what="the subscriber to get end")
            theirs = await followed
    snapshot = theirs.events[0]
    assert snapshot.get("snapshot") is True and snapshot["seq"] == 0 and snapshot["committed"]
    assert mine.committed == expected(8.0)
    assert mine.committed[-len(theirs.committed):] == theirs.committed  # a suffix: nothing twice, nothing lost
