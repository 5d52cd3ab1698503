"""The CUDA path: static KV cache + ``torch.compile(mode="reduce-overhead")`` decoder step.

One set of decoder buffers is allocated per warmed batch size; the step function for each
is compiled with static shapes so inductor captures a CUDA graph once and replays it for
every token. Requests are padded up to the nearest warmed batch size, and the warm-up runs
every (batch size, prompt-length) shape the daemon will see, so serving never recompiles.
Draft verification (:mod:`streamer.engine.drafts`) runs blocks of a few fixed widths: one
graph per (batch size, width), warmed up the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial

import torch

from streamer.engine.decoding import DecodeResult, RowSpec, TimestampRules, greedy_decode
from streamer.engine.drafts import MAX_GUESS, BlockRunner, drafted_decode
from streamer.engine.kv_decoder import DecoderState, KVDecoder

log = logging.getLogger(__name__)

ENCODER_FRAMES = 1500
DRAFT_WIDTHS = (8, MAX_GUESS + 1)  # serving's block widths with drafts on (plus 1, the plain step)


def compile_count() -> int:
    """How many graphs dynamo has compiled so far in this process (to prove none happen while serving)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _graph_step(compiled):
    """A compiled step that starts a new CUDA-graph generation at each call.

    Every output is consumed (turned into logits) before the next call, so each step may
    reuse the last one's memory; without the mark, cudagraph trees would record a new graph
    for every new order of (batch size, width) calls that the drafted loop makes.
    """

    def step(*args):
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args)

    return step


class _CompiledBlocks(BlockRunner):
    """The drafted loop's blocks on one batch size's captured graphs (widths padded up)."""

    def __init__(self, decoder: KVDecoder, step, widths: tuple[int, ...]):
        super().__init__(decoder)
        self.step, self.widths = step, widths

    def __call__(self, block: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, state,
                 end: int) -> torch.Tensor:
        return self.step(block, positions, slots)  # static shapes: attends over the whole cache


class CompiledDecoder:
    def __init__(self, decoder: KVDecoder, tokens, batch_sizes: list[int], device: torch.device,
                 dtype: torch.dtype, backend: str = "inductor", mode: str | None = "reduce-overhead",
                 draft_widths: tuple[int, ...] = ()):
        self.decoder, self.tokens = decoder, tokens
        self.batch_sizes = sorted(set(batch_sizes))
        self.draft_widths = tuple(sorted({1, *(min(w, MAX_GUESS + 1) for w in draft_widths)})) if draft_widths else ()
        # one compiled entry per (batch size, width) shares the step's code object: make room for all of them
        limit = max(8, 2 * len(self.batch_sizes) * max(1, len(self.draft_widths)))
        for name in ("cache_size_limit", "recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
        self.states: dict[int, DecoderState] = {}
        self.steps = {}
        for size in self.batch_sizes:
            state = decoder.allocate(size, ENCODER_FRAMES, device, dtype)
            for tensor in [state.self_k, state.self_v, state.valid, *state.cross_k, *state.cross_v]:
                torch._dynamo.mark_static_address(tensor)
            self.states[size] = state
            step = partial(self._step, state=state)
            kwargs = {"mode": mode} if backend == "inductor" and mode else {}
            self.steps[size] = _graph_step(torch.compile(step, backend=backend, fullgraph=True, dynamic=False,
                                                         **kwargs))

    def _step(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
              state: DecoderState) -> torch.Tensor:
        return self.decoder(tokens, positions, slots, state, attend_len=None)

    def decode(self, encoder_out: torch.Tensor, rows: list[RowSpec], rules: TimestampRules | None,
               max_new_tokens: int, forced_length: bool = False,
               drafts: list[tuple[int, ...]] | None = None) -> tuple[list[DecodeResult], dict[str, int]]:
        """Greedy decode, padded up to warmed batch sizes; with ``drafts`` (and warmed draft widths)
        verified in blocks. Returns the results and the drafted loop's counts (empty when plain)."""
        results: list[DecodeResult] = []
        totals: dict[str, int] = {}
        largest = self.batch_sizes[-1]
        drafts = drafts if drafts and any(drafts) and self.draft_widths and not forced_length else None
        for start in range(0, len(rows), largest):
            chunk_rows = rows[start:start + largest]
            chunk_enc = encoder_out[start:start + largest]
            size = next(b for b in self.batch_sizes if b >= len(chunk_rows))
            pad = size - len(chunk_rows)
            if pad:  # repeat the first row: its results are dropped below
                chunk_enc = torch.cat([chunk_enc, chunk_enc[:1].expand(pad, *chunk_enc.shape[1:])])
                chunk_rows = chunk_rows + [chunk_rows[0]] * pad
            if drafts is None:
                out = greedy_decode(self.decoder, chunk_enc, chunk_rows, self.tokens, rules, max_new_tokens,
                                    state=self.states[size], step_fn=self.steps[size], forced_length=forced_length)
            else:
                chunk_drafts = list(drafts[start:start + largest])
                chunk_drafts += chunk_drafts[:1] * pad  # a padding row repeats the first row, draft included
                runner = _CompiledBlocks(self.decoder, self.steps[size], self.draft_widths)
                out, stats = drafted_decode(self.decoder, chunk_enc, chunk_rows, self.tokens, rules, max_new_tokens,
                                            chunk_drafts, state=self.states[size], runner=runner)
                totals = {k: totals.get(k, 0) + v for k, v in stats.items()}
            results.extend(out[:size - pad])
        return results, totals

    @torch.inference_mode()  # the same grad mode as serving, or dynamo's guards fail later
    def warmup(self, d_model: int, prefixes: list[list[int]], device: torch.device, dtype: torch.dtype,
               steps: int = 4, sizes: list[int] | None = None) -> float:
        """Run every batch size (or those of ``sizes``) with every prefix length and draft width
        (CUDA graphs are recorded on reuse)."""
        started = time.perf_counter()
        for size in sizes or self.batch_sizes:
            encoder_out = torch.zeros(size, ENCODER_FRAMES, d_model, device=device, dtype=dtype)
            for prefix in prefixes:
                rows = [RowSpec(prefix, 0, 1500)] * size
                for _ in range(2):
                    self.decode(encoder_out, rows, None, steps, forced_length=True)
            self._warm_blocks(size, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def _warm_blocks(self, size: int, device: torch.device) -> None:
        """Record each draft width's graph for this batch size (the cache is reset by the next decode)."""
        for width in self.draft_widths[1:]:
            block = torch.full((size, width), self.tokens.eot, dtype=torch.long, device=device)
            positions = torch.arange(width, device=device)[None, :].repeat(size, 1)
            slots = torch.arange(width, device=device)
            for _ in range(3):
                self.steps[size](block, positions, slots)


@dataclass(frozen=True)
class CompileOptions:
    """How :class:`~streamer.engine.whisper.WhisperEngine` builds its static-cache decoder.

    CUDA serving uses the defaults (inductor + CUDA graphs for the configured batch sizes); the
    CPU test traces with dynamo's ``eager`` backend and the CPU bench runs inductor without graphs.
    """

    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    draft_widths: tuple[int, ...] = ()  # block widths for draft verification (none: plain greedy only)
    backend: str = "inductor"
    mode: str | None = "reduce-overhead"
    warmup_steps: int = 4


def build_compiled(decoder: KVDecoder, tokens, d_model: int, device: torch.device, dtype: torch.dtype,
                   options: CompileOptions) -> CompiledDecoder:
    """A compiled decoder, warmed up for every serving shape (a plain and a prompted prefix)."""
    compiled = CompiledDecoder(decoder, tokens, list(options.batch_sizes), device, dtype,
                               backend=options.backend, mode=options.mode, draft_widths=options.draft_widths)
    sot = tokens.sot_sequence("en" if tokens.multilingual else None, "transcribe")
    prefixes = [sot, [tokens.sot_prev, *[220] * 20, *sot]]
    before = compile_count()
    seconds = compiled.warmup(d_model, prefixes, device, dtype, steps=options.warmup_steps)
    log.info("compiled decoder (%s) for batch sizes %s in %.1f s (%d graphs)", options.backend,
             compiled.batch_sizes, seconds, compile_count() - before)
    return compiled
