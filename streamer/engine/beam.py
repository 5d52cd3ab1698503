"""Beam search with Whisper's timestamp rules, batched over beams and windows (``engine.beam_size``).

Each window's prefix is decoded once, then its cache is copied into ``beam_size`` rows of one batch,
so a decoder step serves every beam of every stream at once (the beams of a window share its
cross-attention keys); after each step the beams of a window are re-ranked among
themselves and the key/value cache rows are gathered to follow them. The procedure is Whisper's
own (openai/whisper ``BeamSearchDecoder``): each live beam proposes its ``beam_size + 1`` best
next tokens, the candidates are taken best first, an end-of-text candidate finishes a sequence,
any other continues as a live beam until ``beam_size`` are live; a window is done when
``beam_size * patience`` sequences have finished. The winner has the best sum of log
probabilities divided by its length (Whisper's default length penalty).
"""

from __future__ import annotations

import torch

from streamer.engine.decoding import DecodeResult, RowSpec, TimestampRules, prefill, stop_if_abandoned
from streamer.engine.kv_decoder import DecoderState, KVDecoder
from streamer.engine.loops import looping
from streamer.engine.tokenizer import WhisperTokens


def beam_decode(decoder: KVDecoder, encoder_out: torch.Tensor, rows: list[RowSpec], tokens: WhisperTokens,
                rules: TimestampRules | None, max_new_tokens: int, beam_size: int,
                patience: float = 1.0) -> list[DecodeResult]:
    """Decode every row with a beam of ``beam_size``; one :class:`DecodeResult` per row (its best sequence)."""
    k = beam_size
    wide_rows = [row for row in rows for _ in range(k)]
    pre = prefill(decoder, encoder_out, rows, tokens)  # one prefix pass per window, not per beam
    state = _widen(pre.state, k)
    width, logits, position = pre.width, pre.logits.repeat_interleave(k, 0), pre.position.repeat_interleave(k, 0)
    limit = min(max_new_tokens, decoder.max_len - width)
    search = _Search(len(rows), k, max(1, round(k * patience)), tokens.eot)
    for i in range(limit):
        stop_if_abandoned(rows)
        logits = rules.apply(logits.float(), search.sequences, wide_rows, first=i == 0) if rules else logits.float()
        origin = search.step(torch.log_softmax(logits, dim=-1), first=i == 0)
        search.stop_loops(rows, tokens)
        if search.done or i == limit - 1:
            break
        _reorder(state, origin, generated=slice(width, width + i))
        next_tokens = torch.tensor([[seq[-1] if seq else tokens.eot] for seq in search.sequences],
                                   device=encoder_out.device)
        position = position + 1
        state.valid[:, width + i] = True
        logits = decoder.logits(decoder(next_tokens, position, torch.tensor([width + i], device=encoder_out.device),
                                        state, attend_len=width + i + 1)[:, -1])
    return [DecodeResult(seq, score, pre.no_speech[b]) for b, (seq, score) in enumerate(search.best())]


def _widen(state: DecoderState, k: int) -> DecoderState:
    """Each window's prefilled cache copied into ``k`` beam rows; its cross-attention keys stay one set.

    The decoder attends a window's ``k`` consecutive rows to that one set (a beam's hypotheses hear
    the same audio), so the 1,500 frames are projected and read once per window, not once per beam.
    """
    return DecoderState(state.self_k.repeat_interleave(k, dim=1), state.self_v.repeat_interleave(k, dim=1),
                        state.cross_k, state.cross_v, state.valid.repeat_interleave(k, dim=0))


def _reorder(state: DecoderState, origin: torch.Tensor, generated: slice) -> None:
    """Each new beam continues the cache of the beam it came from.

    Beams come from beams of the same window, whose prefix slots hold the same values, so only the
    ``generated`` slots move (a prompt of 200 tokens would otherwise be copied at every step).
    """
    if torch.equal(origin, torch.arange(len(origin), device=origin.device)):
        return
    for cache in (state.self_k, state.self_v):
        cache[:, :, :, generated] = cache[:, :, :, generated].index_select(1, origin)
    state.valid = state.valid.index_select(0, origin)


class _Search:
    """The beams of every window: live sequences with their scores, and the finished ones."""

    def __init__(self, windows: int, beam: int, candidates: int, eot: int) -> None:
        self.windows, self.beam, self.candidates, self.eot = windows, beam, candidates, eot
        self.sequences: list[list[int]] = [[] for _ in range(windows * beam)]
        self.scores = [0.0] * (windows * beam)
        self.finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(windows)]
        self.stopped: set[int] = set()  # windows whose beams all looped (engine.loops)

    @property
    def done(self) -> bool:
        return all(self._decided(w) for w in range(self.windows))

    def _decided(self, w: int) -> bool:
        return w in self.stopped or len(self.finished[w]) >= self.candidates

    def stop_loops(self, rows: list[RowSpec], tokens: WhisperTokens) -> None:
        """A window whose live beams all loop past its ``stop_ratio`` stops, as a greedy row does.

        Its live beams join the finished ones, so the winner is chosen as usual and the caller's
        compression-ratio guard rejects a looping one; without this a looping window runs every beam of the
        batch to the token limit (a batch of three int8 windows with a beam of 4: 128 steps instead of 48).
        """
        for w, row in enumerate(rows):
            beams = range(w * self.beam, (w + 1) * self.beam)
            if self._decided(w) or not all(looping(self.sequences[b], row.stop_ratio, tokens.eot, tokens.decode)
                                           for b in beams):
                continue
            for b in beams:
                self.finished[w].setdefault(tuple(self.sequences[b]), self.scores[b])
            self.stopped.add(w)

    def step(self, logprobs: torch.Tensor, first: bool) -> torch.Tensor:
        """Advance every window's beams by one token; the source row of each new beam row."""
        top_values, top_tokens = logprobs.topk(self.beam + 1, dim=-1)
        top_values, top_tokens = top_values.tolist(), top_tokens.tolist()
        origin = list(range(len(self.sequences)))
        sequences, scores = list(self.sequences), list(self.scores)
        for w in range(self.windows):
            if self._decided(w):
                continue  # this window is decided; its rows idle along with the others
            rows = range(w * self.beam, (w + 1) * self.beam)
            proposals = []
            for row in (rows[:1] if first else rows):  # at the start every beam is the same prefix
                for value, token in zip(top_values[row], top_tokens[row]):
                    proposals.append((self.scores[row] + value, row, token))
            proposals.sort(key=lambda p: -p[0])
            live = 0
            for score, row, token in proposals:
                if token == self.eot:
                    self.finished[w].setdefault(tuple(self.sequences[row]), score)
                else:
                    target = rows[live]
                    sequences[target], scores[target], origin[target] = self.sequences[row] + [token], score, row
                    live += 1
                if live == self.beam:
                    break
        self.sequences, self.scores = sequences, scores
        return torch.tensor(origin, device=logprobs.device)

    def best(self) -> list[tuple[list[int], float]]:
        """Each window's best finished sequence (live beams count when too few finished)."""
        out = []
        for w in range(self.windows):
            pool = dict(self.finished[w])
            if len(pool) < self.candidates:
                for row in range(w * self.beam, (w + 1) * self.beam):
                    pool.setdefault(tuple(self.sequences[row]), self.scores[row])
            sequence, score = max(pool.items(), key=lambda item: item[1] / max(1, len(item[0])))
            out.append((list(sequence), score))
        return out
