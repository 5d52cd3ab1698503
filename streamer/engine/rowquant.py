"""int8 linear layers whose result for a row does not depend on the other rows of the batch.

torch's dynamic int8 linear quantises its input with one scale for the whole tensor, so a
token's logits change with whatever else is in the same call: the same token decoded alone
(a greedy step) and inside a block (draft verification, a batch of streams) gets different
numbers, and near-ties flip. Draft verification is only lossless when a row's result is a
function of that row alone.

This layer keeps fbgemm's fast dynamic int8 kernel but makes its per-tensor parameters
constant: each row is divided by its own largest magnitude (so it spans at most [-1, 1]), and
two extra input columns holding +1 and -1 (with zero weights) pin every tensor's range to
exactly [-1, 1]. The kernel then picks the same scale and zero point for any batch; integer
accumulation is exact, and the row's factor is multiplied back in float afterwards. That is
per-token activation quantisation (finer than per-tensor for a prefix or a batch) with
per-channel int8 weights.
"""

from __future__ import annotations

import torch
from torch import nn


class RowQuantizedLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        padded = torch.cat([weight, weight.new_zeros(out_features, 2)], dim=1)
        scales = (padded.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        qweight = torch.quantize_per_channel(padded, scales.double(), torch.zeros(out_features, dtype=torch.long),
                                             axis=0, dtype=torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        pins = torch.tensor([1.0, -1.0], dtype=rows.dtype).expand(rows.shape[0], 2)
        out = torch.ops.quantized.linear_dynamic(torch.cat([rows / scale, pins], dim=1), self.packed, True) * scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


def quantize_rows(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``module`` (in place) with a :class:`RowQuantizedLinear`; how many."""
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, RowQuantizedLinear(child))
            count += 1
        else:
            count += quantize_rows(child)
    return count
