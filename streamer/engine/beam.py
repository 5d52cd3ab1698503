"""Beam search with Whisper's timestamp rules, batched over beams and windows (``engine.beam_size``).

Each window's row is expanded into ``beam_size`` rows of one batch, so a decoder step serves
every beam of every stream at once; after each step the beams of a window are re-ranked among
themselves and the key/value cache rows are gathered to follow them. The procedure is Whisper's
own (openai/whisper ``BeamSearchDecoder``): each live beam proposes its ``beam_size + 1`` best
next tokens, the candidates are taken best first, an end-of-text candidate finishes a sequence,
any other continues as a live beam until ``beam_size`` are live; a window is done when
``beam_size * patience`` sequences have finished. The winner has the best sum of log
probabilities divided by its length (Whisper's default length penalty).
"""

from __future__ import annotations

import torch

from streamer.engine.decoding import DecodeResult, RowSpec, TimestampRules, prefill
from streamer.engine.kv_decoder import DecoderState, KVDecoder
from streamer.engine.tokenizer import WhisperTokens


def beam_decode(decoder: KVDecoder, encoder_out: torch.Tensor, rows: list[RowSpec], tokens: WhisperTokens,
                rules: TimestampRules | None, max_new_tokens: int, beam_size: int,
                patience: float = 1.0) -> list[DecodeResult]:
    """Decode every row with a beam of ``beam_size``; one :class:`DecodeResult` per row (its best sequence)."""
    k = beam_size
    wide_rows = [row for row in rows for _ in range(k)]
    pre = prefill(decoder, encoder_out.repeat_interleave(k, dim=0), wide_rows, tokens)
    state, width, logits, position = pre.state, pre.width, pre.logits, pre.position
    limit = min(max_new_tokens, decoder.max_len - width)
    search = _Search(len(rows), k, max(1, round(k * patience)), tokens.eot)
    for i in range(limit):
        logits = rules.apply(logits.float(), search.sequences, wide_rows, first=i == 0) if rules else logits.float()
        origin = search.step(torch.log_softmax(logits, dim=-1), first=i == 0)
        if search.done or i == limit - 1:
            break
        _reorder(state, origin)
        next_tokens = torch.tensor([[seq[-1] if seq else tokens.eot] for seq in search.sequences],
                                   device=encoder_out.device)
        position = position + 1
        state.valid[:, width + i] = True
        logits = decoder.logits(decoder(next_tokens, position, torch.tensor([width + i], device=encoder_out.device),
                                        state, attend_len=width + i + 1)[:, -1])
    return [DecodeResult(seq, score, pre.no_speech[b * k]) for b, (seq, score) in enumerate(search.best())]


def _reorder(state: DecoderState, origin: torch.Tensor) -> None:
    """Each new beam continues the cache of the beam it came from (same window: cross-attention is shared)."""
    state.self_k = state.self_k.index_select(1, origin)
    state.self_v = state.self_v.index_select(1, origin)
    state.valid = state.valid.index_select(0, origin)


class _Search:
    """The beams of every window: live sequences with their scores, and the finished ones."""

    def __init__(self, windows: int, beam: int, candidates: int, eot: int) -> None:
        self.windows, self.beam, self.candidates, self.eot = windows, beam, candidates, eot
        self.sequences: list[list[int]] = [[] for _ in range(windows * beam)]
        self.scores = [0.0] * (windows * beam)
        self.finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(windows)]

    @property
    def done(self) -> bool:
        return all(len(f) >= self.candidates for f in self.finished)

    def step(self, logprobs: torch.Tensor, first: bool) -> torch.Tensor:
        """Advance every window's beams by one token; the source row of each new beam row."""
        top_values, top_tokens = logprobs.topk(self.beam + 1, dim=-1)
        top_values, top_tokens = top_values.tolist(), top_tokens.tolist()
        origin = list(range(len(self.sequences)))
        sequences, scores = list(self.sequences), list(self.scores)
        for w in range(self.windows):
            if len(self.finished[w]) >= self.candidates:
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
