"""Whisper's encoder on less than 30 s of audio (``engine.encoder_buckets``), measured, off by default.

Whisper was trained on 30 s of log-mel (1500 encoder frames); a streaming window is usually 3-10 s
and the rest is padding the encoder still attends over. Here the mel is cut to a bucket (the window
rounded up to, say, 10, 15 or 20 s) and the positional embeddings are sliced to match, so the
encoder's cost follows the window. The decoder then cross-attends to fewer frames, which the model
never saw in training: whether the text survives is a measurement (``bench/encoder_buckets.py``,
``bench/ab_stream.py``; docs/engine.md), not an assumption. Read speech survives, language
detection does not (the engine cuts only windows in a fixed language). The compiled CUDA decoder's
shapes assume 1500 frames, so buckets are a CPU-path setting.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from streamer.hypothesis import DecodeRequest

MEL_FRAMES_PER_SECOND = 100   # 10 ms hop
FULL_SECONDS = 30.0


def bucket_for(longest: float, buckets: Sequence[float]) -> float:
    """The smallest bucket that holds ``longest`` seconds (30 s when none does, or none are set)."""
    fitting = [b for b in sorted(buckets) if b >= longest - 1e-6]
    return min(fitting[0], FULL_SECONDS) if fitting else FULL_SECONDS


def requested_buckets(requests: Sequence[DecodeRequest]) -> tuple[float, ...] | None:
    """The buckets a batch asks for (:attr:`DecodeRequest.encoder_buckets`), or None for the engine's own.

    The rows of a batch share one encoder call, so they share its length: a batch whose windows ask
    for different buckets (the daemon never makes one) keeps the engine's setting.
    """
    asked = {r.encoder_buckets for r in requests}
    if len(asked) != 1:
        return None
    return asked.pop()


def encode(encoder: nn.Module, features: torch.Tensor, seconds: float) -> torch.Tensor:
    """The encoder's hidden states for the first ``seconds`` of 30-s padded ``features`` [batch, mels, 3000]."""
    if seconds >= FULL_SECONDS:
        return encoder(features).last_hidden_state
    frames = int(round(seconds * MEL_FRAMES_PER_SECOND))
    x = nn.functional.gelu(encoder.conv1(features[..., :frames]))
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(x)
