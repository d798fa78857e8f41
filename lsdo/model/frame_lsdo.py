"""Frame-level LSDO features: object attention (paper Section III-C, Eq. 8-12).

    q_v = Norm(f'_v) W'_q          [B, n, d]          (Eq. 8; the query is f'_v, Fig. 2)
    k_s = Norm(f_s)  W'_k          [B|1, r, d]        (Eq. 9)
    v_s = Norm(f_s)  W'_v          [B|1, r, d]        (Eq. 10)
    a   = softmax_n(q_v k_s^T / sqrt(d))  [B, n, r]   (Eq. 11, normalised over the frame axis)
    f_p = sum_r (n / r) a[:, i, r] Norm(v_s W'_o)[r]  [B, n, d]   (Eq. 12, see below)

Two departures from the literal equations, both forced by degeneracies:

1. Eq. 11's softmax runs over the *frames* (as in the authors' code and Fig. 8): with r = 1 a
   softmax over the keys is identically 1 and every frame would get the same weight.
2. Eq. 12 applies a LayerNorm *after* the attention weighting. A LayerNorm is scale-invariant,
   so with r = 1 it maps a_i * v to Norm(v) for every frame i: the per-frame weights vanish and
   f_p is one constant vector per video. We therefore normalise the projected value first and
   then scale it by the frame's weight. The weights are rescaled by n / r so that they average 1
   over the frames (and keys): f_p keeps the scale of a LayerNorm output on average, while
   frames with larger attention receive proportionally more LSDO feature.

``last_frame_weights`` keeps the per-frame weights a.mean(-1) [B, n] (summing to 1 over the
frames) of the latest call, for plots like the paper's Fig. 8.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lsdo.model.layers import identity_linear


class FrameObjectAttention(nn.Module):
    """Object attention from frames (queries) to video-level LSDO features (keys/values)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm_frames = nn.LayerNorm(dim)
        self.norm_lsdo = nn.LayerNorm(dim)
        self.q = identity_linear(dim)
        self.k = identity_linear(dim)
        self.v = identity_linear(dim)
        self.out = identity_linear(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.scale = 1.0 / math.sqrt(dim)

    def attention(self, f_v: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        """Eq. 8, 9, 11: attention weights [B, n, r], each column summing to 1 over the n frames."""
        q = self.q(self.norm_frames(f_v))  # [B, n, d]
        k = self.k(self.norm_lsdo(f_s))  # [B|1, r, d]
        logits = torch.einsum("bnd,brd->bnr", q, k.expand(q.shape[0], -1, -1)) * self.scale  # [B, n, r]
        return logits.softmax(dim=1)

    def forward(self, f_v: torch.Tensor, f_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f'_v [B, n, d], f_s [B|1, r, d] -> (f_p [B, n, d], per-frame weights [B, n])."""
        a = self.attention(f_v, f_s)  # [B, n, r]
        n, r = a.shape[1], a.shape[2]
        value = self.norm_out(self.out(self.v(self.norm_lsdo(f_s))))  # [B|1, r, d]: Eq. 10 then Norm(. W'_o)
        f_p = torch.einsum("bnr,brd->bnd", a * (n / r), value.expand(a.shape[0], -1, -1))  # [B, n, d]
        return f_p, a.mean(dim=-1)
