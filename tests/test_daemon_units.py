"""The daemon's small pieces on their own: the outbox over a real websocket, and the access rules."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from streamer.daemon.http import bearer_token, origin_ok, token_ok
from streamer.daemon.metrics import Metrics
from streamer.daemon.outbox import Outbox, put_all
from streamer.protocol import Close, CloseCode
from support import scaled
from support.ws import collect

pytestmark = pytest.mark.timeout(scaled(30))
METRICS = web.AppKey("metrics", Metrics)


async def outbox_server(script) -> tuple[web.AppRunner, str]:
    """A one-route aiohttp server whose handler runs ``script(outbox)`` and then finishes it."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        outbox = Outbox(ws, request.transport, limit=4, metrics=request.app[METRICS])
        await script(outbox)
        await outbox.finish(timeout=2.0)
        return ws

    app = web.Application()
    app[METRICS] = Metrics()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"ws://127.0.0.1:{port}/"


async def test_outbox_sends_in_order_then_closes_with_the_first_close():
    async def script(outbox: Outbox) -> None:
        put_all(outbox, [{"n": 1}, {"n": 2}, Close(CloseCode.POLICY, "first"), {"n": 3}])
        outbox.close(Close(CloseCode.NORMAL, "second"))

    runner, url = await outbox_server(script)
    try:
        async with connect(url) as ws:
            result = await collect(ws)
    finally:
        await runner.cleanup()
    assert result.events == [{"n": 1}, {"n": 2}]  # nothing after a close is sent
    assert (result.close_code, result.close_reason) == (1008, "first")


async def test_outbox_override_replaces_the_next_close():
    async def script(outbox: Outbox) -> None:
        outbox.put({"n": 1})
        outbox.override = Close(CloseCode.GOING_AWAY, "server shutting down")

    runner, url = await outbox_server(script)
    try:
        async with connect(url) as ws:
            result = await collect(ws)
    finally:
        await runner.cleanup()
    assert result.events == [{"n": 1}] and result.close_code == 1001


async def test_outbox_drops_a_client_that_does_not_read():
    """More queued messages than the limit while the peer reads nothing: the connection is cut."""
    queued = asyncio.Event()

    async def script(outbox: Outbox) -> None:
        big = "x" * 200_000  # fills the socket buffers, so later messages wait in the queue
        for n in range(50):
            outbox.put({"n": n, "pad": big})
            if outbox.closing is not None:
                break
        queued.set()

    runner, url = await outbox_server(script)
    try:
        async with connect(url, max_size=None, max_queue=1) as ws:
            await asyncio.wait_for(queued.wait(), scaled(10))
            received = []
            try:
                async for message in ws:
                    received.append(json.loads(message)["n"])
            except Exception:
                pass
        metrics = runner.app[METRICS].render().decode()
    finally:
        await runner.cleanup()
    assert len(received) < 50
    assert 'streamer_errors_total{code="slow_reader"} 1.0' in metrics


@pytest.mark.parametrize("allowed, headers, ok", [
    ([], {"Origin": "https://evil.example"}, True),                       # no allow-list: anyone
    (["https://app.example"], {}, True),                                    # non-browser clients send none
    (["https://app.example"], {"Origin": "https://app.example/"}, True),   # trailing slash tolerated
    (["https://app.example"], {"Origin": "https://evil.example"}, False),
    (["https://app.example"], {"Origin": "http://127.0.0.1:8765", "Host": "127.0.0.1:8765"}, True),  # own page
    (["https://app.example"], {"Origin": "http://127.0.0.1:9999", "Host": "127.0.0.1:8765"}, False),
    (["*"], {"Origin": "https://anything.example"}, True),
])
def test_origin_rules(allowed, headers, ok):
    assert origin_ok(allowed, headers) is ok


def test_token_from_header_or_query_compared_in_full():
    assert bearer_token({"Authorization": "Bearer abc"}, {}) == "abc"
    assert bearer_token({"Authorization": "bearer  abc "}, {"token": "q"}) == "abc"
    assert bearer_token({}, {"token": "q"}) == "q"
    assert bearer_token({"Authorization": "Basic abc"}, {}) is None
    assert token_ok(None, None) and token_ok("", "anything")
    assert token_ok("s3cret", "s3cret")
    assert not token_ok("s3cret", "s3cre") and not token_ok("s3cret", "s3cret!") and not token_ok("s3cret", None)
