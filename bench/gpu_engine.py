#!/usr/bin/env python3
"""GPU engine benchmark for a lent H100/H200, in one call of under 10 minutes.

Builds a Whisper large-v3-shaped model with random weights from its config (no download:
d_model 1280, 32+32 layers, 20 heads, FFN 5120, 128 mel bins, vocabulary 51866) and times
48-token decodes of a 30 s window at batch 1, 8, 32 and 64. <|endoftext|>'s embedding (tied to
its logit) is zeroed, so random weights never end a decode early and every row yields 48 tokens.

  eager            streamer's KV-cache loop without compilation (attention over the filled slots)
  eager+draft      the same, verifying a draft (issue 10): the previous update's first 40 tokens,
                   i.e. an update that agrees with the last one on 40 tokens and adds 8
  compiled         static KV cache + torch.compile(mode="reduce-overhead") step (CUDA graphs)
  compiled+draft   the drafted loop on captured graphs, blocks padded to fixed widths
  eager beam 5     beam search's cost per update against greedy (issue 9), at batch 1 and 8

For each path: ms per update (one window), ms per batch, ms per token, encoder ms, peak memory;
for the drafted paths, the fraction of rows whose tokens differ from plain greedy's (target 0)
and decoder passes per update. After each batch size's warm-up nothing may recompile.
Results are written to JSON after every stage, so a run cut short keeps what it measured.

It also estimates the daemon's capacity with large-v3: random weights produce no real text, so
sentence latency cannot be measured as `streamer bench load` does on the CPU. For each batch
size N the scheduler would run N streams with one batched decode per round: a round takes
max(min_chunk, batch time) (configs/gpu.toml), and a word is committed after two agreeing
hypotheses, so latency ~ 2 rounds + one batch time (labelled an estimate).

    python bench/gpu_engine.py --out gpu_engine.json          # on the GPU machine
    python bench/gpu_engine.py --smoke                        # tiny shapes on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from streamer.engine.beam import beam_decode  # noqa: E402
from streamer.engine.decoding import RowSpec, greedy_decode  # noqa: E402
from streamer.engine.drafts import drafted_decode  # noqa: E402
from streamer.engine.gpu import CompiledDecoder, compile_count  # noqa: E402
from streamer.engine.kv_decoder import KVDecoder  # noqa: E402

LARGE_V3 = dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                vocab_size=51866, max_source_positions=1500, max_target_positions=448)
SMOKE = dict(LARGE_V3, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
TOKENS = SimpleNamespace(eot=50257, sot=50258, no_speech=50363)
PREFIX = [50258, 50259, 50360]  # <|startoftranscript|><|en|><|transcribe|> in large-v3's numbering
AGREED = 40  # draft tokens that the update repeats (of 48)


def build_model(shape: dict, device: torch.device, dtype: torch.dtype):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(**shape, attn_implementation="sdpa")
    with torch.device(device):
        model = WhisperForConditionalGeneration(config)
    with torch.no_grad():  # <|endoftext|> gets logit 0, below the random maximum: no early end
        model.model.decoder.embed_tokens.weight[TOKENS.eot].zero_()
        model.proj_out.weight[TOKENS.eot].zero_()
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Bench:
    """Times one decode function over a batch of random 30 s windows (first run warms caches)."""

    def __init__(self, model, device: torch.device, dtype: torch.dtype, tokens: int, runs: int):
        self.model, self.device, self.dtype, self.tokens, self.runs = model, device, dtype, tokens, runs
        self.decoder = KVDecoder(model)
        torch.manual_seed(0)
        self.mels = torch.randn(64 if device.type == "cuda" else 2, model.config.num_mel_bins, 3000,
                                device=device, dtype=dtype)

    def encode(self, batch: int) -> torch.Tensor:
        mels = self.mels[torch.arange(batch) % len(self.mels)]
        return self.model.model.encoder(mels).last_hidden_state

    @torch.inference_mode()
    def time(self, name: str, batch: int, decode) -> tuple[dict, list]:
        """``decode(encoder_out, rows) -> (results, stats)``; returns the row and the last results."""
        rows = [RowSpec(PREFIX, 0, 1500)] * batch
        timings, enc_times, passes = [], [], []
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(self.runs + 1):
            sync(self.device)
            start = time.perf_counter()
            enc = self.encode(batch)
            sync(self.device)
            encoded = time.perf_counter()
            out, stats = decode(enc, rows)
            sync(self.device)
            if i:
                timings.append(time.perf_counter() - start)
                enc_times.append(encoded - start)
                passes.append(stats.get("passes", self.tokens))
        assert all(len(r.tokens) == self.tokens for r in out), f"{name}: a row did not decode {self.tokens} tokens"
        median, encoder = statistics.median(timings), statistics.median(enc_times)
        row = {"path": name, "batch": batch, "ms_per_window": 1000 * median / batch, "ms_per_batch": 1000 * median,
               "encoder_ms": 1000 * encoder, "decoder_ms": 1000 * (median - encoder),
               "ms_per_token": 1000 * (median - encoder) / self.tokens, "passes": statistics.median(passes),
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else 0.0}
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        return row, out


def differing(out: list, reference: list) -> float:
    """Fraction of rows whose tokens differ from the plain decode's."""
    return sum(a.tokens != b.tokens for a, b in zip(out, reference)) / len(reference)


def eager_stages(bench: Bench, batch: int, beam_batches: list[int], results: list[dict]) -> None:
    decoder, n = bench.decoder, bench.tokens
    row, plain = bench.time("eager", batch, lambda e, r: (greedy_decode(decoder, e, r, TOKENS, None, n), {}))
    results.append(row)
    drafts = [tuple(p.tokens[:AGREED]) for p in plain]
    row, out = bench.time("eager+draft", batch,
                          lambda e, r: drafted_decode(decoder, e, r, TOKENS, None, n, drafts))
    results.append({**row, "rows_differing": differing(out, plain)})
    if batch in beam_batches:
        row, _ = bench.time("eager beam 5", batch, lambda e, r: (beam_decode(decoder, e, r, TOKENS, None, n, 5), {}))
        results.append(row)


def compiled_stages(bench: Bench, compiled: CompiledDecoder, batch: int, results: list[dict]) -> int:
    """Warm this batch size's graphs, time plain and drafted decodes on them; returns recompiles."""
    n = bench.tokens
    warm = compiled.warmup(bench.model.config.d_model, [PREFIX], bench.device, bench.dtype, sizes=[batch])
    graphs = compile_count()
    print(f"warm-up of batch {batch}: {warm:.0f} s, {graphs} graphs so far", flush=True)
    row, plain = bench.time("compiled", batch, lambda e, r: compiled.decode(e, r, None, n))
    results.append({**row, "warmup_s": warm})
    drafts = [tuple(p.tokens[:AGREED]) for p in plain]
    row, out = bench.time("compiled+draft", batch, lambda e, r: compiled.decode(e, r, None, n, drafts=drafts))
    full = [tuple(p.tokens) for p in plain]
    _, same = bench.time("compiled+full draft", batch, lambda e, r: compiled.decode(e, r, None, n, drafts=full))
    results.append({**row, "rows_differing": differing(out, plain),
                    "rows_differing_full_draft": differing(same, plain)})
    return compile_count() - graphs


def capacity_estimate(compiled: list[dict], target_s: float = 3.0) -> dict:
    """Streams per GPU at real time with the GPU profile's update interval (see the docstring)."""
    interval = tomllib.loads((ROOT / "configs" / "gpu.toml").read_text())["stream"]["min_chunk"]
    rows = []
    print(f"\ndaemon capacity estimate (large-v3, min_chunk {interval} s; latency ~ 2 rounds + 1 batch):")
    for r in compiled:
        batch_s = r["ms_per_batch"] / 1000
        round_s = max(interval, batch_s)
        latency = 2 * round_s + batch_s
        rows.append({"path": r["path"], "streams": r["batch"], "round_s": round(round_s, 3),
                     "latency_estimate_s": round(latency, 3)})
        print(f"  {r['path']:15} {r['batch']:3d} streams: a round every {round_s:.2f} s, latency ~ {latency:.2f} s")
    best = {path: max((row["streams"] for row in rows if row["path"] == path and row["latency_estimate_s"] < target_s),
                      default=0) for path in {row["path"] for row in rows}}
    print(f"largest measured N with estimated latency < {target_s:.0f} s: {best} (estimate, random weights)")
    return {"min_chunk": interval, "rows": rows, "largest_streams_under_target": best}


def print_table(results: list[dict]) -> None:
    print(f"\n{'path':20} {'batch':>5} {'ms/update':>10} {'ms/batch':>9} {'encoder ms':>10} {'decoder ms':>10} "
          f"{'ms/token':>9} {'passes':>6} {'differ':>6} {'peak MiB':>9}")
    for r in results:
        differ = f"{r['rows_differing']:.2f}" if "rows_differing" in r else "-"
        print(f"{r['path']:20} {r['batch']:5d} {r['ms_per_window']:10.1f} {r['ms_per_batch']:9.1f} "
              f"{r['encoder_ms']:10.1f} {r['decoder_ms']:10.1f} {r['ms_per_token']:9.2f} {r['passes']:6.0f} "
              f"{differ:>6} {r['peak_gpu_mib']:9.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--beam-batches", default="1,8")
    parser.add_argument("--widths", default="49", help="draft block widths compiled besides 1")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--skip-eager", action="store_true", help="only the compiled stages (a second call)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, compile traced with backend=eager")
    parser.add_argument("--out", type=Path, default=Path("gpu_engine.json"))
    args = parser.parse_args()

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else getattr(torch, args.dtype)
    batches = [int(b) for b in args.batches.split(",")]
    beam_batches = [int(b) for b in args.beam_batches.split(",") if b]
    if args.smoke:
        batches, beam_batches, args.runs, args.tokens = [1, 2], [1], 1, 48
    started = time.perf_counter()
    model = build_model(SMOKE if args.smoke else LARGE_V3, device, dtype)
    bench = Bench(model, device, dtype, args.tokens, args.runs)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report = {"device": name, "torch": torch.__version__, "dtype": str(dtype), "eager": [], "compiled": [],
              "recompiles": 0, "agreed_draft_tokens": AGREED, "tokens": args.tokens}
    print(f"# {name}, torch {torch.__version__}, {dtype}, model built in {time.perf_counter() - started:.0f} s",
          flush=True)

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=1))

    if not args.skip_eager:
        for batch in batches:
            eager_stages(bench, batch, beam_batches, report["eager"])
            save()
        torch.cuda.empty_cache() if device.type == "cuda" else None

    widths = tuple(int(w) for w in args.widths.split(",") if w)
    compiled = CompiledDecoder(bench.decoder, TOKENS, batches, device, dtype,
                               backend="eager" if args.smoke else "inductor", draft_widths=widths)
    for batch in batches:
        report["recompiles"] += compiled_stages(bench, compiled, batch, report["compiled"])
        save()

    print_table(report["eager"] + report["compiled"])
    plain = [r for r in report["compiled"] if r["path"] == "compiled"]
    e1 = next((r for r in report["eager"] if r["path"] == "eager" and r["batch"] == plain[0]["batch"]), None)
    print(f"\nbatch-{plain[0]['batch']} full-window re-decode (compiled): {plain[0]['ms_per_batch']:.1f} ms "
          "(target <= 100 ms on H100)")
    if e1:
        report["speedup_b1"] = e1["ms_per_batch"] / plain[0]["ms_per_batch"]
        print(f"compiled vs eager at batch {plain[0]['batch']}: {report['speedup_b1']:.2f}x (target >= 3x)")
    print(f"batch {plain[-1]['batch']} vs batch {plain[0]['batch']}: "
          f"{plain[-1]['ms_per_batch'] / plain[0]['ms_per_batch']:.2f}x")
    print(f"recompiles after warm-up: {report['recompiles']} (target 0)")
    report["capacity"] = capacity_estimate(report["compiled"])
    save()
    return 0 if report["recompiles"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
