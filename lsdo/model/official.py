"""``impl=official``: the forward pass of the authors' released code (X-Pool based).

:class:`OfficialLSDOModel` follows the authors' released code point by point
(../shared/notes/official-implementation.md); the differences from ``impl=paper``
(:class:`lsdo.model.lsdo_model.PaperLSDOModel`) are:

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
from omegaconf import DictConfig
from torch import nn

from lsdo.errors import ConfigError
from lsdo.model.base import LSDOModel
from lsdo.model.layers import identity_linear
from lsdo.model.video_lsdo import build_video_lsdo
from lsdo.model.xpool import pool_frames
from lsdo.model.xpool_layout import XPoolLayout


class OfficialSceneAttention(nn.Module):
    """The release's frame-level attention: p = o + Dropout(W_out o), o = softmax_n(q k^T/sqrt d) v.

    The softmax runs over the frames (the queries), not the keys: not what ``F.scaled_dot_product_attention``
    computes, so it stays two einsums (r = 1 or m keys: small).
    """

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

    def layout(self) -> XPoolLayout:
        """LN1, q, k, v, W_out, then LN2 and the residual ``linear_proj`` before LN3 (dropout aside)."""
        residual = (self.norm2, self.linear_proj)
        return XPoolLayout(self.norm1, self.q, self.k, self.v, self.out, self.norm3, self.scale, residual=residual)

    def forward(self, text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """text [T, d] (raw [EOS]), frames [B, n, d] -> pooled [T, B, d]."""
        t = self.q(self.norm1(text))  # [T, d]
        f = self.norm1(frames)  # [B, n, d]
        pooled = self.out(pool_frames(t, self.k(f), self.v(f), self.scale))  # [T, B, d], softmax over the frames
        a = self.norm2(pooled)
        return self.norm3(a + self.dropout(self.linear_proj(a)))


class OfficialLSDOModel(LSDOModel):
    """``impl=official``: the released code's forward pass (variants ``average`` and ``shared`` only).

    Shares the encoder (Eq. 1, Eq. 3), the video-level module of ``shared`` (a frozen Eq. 4 bank
    read from a file), X-Pool's attention and the cosine (Eq. 16-19) with the paper. Departs: no
    Eq. 2 FC (raw f_v); ``average`` is the plain mean of f_v, not Eq. 5; the Scene attention
    replaces Eq. 8-12; learned softmax weights replace Eq. 15's alpha; X-Pool's output adds LN2,
    a residual ``linear_proj`` and LN3 (Eq. 20 has one LayerNorm); no text prototypes
    (Eq. 13-14): both text sides are the raw [EOS] feature f_t.
    """

    impl = "official"
    loss_averages_directions = True  # the release's (L_t2v + L_v2t) / 2

    def build_heads(self, model_cfg: DictConfig, variant_cfg: DictConfig, dim: int) -> None:
        if self.variant not in ("average", "shared"):
            raise ConfigError(
                f"impl=official reproduces the released code for variant=average|shared only, got "
                f"variant={self.variant} (the release's single variant does not run)"
            )
        if self.variant == "shared" and (variant_cfg.get("init") != "file" or not variant_cfg.get("bank_path")):
            raise ConfigError(
                "impl=official variant=shared reads its constant bank from a file: set variant.init=file and "
                "variant.bank_path=<bank JSON> (e.g. the authors' lsdo_shared_bank_vitb32.json)"
            )
        self.use_frame_features = self.use_video_lsdo = self.use_frame_lsdo = True
        self.use_text_lsdo = False
        self.text_lsdo = None
        self.video_lsdo = build_video_lsdo(variant_cfg, dim, trainable_bank=False) if self.variant == "shared" else None
        self.scene = OfficialSceneAttention(dim, dropout=float(model_cfg.dropout))
        self.official_fusion = OfficialFusion()
        self.xpool = OfficialXPool(dim, dropout=float(model_cfg.dropout))

    def project_frames(self, f_v: torch.Tensor) -> torch.Tensor:
        """The raw CLIP frame embeddings: no Eq. 2 FC."""
        return f_v

    def video_level(self, f_v: torch.Tensor, f_s: torch.Tensor | None) -> torch.Tensor:
        """``shared``: the frozen bank [1, m, d]; ``average``: the plain mean of f_v [B, 1, d]."""
        if f_s is not None:
            return f_s
        return self.video_lsdo(f_v) if self.video_lsdo is not None else f_v.mean(dim=1, keepdim=True)

    def frame_level(
        self, f_vp: torch.Tensor, f_s: torch.Tensor | None, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Scene attention (softmax over the frames): p [B, n, d] and its weights [B, n]."""
        if key_mask is not None:
            raise ValueError("impl=official has no key mask: its Scene attention uses every row of f_s")
        return self.scene(f_vp, f_s)

    def fuse(self, f_vp: torch.Tensor, f_p: torch.Tensor | None) -> torch.Tensor:
        """f = w1 p + w2 f_v with (w1, w2) = softmax of the learned logits."""
        return self.official_fusion(f_vp, f_p)
