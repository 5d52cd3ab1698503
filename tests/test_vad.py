"""silero-vad streaming, and VAD gating of the stream core with the real detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.config import StreamConfig
from streamer.core import StreamProcessor
from streamer.core.probe import FIRST_WAIT, LONGEST_WAIT, PROBE_SECONDS
from streamer.engine.scripted import ScriptedEngine
from streamer.hypothesis import SAMPLE_RATE, DecodeRequest, Hypothesis, Word
from support import feed_and_drain
from streamer.vad import EnergyDetector, ScriptedDetector, SileroDetector, detector_for, load_silero_model

SPEECH = Path(__file__).parent / "audio" / "espeak_two_sentences.wav"
# where the two synthesized sentences are (seconds), measured once with silero-vad
SENTENCES = [(0.5, 3.95), (5.45, 9.05)]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SPEECH)


def whole(x: np.ndarray) -> np.ndarray:
    return x[: x.size // 512 * 512]


def test_silero_matches_the_package_model(speech):
    """Explicit per-stream state gives exactly silero's own streaming output."""
    x = whole(speech)
    mine = SileroDetector().probabilities(x)
    model = load_silero_model()
    model.reset_states()
    with torch.inference_mode():
        theirs = [float(model(torch.from_numpy(x[i:i + 512].copy()), SAMPLE_RATE)) for i in range(0, x.size, 512)]
    model.reset_states()
    np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_streams_keep_separate_state(speech):
    x = whole(speech)
    a, b = SileroDetector(), SileroDetector()
    ref = SileroDetector().probabilities(x)
    noise = np.random.default_rng(0).normal(0, 0.1, x.size).astype(np.float32)
    got = []
    for i in range(0, x.size, 2048):       # interleave two streams on the shared model
        got.append(a.probabilities(x[i:i + 2048]))
        b.probabilities(noise[i:i + 2048])
    np.testing.assert_allclose(np.concatenate(got), ref, atol=1e-5)
    a.reset()
    np.testing.assert_allclose(a.probabilities(x[:4096]), ref[:8], atol=1e-5)


def test_silero_finds_the_sentences(speech):
    probs = SileroDetector().probabilities(whole(speech))
    t = (np.arange(probs.size) + 0.5) * 512 / SAMPLE_RATE
    for start, end in SENTENCES:
        inside = probs[(t > start + 0.3) & (t < end - 0.3)]
        assert np.mean(inside > 0.5) > 0.8
    gap = probs[(t > SENTENCES[0][1] + 0.3) & (t < SENTENCES[1][0] - 0.3)]
    assert gap.max() < 0.5


def test_loading_keeps_torch_threads():
    before = torch.get_num_threads()
    load_silero_model()
    SileroDetector()
    assert torch.get_num_threads() == before


def test_detectors_reject_partial_windows():
    for detector in (SileroDetector(), EnergyDetector(), ScriptedDetector([])):
        with pytest.raises(ValueError, match="512"):
            detector.probabilities(np.zeros(100, dtype=np.float32))


def test_energy_and_scripted_detectors():
    x = np.concatenate([np.zeros(1024), 0.1 * np.ones(1024)]).astype(np.float32)
    np.testing.assert_array_equal(EnergyDetector(-40).probabilities(x), [0, 0, 1, 1])
    det = ScriptedDetector([(0.05, 0.1)])
    np.testing.assert_array_equal(det.probabilities(np.zeros(2048, dtype=np.float32)), [0, 0, 1, 0])


# ---------------------------------------------------------------- gating with the real detector

def counting_engine(words: list[Word] | None = None) -> ScriptedEngine:
    def script(request: DecodeRequest) -> Hypothesis:
        return Hypothesis(tuple(words or ()), "en", -0.2, 0.01, 1.1)
    return ScriptedEngine(script)


@pytest.mark.parametrize("kind", ["silence", "noise-40dB", "noise-20dB", "hum"])
def test_silero_gating_never_decodes_silence_or_noise(kind):
    rng = np.random.default_rng(3)
    n = 10 * SAMPLE_RATE
    audio = {
        "silence": np.zeros(n),
        "noise-40dB": rng.normal(0, 0.01, n),
        "noise-20dB": rng.normal(0, 0.1, n),
        "hum": 0.1 * np.sin(2 * np.pi * 50 * np.arange(n) / SAMPLE_RATE),
    }[kind].astype(np.float32)
    engine = counting_engine()
    proc = StreamProcessor(StreamConfig(), detector_for(StreamConfig()))
    feed_and_drain(proc, engine, audio)
    if kind in ("silence", "noise-40dB"):
        assert engine.calls == [], f"engine called on {kind}"
    else:
        # Loud sound the VAD rejects is probed once after FIRST_WAIT s (the safety net for speech
        # silero misses); the wait then doubles, so 10 s costs one probe of at most PROBE_SECONDS.
        assert len(engine.calls) == 1, f"{len(engine.calls)} decodes on {kind}"
        assert engine.calls[0].audio.size <= PROBE_SECONDS * SAMPLE_RATE + 512
    assert proc.done and proc.committed_text == ""


def probe_budget(seconds: float) -> int:
    """How many probes the safety net may spend on `seconds` of loud non-speech (waits double)."""
    count, wait, at = 0, FIRST_WAIT, FIRST_WAIT
    while at <= seconds:
        count, wait = count + 1, min(2 * wait, LONGEST_WAIT)
        at += wait
    return count


@pytest.mark.data
def test_conditioned_gating_keeps_the_engine_off_the_shared_nonspeech(shared_data):
    """Music, animals, noise, tone, silence (421 s): little reaches the model beyond the probes.

    The high-pass in front of silero lets a little more noise through as 'speech' than before
    (sb_noise1: 0.2 % -> 1.4 % of windows); loud sound the VAD rejects is probed with waits that
    double (4, 8, 16, 32 s). What the model then hears is judged by the guards and the probe's bar,
    and test_vad_recall.py checks with the real model that no word is committed.
    """
    clips = sorted((shared_data / "nonspeech").glob("*.wav"))
    total = decoded = budget = 0.0
    for path in clips:
        engine = counting_engine([Word(" Thank", 0.0, 0.3), Word(" you.", 0.3, 0.6)])
        audio = load_audio(path)
        proc = StreamProcessor(StreamConfig(), detector_for(StreamConfig()))
        feed_and_drain(proc, engine, audio)
        seconds = audio.size / SAMPLE_RATE
        total += seconds
        decoded += sum(c.audio.size for c in engine.calls) / SAMPLE_RATE
        budget += probe_budget(seconds) * PROBE_SECONDS
        if path.stem.startswith("synthetic"):   # loud synthetic sound: only the probes
            assert len(engine.calls) <= probe_budget(seconds), f"{len(engine.calls)} decodes on {path.stem}"
    assert len(clips) == 16 and decoded < 0.05 * total + budget, (decoded, total, budget)


def test_silero_gating_decodes_only_speech(speech):
    """Two synthesized sentences 1.5 s apart: two utterances, windows only around speech."""
    engine = counting_engine()
    cfg = StreamConfig(end_silence=0.5, speech_pad=0.2, min_chunk=1.0)
    proc = StreamProcessor(cfg, detector_for(cfg))
    feed_and_drain(proc, engine, speech)
    assert engine.calls
    for call in engine.calls:
        start, end = call.offset, call.offset + call.audio.size / SAMPLE_RATE
        assert any(start >= a - cfg.speech_pad - 0.1 and end <= b + cfg.end_silence + 0.1 for a, b in SENTENCES), \
            (start, end)
    finals = [c for c in engine.calls if c.audio.size / SAMPLE_RATE > 3.0]
    assert len(finals) >= 2                         # each sentence decoded whole when it ended


def test_real_vad_commits_words_of_each_utterance(speech):
    """A scripted 'perfect recogniser' over the real VAD: every word committed, once."""
    words = [Word(" quick", 0.9, 1.3), Word(" fox", 2.0, 2.4), Word(" streaming", 5.6, 6.2), Word(" quickly", 8.2, 8.9)]

    def script(request: DecodeRequest) -> Hypothesis:
        end = request.offset + request.audio.size / SAMPLE_RATE
        heard = [w.shifted(-request.offset) for w in words if w.start >= request.offset and w.end <= end]
        return Hypothesis(tuple(heard), "en", -0.2, 0.01, 1.1)

    proc = StreamProcessor(StreamConfig(), detector_for(StreamConfig()))
    feed_and_drain(proc, ScriptedEngine(script), speech)
    assert proc.committed_text == "quick fox streaming quickly"


def test_the_daemon_warm_up_builds_the_stream_detector_with_its_conditioner():
    """The first stream's start used to import scipy's filters (for the VAD's high-pass) while
    holding the interpreter lock, stalling the event loop for 0.2 s; the warm-up does it first."""
    import subprocess
    import sys

    code = ("import sys; from streamer.config import StreamConfig; from streamer.vad import warm_up_detector; "
            "assert 'scipy.signal' not in sys.modules; warm_up_detector(StreamConfig(use_vad=False)); "
            "assert 'scipy.signal' not in sys.modules; warm_up_detector(StreamConfig()); "
            "assert 'scipy.signal' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class LateDetector:
    """Scripted cold-start lag: speech from ``spoken`` s, scored from ``fires`` s, and a second opinion
    (after silence) that hears it from ``spoken``."""

    window = 512

    def __init__(self, spoken: float, fires: float, second: bool = True) -> None:
        self.cold, self.spoken = ScriptedDetector([(fires, 60.0)]), spoken
        self.asked = 0
        if not second:
            self.after_silence = None

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        return self.cold.probabilities(samples)

    def after_silence(self, samples: np.ndarray) -> np.ndarray:
        """Asked only about the stream's first windows, which start at 0 s."""
        self.asked += 1
        return ScriptedDetector([(self.spoken, 60.0)]).probabilities(samples)

    def reset(self) -> None:
        pass


def first_window_start(detector, seconds: float = 3.0) -> float:
    engine = counting_engine()
    proc = StreamProcessor(StreamConfig(min_chunk=1.0), detector)
    feed_and_drain(proc, engine, np.full(int(seconds * SAMPLE_RATE), 0.1, dtype=np.float32))
    return engine.calls[0].offset


def test_a_late_onset_in_the_first_windows_takes_the_second_opinion():
    """The cold detector fires at 0.4 s; speech began at 0.0 s: the window starts at the stream's start."""
    late = LateDetector(spoken=0.0, fires=0.4)
    assert first_window_start(late) == 0.0 and late.asked == 1
    alone = LateDetector(spoken=0.0, fires=0.4, second=False)   # a detector without a second opinion
    assert first_window_start(alone) == pytest.approx(0.4 - StreamConfig().speech_pad, abs=0.07)


def test_no_second_opinion_without_an_onset_early_or_when_speech_starts_later():
    quiet = LateDetector(spoken=0.0, fires=59.0)   # never fires in the first windows: nothing asked
    engine = counting_engine()
    feed_and_drain(StreamProcessor(StreamConfig(), quiet), engine, np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert quiet.asked == 0 and not engine.calls
    later = LateDetector(spoken=1.5, fires=1.5)     # speech after the first 0.6 s: gated as ever
    assert first_window_start(later) == pytest.approx(1.5 - StreamConfig().speech_pad, abs=0.07)
    assert later.asked == 0
