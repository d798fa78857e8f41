"""``impl=official``: the forward pass of the authors' released code (X-Pool based).

Follows the authors' released code point by point; the differences from
``impl=paper`` are:

* frame features are the raw CLIP image embeddings (no FC of Eq. 2);
* video-level LSDO: ``average`` is the plain mean of the raw frames; ``shared`` is a *frozen*
  [m, d] bank read from the JSON file (no Norm(FC(.)) anywhere);
* the "Scene" attention: q from LN_frames(f_v), k/v from LN_s(f_s), softmax over frames,
  o = a v, p = o + Dropout(W_out o), no final LayerNorm (``OfficialSceneAttention``);
* fusion with two learnable logits initialised [0.3, 0.7]: (w1, w2) = softmax(w),
  f = w1 p + w2 f_v (``OfficialFusion``);
* X-Pool with LN1 on text and frames, then LN2, a residual ``linear_proj`` with dropout and LN3
  (``OfficialXPool``); the score is the cosine with the raw text feature;
* no text prototypes; the loss averages the two directions; dropout p = 0.3.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lsdo.model.layers import identity_linear


class OfficialSceneAttention(nn.Module):
    """The release's frame-level attention: p = o + Dropout(W_out o), o = softmax_n(q k^T/sqrt d) v."""

    def __init__(self, dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.norm_frames = nn.LayerNorm(dim)
        self.norm_s = nn.LayerNorm(dim)
        self.q = identity_linear(dim)
        self.k = identity_linear(dim)
        self.v = identity_linear(dim)
        self.out = identity_linear(dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, f_v: torch.Tensor, f_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f_v [B, n, d], f_s [B|1, r, d] -> (p [B, n, d], per-frame weights [B, n])."""
        b = f_v.shape[0]
        q = self.q(self.norm_frames(f_v))  # [B, n, d]
        s = self.norm_s(f_s)
        k = self.k(s).expand(b, -1, -1)  # [B, r, d]
        v = self.v(s).expand(b, -1, -1)  # [B, r, d]
        a = (torch.einsum("bnd,brd->bnr", q, k) * self.scale).softmax(dim=1)  # [B, n, r] over frames
        o = torch.einsum("bnr,brd->bnd", a, v)  # [B, n, d]
        return o + self.dropout(self.out(o)), a.mean(dim=-1)


class OfficialFusion(nn.Module):
    """f = w1 p + w2 f_v with (w1, w2) = softmax of two learnable logits initialised [0.3, 0.7]."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, 0.7]))

    def forward(self, f_v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        w = self.logits.softmax(dim=0).to(f_v.dtype)
        return w[0] * p + w[1] * f_v


class OfficialXPool(nn.Module):
    """The release's X-Pool: LN1, single-head attention, W_out, LN2, residual linear_proj, LN3."""

    def __init__(self, dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.q = identity_linear(dim)
        self.k = identity_linear(dim)
        self.v = identity_linear(dim)
        self.out = identity_linear(dim)
        self.linear_proj = identity_linear(dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """text [T, d] (raw [EOS]), frames [B, n, d] -> pooled [T, B, d]."""
        t = self.q(self.norm1(text))  # [T, d]
        f = self.norm1(frames)  # [B, n, d]
        att = (torch.einsum("td,bnd->tbn", t, self.k(f)) * self.scale).softmax(dim=-1)  # [T, B, n]
        pooled = self.out(torch.einsum("tbn,bnd->tbd", att, self.v(f)))  # [T, B, d]
        a = self.norm2(pooled)
        return self.norm3(a + self.dropout(self.linear_proj(a)))
