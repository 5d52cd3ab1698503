"""``streamer bench engine``: how long one full-window re-decode takes, and how accurate it is.

The streaming core re-decodes its buffer every update, so the cost that matters is one
30 s window producing a fixed number of tokens (48 here), split into encoder and decoder.
Runs several times and prints medians/p95; optionally measures faster-whisper (CTranslate2,
int8, the same weights) on the same window in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from streamer.audio import load_audio
from streamer.bench.data import manifest, require_data_dir
from streamer.bench.metrics import wer
from streamer.hypothesis import DecodeRequest


def corpus_wer(engine, folder: str, language: str | None = "en") -> tuple[float, list[str]]:
    """Greedy decode every clip of a shared-data folder; corpus WER against its transcripts."""
    clips = [c for c in manifest(folder) if c.seconds <= 30]
    texts = [engine.decode(DecodeRequest(load_audio(c.path), language=language)).text for c in clips]
    return wer([c.transcript for c in clips], texts), texts


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _window(seconds: float) -> np.ndarray:
    audio = load_audio(require_data_dir() / "longform" / "ljspeech_LJ001-0001_to_0032.wav")
    return audio[: int(seconds * 16000)]


def time_streamer(model: str, quantize: str, window: np.ndarray, tokens: int, runs: int, threads: int) -> dict:
    from streamer.engine.loader import load_engine

    compiled = quantize == "compiled"
    engine = load_engine(model=model, quantize="none" if compiled else quantize, max_new_tokens=tokens,
                         threads=threads)
    if compiled:  # the CUDA path's static cache + inductor step, tried on the CPU (no CUDA graphs here)
        from streamer.engine.gpu import CompiledDecoder

        engine.compiled = CompiledDecoder(engine.decoder, engine.tokens, [1], engine.device, engine.dtype,
                                          backend="inductor", mode=None)
    request = DecodeRequest(window, language="en")
    engine.decode(request)  # warm
    totals, encs, decs, counts = [], [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        hyp = engine.decode(request)
        totals.append(time.perf_counter() - started)
        timing = engine.last_timing
        encs.append(timing["encode"])
        decs.append(timing["decode"] + timing["align"])
        counts.append(timing["tokens"])
    return {"impl": f"streamer {quantize}", "model": model, "median_s": statistics.median(totals),
            "p95_s": _percentile(totals, 95), "encoder_s": statistics.median(encs),
            "decoder_s": statistics.median(decs), "tokens": statistics.median(counts), "text": hyp.text[:80]}


def _faster_whisper_folder(model: str, into: Path) -> Path:
    """faster-whisper reads the embedded CTranslate2 files directly (base's two parts joined)."""
    from streamer.engine.models import EMBEDDED, _package_dir, _verified_parts

    spec = EMBEDDED[model]
    source = _package_dir(spec.packages[0], spec) / spec.data_dir
    folder = into / model
    folder.mkdir()
    with open(folder / "model.bin", "wb") as out:
        for part in _verified_parts(spec):
            out.write(part.read_bytes())
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def _calibrate_length(fw, encoded, prompt: list[int], eot: int, tokens: int) -> int:
    """The ``max_length`` at which CTranslate2 generates exactly ``tokens`` tokens here.

    Its Whisper ``max_length`` does not count generated tokens one for one (49 gave 24 in a
    test), so find the value instead of assuming it.
    """
    for max_length in range(tokens, 4 * tokens + len(prompt)):
        result = fw.model.generate(encoded, [prompt], beam_size=1, max_length=max_length,
                                   suppress_tokens=[-1, eot], suppress_blank=True)
        if len(result[0].sequences_ids[0]) >= tokens:
            return max_length
    raise RuntimeError(f"faster-whisper never produced {tokens} tokens")


def time_faster_whisper(model: str, window: np.ndarray, tokens: int, runs: int, threads: int) -> list[dict]:
    """faster-whisper's CTranslate2 int8 on the same window: forced ``tokens`` tokens (end-of-text
    suppressed), timed without and with its cross-attention word alignment (streaming needs word times)."""
    try:
        import ctranslate2
        from faster_whisper import WhisperModel
    except ImportError:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        fw = WhisperModel(str(_faster_whisper_folder(model, Path(tmp))), device="cpu", compute_type="int8",
                          cpu_threads=threads)
        tok = fw.hf_tokenizer
        eot = tok.token_to_id("<|endoftext|>")
        prompt = [tok.token_to_id("<|startoftranscript|>")]
        if fw.model.is_multilingual:
            prompt += [tok.token_to_id("<|en|>"), tok.token_to_id("<|transcribe|>")]
        mel = np.ascontiguousarray(np.expand_dims(fw.feature_extractor(window)[:, :3000], 0))
        encoded = fw.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=False)
        max_length = _calibrate_length(fw, encoded, prompt, eot, tokens)
        plain, aligned, encs = [], [], []
        for i in range(runs + 1):
            started = time.perf_counter()
            encoded = fw.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=False)
            after_encode = time.perf_counter()
            result = fw.model.generate(encoded, [prompt], beam_size=1, max_length=max_length,
                                       suppress_tokens=[-1, eot], suppress_blank=True, return_scores=True)
            generated = time.perf_counter()
            text_tokens = [t for t in result[0].sequences_ids[0] if t < eot]
            fw.model.align(encoded, prompt, [text_tokens], len(window) // 160, median_filter_width=7)
            done = time.perf_counter()
            if i:  # the first run warms up
                encs.append(after_encode - started)
                plain.append(generated - started)
                aligned.append(done - started)
        count = len(result[0].sequences_ids[0])
        text = tok.decode(text_tokens)
    rows = []
    for name, totals in (("faster-whisper int8", plain), ("faster-whisper +words", aligned)):
        rows.append({"impl": name, "model": model, "median_s": statistics.median(totals),
                     "p95_s": _percentile(totals, 95), "encoder_s": statistics.median(encs),
                     "decoder_s": statistics.median(totals) - statistics.median(encs), "tokens": count,
                     "text": text[:80]})
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="base,tiny.en", help="comma-separated embedded models")
    parser.add_argument("--quantize", default="int8,none",
                        help="CPU variants to time: int8, none (fp32), compiled (fp32 + static cache + inductor)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of speech in the window")
    parser.add_argument("--tokens", type=int, default=48, help="tokens each decode produces")
    parser.add_argument("--threads", type=int, default=0, help="torch / CTranslate2 threads (0 = all cores)")
    parser.add_argument("--no-baseline", action="store_true", help="skip faster-whisper")
    parser.add_argument("--json", type=Path, help="write results here")


def run(args: argparse.Namespace) -> int:
    import torch

    threads = args.threads or torch.get_num_threads()
    window = _window(args.window)
    rows = []
    for model in args.models.split(","):
        for quantize in args.quantize.split(","):
            rows.append(time_streamer(model, quantize, window, args.tokens, args.runs, threads))
        if not args.no_baseline:
            rows.extend(time_faster_whisper(model, window, args.tokens, args.runs, threads))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# streamer bench engine: {args.window:.0f} s window, {args.tokens} tokens, {args.runs} runs, "
          f"{threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'model':8} {'implementation':22} {'median s':>9} {'p95 s':>7} {'encoder':>8} {'decoder':>8} "
          f"{'tokens':>6} {'vs fw+words':>11}")
    for row in rows:
        base = next((r for r in rows if r["model"] == row["model"] and r["impl"] == "faster-whisper +words"), None)
        ratio = f"{row['median_s'] / base['median_s']:.2f}x" if base else "-"
        print(f"{row['model']:8} {row['impl']:22} {row['median_s']:9.3f} {row['p95_s']:7.3f} "
              f"{row['encoder_s']:8.3f} {row['decoder_s']:8.3f} {row['tokens']:6.0f} {ratio:>11}")
    print(f"peak RSS {peak_mb:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peak_rss_mb": peak_mb, "threads": threads}, indent=1))
    return 0
