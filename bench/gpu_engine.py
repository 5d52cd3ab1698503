#!/usr/bin/env python3
"""GPU engine benchmark for a lent H100/H200, in one call of under 8 minutes.

Builds a Whisper large-v3-shaped model with random weights from its config (no download:
d_model 1280, 32+32 layers, 20 heads, FFN 5120, 128 mel bins, vocabulary 51866), then times
forced 48-token decodes of a 30 s window at batch 1, 8 and 32:
  eager     - streamer's KV-cache loop without compilation (growing attention length)
  compiled  - static KV cache + torch.compile(mode="reduce-overhead") decoder step (CUDA graphs)
Prints ms per window, ms per token, peak GPU memory, and checks that the compiled path
recompiles nothing after warm-up. Writes JSON next to the table.

It also estimates the daemon's capacity with large-v3 (issue 4's load benchmark): random weights
produce no real text, so sentence latency cannot be measured as `streamer bench load` does on
the CPU. Instead, for each batch size N the scheduler would run N streams with one batched
decode per round: a round takes max(min_chunk, batch time) (configs/gpu.toml), and a word is
committed after two agreeing hypotheses, so latency ~ 2 rounds + one batch time. The largest N
whose estimate stays under 3 s is printed as the large-v3 capacity, labelled as an estimate.

    python bench/gpu_engine.py --out gpu_engine.json          # on the GPU machine
    python bench/gpu_engine.py --smoke                        # tiny shapes on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from streamer.engine.decoding import RowSpec, greedy_decode  # noqa: E402
from streamer.engine.gpu import CompiledDecoder, compile_count  # noqa: E402
from streamer.engine.kv_decoder import KVDecoder  # noqa: E402

LARGE_V3 = dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                vocab_size=51866, max_source_positions=1500, max_target_positions=448)
SMOKE = dict(LARGE_V3, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
TOKENS = SimpleNamespace(eot=50257, sot=50258, no_speech=50363)
PREFIX = [50258, 50259, 50360]  # <|startoftranscript|><|en|><|transcribe|> in large-v3's numbering


def build_model(shape: dict, device: torch.device, dtype: torch.dtype):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(**shape, attn_implementation="sdpa")
    with torch.device(device):
        model = WhisperForConditionalGeneration(config)
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_decode(model, decoder: KVDecoder, compiled: CompiledDecoder | None, batch: int, tokens: int, runs: int,
                device: torch.device, dtype: torch.dtype) -> dict:
    mels = torch.randn(batch, model.config.num_mel_bins, 3000, device=device, dtype=dtype)
    rows = [RowSpec(PREFIX, 0, 1500)] * batch
    timings, enc_times = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(runs + 1):
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            enc = model.model.encoder(mels).last_hidden_state
            sync(device)
            encoded = time.perf_counter()
            if compiled:
                out = compiled.decode(enc, rows, None, tokens, forced_length=True)
            else:
                out = greedy_decode(decoder, enc, rows, TOKENS, None, tokens, forced_length=True)
        sync(device)
        if i:  # the first run warms caches
            timings.append(time.perf_counter() - start)
            enc_times.append(encoded - start)
    assert all(len(r.tokens) == tokens for r in out), "forced decode did not produce the requested tokens"
    median = statistics.median(timings)
    return {"batch": batch, "ms_per_window": 1000 * median / batch, "ms_per_batch": 1000 * median,
            "encoder_ms": 1000 * statistics.median(enc_times),
            "ms_per_token": 1000 * (median - statistics.median(enc_times)) / tokens,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0}


def capacity_estimate(compiled: list[dict], target_s: float = 3.0) -> dict:
    """Streams per GPU at real time with the GPU profile's update interval (see the docstring)."""
    from streamer.config import load_settings

    interval = load_settings("gpu").stream.min_chunk
    rows = []
    print(f"\ndaemon capacity estimate (large-v3, min_chunk {interval} s; latency ~ 2 rounds + 1 batch):")
    for r in compiled:
        batch_s = r["ms_per_batch"] / 1000
        round_s = max(interval, batch_s)
        latency = 2 * round_s + batch_s
        rows.append({"streams": r["batch"], "round_s": round(round_s, 3), "latency_estimate_s": round(latency, 3)})
        print(f"  {r['batch']:3d} streams: a round every {round_s:.2f} s, sentence latency ~ {latency:.2f} s")
    fitting = [row["streams"] for row in rows if row["latency_estimate_s"] < target_s]
    best = max(fitting, default=0)
    print(f"largest measured N with estimated latency < {target_s:.0f} s: {best} (estimate, random weights)")
    return {"min_chunk": interval, "rows": rows, "largest_streams_under_target": best}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, compile traced with backend=eager")
    parser.add_argument("--out", type=Path, default=Path("gpu_engine.json"))
    args = parser.parse_args()

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else getattr(torch, args.dtype)
    batches = [int(b) for b in args.batches.split(",")]
    if args.smoke:
        batches, args.runs, args.tokens = [1, 2], 1, 4
    started = time.perf_counter()
    model = build_model(SMOKE if args.smoke else LARGE_V3, device, dtype)
    decoder = KVDecoder(model)
    print(f"# device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{dtype}, model built in {time.perf_counter() - started:.0f} s", flush=True)

    results = {"eager": [], "compiled": []}
    for batch in batches:
        results["eager"].append(time_decode(model, decoder, None, batch, args.tokens, args.runs, device, dtype))
        print("eager", results["eager"][-1], flush=True)

    backend = "eager" if args.smoke else "inductor"
    compiled = CompiledDecoder(decoder, TOKENS, batches, device, dtype, backend=backend)
    warm = compiled.warmup(model.config.d_model, [PREFIX], device, dtype)
    graphs_after_warmup = compile_count()
    print(f"warm-up {warm:.0f} s, {graphs_after_warmup} graphs", flush=True)
    for batch in batches:
        results["compiled"].append(time_decode(model, decoder, compiled, batch, args.tokens, args.runs, device, dtype))
        print("compiled", results["compiled"][-1], flush=True)
    recompiles = compile_count() - graphs_after_warmup

    print(f"\n{'path':9} {'batch':>5} {'ms/window':>10} {'ms/batch':>9} {'encoder ms':>10} {'ms/token':>9} {'peak MiB':>9}")
    for path, rows in results.items():
        for r in rows:
            print(f"{path:9} {r['batch']:5d} {r['ms_per_window']:10.1f} {r['ms_per_batch']:9.1f} {r['encoder_ms']:10.1f} "
                  f"{r['ms_per_token']:9.2f} {r['peak_gpu_mib']:9.0f}")
    e1, c1 = results["eager"][0], results["compiled"][0]
    speedup = e1["ms_per_batch"] / c1["ms_per_batch"]
    largest = results["compiled"][-1]
    print(f"\nbatch-{c1['batch']} full-window re-decode (compiled): {c1['ms_per_batch']:.1f} ms (target <= 100 ms on H100)")
    print(f"compiled vs eager at batch {c1['batch']}: {speedup:.2f}x (target >= 3x)")
    print(f"batch {largest['batch']} vs batch {c1['batch']}: {largest['ms_per_batch'] / c1['ms_per_batch']:.2f}x "
          "(target <= 8x)")
    print(f"recompiles after warm-up: {recompiles} (target 0)")
    capacity = capacity_estimate(results["compiled"])
    args.out.write_text(json.dumps({"results": results, "speedup_b1": speedup, "recompiles": recompiles,
                                    "capacity": capacity, "device": str(device), "torch": torch.__version__},
                                   indent=1))
    return 0 if recompiles == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
