"""Small building blocks shared by the LSDO heads."""

from __future__ import annotations

import torch
from torch import nn


def identity_linear(dim_in: int, dim_out: int | None = None, bias: bool = True) -> nn.Linear:
    """A Linear layer with identity weight and zero bias (the paper's initialisation, IV-B.1).

    For a non-square layer the weight is the rectangular identity (ones on the diagonal).
    """
    layer = nn.Linear(dim_in, dim_out or dim_in, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(layer.out_features, layer.in_features))
        if bias:
            layer.bias.zero_()
    return layer


def sparsemax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo, 2016) over ``dim``, restricted to positions where ``mask``.

    The Euclidean projection of the logits onto the probability simplex: the weights sum to 1,
    low-scoring entries are exactly 0, and masked positions are exactly 0. A slice with no
    allowed position gets all-zero weights (no NaN).

    Computed in float32 at least (a bf16 input, e.g. under autocast, is promoted: the sort, the cumulative
    sum and the support test would otherwise round at 8 bits) and returned in the input's dtype.
    """
    dtype = logits.dtype
    logits = logits.to(torch.promote_types(dtype, torch.float32))  # float32 and float64: unchanged
    very_neg = torch.finfo(logits.dtype).min / 4
    z = logits.masked_fill(~mask, very_neg)
    z = z - z.amax(dim=dim, keepdim=True)
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    k = torch.arange(1, z.shape[dim] + 1, device=z.device, dtype=z.dtype)
    shape = [1] * z.ndim
    shape[dim] = -1
    k = k.view(shape)
    cumsum = z_sorted.cumsum(dim)
    support = (1 + k * z_sorted > cumsum) & (z_sorted > very_neg / 2)  # sorted entries in the support
    k_support = support.sum(dim=dim, keepdim=True).clamp(min=1)
    tau = (cumsum.gather(dim, k_support - 1) - 1) / k_support.to(z.dtype)
    out = torch.clamp(z - tau, min=0) * mask
    return out.to(dtype)
