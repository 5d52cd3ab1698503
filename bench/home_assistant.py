#!/usr/bin/env python3
"""Home Assistant's own Wyoming speech-to-text code against a streamer daemon.

Runs in a separate environment that has Home Assistant installed (its pins clash with streamer's),
starts ``streamer serve --wyoming`` from streamer's environment, and drives it exactly as Home
Assistant does: the config flow's ``WyomingService.create`` (describe -> info), then
``WyomingSttProvider.async_process_audio_stream`` with a voice command's audio in the chunks an
assist pipeline sends. Prints what Home Assistant would see and exits non-zero when it would fail.

    python3.11 -m venv /tmp/havenv && /tmp/havenv/bin/pip install homeassistant==2024.3.3 wyoming==1.5.3
    /tmp/havenv/bin/python bench/home_assistant.py --streamer .venv/bin/streamer --audio samples/LJ001-0004.wav

Not part of the test suite: Home Assistant is a 200-package install and pins its own
``wyoming`` (1.5.3 in 2024.3); the suite tests the protocol with the current ``wyoming`` client.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import wave
from types import SimpleNamespace

from homeassistant.components import stt
from homeassistant.components.wyoming.data import WyomingService
from homeassistant.components.wyoming.stt import WyomingSttProvider
from homeassistant.const import __version__ as ha_version

CHUNK_BYTES = 2048  # 64 ms of 16 kHz 16-bit mono, about what an assist satellite sends per chunk


def wait_for_port(host: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"no Wyoming server on {host}:{port} after {seconds:.0f} s")


def read_pcm(path: str) -> bytes:
    with wave.open(path) as wav:
        if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (16000, 2, 1):
            raise SystemExit(f"{path}: Home Assistant sends 16 kHz 16-bit mono; convert the file first")
        return wav.readframes(wav.getnframes())


async def chunks(pcm: bytes, realtime: bool):
    for start in range(0, len(pcm), CHUNK_BYTES):
        yield pcm[start:start + CHUNK_BYTES]
        if realtime:
            await asyncio.sleep(CHUNK_BYTES / 32000)


async def run(host: str, port: int, pcm: bytes, realtime: bool) -> int:
    service = None
    for _ in range(5):  # Home Assistant retries a set-up whose describe timed out (the model still loading)
        service = await WyomingService.create(host, port)  # what the config flow does
        if service is not None:
            break
        print("no info yet (model loading?); Home Assistant would retry")
    if service is None or not service.has_services():
        print("Home Assistant found no usable service")
        return 1
    print(f"Home Assistant {ha_version}: service {service.get_name()!r}, platforms {service.platforms}")
    provider = WyomingSttProvider(SimpleNamespace(entry_id="streamer"), service)
    print(f"supported languages: {len(provider.supported_languages)} (en: {'en' in provider.supported_languages})")
    metadata = stt.SpeechMetadata(language="en", format=stt.AudioFormats.WAV, codec=stt.AudioCodecs.PCM,
                                  bit_rate=stt.AudioBitRates.BITRATE_16,
                                  sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
                                  channel=stt.AudioChannels.CHANNEL_MONO)
    started = time.perf_counter()
    result = await provider.async_process_audio_stream(metadata, chunks(pcm, realtime))
    print(f"result: {result.result.value} in {time.perf_counter() - started:.2f} s "
          f"({len(pcm) / 32000:.1f} s of audio{', sent at real time' if realtime else ''}): {result.text!r}")
    return 0 if result.result == stt.SpeechResultState.SUCCESS and result.text else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streamer", default=".venv/bin/streamer", help="streamer's command (its own venv)")
    parser.add_argument("--audio", default="samples/LJ001-0004.wav")
    parser.add_argument("--model", default="base")
    parser.add_argument("--port", type=int, default=10300)
    parser.add_argument("--realtime", action="store_true", help="send the chunks at real time, as a microphone")
    args = parser.parse_args()
    host = "127.0.0.1"
    daemon = subprocess.Popen([args.streamer, "serve", "--model", args.model, "--port", "0",
                               "--wyoming", f"tcp://{host}:{args.port}"])
    try:
        wait_for_port(host, args.port, 120)
        return asyncio.run(run(host, args.port, read_pcm(args.audio), args.realtime))
    finally:
        daemon.terminate()
        daemon.wait(30)


if __name__ == "__main__":
    sys.exit(main())
