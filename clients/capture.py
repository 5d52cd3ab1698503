"""Audio sources for the desktop clients, all yielding pcm_f32le mono bytes as an async iterator.

The microphone and the WAV stand-in share one path: a thread calls ``ThreadCapture.push`` with float32
blocks (PortAudio's callback thread for the mic, a paced reader thread for a WAV), and the event
loop drains a queue. That is what lets tests and ``--file`` exercise exactly the code a live
microphone runs, on machines without any audio device.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile

from streamer.protocol import sample_width

_EOF = b""


class CaptureError(RuntimeError):
    """No usable audio input; the message says what to install or choose."""


class ThreadCapture:
    """Thread-fed capture: blocks arrive from another thread, the event loop reads them."""

    def __init__(self, sample_rate: int, max_queue_seconds: float = 30.0) -> None:
        self.sample_rate = sample_rate
        self.dropped_seconds = 0.0
        self._queue: asyncio.Queue[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_blocks = max(8, int(max_queue_seconds * 20))
        self.paused = threading.Event()  # set: blocks are discarded (push-to-talk released, paused)

    def push(self, block: np.ndarray) -> None:
        """Called from the capture thread with one float32 mono block."""
        if self._loop is None or self._queue is None or self.paused.is_set():
            return
        data = np.ascontiguousarray(block, dtype="<f4").tobytes()
        self._loop.call_soon_threadsafe(self._put, data)

    def _put(self, data: bytes) -> None:
        assert self._queue is not None
        if self._queue.qsize() >= self._max_blocks:  # a stalled consumer must not grow memory forever
            self.dropped_seconds += len(data) / 4 / self.sample_rate
            return
        self._queue.put_nowait(data)

    def _finish(self) -> None:
        if self._loop is not None and self._queue is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _EOF)

    def _open(self) -> None:
        """Start producing; subclasses start their thread or stream here."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop producing; the iterator then ends."""
        self._finish()

    def open(self) -> None:
        """Bind to the running event loop and start the source."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._open()

    async def read(self) -> bytes:
        """The next block, or b"" once the source has ended. Safe to cancel."""
        assert self._queue is not None, "call open() first"
        return await self._queue.get()

    def pending(self) -> list[bytes]:
        """Blocks already captured but not read yet (b"" marks the end), without waiting."""
        out = []
        while self._queue is not None and not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out

    async def chunks(self) -> AsyncIterator[bytes]:
        """Audio blocks until the source ends or ``close`` is called."""
        self.open()
        try:
            while data := await self.read():
                yield data
        finally:
            self.close()


class MicCapture(ThreadCapture):
    """A PortAudio input stream (sounddevice) at the device's native rate."""

    def __init__(self, device: str | int | None = None, sample_rate: int | None = None) -> None:
        sd = _sounddevice()
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise CaptureError(f"no usable input device ({device if device is not None else 'default'}): {exc} (list them with "
                               "`python -m sounddevice`)") from exc
        rate = int(sample_rate or info["default_samplerate"])
        super().__init__(rate)
        self.device = device
        self._stream: Any = None

    def _callback(self, indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        self.push(indata[:, 0].copy())

    def _open(self) -> None:
        sd = _sounddevice()
        self._stream = sd.InputStream(device=self.device, channels=1, samplerate=self.sample_rate,
                                      dtype="float32", blocksize=self.sample_rate // 20,
                                      callback=self._callback)
        self._stream.start()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        super().close()


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise CaptureError(f"microphone capture needs PortAudio ({exc}); on Debian/Ubuntu: "
                           "apt install libportaudio2") from exc
    return sounddevice


class WavCapture(ThreadCapture):
    """A WAV file played into the capture path at ``speed`` times real time (0 = as fast as possible)."""

    def __init__(self, path: str | Path, speed: float = 1.0, block_seconds: float = 0.05,
                 lead_silence: float = 0.0, tail_silence: float = 0.0) -> None:
        self.path = Path(path)
        info = soundfile.info(str(self.path))
        super().__init__(int(info.samplerate))
        self.speed, self.block_seconds = speed, block_seconds
        self.lead_silence, self.tail_silence = lead_silence, tail_silence
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _open(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wav-capture", daemon=True)
        self._thread.start()

    def _blocks(self) -> Iterator[np.ndarray]:
        block = max(1, int(self.sample_rate * self.block_seconds))
        yield from _silence(self.lead_silence, self.sample_rate, block)
        for frames in soundfile.blocks(str(self.path), blocksize=block, dtype="float32", always_2d=True):
            yield frames.mean(axis=1)
        yield from _silence(self.tail_silence, self.sample_rate, block)

    def _run(self) -> None:
        start, sent = time.monotonic(), 0
        for samples in self._blocks():
            if self._stop.is_set():
                break
            self.push(samples)
            sent += len(samples)
            if self.speed > 0:
                ahead = start + sent / self.sample_rate / self.speed - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
        self._finish()

    def close(self) -> None:
        self._stop.set()
        super().close()


def _silence(seconds: float, rate: int, block: int) -> Iterator[np.ndarray]:
    remaining = int(seconds * rate)
    while remaining > 0:
        n = min(block, remaining)
        yield np.zeros(n, dtype=np.float32)
        remaining -= n


async def paced(chunks: AsyncIterator[bytes], bytes_per_second: float, speed: float) -> AsyncIterator[bytes]:
    """Re-time a stream to ``speed`` x real time (``speed`` <= 0: no pacing, as fast as the daemon reads)."""
    start, sent = time.monotonic(), 0
    async for chunk in chunks:
        if speed > 0:
            ahead = start + sent / bytes_per_second / speed - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        yield chunk
        sent += len(chunk)


async def array_chunks(samples: np.ndarray, sample_rate: int, block_seconds: float) -> AsyncIterator[bytes]:
    """A decoded file as pcm_f32le blocks."""
    block = max(1, int(sample_rate * block_seconds))
    data = np.ascontiguousarray(samples, dtype="<f4")
    for i in range(0, len(data), block):
        yield data[i:i + block].tobytes()
        await asyncio.sleep(0)


class StdinFormat:
    """What arrives on standard input: a WAV header is parsed, otherwise raw PCM as the flags say."""

    def __init__(self, sample_rate: int, encoding: str, channels: int) -> None:
        self.sample_rate, self.encoding, self.channels = sample_rate, encoding, channels

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.channels * sample_width(self.encoding)


def read_wav_header(stream: BinaryIO, head: bytes) -> tuple[StdinFormat, bytes]:
    """Parse a RIFF/WAVE header from a non-seekable stream up to the ``data`` chunk.

    ``soundfile`` wants to seek, and a pipe cannot, so this reads the chunks by hand; it returns
    the format and any bytes already read past the header.
    """
    buf = head
    def need(n: int) -> None:
        nonlocal buf
        while len(buf) < n:
            more = stream.read(n - len(buf))
            if not more:
                raise CaptureError("standard input ended inside the WAV header")
            buf += more
    need(12)
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise CaptureError("standard input is not a RIFF/WAVE file")
    pos, fmt = 12, None
    while True:
        need(pos + 8)
        cid, size = buf[pos:pos + 4], int.from_bytes(buf[pos + 4:pos + 8], "little")
        if cid == b"data":
            if fmt is None:
                raise CaptureError("WAV data chunk before its fmt chunk")
            return fmt, buf[pos + 8:]
        need(pos + 8 + size + (size & 1))
        if cid == b"fmt ":
            fmt = _parse_fmt(buf[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)


def _parse_fmt(chunk: bytes) -> StdinFormat:
    tag = int.from_bytes(chunk[0:2], "little")
    channels = int.from_bytes(chunk[2:4], "little")
    rate = int.from_bytes(chunk[4:8], "little")
    bits = int.from_bytes(chunk[14:16], "little")
    if tag == 0xFFFE and len(chunk) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag is in the subformat
        tag = int.from_bytes(chunk[24:26], "little")
    if tag == 1 and bits == 16:
        return StdinFormat(rate, "pcm_s16le", channels)
    if tag == 3 and bits == 32:
        return StdinFormat(rate, "pcm_f32le", channels)
    raise CaptureError(f"WAV on standard input must be 16-bit PCM or 32-bit float (got tag {tag}, {bits} bits); "
                       "pass a file path instead, which is decoded with ffmpeg")


async def stdin_chunks(stream: BinaryIO, block_bytes: int, head: bytes = b"") -> AsyncIterator[bytes]:
    """Read standard input in a worker thread so a slow pipe never blocks the event loop."""
    if head:
        yield head
    while True:
        data = await asyncio.to_thread(stream.read1 if hasattr(stream, "read1") else stream.read, block_bytes)
        if not data:
            return
        yield data


def stdin_binary() -> BinaryIO:
    """Standard input as bytes."""
    return sys.stdin.buffer
