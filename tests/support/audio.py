"""Synthetic audio and word timelines for tests that need no real speech."""

from __future__ import annotations

import numpy as np

from streamer.hypothesis import SAMPLE_RATE, Word


def tone(seconds: float, rate: int = SAMPLE_RATE, freq: float = 220.0, level: float = 0.1) -> np.ndarray:
    """A sine, float32: loud enough to be audio, not speech."""
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, seed: int = 0, level: float = 0.01) -> np.ndarray:
    """Gaussian noise, float32 at 16 kHz (deterministic per seed)."""
    return np.random.default_rng(seed).normal(0, level, int(seconds * SAMPLE_RATE)).astype(np.float32)


def s16(audio: np.ndarray) -> bytes:
    """float32 in [-1, 1] as pcm_s16le bytes."""
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def pcm16(seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    """A tone as interleaved pcm_s16le bytes (identical channels)."""
    mono = tone(seconds, rate)
    return s16(np.repeat(mono[:, None], channels, axis=1).reshape(-1))


def timeline(count: int, start: float = 0.1, step: float = 0.6, prefix: str = "w",
             length: float = 0.3) -> list[Word]:
    """``count`` words, one every ``step`` seconds from ``start``: what a scripted engine 'hears'."""
    return [Word(f" {prefix}{i}", round(start + i * step, 3), round(start + i * step + length, 3))
            for i in range(count)]
