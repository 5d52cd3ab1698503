"""Greedy decoding that verifies a draft: many tokens per decoder pass, the same tokens as plain greedy.

Successive decodes of a stream's window mostly repeat the previous hypothesis (that is why
LocalAgreement works). Each step of this loop feeds the greedy choice *and* the draft's
guess of what follows it as one block; Whisper's timestamp and suppression rules are applied
at every block position exactly as the plain loop applies them, the longest prefix of the
guess that equals the greedy choice at each position is accepted, and the loop continues from
the first disagreement. A rejected guess costs only its share of one pass; its cache slots
are masked out for that row (the same masking that handles left padding), so rows of a batch
accept different lengths and keep decoding together.

The guess is the draft's continuation while the output still equals the draft's beginning;
after the first disagreement (or when the draft never lined up: a trimmed window shifts every
timestamp token, a new prompt changes the wording) it is found by n-gram lookup: the draft
tokens that followed the last few generated tokens where they occurred in the draft.

Exactness: every accepted token is the argmax of logits processed by the same rules as the
plain loop, so a difference from plain greedy can only come from the logits themselves being
computed in a block of several tokens instead of one at a time: float summation order, and,
with the CPU's dynamic int8 linears, an activation scale taken over the whole block. See
``bench/drafts.py`` for how often that flips a token on real replays.
"""

from __future__ import annotations

import torch

from streamer.engine.decoding import DecodeResult, RowSpec, TimestampRules, prefill, stop_if_abandoned
from streamer.engine.kv_decoder import KVDecoder
from streamer.engine.loops import looping
from streamer.engine.tokenizer import WhisperTokens
from streamer.engine.trace import AttentionTrace

MAX_GUESS = 48  # draft tokens verified per pass (bounds the wasted work when a guess is wrong early)
NGRAM_SIZES = (3, 2, 1)  # suffix lengths tried, longest first, when the output left the draft
MIN_NGRAM_GUESS = 2  # an n-gram guess shorter than this is not worth widening the pass


def guess(generated: list[int], draft: tuple[int, ...], room: int) -> list[int]:
    """What the draft says follows ``generated`` (at most ``room`` tokens; empty if nothing fits)."""
    if room <= 0 or not draft:
        return []
    n = len(generated)
    if n <= len(draft) and tuple(generated) == draft[:n]:
        return list(draft[n:n + room])
    for size in NGRAM_SIZES:
        if n < size:
            continue
        key = tuple(generated[-size:])
        for start in range(len(draft) - size):
            if draft[start:start + size] == key:
                found = list(draft[start + size:start + size + room])
                return found if len(found) >= MIN_NGRAM_GUESS or size > 1 else []
    return []


class BlockRunner:
    """Runs one block of the drafted loop; the eager (CPU) runner attends over the filled slots only.

    The compiled CUDA path (:class:`~streamer.engine.gpu.CompiledDecoder`) subclasses it: its
    blocks are padded up to a few fixed widths so each (batch size, width) is one captured graph.
    """

    widths: tuple[int, ...] = ()  # empty: any width

    def __init__(self, decoder: KVDecoder):
        self.decoder = decoder

    def width(self, wanted: int, most: int) -> int:
        """The block width to run for ``wanted`` tokens when at most ``most`` fit (both >= 1)."""
        if not self.widths:
            return min(wanted, most)
        fitting = [w for w in self.widths if w <= most] or [1]
        return next((w for w in fitting if w >= wanted), fitting[-1])

    def __call__(self, block: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, state,
                 end: int, cross_queries: dict | None = None) -> torch.Tensor:
        """``end``: the first slot after the block (the eager pass attends up to it); ``cross_queries``: a
        dict a trace records from (eager only)."""
        return self.decoder(block, positions, slots, state, attend_len=end, cross_queries=cross_queries)


def drafted_decode(decoder: KVDecoder, encoder_out: torch.Tensor, rows: list[RowSpec], tokens: WhisperTokens,
                   rules: TimestampRules | None, max_new_tokens: int, drafts: list[tuple[int, ...]],
                   state=None, runner: BlockRunner | None = None,
                   trace: AttentionTrace | None = None) -> tuple[list[DecodeResult], dict[str, int]]:
    """Greedy decode of every row, verifying ``drafts[b]`` (row b's previous tokens) along the way.

    Eager path by default; with a preallocated ``state`` and a compiled ``runner`` the CUDA-graph
    path (blocks padded to the runner's widths; padding is masked like a rejected guess).
    Returns the results and counts (passes, tokens guessed and accepted) for the benchmark. With a
    ``trace`` (eager path only) the verification passes also give the word-timing evidence: the queries
    of the accepted positions are the ones a teacher-forced pass would compute.
    """
    device = encoder_out.device
    batch = len(rows)
    trace = trace if runner is None else None
    runner = runner or BlockRunner(decoder)
    pre = prefill(decoder, encoder_out, rows, tokens, state, trace)
    state, slot, logits = pre.state, pre.width, pre.logits
    position = pre.position[:, 0].clone()  # [batch]: positional index of each row's last cached token
    limit = min(max_new_tokens, decoder.max_len - slot)
    generated: list[list[int]] = [[] for _ in rows]
    sum_logprob = [0.0] * batch
    finished = [False] * batch
    stats = {"passes": 0, "guessed": 0, "accepted": 0}
    first = True
    while True:
        stop_if_abandoned(rows)
        # 1. the greedy choice from each row's pending logits: exactly the plain loop's step
        raw = logits.float()
        masked = raw.clone() if trace else raw  # the rules mask in place; the trace wants the raw logits
        processed = rules.apply(masked, generated, rows, first=first) if rules else masked
        first = False
        logprobs = torch.log_softmax(processed, dim=-1)
        chosen = processed.argmax(dim=-1).tolist()
        if trace:
            trace.record_choice(raw, torch.tensor(chosen, device=raw.device))
        picked = logprobs[torch.arange(batch), torch.tensor(chosen)].tolist()
        for b, token in enumerate(chosen):
            if finished[b]:
                continue
            sum_logprob[b] += picked[b]
            if token == tokens.eot:
                finished[b] = True
            else:
                generated[b].append(token)
                finished[b] = len(generated[b]) >= limit or looping(generated[b], rows[b].stop_ratio, tokens.eot,
                                                                     tokens.decode)
        if all(finished):
            break
        # 2. each row's block: its choice, then the draft's guess of what follows
        need = max(limit - len(g) for g, f in zip(generated, finished) if not f)
        room = min(MAX_GUESS, decoder.max_len - slot - 1 - need)
        guesses = [[] if f else guess(g, d, min(room, limit - len(g))) for g, f, d in zip(generated, finished, drafts)]
        width = runner.width(1 + max(len(q) for q in guesses), max(1, 1 + room))
        guesses = [q[:width - 1] for q in guesses]
        block = torch.full((batch, width), tokens.eot, dtype=torch.long, device=device)
        for b, (g, q) in enumerate(zip(generated, guesses)):
            block[b, 0] = g[-1] if (g and not finished[b]) else tokens.eot
            if q:
                block[b, 1:1 + len(q)] = torch.tensor(q, device=device)
        positions = (position[:, None] + 1 + torch.arange(width, device=device)[None, :]).clamp(max=decoder.max_len - 1)
        slots = torch.arange(slot, slot + width, device=device)
        state.valid[:, slot:slot + width] = True
        queries = {} if trace else None
        extra = {"cross_queries": queries} if trace else {}  # a compiled runner takes no trace
        hidden = runner(block, positions, slots, state, end=slot + width, **extra)
        stats["passes"] += 1
        if width == 1:
            if trace:
                trace.record(queries)
            logits = decoder.logits(hidden[:, -1])
            position, slot = position + 1, slot + 1
            continue
        # 3. verify every guessed position at once, with the rules each would have met
        block_logits = decoder.logits(hidden)
        accepted = _verify(block_logits, guesses, generated, finished, rows, rules, tokens, sum_logprob, limit)
        stats["guessed"] += sum(len(q) for q in guesses)
        stats["accepted"] += sum(accepted)
        if trace:  # positions 0..a-1 chose the accepted guesses, position a the next step's token
            trace.record(queries, keep=[a + 1 for a in accepted])
            trace.record_choice(block_logits[:, :width - 1], block[:, 1:], keep=accepted)
        for b, a in enumerate(accepted):
            state.valid[b, slot + 1 + a:slot + width] = False  # rejected guesses and padding: holes in the cache
        logits = block_logits[torch.arange(batch), torch.tensor(accepted, device=device)]
        position = position + 1 + torch.tensor(accepted, device=device)
        slot += width
    evidence = trace.evidence(state) if trace else [None] * batch
    return [DecodeResult(g, s, n, e) for g, s, n, e in zip(generated, sum_logprob, pre.no_speech, evidence)], stats


def _verify(block_logits: torch.Tensor, guesses: list[list[int]], generated: list[list[int]], finished: list[bool],
            rows: list[RowSpec], rules: TimestampRules | None, tokens: WhisperTokens, sum_logprob: list[float],
            limit: int) -> list[int]:
    """Accept each row's longest guessed prefix that greedy would have chosen; extends ``generated``."""
    flat, contexts, flat_rows, owners = [], [], [], []
    for b, q in enumerate(guesses):
        for j in range(len(q)):
            flat.append(block_logits[b, j])
            contexts.append(generated[b] + q[:j])
            flat_rows.append(rows[b])
            owners.append((b, j))
    accepted = [0] * len(guesses)
    if not flat:
        return accepted
    stacked = torch.stack(flat).float()
    processed = rules.apply(stacked, contexts, flat_rows, first=False) if rules else stacked
    logprobs = torch.log_softmax(processed, dim=-1)
    best = processed.argmax(dim=-1).tolist()
    stopped = [False] * len(guesses)
    for k, (b, j) in enumerate(owners):
        if stopped[b] or best[k] != guesses[b][j]:
            stopped[b] = True
            continue
        token = guesses[b][j]
        sum_logprob[b] += float(logprobs[k, token])
        generated[b].append(token)
        accepted[b] += 1
        if len(generated[b]) >= limit or looping(generated[b], rows[b].stop_ratio, tokens.eot, tokens.decode):
            finished[b] = True
            stopped[b] = True
    return accepted
