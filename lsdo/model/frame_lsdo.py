"""Frame-level LSDO features: object attention (paper Section III-C, Eq. 8-12).

    q_v = Norm(f'_v) W'_q          [B, n, d]          (Eq. 8; the query is f'_v, Fig. 2)
    k_s = Norm(f_s)  W'_k          [B|1, r, d]        (Eq. 9)
    v_s = Norm(f_s)  W'_v          [B|1, r, d]        (Eq. 10)
    l   = q_v k_s^T / sqrt(d)      [B, n, r]          (the logits of Eq. 11)

Two forms, ``variant.frame_attention``:

``bounded`` (the default since 2026-12-02). Eq. 11 and 12 as printed give every frame
    c_i = Norm( sum_r softmax_r(l_i)_r v_s[r] W'_o )            [B, n, d]   (Eq. 11 over the KEYS, Eq. 12)
a LayerNorm output: for r > 1 each frame chooses among the keys (the shared bank's rows, the
regions), but for r = 1 (``average``, ``single``) the softmax over one key is identically 1 and
every frame gets the same vector, while the paper's text and Fig. 8 give each frame its own weight
("frames with higher demand for LSDO information ... get more LSDO features"). That weight is the
frame-axis softmax the authors' code and Fig. 8 use, averaged over the keys,
    w = mean_r softmax_n(l)[:, :, r]                             [B, n]      (sums to 1 over frames)
and it sets how much of c_i frame i receives, relative to the frame that needs it most:
    f_p[i] = (w_i / max_j w_j) c_i                               [B, n, d]   (Eq. 12, weighted)
So the frame with the largest weight receives exactly Eq. 12's LayerNorm output and every other
frame a fraction of its own: the weights stay frame-specific (Fig. 8), |f_p[i]| <= |c_i| (a
LayerNorm output's magnitude, ~sqrt(d) at unit gain), and for r > 1 frames choose among the keys.

``rescaled`` (this project's form until 2026-12-02; also what checkpoints without the key used):
    a = softmax_n(l)  [B, n, r];   f_p = sum_r (n / r) a[:, i, r] Norm(v_s W'_o)[r]
Each key column is a softmax over the frames, rescaled by n / r to average 1. Two degeneracies
(issue 13): a peaked column gives one frame up to n times a LayerNorm output (``single`` at
initialisation: its selected frame matches its own key, weight 7.4 of n = 8, |f_p| = 167 against
|f'_v| = 12.3, so X-Pool sees the LSDO term instead of that frame); and with r keys,
sum_i f_p[i] = (n / r) sum_r Norm(v_s W'_o)[r] is the same for every video (``shared``: the bank
only redistributes one constant vector across frames). ``bounded`` has neither: its per-frame
magnitude is at most a LayerNorm output's, and its content depends on each frame's choice of keys.

Key mask (optional, ``variant=regions``): ``key_mask`` [B|1, r] bool marks the valid keys. Masked
keys get zero weight and their values are ignored (even non-finite ones): ``bounded`` leaves them
out of the softmax over the keys and of the mean over keys of w; ``rescaled`` uses the number of
valid keys r_b of each video instead of r. A masked key changes nothing (the result equals the call
without it); a video with r_b = 0 gets f_p = 0 and per-frame weights 0.

The per-frame weights returned (and plotted like the paper's Fig. 8) are w [B, n], summing to 1
over the frames, in both forms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lsdo.errors import ConfigError
from lsdo.model.layers import identity_linear

FRAME_ATTENTION = ("bounded", "rescaled")


class FrameObjectAttention(nn.Module):
    """Object attention from frames (queries) to video-level LSDO features (keys/values).

    Not ``F.scaled_dot_product_attention``: both forms read the frame-axis softmax of the logits (the
    weights w, ``rescaled``'s mixing), which SDPA does not expose, so the logits are computed once here.
    """

    def __init__(self, dim: int, mode: str = "bounded") -> None:
        super().__init__()
        if mode not in FRAME_ATTENTION:
            raise ConfigError(f"variant.frame_attention: expected {' | '.join(FRAME_ATTENTION)}, got '{mode}'")
        self.mode = mode
        self.norm_frames = nn.LayerNorm(dim)
        self.norm_lsdo = nn.LayerNorm(dim)
        self.q = identity_linear(dim)
        self.k = identity_linear(dim)
        self.v = identity_linear(dim)
        self.out = identity_linear(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.scale = 1.0 / math.sqrt(dim)

    def logits(self, f_v: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        """Eq. 8, 9 and Eq. 11's scaled dot products: [B, n, r]."""
        q = self.q(self.norm_frames(f_v))  # [B, n, d]
        k = self.k(self.norm_lsdo(f_s))  # [B|1, r, d]
        return torch.einsum("bnd,brd->bnr", q, k.expand(q.shape[0], -1, -1)) * self.scale  # [B, n, r]

    def attention(self, f_v: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        """Frame-axis attention weights [B, n, r], each key column summing to 1 over the n frames."""
        return self.logits(f_v, f_s).softmax(dim=1)

    def forward(
        self, f_v: torch.Tensor, f_s: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f'_v [B, n, d], f_s [B|1, r, d], key_mask [B|1, r] bool or None -> (f_p [B, n, d], weights [B, n])."""
        if self.mode == "bounded":
            return self._bounded(f_v, f_s, key_mask)
        return self._rescaled(f_v, f_s, key_mask)

    def _bounded(
        self, f_v: torch.Tensor, f_s: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(f_v, f_s)  # [B, n, r]
        b = logits.shape[0]
        value = self.v(self.norm_lsdo(f_s)).expand(b, -1, -1)  # [B, r, d]: Eq. 10
        if key_mask is None:
            over_keys = logits.softmax(dim=-1)  # [B, n, r]: Eq. 11, each frame chooses among the keys
            w = logits.softmax(dim=1).mean(dim=-1)  # [B, n]: Fig. 8's frame weights
            has_keys = None
        else:
            valid = key_mask.to(torch.bool).expand(b, -1)  # [B, r]
            zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
            masked = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))  # [B, n, r]
            has_keys = valid.any(dim=-1)  # [B]
            safe = torch.where(has_keys[:, None, None], masked, zero)  # a video without keys: no NaN
            over_keys = torch.where(valid.unsqueeze(1), safe.softmax(dim=-1), zero)  # [B, n, r]
            count = valid.sum(dim=-1).clamp_min(1).to(logits.dtype)  # [B]: r_b
            columns = torch.where(valid.unsqueeze(1), logits, zero)  # no all -inf column: no NaN gradient
            per_key = torch.where(valid.unsqueeze(1), columns.softmax(dim=1), zero)  # [B, n, r]
            w = per_key.sum(dim=-1) / count[:, None]  # [B, n]
            value = torch.where(valid.unsqueeze(-1), value, zero)  # masked values ignored, even non-finite
        content = self.norm_out(self.out(torch.einsum("bnr,brd->bnd", over_keys, value)))  # [B, n, d]: Eq. 12
        relative = w / w.amax(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)  # [B, n], max 1
        f_p = relative.unsqueeze(-1) * content  # [B, n, d]
        if has_keys is not None:
            f_p = torch.where(has_keys[:, None, None], f_p, torch.zeros((), dtype=f_p.dtype, device=f_p.device))
        return f_p, w

    def _rescaled(
        self, f_v: torch.Tensor, f_s: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
