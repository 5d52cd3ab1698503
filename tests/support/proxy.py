"""A small TCP proxy for network-failure tests: forward to a chosen backend, or cut every connection.

Real sockets on 127.0.0.1: the client under test sees a genuine reset (and refused reconnects
while the "network" is down), exactly what a Wi-Fi drop or a NAT timeout does to a websocket.
"""

from __future__ import annotations

import asyncio
import contextlib


class BlipProxy:
    """Listens on 127.0.0.1; forwards each new connection to ``backends[current]``."""

    def __init__(self, *backends: tuple[str, int]) -> None:
        self.backends = list(backends)
        self.current = 0
        self.down = False        # while True, connections are dropped at once
        self.connections = 0     # connections forwarded (not counting dropped ones)
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> "BlipProxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every forwarded connection now (both directions)."""
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def blip(self, seconds: float) -> None:
        """Drop what is open and refuse connections for ``seconds``, then forward again."""
        self.down = True
        self.cut()
        await asyncio.sleep(seconds)
        self.down = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        host, port = self.backends[self.current]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)), asyncio.ensure_future(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.transport.abort()
            self._writers.discard(w)
        for p in pumps:
            p.cancel()
            self._tasks.discard(p)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
