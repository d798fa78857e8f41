"""Frame feature extraction (paper Eq. 2, and the alternatives of Table XI / Fig. 6).

    f'_v = FC(f_v)          f_v: [B, n, d] -> f'_v: [B, n, d]

``model.frame_proj``:
  * ``fc`` (default): one d x d linear layer, identity weight, zero bias.
  * ``bottleneck``: Linear d -> d/4, BatchNorm, ReLU, Linear d/4 -> d, added to the input.
  * ``inverted_bottleneck``: LayerNorm, Linear d -> 4d, GELU, Linear 4d -> d, added to the input
    (ConvNeXt style, Fig. 6).
  The two bottlenecks cannot start as a literal identity matrix (they change the width), so their
  last layer starts at zero: every variant computes f'_v = f_v at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from lsdo.errors import ConfigError
from lsdo.model.layers import identity_linear


class _Residual(nn.Module):
    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body
        last = body[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.body(x.reshape(-1, shape[-1]))  # [B*n, d]: BatchNorm1d wants 2-D input
        return x + y.view(shape)  # [B, n, d]


def build_frame_proj(kind: str, dim: int) -> nn.Module:
    """The Eq. 2 projection selected by ``model.frame_proj``."""
    if kind == "fc":
        return identity_linear(dim)
    if kind == "bottleneck":
        h = dim // 4
        return _Residual(nn.Sequential(nn.Linear(dim, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, dim)))
    if kind == "inverted_bottleneck":
        h = dim * 4
        return _Residual(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, h), nn.GELU(), nn.Linear(h, dim)))
    if kind in ("none", None):
        return nn.Identity()
    raise ConfigError(f"model.frame_proj: expected fc | bottleneck | inverted_bottleneck, got '{kind}'")
