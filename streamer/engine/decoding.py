"""Greedy decoding with Whisper's timestamp rules, batched over windows with different prompts.

Rows are left-padded to a common prefix length so one decoder step serves every stream in a
batch; padding slots are masked and each row keeps its own positional indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from streamer.engine.kv_decoder import DecoderState, KVDecoder
from streamer.engine.loops import looping
from streamer.engine.tokenizer import WhisperTokens
from streamer.engine.trace import AttentionTrace, TokenEvidence
from streamer.hypothesis import DecodeAbandoned

TIME_PRECISION = 0.02  # seconds per timestamp token
MAX_INITIAL_TIMESTAMP = 1.0


@dataclass
class DecodeResult:
    tokens: list[int]  # generated tokens, timestamps included, without the final <|endoftext|>
    sum_logprob: float
    no_speech_prob: float
    evidence: TokenEvidence | None = None  # word-timing evidence recorded by the loop (engine.fused_alignment)


@dataclass
class RowSpec:
    """One window's prefix: ``[<|startofprev|> prompt...] sot_sequence [<|notimestamps|>]``."""

    prefix: list[int]
    sot_index: int  # where <|startoftranscript|> sits in the prefix
    max_timestamp_index: int  # no timestamp past the end of the real audio
    stop_ratio: float | None = None  # stop the row once it loops past this compression ratio (engine.loops)
    abandoned: Callable[[], bool] | None = None  # the caller no longer wants this row (DecodeRequest.abandoned)


def stop_if_abandoned(rows: list[RowSpec]) -> None:
    """Raise :class:`DecodeAbandoned` once every row's caller gave it up (checked between steps)."""
    if rows and all(row.abandoned is not None and row.abandoned() for row in rows):
        raise DecodeAbandoned(f"{len(rows)} window(s) abandoned by their caller")


class TimestampRules:
    """Whisper's logit rules: suppressed tokens, paired monotonic timestamps, initial-timestamp cap."""

    def __init__(self, tokens: WhisperTokens, suppress: list[int], begin_suppress: list[int], vocab: int,
                 device: torch.device):
        self.t = tokens
        self.suppress = torch.tensor(sorted({i for i in suppress if i < vocab}), dtype=torch.long, device=device)
        self.begin_suppress = torch.tensor(begin_suppress, dtype=torch.long, device=device)
        self.max_initial = round(MAX_INITIAL_TIMESTAMP / TIME_PRECISION)

    def apply(self, logits: torch.Tensor, generated: list[list[int]], rows: list[RowSpec],
              first: bool | None = None) -> torch.Tensor:
        """Mask ``logits`` [batch, vocab] in place; vectorised over rows (one small host->device copy).

        ``first``: this is every row's first token (default: row 0 has generated nothing; a
        batch whose row 0 ended at once must say False, or the others get the first-token rules).
        """
        ts, device = self.t.timestamp_begin, logits.device
        logits[:, self.suppress] = -math.inf
        logits[:, self.t.no_timestamps] = -math.inf
        # the timestamp rules work on this view (1,501 columns, not the whole vocabulary): a step's rules
        # cost half as much on the CPU (docs/engine.md)
        stamps = logits[:, ts:]
        col = torch.arange(stamps.shape[-1], device=device)[None, :]
        limits = torch.tensor([r.max_timestamp_index for r in rows], device=device)[:, None]
        stamps.masked_fill_(col > limits, -math.inf)  # no timestamp past the real audio
        if (not generated[0]) if first is None else first:  # lockstep: every row starts together
            logits[:, self.begin_suppress] = -math.inf
            logits[:, :ts] = -math.inf  # the first token is a timestamp, at most 1 s in
            logits[:, ts + self.max_initial + 1:] = -math.inf
            return logits
        last, penultimate, latest = [], [], []
        for seq in generated:
            last.append(seq[-1] if seq else -1)
            penultimate.append(seq[-2] if len(seq) > 1 else ts)
            latest.append(next((t for t in reversed(seq) if t >= ts), -1))
        last_t, pen_t, latest_t = (torch.tensor(v, device=device)[:, None] for v in (last, penultimate, latest))
        last_ts, pen_ts = last_t >= ts, pen_t >= ts
        # a segment was just closed -> text or end next; text then a timestamp -> a timestamp or end next
        stamps.masked_fill_(last_ts & pen_ts, -math.inf)
        logits[:, :self.t.eot].masked_fill_(last_ts & ~pen_ts, -math.inf)
        # timestamps never decrease, and each segment has non-zero length
        floor = torch.where(last_ts & ~pen_ts, latest_t, latest_t + 1) - ts
        stamps.masked_fill_((latest_t >= 0) & (col < floor), -math.inf)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        timestamp_mass = torch.logsumexp(logprobs[:, ts:], dim=-1)
        best_text = logprobs[:, :ts].max(dim=-1).values
        logits[:, :ts].masked_fill_((timestamp_mass > best_text)[:, None], -math.inf)
        return logits


@dataclass
class Prefilled:
    """The decoder state after the prefix pass: what the greedy loop (plain or drafted) starts from."""

    state: DecoderState
    width: int  # prefix slots used (rows are left-padded to it)
    position: torch.Tensor  # [batch, 1] positional index of each row's last prefix token
    logits: torch.Tensor  # [batch, vocab] raw logits for the first generated token
    no_speech: list[float]


def prefill(decoder: KVDecoder, encoder_out: torch.Tensor, rows: list[RowSpec], tokens: WhisperTokens,
            state: DecoderState | None = None, trace: AttentionTrace | None = None) -> Prefilled:
    """One pass over every row's prefix (left-padded), filling the KV cache; the no-speech probability.

    With a ``trace``, the query of each row's last prefix token (it predicts the first generated token)
    is recorded."""
    device = encoder_out.device
    batch = len(rows)
    width = max(len(r.prefix) for r in rows)
    static = state is not None
    state = decoder.start(encoder_out, into=state)
    prefix = torch.full((batch, width), tokens.eot, dtype=torch.long, device=device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=device)
    for b, row in enumerate(rows):
        prefix[b, width - len(row.prefix):] = torch.tensor(row.prefix, device=device)
        valid[b, width - len(row.prefix):] = True
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    state.valid[:, :width] = valid
    slots = torch.arange(width, device=device)
    queries = {} if trace else None
    hidden = decoder(prefix, positions, slots, state, attend_len=None if static else width, cross_queries=queries)
    if trace:
        trace.record(queries)
    sot_hidden = torch.stack([hidden[b, width - len(r.prefix) + r.sot_index] for b, r in enumerate(rows)])
    no_speech = torch.softmax(decoder.logits(sot_hidden).float(), dim=-1)[:, tokens.no_speech].tolist()
    # fixed strides: compiled steps guard on them
    return Prefilled(state, width, positions[:, -1:].contiguous(), decoder.logits(hidden[:, -1]), no_speech)


def greedy_decode(decoder: KVDecoder, encoder_out: torch.Tensor, rows: list[RowSpec], tokens: WhisperTokens,
                  rules: TimestampRules | None, max_new_tokens: int, state: DecoderState | None = None,
                  step_fn=None, forced_length: bool = False,
                  trace: AttentionTrace | None = None) -> list[DecodeResult]:
    """Decode every row to <|endoftext|> (or the token limit).

    With a preallocated ``state`` (static shapes) and a compiled ``step_fn(tokens, positions,
    slots)`` this is the CUDA-graph path; otherwise the cache attends only over filled slots.
    ``forced_length`` ignores <|endoftext|> (benchmarks decode exactly ``max_new_tokens``).
    With a ``trace`` (eager path only) each result carries the loop's own word-timing evidence.
    """
    device = encoder_out.device
    batch = len(rows)
    static = state is not None
    trace = None if step_fn else trace
    pre = prefill(decoder, encoder_out, rows, tokens, state, trace)
    state, width, logits, position = pre.state, pre.width, pre.logits, pre.position

    limit = min(max_new_tokens, decoder.max_len - width)
    generated: list[list[int]] = [[] for _ in rows]
    sum_logprob = [0.0] * batch
    finished = [False] * batch
    step = step_fn or (lambda t, p, s: _traced_step(decoder, t, p, s, state, static, trace))
    for i in range(limit):
        stop_if_abandoned(rows)
        raw = logits.float()
        masked = raw.clone() if trace else raw  # the rules mask in place; the trace wants the raw logits
        logits = rules.apply(masked, generated, rows, first=i == 0) if rules else masked
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = logits.argmax(dim=-1)
        if trace:
            trace.record_choice(raw, chosen)
        picked = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
        for b, token in enumerate(chosen.tolist()):
            if finished[b]:
                continue
            sum_logprob[b] += picked[b]
            if token == tokens.eot and not forced_length:
                finished[b] = True
            else:
                generated[b].append(token)
                finished[b] = looping(generated[b], rows[b].stop_ratio, tokens.eot, tokens.decode)
        if all(finished) or i == limit - 1:
            break
        next_tokens = torch.tensor([[g[-1] if (g and not f) else tokens.eot] for g, f in zip(generated, finished)],
                                   device=device)
        position = position + 1
        slot = torch.tensor([width + i], device=device)
        state.valid[:, width + i] = True
        logits = decoder.logits(step(next_tokens, position, slot)[:, -1])
    evidence = trace.evidence(state) if trace else [None] * batch
    return [DecodeResult(g, s, n, e) for g, s, n, e in zip(generated, sum_logprob, pre.no_speech, evidence)]


def _traced_step(decoder: KVDecoder, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                 state: DecoderState, static: bool, trace: AttentionTrace | None) -> torch.Tensor:
    """One eager decoder step over the filled slots (all of them with a static state), recording into ``trace``."""
    queries = {} if trace else None
    hidden = decoder(tokens, positions, slots, state, attend_len=None if static else int(slots[0]) + 1,
                     cross_queries=queries)
    if trace:
        trace.record(queries)
    return hidden
