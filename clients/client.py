"""Shared client library: where the daemon is, how to reach it, and what it said.

Every client (terminal captions, dictation, overlay) speaks only protocol v1 (docs/protocol.md).
This module holds what they share so each stays a thin program:

* ``Endpoint`` resolution: flags > ``STREAMER_URL``/``STREAMER_TOKEN`` > config file > default;
* ``Backoff`` and ``subscribe``: a reconnect loop that reports connection state, because a daemon
  restart must not kill a caption bar (streaming audio, with resume, is ``streamer_clients.live``);
* ``Transcript``: folds transcript events into committed words plus the current tentative tail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from streamer.protocol import CAPTIONS_PATH, FATAL_CLOSE_CODES

log = logging.getLogger("streamer.client")

DEFAULT_URL = "ws://127.0.0.1:8765"
CONFIG_ENV = "STREAMER_CLIENT_CONFIG"


def default_config_path() -> Path:
    """The per-user client config, so a token need not sit in shell history."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "streamer" / "client.toml"


@dataclass(frozen=True)
class Endpoint:
    """The daemon's base URL (ws:// or wss://, no path) and its optional bearer token."""

    url: str = DEFAULT_URL
    token: str | None = None

    def ws_url(self, path: str, **query: Any) -> str:
        """Full websocket URL for ``path`` with ``query`` (None values dropped)."""
        base = self.url.rstrip("/")
        if base.startswith("http"):
            base = "ws" + base[4:]
        params = {k: _query_value(v) for k, v in query.items() if v is not None}
        return base + path + ("?" + urllib.parse.urlencode(params) if params else "")

    def headers(self) -> dict[str, str]:
        """The handshake headers: the bearer token, when there is one."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    """The flags every client takes to find the daemon."""
    group = parser.add_argument_group("daemon connection")
    group.add_argument("--url", help=f"daemon URL (env STREAMER_URL; default {DEFAULT_URL})")
    group.add_argument("--token", help="bearer token (env STREAMER_TOKEN)")
    group.add_argument("--client-config", metavar="FILE", type=Path,
                       help=f"TOML with url/token (env {CONFIG_ENV}; default {default_config_path()})")


def resolve_endpoint(args: argparse.Namespace | None = None,
                     environ: dict[str, str] | None = None) -> Endpoint:
    """Flags win over environment, environment over the config file, the file over defaults."""
    env = os.environ if environ is None else environ
    cfg_path = getattr(args, "client_config", None) or env.get(CONFIG_ENV) or default_config_path()
    file_cfg = load_client_config(Path(cfg_path))
    url = (getattr(args, "url", None) or env.get("STREAMER_URL") or file_cfg.get("url") or DEFAULT_URL)
    token = getattr(args, "token", None) or env.get("STREAMER_TOKEN") or file_cfg.get("token")
    return Endpoint(url=str(url), token=str(token) if token else None)


def load_client_config(path: Path) -> dict[str, Any]:
    """Read ``url``/``token`` from a TOML file; a missing file is an empty config, a broken one an error."""
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return data.get("client", data)


class State(str, Enum):
    """Connection states shown to the user."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


StateCallback = Callable[[State, str], None]


class Backoff:
    """Exponential backoff with jitter, reset after a connection that lived long enough."""

    def __init__(self, first: float = 0.5, maximum: float = 10.0, factor: float = 2.0) -> None:
        self.first, self.maximum, self.factor = first, maximum, factor
        self.attempt = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next try; grows so a dead daemon is not hammered."""
        delay = min(self.maximum, self.first * self.factor ** self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Word:
    """One word on the stream's audio timeline (seconds), as protocol v1 sends it."""

    word: str
    start: float
    end: float
    probability: float = 1.0

    @classmethod
    def from_json(cls, data: dict[str, Any], offset: float = 0.0) -> "Word":
        return cls(str(data.get("word", "")), float(data.get("start", 0.0)) + offset,
                   float(data.get("end", 0.0)) + offset, float(data.get("probability", 1.0)))


@dataclass
class Transcript:
    """Committed words (append-only) and the current tentative tail (replaced on every event)."""

    committed: list[Word] = field(default_factory=list)
    tentative: list[Word] = field(default_factory=list)
    language: str | None = None
    offset: float = 0.0  # added to word times: a reconnected session restarts its audio clock at 0

    def apply(self, event: dict[str, Any]) -> list[Word]:
        """Fold one transcript event in; return the newly committed words."""
        new = [Word.from_json(w, self.offset) for w in event.get("committed") or []]
        self.committed.extend(new)
        self.tentative = [Word.from_json(w, self.offset) for w in event.get("tentative") or []]
        self.language = event.get("language") or self.language
        return new

    def finish_segment(self) -> None:
        """A session ended: anything still tentative will never be committed, so drop it."""
        self.tentative = []

    @property
    def committed_text(self) -> str:
        return "".join(w.word for w in self.committed).strip()

    @property
    def tentative_text(self) -> str:
        return "".join(w.word for w in self.tentative)


async def open_ws(endpoint: Endpoint, path: str, **query: Any) -> ClientConnection:
    """Open one websocket to the daemon, bearer token in the handshake."""
    return await connect(endpoint.ws_url(path, **query), additional_headers=endpoint.headers(),
                         max_size=None, open_timeout=10, ping_interval=20, ping_timeout=20)


def is_fatal(exc: BaseException) -> bool:
    """Errors that retrying cannot fix: a wrong token, a refused request, bad input (1013 is retried)."""
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return exc.response.status_code in (400, 401, 403, 404)
    if isinstance(exc, websockets.exceptions.ConnectionClosed) and exc.rcvd is not None:
        return exc.rcvd.code in FATAL_CLOSE_CODES
    return isinstance(exc, DaemonError) and exc.code not in RETRY_CODES


async def subscribe(endpoint: Endpoint, on_event: Callable[[dict[str, Any]], None],
                    on_state: StateCallback | None = None, *, source: str | None = None,
                    session: str | None = None, stop: asyncio.Event | None = None,
                    backoff: Backoff | None = None) -> None:
    """Follow ``/v1/captions`` for a source or session until ``stop`` is set, reconnecting forever.

    Listen-only streams come and go with the daemon, so a caption bar keeps trying with backoff and
    tells the user what it is doing instead of exiting.
    """
    stop = stop or asyncio.Event()
    backoff = backoff or Backoff()
    notify = on_state or (lambda s, d: None)
    ended, followed, lost = False, False, 0

    def watch(event: dict[str, Any]) -> None:
        nonlocal ended
        ended = ended or event.get("type") == "end"
        on_event(event)

    while not stop.is_set():
        notify(State.CONNECTING if backoff.attempt == 0 else State.RECONNECTING, endpoint.url)
        try:
            async with await open_ws(endpoint, CAPTIONS_PATH, source=source, session=session) as ws:
                notify(State.CONNECTED, endpoint.url)
                backoff.reset()  # the next loss starts again from the shortest delay
                followed, lost = True, 0
                await _pump_events(ws, watch, stop)
        except websockets.exceptions.ConnectionClosedOK:
            if session and ended:  # a session subscription closes normally after that session's end
                notify(State.CLOSED, "session ended")
                return
            # closed without the session's end (a replica shutting down): the stream goes on elsewhere
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
            lost += 1
            # a followed session that moved replicas may not be live anywhere for a moment (it is
            # resuming), so its "unknown session" is retried a few times before it counts
            if is_fatal(exc) and not (session and followed and lost <= 8):
                notify(State.CLOSED, str(exc))
                raise
            log.info("captions connection lost: %s", exc)
        if stop.is_set():
            break
        delay = backoff.next_delay()
        notify(State.RECONNECTING, f"retry in {delay:.1f}s")
        await _sleep_or_stop(delay, stop)
    notify(State.CLOSED, "")


async def _pump_events(ws: ClientConnection, on_event: Callable[[dict[str, Any]], None],
                       stop: asyncio.Event) -> None:
    """Deliver text events until the socket closes or ``stop`` is set."""
    stopper = asyncio.create_task(stop.wait())
    try:
        while True:
            recv = asyncio.create_task(ws.recv())
            done, _ = await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                await ws.close()
                return
            message = recv.result()
            if isinstance(message, str):
                on_event(json.loads(message))
    finally:
        stopper.cancel()


async def _sleep_or_stop(delay: float, stop: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except asyncio.TimeoutError:
        pass


RETRY_CODES = ("server_busy", "not_ready")  # refusals that another try (or replica) can fix


class DaemonError(RuntimeError):
    """The daemon sent an ``error`` event (bad input, refused session); ``code`` is its code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def finish_on_interrupt(finish: Callable[[], None], what: str = "finishing") -> None:
    """First Ctrl+C ends the audio gracefully (``stop``, last words, outputs written); a second quits.

    A microphone session has no natural end, so Ctrl+C is how it ends, and the words spoken just
    before must not be lost.
    """
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl+C raises KeyboardInterrupt
        print(f"\n[{what}; Ctrl+C again to quit now]", file=sys.stderr, flush=True)
        finish()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # Windows loops, or not the main thread
        pass
