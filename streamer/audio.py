"""Audio in: files, raw PCM frames, and streaming resampling to Whisper's 16 kHz mono float32.

Everything downstream (VAD, stream core, engine) assumes 16 kHz mono float32 in [-1, 1];
this module is the only place that knows about other rates, channel counts and encodings.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile
import soxr

from streamer.hypothesis import SAMPLE_RATE
from streamer.protocol import ENCODINGS

log = logging.getLogger(__name__)



class AudioError(Exception):
    """Audio that cannot be read or converted; the message says what to do."""


def load_audio(path: str | Path) -> np.ndarray:
    """Read any audio file as 16 kHz mono float32.

    soundfile (libsndfile) handles WAV/FLAC/OGG/MP3 without a subprocess; anything else
    (m4a, video containers, ...) goes through an ``ffmpeg`` binary when one is installed.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        log.debug("soundfile could not read %s (%s); trying ffmpeg", path, exc)
        return _load_with_ffmpeg(path, reason=str(exc))
    mono = downmix(data)
    return resample(mono, rate)


def downmix(frames: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(frames, channels)`` array into float32 mono."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    return frames.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample a whole mono signal to 16 kHz (soxr high quality)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == SAMPLE_RATE or samples.size == 0:
        return samples
    return soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


def _load_with_ffmpeg(path: Path, reason: str) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            f"cannot read {path}: {reason}. It is not a format soundfile reads (WAV, FLAC, OGG, MP3); "
            "install ffmpeg to read other formats, or convert the file to WAV"
        )
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"cannot decode {path}: {detail[-1] if detail else 'ffmpeg failed'} (corrupt file?)")
    if not proc.stdout:
        raise AudioError(f"{path} contains no audio")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def pcm_to_float32(data: bytes, encoding: str) -> np.ndarray:
    """Raw little-endian PCM bytes (whole samples only) to float32 in [-1, 1]; strict one-shot form.

    Network frames can cut a sample in two: :class:`PcmDecoder` is the streaming form.
    """
    if encoding not in ENCODINGS:
        raise AudioError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    width = ENCODINGS[encoding][1]
    if len(data) % width:
        raise AudioError(f"{encoding} data must be a multiple of {width} bytes, got {len(data)}")
    out = _to_float32(np.frombuffer(data, dtype=ENCODINGS[encoding][0]), encoding)
    if not np.all(np.isfinite(out)):
        raise AudioError("pcm_f32le data contains NaN or infinite samples")
    return out


def _to_float32(raw: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "pcm_s16le":
        return raw.astype(np.float32) / 32768.0
    return raw.astype(np.float32)


class PcmDecoder:
    """Raw PCM frames of any size to interleaved float32 in [-1, 1], for a live stream.

    A sample (or interleaved frame) split across two network frames waits for the rest. Float
    input that is NaN or infinite becomes silence instead of poisoning the model; the caller
    learns of it through :attr:`nonfinite` and tells its client once.
    """

    def __init__(self, encoding: str, channels: int = 1) -> None:
        if encoding not in ENCODINGS:
            raise AudioError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        self.frame_bytes = ENCODINGS[encoding][1] * channels
        self.nonfinite = 0  # samples replaced by silence so far
        self._remainder = b""

    def decode(self, data: bytes) -> np.ndarray:
        """The whole frames in what has arrived so far (interleaved float32)."""
        data = self._remainder + data if self._remainder else data
        cut = len(data) - len(data) % self.frame_bytes
        self._remainder = data[cut:]
        samples = _to_float32(np.frombuffer(data[:cut], dtype=ENCODINGS[self.encoding][0]), self.encoding)
        if self.encoding == "pcm_f32le":
            finite = np.isfinite(samples)
            if not finite.all():
                self.nonfinite += int(samples.size - finite.sum())
                samples = np.where(finite, samples, np.float32(0.0))
            np.clip(samples, -1.0, 1.0, out=samples)
        return samples

    def flush(self) -> int:
        """End of stream: drop (and return the size of) a trailing partial frame."""
        dropped, self._remainder = len(self._remainder), b""
        return dropped


class StreamResampler:
    """Incremental ``in_rate``/``channels`` interleaved float32 -> 16 kHz mono float32.

    Streaming (soxr keeps filter state between chunks) so that chunk boundaries leave no
    clicks or gaps: concatenated outputs equal a one-shot resample up to filter delay.
    """

    def __init__(self, in_rate: int, channels: int = 1) -> None:
        if not 1000 <= in_rate <= 384_000:
            raise AudioError(f"sample rate {in_rate} Hz is out of range")
        if channels < 1:
            raise AudioError(f"channels must be at least 1, got {channels}")
        self.in_rate = int(in_rate)
        self.channels = int(channels)
        self._stream = None if self.in_rate == SAMPLE_RATE else soxr.ResampleStream(
            self.in_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        self._leftover = np.zeros(0, dtype=np.float32)
        self._flushed = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed interleaved samples (any count; partial frames are kept for the next call)."""
        if self._flushed:
            raise AudioError("resampler already flushed")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        mono = self._downmix_interleaved(samples)
        if self._stream is None or mono.size == 0:
            return mono
        return self._stream.resample_chunk(mono).astype(np.float32, copy=False)

    def flush(self) -> np.ndarray:
        """End of stream: return the samples still inside the filter."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True).astype(np.float32, copy=False)

    def _downmix_interleaved(self, samples: np.ndarray) -> np.ndarray:
        if self.channels == 1:
            return samples
        if self._leftover.size:
            samples = np.concatenate([self._leftover, samples])
        whole = samples.size - samples.size % self.channels
        self._leftover = samples[whole:].copy()
        return samples[:whole].reshape(-1, self.channels).mean(axis=1, dtype=np.float32)


class AudioFileReader:
    """A file read as 16 kHz mono float32 in blocks, never whole: an hour-long upload is streamed
    through a session at the speed the engine takes it, in constant memory.

    libsndfile reads WAV/FLAC/OGG/MP3 itself; anything else is piped through ``ffmpeg``. Opening
    reads the first block, so a file that is not audio (or holds none) fails here, with an
    :class:`AudioError`, before an answer has been started. Blocking: call it off the event loop.
    """

    def __init__(self, path: str | Path, block_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self.block_seconds = block_seconds
        self.duration: float | None = None  # seconds, when the container says (libsndfile); None for ffmpeg
        self._sf: soundfile.SoundFile | None = None
        self._ffmpeg: subprocess.Popen | None = None
        self._resampler: StreamResampler | None = None
        self._first: np.ndarray | None = None
        self._done = False
        self._open()

    def _open(self) -> None:
        if not self.path.is_file():
            raise AudioError(f"audio file not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise AudioError("the file is empty")
        try:
            self._sf = soundfile.SoundFile(str(self.path))
            rate, channels = self._sf.samplerate, self._sf.channels
            self.duration = self._sf.frames / rate if self._sf.frames > 0 else None
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
            log.debug("soundfile cannot read %s (%s); trying ffmpeg", self.path, exc)
            self._sf = None
            rate, channels = SAMPLE_RATE, 1
            self._start_ffmpeg(str(exc))
        self._resampler = StreamResampler(rate, channels)
        first = self._next()
        if first.size == 0:
            self.close()
            raise AudioError("the file contains no audio")
        self._first = first

    def _start_ffmpeg(self, reason: str) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise AudioError(f"not a format soundfile reads ({reason}); install ffmpeg for other formats, or "
                             "send WAV, FLAC, OGG or MP3")
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(self.path), "-vn", "-f", "f32le", "-ac", "1",
               "-ar", str(SAMPLE_RATE), "-"]
        self._ffmpeg = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)

    def _next(self) -> np.ndarray:
        """The next block at 16 kHz (empty at the end)."""
        if self._done:
            return np.zeros(0, dtype=np.float32)
        if self._sf is not None:
            frames = max(1, int(self._sf.samplerate * self.block_seconds))
            data = self._sf.read(frames, dtype="float32", always_2d=True)
            if len(data):
                return self._resampler.process(data.reshape(-1))
        elif self._ffmpeg is not None:
            wanted = int(SAMPLE_RATE * self.block_seconds) * 4
            raw = self._ffmpeg.stdout.read(wanted)
            if raw:
                raw = raw[:len(raw) - len(raw) % 4]
                return np.frombuffer(raw, dtype="<f4").astype(np.float32)
            self._finish_ffmpeg()
        self._done = True
        return self._resampler.flush()

    def _finish_ffmpeg(self) -> None:
        process, self._ffmpeg = self._ffmpeg, None
        error = process.stderr.read().decode(errors="replace").replace(f"{self.path}: ", "").strip().splitlines()
        if process.wait() != 0:
            raise AudioError(f"cannot decode the file: {error[-1] if error else 'ffmpeg failed'} "
                             "(not audio, or corrupt?)")

    def read(self) -> np.ndarray:
        """The next block of 16 kHz mono float32; an empty array once the file is done."""
        if self._first is not None:
            block, self._first = self._first, None
            return block
        while not self._done:
            block = self._next()
            if block.size:
                return block
        return np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
            self._sf = None
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
            self._ffmpeg.wait()
            self._ffmpeg.stdout.close()
            self._ffmpeg.stderr.close()
            self._ffmpeg = None

    def __enter__(self) -> "AudioFileReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
