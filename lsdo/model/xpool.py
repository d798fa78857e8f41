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
        q = self.q(self.norm_in(text))  # [T, d]: Eq. 16
        f = self.norm_in(frames)  # [B, n, d]
        pooled = pool_frames(q, self.k(f), self.v(f), self.scale)  # [T, B, d]: Eq. 17-19, softmax over n
        return self.norm_out(self.out(pooled))  # Eq. 20


def pool_frames(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Single-head attention of every text to every video's frames: q [T, d], k, v [B, n, d] -> [T, B, d].

    ``softmax_n(q k^T * scale) v`` per (text, video) pair, i.e. Eq. 19 then the weighted sum, through
    ``F.scaled_dot_product_attention`` with the videos as its batch (queries [B, T, d], the texts broadcast
    without a copy): one fused kernel where the backend has one for d = 512 (CPU: flash attention, float32
    accumulation also for bf16; CUDA: flash attention stops at head dim 256, so memory-efficient attention
    or the math kernel), else the math kernel, the same operations as before. Equal to
    ``einsum("tbn,bnd->tbd", softmax(einsum("td,bnd->tbn", q, k) * scale), v)`` to float32 rounding: a few
    float32 epsilons times the square root of the reduction length d, which kernel and instruction set
    decide (tests/test_precision.py states the bound).
    """
    out = F.scaled_dot_product_attention(q.expand(k.shape[0], -1, -1), k, v, scale=scale)  # [B, T, d]
    return out.transpose(0, 1)  # [T, B, d]


def cosine_scores(text: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """text [T, d], pooled [T, B, d] -> cosine similarities [T, B].

    In float32 at least, autocast off: bf16 scores (8 bits) would round away the small differences
    between a text's scores that the InfoNCE loss and the ranking read (float32 inputs: unchanged).
    """
    dtype = torch.promote_types(torch.promote_types(text.dtype, pooled.dtype), torch.float32)
    with torch.autocast(pooled.device.type, enabled=False):
        t, p = F.normalize(text.to(dtype), dim=-1), F.normalize(pooled.to(dtype), dim=-1)
        return torch.einsum("td,tbd->tb", t, p)
