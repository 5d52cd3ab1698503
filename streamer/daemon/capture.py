"""Local audio capture: a microphone or the monitor of an output device, as 16 kHz blocks.

Device choice (by index or name, PulseAudio monitors through the ``pulse`` device), sample
rate negotiation, and a :class:`Capture` that yields resampled blocks on the event loop.
:mod:`streamer.daemon.mic` turns a capture into a session.

PortAudio is reached only through an *input-stream factory* with sounddevice's
``InputStream(samplerate, channels, blocksize, device, dtype, callback, finished_callback)``
signature. :class:`FileInputStream` implements it over a WAV file, so the whole capture
path runs in tests (and on machines without audio hardware) with no PortAudio at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from streamer.audio import StreamResampler
from streamer.config import MicConfig
from streamer.hypothesis import SAMPLE_RATE

log = logging.getLogger(__name__)

PREFERRED_RATES = (16000, 48000, 44100, 32000, 22050, 24000, 8000)
StreamFactory = Callable[..., Any]


class CaptureError(Exception):
    """No usable capture device (or no PortAudio); the message says what to install or pick."""


# --------------------------------------------------------------------------- devices
def import_sounddevice() -> Any:
    """sounddevice, or a CaptureError that says how to get PortAudio."""
    try:
        import sounddevice
    except OSError as exc:
        raise CaptureError(f"PortAudio is not available ({exc}); install it (Debian: apt install libportaudio2) "
                           "or stream audio to the daemon from a client instead") from None
    except ImportError:
        raise CaptureError("the sounddevice package is missing: pip install sounddevice") from None
    return sounddevice


def list_devices(sd: Any = None) -> list[dict]:
    """Input-capable devices: index, name, channels, default rate, host API."""
    sd = sd or import_sounddevice()
    apis = [api["name"] for api in sd.query_hostapis()]
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_samplerate": d["default_samplerate"], "hostapi": apis[d["hostapi"]]}
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def default_monitor_source() -> str | None:
    """The PulseAudio/PipeWire monitor of the default output (``<sink>.monitor``), if pactl knows it."""
    pactl = shutil.which("pactl")
    if pactl is None:
        return None
    try:
        out = subprocess.run([pactl, "get-default-sink"], capture_output=True, text=True, timeout=5)
        sink = out.stdout.strip()
        if out.returncode != 0 or not sink:
            info = subprocess.run([pactl, "info"], capture_output=True, text=True, timeout=5).stdout
            sink = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                         if line.startswith("Default Sink:")), "")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sink}.monitor" if sink else None


@dataclass
class DeviceChoice:
    """What to open: a PortAudio device, plus environment for the PulseAudio ALSA plugin."""

    device: int | str | None
    label: str
    env: dict[str, str] = field(default_factory=dict)


def _match(devices: list[dict], spec: str) -> dict | None:
    if spec.isdigit():
        return next((d for d in devices if d["index"] == int(spec)), None)
    low = spec.lower()
    return next((d for d in devices if d["name"].lower() == low), None) or \
        next((d for d in devices if low in d["name"].lower()), None)


def resolve_device(spec: str | None, source: str, devices: list[dict]) -> DeviceChoice:
    """Pick a device by index or name; monitors of PulseAudio sinks go through the ``pulse`` device.

    PortAudio's ALSA backend lists only ``pulse``/``default`` for a PulseAudio or PipeWire
    server, so a monitor (``<sink>.monitor``) is opened as ``pulse`` with ``PULSE_SOURCE`` set.
    """
    if spec:
        found = _match(devices, spec)
        if found is not None:
            return DeviceChoice(found["index"], found["name"])
    if source == "monitor" and not spec:
        found = next((d for d in devices if "monitor" in d["name"].lower()), None)
        if found is not None:
            return DeviceChoice(found["index"], found["name"])
        spec = default_monitor_source()
        if spec is None:
            raise CaptureError("no monitor source found: --source monitor needs PulseAudio or PipeWire (pactl) "
                               "or a device whose name contains 'monitor'; see `streamer mic --list`")
    if spec and (source == "monitor" or spec.endswith(".monitor") or not devices):
        pulse = _match(devices, "pulse") or _match(devices, "default")
        if pulse is None:
            raise CaptureError(f"cannot open {spec!r}: no PortAudio 'pulse' device (install the ALSA PulseAudio "
                               "plugin, e.g. apt install libasound2-plugins)")
        return DeviceChoice(pulse["index"], f"{spec} (via {pulse['name']})", {"PULSE_SOURCE": spec})
    if spec:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in devices) or "none"
        raise CaptureError(f"no input device matches {spec!r} (input devices: {names})")
    if not devices:
        raise CaptureError("no audio input device found (PortAudio lists none); connect a microphone, "
                           "or stream audio to the daemon with a client")
    return DeviceChoice(None, "default input")


def negotiate_rate(sd: Any, device: int | str | None, channels: int) -> int:
    """The first rate the device accepts, 16 kHz preferred (no resampling), then its own default."""
    info = sd.query_devices(device, "input")
    rates = (SAMPLE_RATE, int(info["default_samplerate"]), *PREFERRED_RATES)
    for rate in dict.fromkeys(rates):
        try:
            sd.check_input_settings(device=device, channels=channels, samplerate=rate, dtype="float32")
            return rate
        except Exception:  # sounddevice raises PortAudioError / ValueError for unsupported settings
            continue
    raise CaptureError(f"device {info['name']!r} accepts none of the sample rates {rates}")


def check_device(config: MicConfig) -> DeviceChoice:
    """Fail fast (before a model loads for seconds) when the configured device cannot be opened."""
    return resolve_device(config.device, config.source, list_devices(import_sounddevice()))


# --------------------------------------------------------------------------- file stream
class FileInputStream:
    """A PortAudio-free input stream that plays a WAV file into the capture callback.

    Same shape as ``sounddevice.InputStream``: a callback thread delivers ``(frames, channels)``
    float32 blocks; ``finished_callback`` runs at the end of the file. ``speed`` 1.0 paces in
    real time, 0 delivers as fast as possible.
    """

    def __init__(self, path: str, *, blocksize: int = 0, callback: Callable | None = None,
                 finished_callback: Callable | None = None, speed: float = 1.0, **_: Any) -> None:
        import soundfile

        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        self.data = data
        self.samplerate = int(rate)
        self.channels = data.shape[1]
        self.blocksize = blocksize or max(1, self.samplerate // 10)
        self.callback = callback
        self.finished_callback = finished_callback
        self.speed = speed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def factory(cls, path: str, speed: float = 1.0) -> StreamFactory:
        """A stream factory for :class:`Capture` (the requested rate is ignored: the file has its own)."""
        return lambda **kwargs: cls(path, speed=speed, **{k: v for k, v in kwargs.items() if k != "samplerate"})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._play, name="file-input-stream", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        started = time.monotonic()
        for pos in range(0, len(self.data), self.blocksize):
            if self._stop.is_set():
                break
            block = self.data[pos:pos + self.blocksize]
            if self.speed > 0:
                delay = started + (pos + len(block)) / self.samplerate / self.speed - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            self.callback(block, len(block), None, None)
        if self.finished_callback:
            self.finished_callback()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    close = stop

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# --------------------------------------------------------------------------- capture
class Capture:
    """Opens an input stream and yields 16 kHz mono float32 blocks on the event loop."""

    def __init__(self, config: MicConfig, stream_factory: StreamFactory | None = None) -> None:
        self.config = config
        self.stream_factory = stream_factory
        self.label = "file" if stream_factory else ""
        self.samplerate = 0
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._stream: Any = None
        self._resampler: StreamResampler | None = None

    def open(self) -> None:
        """Open and start the stream (PortAudio device selection unless a factory was injected)."""
        loop = asyncio.get_running_loop()

        def on_block(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status:
                log.debug("capture status: %s", status)
            loop.call_soon_threadsafe(self._queue.put_nowait, np.array(indata, dtype=np.float32, copy=True))

        def on_finished() -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, None)

        factory, kwargs = self._factory_and_settings()
        self._stream = factory(callback=on_block, finished_callback=on_finished, dtype="float32", **kwargs)
        self.samplerate = int(self._stream.samplerate)
        self._resampler = StreamResampler(self.samplerate, int(self._stream.channels))
        self._stream.start()
        log.info("capturing %s at %d Hz x%d", self.label, self.samplerate, self._stream.channels)

    def _factory_and_settings(self) -> tuple[StreamFactory, dict]:
        block = max(1, int(self.config.block_seconds * SAMPLE_RATE))
        if self.stream_factory is not None:
            return self.stream_factory, {"samplerate": SAMPLE_RATE, "channels": 1, "blocksize": block,
                                         "device": self.config.device}
        sd = import_sounddevice()
        choice = resolve_device(self.config.device, self.config.source, list_devices(sd))
        os.environ.update(choice.env)  # read by the PulseAudio ALSA plugin when the stream opens
        rate = negotiate_rate(sd, choice.device, 1)
        self.label = choice.label
        return sd.InputStream, {"samplerate": rate, "channels": 1, "device": choice.device,
                                "blocksize": max(1, int(self.config.block_seconds * rate))}

    async def blocks(self):
        """16 kHz mono float32 blocks until the stream ends or :meth:`close` is called."""
        while True:
            block = await self._queue.get()
            if block is None:
                tail = self._resampler.flush()
                if tail.size:
                    yield tail
                return
            yield self._resampler.process(block.reshape(-1))

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.stop()
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None
        self._queue.put_nowait(None)
