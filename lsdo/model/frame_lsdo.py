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

Key mask (optional, ``variant=regions``): ``key_mask`` [B|1, r] bool marks the valid keys. Masked
keys get zero weight, their values are ignored (even non-finite ones), and the rescaling uses the
number of valid keys r_b of each video instead of r:

    f_p = sum_{r valid} (n / r_b) a[:, i, r] Norm(v_s W'_o)[r]          [B, n, d]

so a masked key changes nothing and the result equals the call without those keys. A video with
r_b = 0 gets f_p = 0 and per-frame weights 0. The softmax over the frames is untouched: every
frame is a valid query, and each key column is normalised on its own. Without a mask the code path
is the original one.

The per-frame weights returned (and plotted like the paper's Fig. 8) are a.mean(-1) [B, n] (the
mean over the valid keys with a mask), summing to 1 over the frames.
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

    def forward(
        self, f_v: torch.Tensor, f_s: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f'_v [B, n, d], f_s [B|1, r, d], key_mask [B|1, r] bool or None -> (f_p [B, n, d], weights [B, n])."""
        a = self.attention(f_v, f_s)  # [B, n, r]
        n, r = a.shape[1], a.shape[2]
        value = self.norm_out(self.out(self.v(self.norm_lsdo(f_s))))  # [B|1, r, d]: Eq. 10 then Norm(. W'_o)
        value = value.expand(a.shape[0], -1, -1)  # [B, r, d]
        if key_mask is None:
            f_p = torch.einsum("bnr,brd->bnd", a * (n / r), value)  # [B, n, d]
            return f_p, a.mean(dim=-1)
        valid = key_mask.to(torch.bool).expand(a.shape[0], -1)  # [B, r]
        a = torch.where(valid.unsqueeze(1), a, torch.zeros((), dtype=a.dtype, device=a.device))  # [B, n, r]
        value = torch.where(valid.unsqueeze(-1), value, torch.zeros((), dtype=value.dtype, device=value.device))
        count = valid.sum(dim=-1).clamp_min(1).to(a.dtype)  # [B]: r_b, the valid keys per video
        f_p = torch.einsum("bnr,brd->bnd", a * (n / count)[:, None, None], value)  # [B, n, d]
        return f_p, a.sum(dim=-1) / count[:, None]
