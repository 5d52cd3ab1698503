"""Word-timing evidence recorded by the decode loop itself, so word times need no second decoder pass.

DTW word times (:mod:`streamer.engine.alignment`) need the alignment heads' cross-attention for
every text token and each token's probability. The separate way gets them from a teacher-forced
pass over ``<|startoftranscript|> <|notimestamps|> text <|endoftext|>``: a second run of the
decoder over the window (its cross-attention keys projected again, every layer run again). The
decode loop already computes, at every step, the query that predicts the next token; recording the
alignment heads' queries (a few ``head_dim`` vectors per row and step) and scoring them once
against the cross-attention keys the loop holds gives the same kind of matrix for the sequence
the model actually decoded: after the prompt, with timestamp tokens between segments. Timestamp
rows are dropped; what remains is one row per text token plus the row after the last one, which
is the shape :func:`~streamer.engine.alignment.word_times` reads.

Token probabilities come from the same logits the loop chose from, before Whisper's rules mask
them and over text tokens only (as openai-whisper computes word probabilities), so timestamp
tokens competing for the end of a phrase do not lower a word's confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamer.engine.kv_decoder import DecoderState


@dataclass
class TokenEvidence:
    """One row's record: ``weights[h, j]`` is head h's attention for the query that chose ``tokens[j]``
    (j == len(tokens): the query after the last token); ``logprobs[j]`` that token's text log-probability."""

    weights: np.ndarray  # [heads, queries, frames]
    logprobs: list[float]

    def text_rows(self, tokens: list[int], eot: int) -> tuple[np.ndarray, list[float]]:
        """The rows for the text tokens (< ``eot``) and the one after the last of them, and their probabilities."""
        picked = [j for j, t in enumerate(tokens) if t < eot]
        if not picked:
            return self.weights[:, :0], []
        after = min(picked[-1] + 1, self.weights.shape[1] - 1)
        rows = self.weights[:, picked + [after]]
        return rows, [float(np.exp(self.logprobs[j])) for j in picked]


class AttentionTrace:
    """Collects, row by row, the alignment heads' cross-attention queries and the chosen tokens' probabilities."""

    def __init__(self, heads: list[tuple[int, int]], eot: int):
        self.heads = heads
        self.eot = eot
        self._queries: list[list[torch.Tensor]] = []  # per row: [heads, n, head_dim] pieces in token order
        self._logprobs: list[list[torch.Tensor]] = []  # per row: [n] pieces

    def record(self, queries: dict[int, torch.Tensor], keep: list[int] | None = None) -> None:
        """From the dict a decoder pass filled (:meth:`KVDecoder.forward`'s ``cross_queries``), keep the
        queries that chose a token: the last position of each row (a step), or, with ``keep``,
        the first ``keep[b]`` positions of row b (a verified block: the positions whose choice was accepted)."""
        stacked = torch.stack([queries[layer][:, head] for layer, head in self.heads], dim=1)  # [b, heads, T, d]
        self._grow(len(stacked))
        for b, row in enumerate(stacked):
            self._queries[b].append(row[:, -1:] if keep is None else row[:, :keep[b]])

    def record_choice(self, raw_logits: torch.Tensor, chosen: torch.Tensor, keep: list[int] | None = None) -> None:
        """The chosen tokens' log-probabilities among text tokens, from logits before any rule masked them.

        ``raw_logits`` [batch, vocab] with ``chosen`` [batch] (a step), or [batch, T, vocab] with ``chosen``
        [batch, T] of which the first ``keep[b]`` count (a verified block)."""
        text = torch.log_softmax(raw_logits[..., :self.eot].float(), dim=-1)
        picked = text.gather(-1, chosen.clamp(max=self.eot - 1)[..., None])[..., 0]
        self._grow(len(picked))
        for b, row in enumerate(picked):
            self._logprobs[b].append(row[None] if keep is None else row[:keep[b]])

    def _grow(self, batch: int) -> None:
        while len(self._queries) < batch:
            self._queries.append([])
            self._logprobs.append([])

    def evidence(self, state: DecoderState) -> list[TokenEvidence]:
        """Score every row's recorded queries against the loop's cross-attention keys: one record per row."""
        keys = torch.stack([state.cross_k[layer][:, head] for layer, head in self.heads], dim=1).float()
        out = []
        for b, pieces in enumerate(self._queries):
            queries = torch.cat(pieces, dim=1).float()  # [heads, n, head_dim]
            scores = queries @ keys[b].transpose(-1, -2) * queries.shape[-1] ** -0.5
            logprobs = torch.cat(self._logprobs[b]).tolist() if self._logprobs[b] else []
            out.append(TokenEvidence(torch.softmax(scores, dim=-1).cpu().numpy(), logprobs))
        return out
