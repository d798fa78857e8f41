"""Text-conditioned pooling, X-Pool style (paper Section III-E, Eq. 16-20), and the cosine score.

    q_r = Norm(f_r) W''_q                       [T, d_a]      (Eq. 16)
    k_v = Norm(f_m) W''_k,  v_v = Norm(f_m) W''_v   [B, n, d_a]   (Eq. 17-18)
    att = softmax_n(q_r k_v^T / sqrt(d_a))      [T, B, n]     (Eq. 19)
    f_a = Norm((att v_v) W''_o)                 [T, B, d]     (Eq. 20)
    s(t, v) = cos(f_r[t], f_a[t, v])            [T, B]

One LayerNorm serves the text and the frames (as in X-Pool); every projection is d x d
(d_a = d = 512), identity-initialised with zero bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lsdo.model.layers import identity_linear


class XPool(nn.Module):
    """Eq. 16-20: pool each video's frames with attention conditioned on each text."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.q = identity_linear(dim)
        self.k = identity_linear(dim)
        self.v = identity_linear(dim)
        self.out = identity_linear(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.scale = 1.0 / math.sqrt(dim)

    def attention(self, text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Eq. 16, 17, 19: text [T, d], frames [B, n, d] -> weights [T, B, n] (softmax over n)."""
        q = self.q(self.norm_in(text))  # [T, d]
        k = self.k(self.norm_in(frames))  # [B, n, d]
        return (torch.einsum("td,bnd->tbn", q, k) * self.scale).softmax(dim=-1)

    def forward(self, text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """text f_r [T, d], frames f_m [B, n, d] -> pooled video embeddings f_a [T, B, d]."""
        att = self.attention(text, frames)  # [T, B, n]
        v = self.v(self.norm_in(frames))  # [B, n, d]
        pooled = torch.einsum("tbn,bnd->tbd", att, v)  # [T, B, d]
        return self.norm_out(self.out(pooled))  # Eq. 20


def cosine_scores(text: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """text [T, d], pooled [T, B, d] -> cosine similarities [T, B]."""
    return torch.einsum("td,tbd->tb", F.normalize(text, dim=-1), F.normalize(pooled, dim=-1))
