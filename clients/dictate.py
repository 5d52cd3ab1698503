"""``streamer dictate``: speak, and the committed words are typed into the focused window.

Only committed words are typed (never the tentative tail), so nothing ever has to be erased.
Each stretch of open microphone (push-to-talk held, or always-on between pauses) is one daemon
session: closing the gate sends ``stop``, so the last words of an utterance are typed as soon as
the key is released rather than waiting for more speech.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator

from streamer_clients import client
from streamer_clients.capture import CaptureError, MicCapture, WavCapture, ThreadCapture
from streamer.protocol import StartParams
from streamer_clients.client import Endpoint, State, Transcript, Word
from streamer_clients.live import LiveSession
from streamer_clients.punctuation import SpokenPunctuation
from streamer_clients.typer import BACKENDS, Typer, TyperError

log = logging.getLogger("streamer.dictate")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dictate", help="type what you say into the focused window",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--mic", metavar="DEVICE", help="PortAudio input device (default: the system default)")
    src.add_argument("--file", metavar="WAV", help="play a WAV file through the capture path instead of a mic")
    p.add_argument("--speed", type=float, default=1.0, help="--file playback speed (0 = as fast as possible)")
    p.add_argument("--push-to-talk", metavar="KEY", help="listen only while KEY is held (X keysym, e.g. F9)")
    p.add_argument("--pause-key", metavar="KEY", default="Pause",
                   help="KEY toggles pause/resume (default Pause; 'none' to disable)")
    p.add_argument("--start-paused", action="store_true", help="start paused; the pause key resumes")
    p.add_argument("--no-spoken-punctuation", dest="spoken_punctuation", action="store_false",
                   help='type "comma", "period", "new line" literally')
    p.add_argument("--typer", choices=BACKENDS, default="auto", help="how to type (default: by platform)")
    p.add_argument("--language", help="language code (default: detect)")
    client.add_endpoint_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        asyncio.run(dictate(args, client.resolve_endpoint(args)))
    except KeyboardInterrupt:
        return 0
    except (CaptureError, TyperError, client.DaemonError) as exc:
        print(f"streamer dictate: {exc}", file=sys.stderr)
        return 1
    return 0


class Gate:
    """Whether audio flows to the daemon: push-to-talk held (or always-on), and not paused.

    It pauses the capture itself, so audio is kept from the instant the key goes down (while the
    session is still connecting) and discarded at the source while nobody listens.
    """

    def __init__(self, push_to_talk: bool, capture: ThreadCapture, paused: bool = False) -> None:
        self.push_to_talk = push_to_talk
        self.capture = capture
        self.held = False
        self.paused = paused
        self.changed = asyncio.Event()
        self._sync()

    def _sync(self) -> None:
        if self.open:
            self.capture.paused.clear()
        else:
            self.capture.paused.set()

    @property
    def open(self) -> bool:
        return (self.held or not self.push_to_talk) and not self.paused

    def set(self, *, held: bool | None = None, paused: bool | None = None) -> None:
        self.held = self.held if held is None else held
        self.paused = self.paused if paused is None else paused
        self._sync()
        self.changed.set()

    async def wait_change(self) -> None:
        await self.changed.wait()
        self.changed.clear()


async def gated_chunks(capture: ThreadCapture, gate: Gate, ended: asyncio.Event) -> AsyncIterator[bytes]:
    """Audio while the gate stays open (plus what was captured before it closed); ends when it
    closes or the source runs dry."""
    while gate.open:
        read = asyncio.ensure_future(capture.read())
        change = asyncio.ensure_future(gate.wait_change())
        done, _ = await asyncio.wait({read, change}, return_when=asyncio.FIRST_COMPLETED)
        change.cancel()
        if read not in done:
            read.cancel()
            continue
        data = read.result()
        if not data:
            ended.set()
            return
        yield data
    for data in capture.pending():  # the last words spoken before the key came up
        if not data:
            ended.set()
            return
        yield data


class Dictation:
    """Glue: committed words -> spoken punctuation -> typer; state lines to stderr.

    While a push-to-talk key is held, X gives the keyboard to the grabbing client (us), so
    keystrokes typed then would never reach the focused window: text committed during the
    hold is kept and typed when the key comes up.
    """

    def __init__(self, typer: Typer, punctuation: SpokenPunctuation, gate: "Gate | None" = None) -> None:
        self.typer, self.punctuation, self.gate = typer, punctuation, gate
        self._held = ""

    def on_update(self, transcript: Transcript, new: list[Word]) -> None:
        text = self.punctuation.feed([w.word for w in new])
        if self.gate is not None and self.gate.push_to_talk and self.gate.held:
            self._held += text
        else:
            self.typer.type(self._held + text)
            self._held = ""

    def end_utterance(self) -> None:
        self.typer.type(self._held + self.punctuation.flush())
        self._held = ""

    @staticmethod
    def on_state(state: State, detail: str) -> None:
        log.info("daemon %s %s", state.value, detail)


def make_capture(args: argparse.Namespace) -> ThreadCapture:
    if args.file:
        return WavCapture(args.file, speed=args.speed, tail_silence=1.0)
    device = int(args.mic) if args.mic and args.mic.isdigit() else args.mic
    return MicCapture(device)


async def dictate(args: argparse.Namespace, endpoint: Endpoint) -> str:
    """Run until the audio source ends (``--file``) or the user interrupts; return what was typed."""
    capture = make_capture(args)
    typer = Typer(args.typer)
    gate = Gate(bool(args.push_to_talk), capture, paused=args.start_paused)
    work = Dictation(typer, SpokenPunctuation(args.spoken_punctuation), gate)
    hotkeys = start_hotkeys(args, gate)
    typing = asyncio.create_task(typer.run())
    ended = asyncio.Event()
    capture.open()
    client.finish_on_interrupt(capture.close, "typing the last words")
    log.info("capturing %s at %d Hz; %s", args.file or "the microphone", capture.sample_rate, _mode(args))
    params = StartParams(sample_rate=capture.sample_rate, encoding="pcm_f32le", language=args.language)
    try:
        while not ended.is_set():
            if not gate.open:
                await _wait_open(capture, gate, ended)
                continue
            session = LiveSession(endpoint, params, on_update=work.on_update, on_state=work.on_state)
            await session.run(gated_chunks(capture, gate, ended))
            work.end_utterance()
    finally:
        capture.close()
        if hotkeys is not None:
            hotkeys.close()
        await typer.close()
        await typing
    return typer.typed


async def _wait_open(capture: ThreadCapture, gate: Gate, ended: asyncio.Event) -> None:
    """While closed, wait for the gate, noticing when a (paused) file source reaches its end."""
    read = asyncio.ensure_future(capture.read())
    change = asyncio.ensure_future(gate.wait_change())
    done, _ = await asyncio.wait({read, change}, return_when=asyncio.FIRST_COMPLETED)
    change.cancel()
    if read in done:
        if not read.result():
            ended.set()
    else:
        read.cancel()


def _mode(args: argparse.Namespace) -> str:
    mode = f"push-to-talk {args.push_to_talk}" if args.push_to_talk else "always on"
    if args.pause_key and args.pause_key.lower() != "none":
        mode += f", {args.pause_key} pauses/resumes"
    return mode + (" (paused)" if args.start_paused else "")


def start_hotkeys(args: argparse.Namespace, gate: Gate):
    """Grab the push-to-talk and pause keys; without X11 say so and carry on always-on."""
    keys = [k for k in (args.push_to_talk, args.pause_key) if k and k.lower() != "none"]
    if not keys:
        return None
    from streamer_clients.hotkeys import HotkeyError, X11Hotkeys

    def on_key(name: str, pressed: bool) -> None:
        if name == args.push_to_talk:
            gate.set(held=pressed)
        elif pressed:
            gate.set(paused=not gate.paused)
            log.info("dictation %s", "paused" if gate.paused else "resumed")

    try:
        hotkeys = X11Hotkeys(keys, on_key, asyncio.get_running_loop())
    except HotkeyError as exc:
        if args.push_to_talk:
            raise CaptureError(f"push-to-talk needs global hotkeys: {exc}") from exc
        log.warning("%s; pause/resume hotkey disabled", exc)
        return None
    hotkeys.start()
    return hotkeys
