"""Protocol v1 client helpers for the daemon tests: real websockets and HTTP on 127.0.0.1, no daemon internals."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.config import Settings, load_settings

from support.timing import scaled


def settings(**overrides) -> Settings:
    """Fast protocol-test settings: no VAD, short update interval, no environment leaking in."""
    base = {"stream.use_vad": False, "stream.min_chunk": 0.5, "server.host": "127.0.0.1"}
    return load_settings(None, {**base, **overrides}, environ={})


@dataclass
class Result:
    events: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def committed(self) -> list[str]:
        return [w["word"] for e in self.of("transcript") for w in e["committed"]]

    @property
    def text(self) -> str:
        return "".join(self.committed).strip()

    @property
    def errors(self) -> list[str]:
        return [e["code"] for e in self.of("error")]


async def collect(ws, into: Result | None = None) -> Result:
    """Read until the server closes (into ``into``, so a test can watch events arrive)."""
    result = into if into is not None else Result()
    try:
        async for message in ws:
            result.events.append(json.loads(message))
    except ConnectionClosed:
        pass
    result.close_code = ws.close_code
    result.close_reason = ws.close_reason or ""
    return result


async def run_stream(url: str, audio: bytes, start: dict | None = None, *, frame: int = 3200,
                     pace: float = 0.0, headers: dict | None = None, path: str = "/v1/listen",
                     stop: bool = True, before: list | None = None) -> Result:
    """Stream ``audio`` (``pace`` seconds between frames, 0 = as fast as possible), stop, read all."""
    async with connect(url + path, additional_headers=headers or {}, max_size=None) as ws:
        reader = asyncio.ensure_future(collect(ws))
        try:
            for item in before or []:
                await ws.send(item)
            if start is not None:
                await ws.send(json.dumps({"type": "start", **start}))
            for i in range(0, len(audio), frame):
                await ws.send(audio[i:i + frame])
                if pace:
                    await asyncio.sleep(pace)
            if stop:
                await ws.send(json.dumps({"type": "stop"}))
        except ConnectionClosed:
            pass  # the server closed on us (a fatal error); the reader has the details
        return await asyncio.wait_for(reader, scaled(60))


async def http_get(url: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    """GET ``url`` off the event loop: (status, content type, body), errors included."""
    def fetch():
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=scaled(10)) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    return await asyncio.get_running_loop().run_in_executor(None, fetch)
