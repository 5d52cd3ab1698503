"""Audio input helpers: file loading, PCM decoding, streaming resampling."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from streamer.audio import (AudioError, StreamResampler, load_audio, pcm_to_float32, resample,
                            PcmDecoder)


def tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (48000, 1), (8000, 2)])
def test_load_audio_any_rate_and_channels(tmp_path, rate, channels):
    mono = tone(rate, 1.0)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    path = tmp_path / "a.wav"
    soundfile.write(path, data, rate, subtype="PCM_16")
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 16000) <= 2
    assert abs(dominant_freq(out) - 440) < 5
    assert abs(np.abs(out).max() - 0.5) < 0.03


def test_load_audio_flac(tmp_path):
    path = tmp_path / "a.flac"
    soundfile.write(path, tone(22050, 0.5), 22050)
    assert abs(load_audio(path).size - 8000) <= 2


def test_load_audio_missing(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_load_audio_corrupt(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 10)
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(path)


def test_pcm_s16le_and_f32le():
    ints = np.array([0, 16384, -32768, 32767], dtype="<i2")
    out = pcm_to_float32(ints.tobytes(), "pcm_s16le")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0.5, -1.0, 32767 / 32768])
    floats = np.array([0.25, -0.5], dtype="<f4")
    np.testing.assert_array_equal(pcm_to_float32(floats.tobytes(), "pcm_f32le"), floats)


def test_pcm_errors():
    with pytest.raises(AudioError, match="multiple of 2"):
        pcm_to_float32(b"\x00\x01\x02", "pcm_s16le")
    with pytest.raises(AudioError, match="NaN"):
        pcm_to_float32(np.array([np.nan], dtype="<f4").tobytes(), "pcm_f32le")
    with pytest.raises(AudioError, match="unknown encoding"):
        pcm_to_float32(b"", "mulaw")  # type: ignore[arg-type]


def test_pcm_decoder_keeps_split_samples_and_silences_nonfinite_floats():
    ints = np.arange(-5, 5, dtype="<i2").tobytes()
    dec = PcmDecoder("pcm_s16le", channels=2)
    pieces = [dec.decode(ints[:3]), dec.decode(ints[3:9]), dec.decode(ints[9:])]
    assert [p.size for p in pieces] == [0, 4, 6]  # whole stereo frames only (4 bytes, 2 samples each)
    np.testing.assert_array_equal(np.concatenate(pieces) * 32768, np.arange(-5, 5))
    floats = np.array([0.5, np.nan, np.inf, 2.0], dtype="<f4").tobytes()
    fdec = PcmDecoder("pcm_f32le")
    np.testing.assert_array_equal(fdec.decode(floats + b"\x00\x00"), [0.5, 0.0, 0.0, 1.0])
    assert fdec.nonfinite == 2 and fdec.flush() == 2 and fdec.flush() == 0
    with pytest.raises(AudioError, match="unknown encoding"):
        PcmDecoder("mulaw")


@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 1), (8000, 1), (16000, 2)])
def test_stream_resampler_matches_one_shot(rate, channels):
    mono = tone(rate, 2.0, freq=300)
    interleaved = np.repeat(mono, channels)  # identical channels, interleaved
    rs = StreamResampler(rate, channels)
    rng = np.random.default_rng(0)
    pieces, pos = [], 0
    while pos < interleaved.size:
        step = int(rng.integers(1, 3000))  # odd sizes split frames between calls
        pieces.append(rs.process(interleaved[pos:pos + step]))
        pos += step
    pieces.append(rs.flush())
    out = np.concatenate(pieces)
    assert abs(out.size - 32000) <= 2
    ref = resample(mono, rate)
    n = min(out.size, ref.size)
    # streaming and one-shot agree away from the edges
    assert np.max(np.abs(out[200:n - 200] - ref[200:n - 200])) < 1e-3
    assert abs(dominant_freq(out) - 300) < 5


def test_stream_resampler_downmixes():
    left = tone(16000, 0.1)
    inter = np.stack([left, -left], axis=1).reshape(-1)
    out = StreamResampler(16000, 2).process(inter)
    assert out.size == left.size and np.max(np.abs(out)) < 1e-6


def test_stream_resampler_bad_args():
    with pytest.raises(AudioError):
        StreamResampler(10, 1)
    with pytest.raises(AudioError):
        StreamResampler(16000, 0)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (only needed for non-libsndfile formats)")
def test_load_audio_falls_back_to_ffmpeg(tmp_path):
    wav, m4a = tmp_path / "a.wav", tmp_path / "a.m4a"
    soundfile.write(wav, np.stack([tone(44100, 1.0)] * 2, axis=1), 44100)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    out = load_audio(m4a)
    assert out.dtype == np.float32 and abs(out.size - 16000) < 1600
    assert abs(dominant_freq(out) - 440) < 5
