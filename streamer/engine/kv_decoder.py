"""Whisper's decoder run step by step over a preallocated key/value cache.

transformers' own decoder re-creates masks and cache objects at every step and its cache
API changes between releases. This module reuses the decoder's *modules* (so quantised
int8 linears and any checkpoint work unchanged) but keeps the loop's tensors fixed in
shape: a ``[layers, batch, heads, 448, head_dim]`` cache written in place at a tensor index.
Fixed shapes are what ``torch.compile(mode="reduce-overhead")`` needs to capture a CUDA graph
once per batch size and replay it for every token; on the CPU the same code attends only
over the filled part of the cache.

The cross-attention keys and values (every layer's projection of the 1,500 encoder frames) are
what a decoder step reads most: 36 MB per token for base in float32. ``cross_dtype`` stores
them in another float type (bfloat16 on the CPU, ``engine.cross_attention_dtype``), contiguous,
so each step reads half the bytes; the queries are cast to it and the output back.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderState:
    """Everything one batch's decode loop carries from step to step."""

    self_k: torch.Tensor  # [layers, batch, heads, max_len, head_dim]
    self_v: torch.Tensor
    cross_k: list[torch.Tensor]  # per layer [batch, heads, frames, head_dim]
    cross_v: list[torch.Tensor]
    valid: torch.Tensor  # [batch, max_len] bool: which cache slots hold real (non-padding) tokens


class KVDecoder(nn.Module):
    def __init__(self, model: nn.Module, max_len: int | None = None, cross_dtype: torch.dtype | None = None):
        super().__init__()
        self.cross_dtype = cross_dtype  # None: the encoder output's dtype
        # (encoder output, its keys, its values) projected once inside ``sharing_projections``, and row subsets of it
        self._shared: list[tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]] = []
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model.decoder
        config = model.config
        self.embed_tokens = decoder.embed_tokens
        self.embed_positions = decoder.embed_positions
        self.layers = decoder.layers
        self.final_norm = decoder.layer_norm
        self.proj_out = model.proj_out
        self.n_heads = config.decoder_attention_heads
        self.head_dim = config.d_model // self.n_heads
        self.max_len = max_len or config.max_target_positions
        self.activation = decoder.layers[0].activation_fn

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim)

    def allocate(self, batch: int, frames: int, device: torch.device, dtype: torch.dtype) -> DecoderState:
        """Buffers for a batch size, allocated once (their fixed addresses let CUDA graphs replay)."""
        shape = (len(self.layers), batch, self.n_heads, self.max_len, self.head_dim)
        cross = (batch, self.n_heads, frames, self.head_dim)
        kwargs = dict(device=device, dtype=dtype)
        return DecoderState(torch.zeros(shape, **kwargs), torch.zeros(shape, **kwargs),
                            [torch.zeros(cross, **kwargs) for _ in self.layers],
                            [torch.zeros(cross, **kwargs) for _ in self.layers],
                            torch.zeros(batch, self.max_len, dtype=torch.bool, device=device))

    @torch.no_grad()
    def start(self, encoder_out: torch.Tensor, into: DecoderState | None = None) -> DecoderState:
        """Project the encoder output into every layer's cross-attention keys/values, once per window.

        With ``into`` the projections are copied into preallocated buffers (same batch size).
        """
        shared = self._shared_for(encoder_out)
        if shared is not None:
            cross_k, cross_v = list(shared[1]), list(shared[2])
        else:
            cross_k, cross_v = self._cross_keys_values(encoder_out, into)
        if into is None:
            batch = encoder_out.shape[0]
            shape = (len(self.layers), batch, self.n_heads, self.max_len, self.head_dim)
            kwargs = dict(device=encoder_out.device, dtype=encoder_out.dtype)
            return DecoderState(torch.zeros(shape, **kwargs), torch.zeros(shape, **kwargs), cross_k, cross_v,
                                torch.zeros(batch, self.max_len, dtype=torch.bool, device=encoder_out.device))
        for buffer, value in zip(into.cross_k + into.cross_v, cross_k + cross_v):
            buffer.copy_(value)
        into.valid.zero_()
        return into

    @contextmanager
    def sharing_projections(self, encoder_out: torch.Tensor) -> Iterator[None]:
        """Within the block, every :meth:`start` on this very tensor reuses one set of cross-attention keys/values.

        A window's language detection, decode and word-time pass each start from the same encoder
        output; projecting it once saves two of three projections of 1,500 frames per layer. The
        set is dropped on leaving, so no window's keys outlive its decode.
        """
        self._shared = [(encoder_out, *self._cross_keys_values(encoder_out, None))]
        try:
            yield
        finally:
            self._shared = []

    def select_rows(self, encoder_out: torch.Tensor, index: list[int]) -> torch.Tensor:
        """Rows ``index`` of ``encoder_out`` (windows decoded apart from the rest of their batch, e.g. with a
        beam); inside :meth:`sharing_projections` their keys are those rows of the shared set, not projected again."""
        rows = encoder_out[index]
        shared = self._shared_for(encoder_out)
        if shared is not None:
            self._shared.append((rows, [k[index] for k in shared[1]], [v[index] for v in shared[2]]))
        return rows

    def _shared_for(self, encoder_out: torch.Tensor):
        """The shared (tensor, keys, values) entry of this very tensor, if it has one."""
        return next((entry for entry in self._shared if entry[0] is encoder_out), None)

    def _cross_keys_values(self, encoder_out: torch.Tensor,
                           into: DecoderState | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer's cross-attention keys and values of ``encoder_out``."""
        attns = [layer.encoder_attn for layer in self.layers]
        return ([self._cross_projection(a.k_proj, encoder_out, into) for a in attns],
                [self._cross_projection(a.v_proj, encoder_out, into) for a in attns])

    def _cross_projection(self, projection: nn.Module, encoder_out: torch.Tensor,
                          into: DecoderState | None) -> torch.Tensor:
        heads = self._split_heads(projection(encoder_out))
        if into is not None or self.cross_dtype is None:
            return heads  # copied into the static buffers as they are
        return heads.to(self.cross_dtype).contiguous()  # contiguous: the CPU attention kernel reads it faster

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                state: DecoderState, attend_len: int | None = None,
                cross_queries: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Run ``tokens`` [batch, T] written at cache ``slots`` [T]; returns final hidden states.

        ``positions`` [batch, T] are the positional-embedding indices (they differ per row when
        rows are left-padded). ``attend_len`` limits attention to the first slots (CPU speed);
        None attends over the whole cache (static shape for CUDA graphs). When
        ``cross_queries`` is a dict, the cross-attention queries of every layer are stored in
        it for word alignment.
        """
        length = self.max_len if attend_len is None else attend_len
        x = self.embed_tokens(tokens) + self.embed_positions.weight[positions]
        key_slots = torch.arange(length, device=tokens.device)
        causal = key_slots[None, :] <= slots[:, None]  # [T, S]
        self_slot = key_slots[None, :] == slots[:, None]
        mask = (state.valid[:, None, None, :length] & causal[None, None]) | self_slot[None, None]
        for i, layer in enumerate(self.layers):
            x = x + self._self_attention(layer, x, i, slots, state, length, mask)
            x = x + self._cross_attention(layer, x, i, state, cross_queries)
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(self.activation(layer.fc1(h)))
        return self.final_norm(x)

    def _self_attention(self, layer: nn.Module, x: torch.Tensor, i: int, slots: torch.Tensor,
                        state: DecoderState, length: int, mask: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(x)
        q = self._split_heads(attn.q_proj(h))
        state.self_k[i].index_copy_(2, slots, self._split_heads(attn.k_proj(h)))
        state.self_v[i].index_copy_(2, slots, self._split_heads(attn.v_proj(h)))
        k, v = state.self_k[i, :, :, :length], state.self_v[i, :, :, :length]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.out_proj(self._merge_heads(out))

    def _cross_attention(self, layer: nn.Module, x: torch.Tensor, i: int, state: DecoderState,
                         cross_queries: dict[int, torch.Tensor] | None) -> torch.Tensor:
        attn = layer.encoder_attn
        q = self._split_heads(attn.q_proj(layer.encoder_attn_layer_norm(x)))
        if cross_queries is not None:
            cross_queries[i] = q
        keys = state.cross_k[i]
        out = _cross_attend(q.to(keys.dtype), keys, state.cross_v[i]).to(x.dtype)
        return attn.out_proj(self._merge_heads(out))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj_out(hidden)


def _cross_attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attention of ``q`` [rows, heads, T, dim] over the encoder frames; ``keys`` may have fewer rows.

    With ``rows = windows x group`` (a beam search's hypotheses, consecutive per window) each window's
    keys serve its ``group`` rows: their queries are folded into one longer query block, so the keys
    are read once per window. Cross-attention has no mask, so every query is computed as it would be alone.
    """
    windows = keys.shape[0]
    group = q.shape[0] // windows
    if group == 1:
        return F.scaled_dot_product_attention(q, keys, values)
    rows, heads, length, dim = q.shape
    folded = q.view(windows, group, heads, length, dim).transpose(1, 2).reshape(windows, heads, group * length, dim)
    out = F.scaled_dot_product_attention(folded, keys, values)
    return out.view(windows, heads, group, length, dim).transpose(1, 2).reshape(rows, heads, length, dim)
