"""Local capture without PortAudio: a WAV file plays through the same capture path a microphone uses."""

from __future__ import annotations

import asyncio
import io
import json
import math

import numpy as np
import pytest
import soundfile
from websockets.asyncio.client import connect

from streamer.config import MicConfig
from streamer.daemon.capture import CaptureError, DeviceChoice, FileInputStream, list_devices, resolve_device
from streamer.daemon.mic import TerminalRenderer, run_local, start_capture
from streamer.daemon.server import running_server
from support import scaled, timeline, wait_until
from support.ws import collect, settings
from streamer.engine.scripted import ScriptedEngine, timeline_script

pytestmark = pytest.mark.timeout(scaled(120))
WORDS = timeline(10)  # a word every 0.6 s for 6 s


@pytest.fixture
def wav_44k_stereo(tmp_path):
    rate, seconds = 44100, 4.0
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.2 * np.sin(2 * math.pi * 330 * t)
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.stack([tone, tone], axis=1), rate, subtype="PCM_16")
    return path


async def test_capture_feeds_caption_subscribers(wav_44k_stereo):
    engine = ScriptedEngine(timeline_script(WORDS))
    async with running_server(settings(), engine) as server:
        async with connect(server.url + "/v1/captions?source=mic") as sub:
            assert json.loads(await sub.recv())["type"] == "ready"
            events = asyncio.ensure_future(collect(sub))
            runner = await start_capture(server.host, MicConfig(block_seconds=0.05),
                                         FileInputStream.factory(str(wav_44k_stereo), speed=0))
            assert runner.capture.samplerate == 44100
            ready = await wait_until(lambda: next(iter(server.host.live), None), 5, what="the mic session")
            await runner.wait()  # the file ran out: the session is finished and flushed
            await server.shutdown()
        result = await events
    assert ready.startswith("mic-")
    assert result.committed == [w.word for w in WORDS if w.end <= 4.0]
    assert result.events[-1]["type"] == "end" and result.events[-1]["audio_seconds"] == pytest.approx(4.0, abs=0.01)


async def test_stopping_a_live_capture_flushes_it(wav_44k_stereo):
    engine = ScriptedEngine(timeline_script(WORDS))
    async with running_server(settings(), engine) as server:
        runner = await start_capture(server.host, MicConfig(), FileInputStream.factory(str(wav_44k_stereo), speed=4))
        await wait_until(lambda: runner.session.audio_seconds >= 1.0, 10, what="a second of captured audio")
        await runner.stop()
        assert runner.session.ended and 1.0 <= runner.session.audio_seconds < 4.0
        assert not server.host.live


async def test_terminal_rendering_without_a_server(wav_44k_stereo):
    out = io.StringIO()
    cfg = settings()
    text = await run_local(cfg, ScriptedEngine(timeline_script(WORDS)), TerminalRenderer(out, width=40),
                           FileInputStream.factory(str(wav_44k_stereo), speed=0))
    assert text == "".join(w.word for w in WORDS if w.end <= 4.0).strip()
    printed = out.getvalue()
    assert "\033" not in printed  # not a terminal: whole committed lines only
    assert " ".join(printed.split()) == text and all(len(line) <= 40 for line in printed.splitlines())


def test_terminal_rewrites_the_tentative_tail_in_place():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    renderer = TerminalRenderer(out, width=80)
    word = lambda w: {"word": w, "start": 0, "end": 0, "probability": 1}  # noqa: E731
    renderer.put({"type": "transcript", "committed": [word(" Hello")], "tentative": [word(" wor")]})
    renderer.put({"type": "transcript", "committed": [word(" world")], "tentative": []})
    renderer.put({"type": "end", "text": "Hello world"})
    frames = out.getvalue().split("\r\033[K")
    assert frames[1] == "Hello\033[2m wor\033[0m" and frames[2] == "Hello world" and frames[3] == "Hello world\n"


DEVICES = [{"index": 0, "name": "HDA Intel PCH: ALC257 Analog (hw:0,0)", "channels": 2},
           {"index": 3, "name": "pulse", "channels": 32}, {"index": 4, "name": "default", "channels": 32}]


@pytest.mark.parametrize("spec, source, expected", [
    (None, "mic", DeviceChoice(None, "default input")),
    ("3", "mic", DeviceChoice(3, "pulse")),
    ("alc257", "mic", DeviceChoice(0, DEVICES[0]["name"])),
    ("null_sink.monitor", "mic", DeviceChoice(3, "null_sink.monitor (via pulse)", {"PULSE_SOURCE": "null_sink.monitor"})),
    ("null_sink.monitor", "monitor", DeviceChoice(3, "null_sink.monitor (via pulse)",
                                                  {"PULSE_SOURCE": "null_sink.monitor"})),
])
def test_device_selection_by_index_name_and_monitor(spec, source, expected):
    assert resolve_device(spec, source, DEVICES) == expected


def test_device_errors_say_what_to_do():
    with pytest.raises(CaptureError, match="no audio input device"):
        resolve_device(None, "mic", [])
    with pytest.raises(CaptureError, match="no input device matches 'usb'.*0: HDA"):
        resolve_device("usb", "mic", DEVICES[:1])
    with pytest.raises(CaptureError, match="pulse"):
        resolve_device("x.monitor", "monitor", DEVICES[:1])


def test_sounddevice_listing_where_portaudio_exists():
    try:
        devices = list_devices()
    except CaptureError as exc:
        pytest.skip(f"no PortAudio here: {exc}")
    import sounddevice

    for d in devices:  # what we list is what PortAudio reports for that index
        info = sounddevice.query_devices(d["index"])
        assert (info["name"], info["max_input_channels"]) == (d["name"], d["channels"])
    if not devices:
        with pytest.raises(CaptureError, match="no audio input device"):
            resolve_device(None, "mic", devices)
