"""``streamer captions``: live captions in the terminal for a file, standard input or the microphone.

Interactive use shows committed words steady and the tentative tail dimmed, rewritten in place on
the current line. ``--quiet`` is for pipes: committed text only, one line per sentence (or pause),
flushed as soon as it is final, so ``streamer captions --quiet talk.mp3 | grep ...`` works live.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from streamer import formats
from streamer_clients import client
from streamer_clients.capture import (CaptureError, MicCapture, StdinFormat, array_chunks, paced,
                                      read_wav_header, stdin_binary, stdin_chunks)
from streamer.protocol import StartParams, is_punctuation
from streamer_clients.client import Endpoint, State, Transcript, Word
from streamer_clients.live import LiveSession

log = logging.getLogger("streamer.captions")

DIM, RESET, CLEAR_LINE = "\033[2m", "\033[0m", "\r\033[K"
PAUSE_BREAK = 1.5  # seconds of silence between committed words that starts a new line


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("captions", help="live captions in the terminal (file, stdin or microphone)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="audio file (anything soundfile/ffmpeg reads) or - for stdin")
    p.add_argument("--mic", nargs="?", const="default", metavar="DEVICE",
                   help="capture a microphone instead (optional PortAudio device name or index)")
    p.add_argument("--fast", action="store_true", help="send as fast as the daemon accepts, not real time")
    p.add_argument("--quiet", "-q", action="store_true", help="only committed text, line by line (for pipes)")
    p.add_argument("--output", "-o", action="append", default=[], type=Path, metavar="FILE",
                   help="write the transcript at the end: .txt, .srt, .vtt or .jsonl (repeatable)")
    p.add_argument("--language", help="language code, or the expected languages to detect among, e.g. en,de "
                   "(default: detect any)")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--publish", metavar="NAME",
                   help="also show these captions to listen-only clients at /v1/captions?source=NAME")
    raw = p.add_argument_group("raw audio on stdin (ignored when stdin carries a WAV header)")
    raw.add_argument("--rate", type=int, default=16000, help="sample rate (default 16000)")
    raw.add_argument("--encoding", choices=["pcm_s16le", "pcm_f32le"], default="pcm_s16le")
    raw.add_argument("--channels", type=int, choices=[1, 2], default=1)
    client.add_endpoint_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run one captioning session; exit 0 when the daemon confirmed the end of the stream."""
    if bool(args.input) == bool(args.mic):
        print("streamer captions: give a FILE, - for standard input, or --mic", file=sys.stderr)
        return 2
    for out in args.output:
        if formats.format_for_path(out) is None:
            print(f"streamer captions: --output {out}: use .txt, .srt, .vtt or .jsonl", file=sys.stderr)
            return 2
    endpoint = client.resolve_endpoint(args)
    try:
        transcript = asyncio.run(run(args, endpoint))
    except KeyboardInterrupt:
        return 130
    except (CaptureError, client.DaemonError, OSError) as exc:
        print(f"streamer captions: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # websockets errors after retries: say what, not a traceback
        print(f"streamer captions: cannot finish: {exc}", file=sys.stderr)
        return 1
    for out in args.output:
        formats.write(transcript.committed, formats.format_for_path(out), out)
    return 0


async def run(args: argparse.Namespace, endpoint: Endpoint) -> Transcript:
    """Open the source, stream it, render as events arrive; return the whole transcript."""
    params, chunks = await open_source(args)
    stop = asyncio.Event()
    client.finish_on_interrupt(stop.set)
    chunks = until_set(chunks, stop)
    renderer = make_renderer(args.quiet, sys.stdout)
    session = LiveSession(endpoint, params, on_update=renderer.update,
                          on_state=renderer.state if not args.quiet else _state_to_log,
                          max_retries=None if args.mic else 8, source=args.publish)
    try:
        return await session.run(chunks)
    finally:
        renderer.finish(session.transcript)


async def until_set(chunks: AsyncIterator[bytes], stop: asyncio.Event) -> AsyncIterator[bytes]:
    """The audio until ``stop`` is set; then the source is closed (the microphone released)."""
    try:
        async for chunk in chunks:
            if stop.is_set():
                return
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def open_source(args: argparse.Namespace) -> tuple[StartParams, AsyncIterator[bytes]]:
    """The start message and audio stream for a file, stdin or the microphone."""
    common = {"language": args.language, "task": args.task}
    if args.mic:
        device = None if args.mic == "default" else (int(args.mic) if args.mic.isdigit() else args.mic)
        mic = MicCapture(device)
        return StartParams(sample_rate=mic.sample_rate, encoding="pcm_f32le", **common), mic.chunks()
    speed = 0.0 if args.fast else 1.0
    if args.input == "-":
        fmt, chunks = await open_stdin(args)
        params = StartParams(sample_rate=fmt.sample_rate, encoding=fmt.encoding, channels=fmt.channels, **common)
        return params, paced(chunks, fmt.bytes_per_second, speed)
    from streamer.audio import load_audio  # decodes anything ffmpeg reads, to 16 kHz mono float32

    samples = await asyncio.to_thread(load_audio, args.input)
    block = 0.5 if args.fast else 0.1
    return (StartParams(sample_rate=16000, encoding="pcm_f32le", **common),
            paced(array_chunks(samples, 16000, block), 16000 * 4, speed))


async def open_stdin(args: argparse.Namespace) -> tuple[StdinFormat, AsyncIterator[bytes]]:
    """Sniff a WAV header on stdin; otherwise treat it as raw PCM described by the flags."""
    stream = stdin_binary()
    head = await asyncio.to_thread(stream.read, 4)
    if head == b"RIFF":
        fmt, rest = await asyncio.to_thread(read_wav_header, stream, head)
    else:
        fmt, rest = StdinFormat(args.rate, args.encoding, args.channels), head
    return fmt, stdin_chunks(stream, max(1024, fmt.bytes_per_second // 10), rest)


def _state_to_log(state: State, detail: str) -> None:
    if state == State.RECONNECTING:
        log.warning("daemon connection lost; %s", detail)


class LineRenderer:
    """``--quiet``: committed text only, one line per sentence or pause, flushed immediately."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.line = ""
        self.last_end: float | None = None

    def update(self, transcript: Transcript, new: list[Word]) -> None:
        for word in new:
            if self.line and self.last_end is not None and word.start - self.last_end > PAUSE_BREAK:
                self.flush()
            self.line += word.word
            self.last_end = word.end
            if ends_sentence(self.line) or len(self.line) > 200:
                self.flush()

    def flush(self) -> None:
        if self.line.strip():
            self.out.write(self.line.strip() + "\n")
            self.out.flush()
        self.line = ""

    def state(self, state: State, detail: str) -> None:
        _state_to_log(state, detail)

    def finish(self, transcript: Transcript) -> None:
        self.flush()


class LiveRenderer:
    """Interactive terminal: committed words steady, the tentative tail dimmed and rewritten in place."""

    def __init__(self, out: TextIO, err: TextIO = sys.stderr) -> None:
        self.out, self.err = out, err
        self.line = ""
        self.last_end: float | None = None
        self.color = out.isatty()

    @property
    def width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 24)).columns - 1)

    def update(self, transcript: Transcript, new: list[Word]) -> None:
        for word in new:
            pause = self.last_end is not None and word.start - self.last_end > PAUSE_BREAK
            wraps = len(self.line) + len(word.word) > self.width and not is_punctuation(word.word)
            if self.line and (pause or wraps):
                self._commit_line()
            self.line += word.word if self.line else word.word.lstrip()
            self.last_end = word.end
        self._draw(transcript.tentative_text)

    def _commit_line(self) -> None:
        self.out.write(CLEAR_LINE + self.line.rstrip() + "\n")
        self.line = ""

    def _draw(self, tentative: str) -> None:
        room = self.width - len(self.line)
        tail = tentative if self.line else tentative.lstrip()
        if len(tail) > room:
            tail = "…" + tail[len(tail) - room + 1:] if room > 1 else ""
        dim = f"{DIM}{tail}{RESET}" if self.color and tail else tail
        self.out.write(CLEAR_LINE + self.line + dim)
        self.out.flush()

    def state(self, state: State, detail: str) -> None:
        if state in (State.CONNECTING, State.RECONNECTING) or (state == State.CONNECTED and detail):
            self.err.write(f"{CLEAR_LINE}[{state.value}{': ' + detail if detail else ''}]\n")
            self.err.flush()
            self._draw("")

    def finish(self, transcript: Transcript) -> None:
        self._draw("")
        if self.line:
            self.out.write("\n")
        self.out.flush()


def make_renderer(quiet: bool, out: TextIO) -> LineRenderer | LiveRenderer:
    """Live rendering on a terminal; a plain line stream when quiet or when stdout is not a terminal."""
    return LineRenderer(out) if quiet or not out.isatty() else LiveRenderer(out)


def ends_sentence(text: str) -> bool:
    """Whether committed text ends a sentence, so a pipe consumer gets it now, not at the next pause."""
    stripped = text.rstrip().rstrip("\"')]")
    return stripped.endswith((".", "!", "?", "。", "！", "？"))
