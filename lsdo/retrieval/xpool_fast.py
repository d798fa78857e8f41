"""Exact X-Pool scores for every (text, video) pair at about the cost of the attention logits.

The naive score of one pair pools the frames for that text and then applies d x d maps
(W_out, ``linear_proj``) and LayerNorms to the pooled vector: O(d^2) per pair, and a
[T, V, d] tensor for T texts and V videos. Everything after the softmax is, however, affine
in the attention weights, up to the LayerNorm scalings, so it can be moved onto the frames
(once per video) and the LayerNorms and the cosine expressed through per-video n x n Gram
matrices. Per pair that leaves the attention logits and one more text-frame dot product (2 n d)
plus a few n x n quadratic forms: exactly the same scores, without any d x d work per pair.

The scorer reads the head's maps from its ``layout()`` (:class:`lsdo.model.xpool_layout.XPoolLayout`,
defined by ``PaperXPool`` and ``OfficialXPool``): it never looks at the module's type, only at
whether the layout has a ``residual`` stage between W_out and the final LayerNorm.

Derivation, one LayerNorm after W_out (impl=paper, ``PaperXPool``, eval mode). For text t and
video b with frames j = 1..n:

    att_j  = softmax_j(q_t . k_bj / sqrt(d))                      (unchanged, [T, V, n])
    out    = W_o (sum_j att_j v_bj) + b_o = sum_j att_j U_j,      U_j = W_o v_bj + b_o  (sum_j att_j = 1)
    c      = out - mean(out) = sum_j att_j A_j,                   A_j = U_j - mean(U_j)  (centred per frame)
    var    = |c|^2 / d = att^T (A A^T) att / d,                   sigma = sqrt(var + eps)
    z      = LN_out(out) = g * c / sigma + beta
    t . z  = (sum_j att_j (g * A_j) . t) / sigma + beta . t
    |z|^2  = att^T (Ag Ag^T) att / sigma^2 + 2 att^T (Ag beta) / sigma + |beta|^2,   Ag_j = g * A_j
    score  = t . z / (max(|t|, 1e-12) max(|z|, 1e-12))           (F.normalize's clamp)

With a residual stage (impl=official, ``OfficialXPool``): ``out``, ``c`` and A as above (U from W_out W_v), then
a = LN2(out) = g2 * c / sigma2 + beta2 with sigma2 = sqrt(att^T (A A^T) att / d + eps2), and
y = a + linear_proj(a) = (I + P) a + b_p. With R_j = (I + P)(g2 * A_j), r0 = (I + P) beta2 + b_p
(both per video / once), Rc_j, a0 their centred versions and Rg_j = g3 * Rc_j:

    y - mean(y) = s sum_j att_j Rc_j + a0,                        s = 1 / sigma2
    var3   = (s^2 att^T (Rc Rc^T) att + 2 s att^T (Rc a0) + |a0|^2) / d,   sigma3 = sqrt(var3 + eps3)
    t . z  = (s att^T (Rg t) + (g3 * a0) . t) / sigma3 + beta3 . t
    |z|^2  = (s^2 att^T (Rg Rg^T) att + 2 s att^T (Rg (g3 * a0)) + |g3 * a0|^2) / sigma3^2
             + 2 (s att^T (Rg beta3) + (g3 * a0) . beta3) / sigma3 + |beta3|^2

Dropout is the identity in eval mode (a module in training mode with active dropout is refused).
Per video the n x n Grams and n-vectors are stacked into one [n, m] matrix ``mix`` so a single
batched product att^T mix gives every quadratic and linear form of a pair.

Numerics: the logits, the softmax and the two text-frame contractions run in float32 as in the
naive path (the same modules give q and k). The per-video tensors (U, A, R, with W_o W_v composed)
are computed in float64 from the float32 LayerNormed frames, and the Gram matrices, every
quadratic / linear form in the attention weights, sigma and the final cosine are accumulated in
float64 (``accum_dtype``); the scores are cast back to float32. The variance and |z|^2 are
quadratic forms of PSD Grams (sums of squares) plus cross terms, so float64 keeps their rounding
far below float32's and the naive path's own float32 rounding (about 1e-7) is the difference
left: max |fast - naive| is ~1e-7 at 1000 x 1000 pairs (bench/eval_speed.py), and in the tests the
fast scores sit within 1e-6 of a float64 naive evaluation.

Mixed precision: the scorer always computes in the head's parameter dtype (float32) with autocast off,
whatever the context: features encoded under bf16 autocast (``precision: bf16-mixed`` stores bf16
f_m and text features in its validation steps) are cast up first, and a call inside an autocast region
does not drop the float32 contractions to bf16. The scores are then those of the float32 naive path on
the same (bf16-rounded) features.

Cost: per video O(n d^2) once; per pair 2 n d (two [b n, d] x [d, t] matmuls per block of t
texts and b videos) plus O(n m) with m = 2n + 1 (paper) or 3n + 3 (residual, official) per-video columns;
the memory of a block is O(t b (n + m)), never O(t b d). Blocks are video-major ([b, n, t]), so
the softmax over frames and the Gram contractions are vectorised along the texts.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from lsdo.model.lsdo_model import TextFeatures
from lsdo.model.xpool_layout import XPoolLayout

NORMALIZE_EPS = 1e-12  # F.normalize's default clamp on the norm
# Default block: about this many (text, video) pairs, e.g. 256 texts x 512 videos. Few large ops
# rather than many small ones: each op is an OpenMP region, and when another process holds a core
# every region waits for the descheduled thread, so small blocks slow down badly on a busy machine.
PAIRS_PER_BLOCK = 131_072
PAIR_BUDGET = 2048  # (text, candidate) pairs gathered at a time by score_candidates: 2 x [pairs, n, d] floats


def _affine(norm: nn.LayerNorm, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm gain and bias [d] in ``dtype`` (ones / zeros where the norm has none)."""
    d = norm.normalized_shape[-1]
    device = next((p.device for p in norm.parameters()), None)
    g = norm.weight.detach() if norm.weight is not None else torch.ones(d, device=device)
    b = norm.bias.detach() if norm.bias is not None else torch.zeros(d, device=device)
    return g.to(dtype), b.to(dtype)


def _linear(layer: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear weight [out, in] and bias [out] in ``dtype`` (zeros for a bias-free layer)."""
    w = layer.weight.detach().to(dtype)
    b = layer.bias.detach().to(dtype) if layer.bias is not None else w.new_zeros(w.shape[0])
    return w, b


def _float_math(device: torch.device) -> AbstractContextManager:
    """Autocast off on ``device``: the scorer's float32 contractions stay float32 inside an autocast region."""
    return torch.autocast(device.type, enabled=False)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _scoring(method: _Method) -> _Method:
    """A public scoring method: no autograd, autocast off on the scorer's device."""

    @functools.wraps(method)
    def wrapper(self: XPoolScorer, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), _float_math(self.keys.device):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _has_active_dropout(module: nn.Module) -> bool:
    return module.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


@dataclass
class _TextState:
    """Per-text tensors for one chunk of t texts."""

    query: torch.Tensor  # [t, d] float32: W_q LN(text.query) + b_q, the attention query
    target: torch.Tensor  # [t, d] float32: text.target, the text side of the cosine
    norm: torch.Tensor  # [t] accum: max(|target|, 1e-12)
    dot_beta: torch.Tensor  # [t] accum: target . beta (final LayerNorm bias)
    dot_a0: torch.Tensor | None  # [t] accum: target . (g * a0) (residual stage), else None


class XPoolScorer:
    """Exact X-Pool cosine scores from per-video precomputed tensors.

    Usage::

        scorer = XPoolScorer(model.xpool, video)     # video f_m [V, n, d]; O(V n d^2) once
        sims = scorer.score(text)                    # [T, V], equal to model.similarity(text, video)
        cand = scorer.score_candidates(text, idx)    # [T, k] scores of the pairs (t, idx[t, i])

    Works with any X-Pool module that describes itself with ``layout()`` (``PaperXPool`` for
    impl=paper, ``OfficialXPool`` for impl=official); any other module raises TypeError. The
    module must be in eval mode or have no active dropout.
    """

    def __init__(self, xpool: nn.Module, video: torch.Tensor, accum_dtype: torch.dtype = torch.float64) -> None:
        """xpool: the model's X-Pool module (``model.xpool``); video: fused frame features f_m [V, n, d]."""
        layout = getattr(xpool, "layout", None)
        if not callable(layout):
            raise TypeError(f"XPoolScorer needs an X-Pool module with a layout() method, got {type(xpool).__name__}")
        if _has_active_dropout(xpool):
            raise ValueError("XPoolScorer computes eval-mode scores: call model.eval() (X-Pool dropout is active)")
        if video.ndim != 3:
            raise ValueError(f"video must be [V, n, d], got {tuple(video.shape)}")
        self.layout: XPoolLayout = layout()
        self.dtype = self.layout.q.weight.dtype  # the head's dtype: bf16 features (autocast) are cast up to it
        self.residual = self.layout.residual is not None  # LN2 + linear_proj before the final LayerNorm
        self.acc = accum_dtype
        self.scale = float(self.layout.scale)
        self.num_videos, self.num_frames, self.dim = video.shape
        with torch.no_grad(), _float_math(video.device):
            self._precompute(video.to(self.dtype))

    # ------------------------------------------------------------------ per-video precomputation
    def _precompute(self, video: torch.Tensor) -> None:
        lay, acc = self.layout, self.acc
        frames = lay.norm_in(video)  # [V, n, d] float32, the naive path's LN(f_m)
        self.keys = lay.k(frames).contiguous()  # [V, n, d] float32, as in the naive path
        w_v, b_v = _linear(lay.v, acc)
        w_o, b_o = _linear(lay.out, acc)
        w_ov, b_ov = w_o @ w_v, w_o @ b_v + b_o  # [d, d], [d]: W_o (W_v x + b_v) + b_o = W_ov x + b_ov
        u = frames.to(acc) @ w_ov.T + b_ov  # [V, n, d]: U_j = W_o v_j + b_o per frame
        u = u - u.mean(dim=-1, keepdim=True)  # centred: sum_j att_j u_j = out - mean(out)
        cols = []
        if lay.residual is not None:
            norm2, proj = lay.residual
            cols.append(u @ u.transpose(1, 2))  # [V, n, n] Gram for LN2's variance
            self.eps_pre = float(norm2.eps)
            g2, beta2 = _affine(norm2, acc)
            w_p, b_p = _linear(proj, acc)
            ug = u * g2  # [V, n, d]: g2 * A_j
            r = ug + ug @ w_p.T  # [V, n, d]: (I + P)(g2 * A_j)
            a = r - r.mean(dim=-1, keepdim=True)  # [V, n, d] centred R_j
            r0 = beta2 + w_p @ beta2 + b_p  # [d]: (I + P) beta2 + b_p
            a0 = r0 - r0.mean()  # [d] centred constant
        else:
            a, a0 = u, None
        self.eps = float(lay.norm_out.eps)
        g, beta = _affine(lay.norm_out, acc)
        ag = a * g  # [V, n, d]: g * A_j
        cols += [a @ a.transpose(1, 2), ag @ ag.transpose(1, 2), (ag @ beta).unsqueeze(-1)]  # [V,n,n] x2, [V,n,1]
        self.beta = beta  # [d]
        self.beta_sq = float(beta @ beta)
        if a0 is not None:
            ga0 = g * a0  # [d]
            cols += [(a @ a0).unsqueeze(-1), (ag @ ga0).unsqueeze(-1)]  # [V, n, 1] x2
            self.ga0 = ga0
            self.a0_sq, self.ga0_sq, self.ga0_beta = float(a0 @ a0), float(ga0 @ ga0), float(ga0 @ beta)
        else:
            self.ga0 = None
        self.frames_g = ag.to(video.dtype).contiguous()  # [V, n, d] float32: the text side contracts with it
        # [V, n, m] -> [V, m, n]: per video, m rows (Gram rows and linear forms) over its n frames
        self.mix_t = torch.cat(cols, dim=-1).transpose(1, 2).contiguous()

    # ------------------------------------------------------------------ per-video state, stored and restored
    def video_state(self) -> dict[str, torch.Tensor]:
        """The text-independent per-video tensors: ``keys`` [V, n, d], ``frames_g`` [V, n, d], ``mix_t`` [V, m, n]."""
        return {"keys": self.keys, "frames_g": self.frames_g, "mix_t": self.mix_t}

    def with_videos(self, keys: torch.Tensor, frames_g: torch.Tensor, mix_t: torch.Tensor) -> XPoolScorer:
        """This scorer over other videos whose :meth:`video_state` was computed before (e.g. stored in an index):
        a shallow copy sharing the head, with those tensors in this scorer's dtypes and device."""
        other = copy.copy(self)
        device = self.keys.device
        other.keys = keys.to(device=device, dtype=self.keys.dtype)
        other.frames_g = frames_g.to(device=device, dtype=self.frames_g.dtype)
        other.mix_t = mix_t.to(device=device, dtype=self.mix_t.dtype)
        other.num_videos = int(keys.shape[0])
        return other

    # ------------------------------------------------------------------ per-text state
    def _text_state(self, text: TextFeatures) -> _TextState:
        query = self.layout.q(self.layout.norm_in(text.query.to(self.dtype)))  # [t, d], the naive path's query
        target = text.target.to(self.dtype)
        t64 = target.to(self.acc)
        return _TextState(
            query=query,
            target=target,
            norm=t64.norm(dim=-1).clamp_min(NORMALIZE_EPS),  # [t]
            dot_beta=t64 @ self.beta,  # [t]
            dot_a0=t64 @ self.ga0 if self.ga0 is not None else None,  # [t]
        )

    # ------------------------------------------------------------------ the per-pair formulas
    @property
    def _num_grams(self) -> int:
        """Leading n x n blocks of ``mix``: [G_pre (residual stage),] G_A, H_A."""
        return 3 if self.residual else 2

    def _forms(self, att: torch.Tensor, tdot: torch.Tensor, att_mix: torch.Tensor) -> torch.Tensor:
        """The quadratic and linear forms of each pair: att, tdot [P, n, Q], att_mix [P, m, Q] -> [P, F, Q].

        The frame axis is dim 1; ``att_mix[p, c, q] = sum_j att[p, j, q] mix[video, j, c]`` and
        ``tdot[p, j, q] = target . (g * A_j)``. Rows of the result: the ``_num_grams`` quadratic
        forms att^T G att, then the linear forms att^T (mix column), then att^T tdot.
        """
        p_, n, q_ = att.shape
        g = self._num_grams
        quad = (att_mix[:, : g * n].view(p_, g, n, q_) * att.unsqueeze(1)).sum(dim=2)  # [P, g, n, Q] -> [P, g, Q]
        t_lin = (att * tdot).sum(dim=1, keepdim=True)  # [P, 1, Q]
        return torch.cat([quad, att_mix[:, g * n :], t_lin], dim=1)  # [P, F, Q]

    def _finish(self, forms: torch.Tensor, ts: _TextState, text_dim: int) -> torch.Tensor:
        """Scores [P, Q] float32 from the forms [P, F, Q] of :meth:`_forms` (accum dtype).

        ``text_dim`` says which of P (0) or Q (1) indexes the texts, to broadcast the per-text
        [t] scalars. Elementwise on [P, Q]: run once per text chunk, not per video block.
        """
        d, g = self.dim, self._num_grams

        def per_text(x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze(1 - text_dim)  # [t] -> [1, t] (texts along Q) or [t, 1] (texts along P)

        q_a, q_h = forms[:, g - 2], forms[:, g - 1]  # [P, Q]: |sum att A|^2, |g * sum att A|^2
        l_beta, t_lin = forms[:, g], forms[:, -1]  # [P, Q]: (g * sum att A) . beta, (g * sum att A) . target
        # Few, in-place ops: each is a parallel region, and this runs on [V, t] arrays per chunk.
        if not self.residual:
            inv = (q_a / d).add_(self.eps).rsqrt_()  # [P, Q]: 1 / sigma
            num = torch.addcmul(per_text(ts.dot_beta), t_lin, inv)  # t . z
            zz = (q_h * inv).add_(l_beta, alpha=2.0).mul_(inv).add_(self.beta_sq)  # |z|^2
        else:
            s = (forms[:, 0] / d).add_(self.eps_pre).rsqrt_()  # [P, Q]: 1 / sigma2 (LN2)
            l_a0, l_ga0 = forms[:, g + 1], forms[:, g + 2]  # (sum att A) . a0, (g * sum att A) . (g * a0)
            var = (q_a * s).add_(l_a0, alpha=2.0).mul_(s).add_(self.a0_sq)  # s^2 q_a + 2 s l_a0 + |a0|^2
            inv = var.div_(d).add_(self.eps).rsqrt_()  # [P, Q]: 1 / sigma3
            num = torch.addcmul(per_text(ts.dot_a0), t_lin, s).mul_(inv).add_(per_text(ts.dot_beta))  # t . z
            zz = (q_h * s).add_(l_ga0, alpha=2.0).mul_(s).add_(self.ga0_sq).mul_(inv)  # (s^2 q_h + ..) / sigma3
            zz.add_((l_beta * s).add_(self.ga0_beta), alpha=2.0).mul_(inv).add_(self.beta_sq)  # |z|^2
        z_norm = zz.clamp_min_(0).sqrt_().clamp_min_(NORMALIZE_EPS)  # [P, Q]: |LN(...)|, F.normalize's clamp
        return num.div_(z_norm.mul_(per_text(ts.norm))).to(ts.target.dtype)

    def _block_forms(self, ts: _TextState, start: int, stop: int) -> torch.Tensor:
        """Forms [b, F, t] of the chunk's texts against videos ``start:stop`` (two [b n, d] x [d, t] matmuls).

        Video-major ([b, n, t]) so the softmax over frames and the Gram contractions run
        vectorised along the texts.
        """
        keys = self.keys[start:stop]  # [b, n, d]
        b, n, d = keys.shape
        t = ts.query.shape[0]
        dots = (keys.reshape(b * n, d) @ ts.query.T).view(b, n, t)  # [b*n, t] -> [b, n, t]
        att = (dots * self.scale).softmax(dim=1).to(self.acc)  # [b, n, t]: softmax over frames
        frames_g = self.frames_g[start:stop].reshape(b * n, d)  # [b, n, d] -> [b*n, d]
        tdot = (frames_g @ ts.target.T).view(b, n, t).to(self.acc)  # [b*n, t] -> [b, n, t]
        att_mix = torch.bmm(self.mix_t[start:stop], att)  # [b, m, n] @ [b, n, t] -> [b, m, t]
        return self._forms(att, tdot, att_mix)

    # ------------------------------------------------------------------ public scoring
    @_scoring
    def score_block(self, text: TextFeatures, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Scores [t, b] of the texts against videos ``start:stop``."""
        ts = self._text_state(text)
        forms = self._block_forms(ts, start, self.num_videos if stop is None else stop)  # [b, F, t]
        return self._finish(forms, ts, text_dim=1).T  # [b, t] -> [t, b]

    @_scoring
    def score(self, text: TextFeatures, chunk_size: int = 256, video_chunk_size: int | None = None) -> torch.Tensor:
        """All pairs: [T, V] scores in blocks of ``chunk_size`` texts x ``video_chunk_size`` videos.

        ``video_chunk_size=None``: about ``PAIRS_PER_BLOCK`` pairs per block (512 videos for
        256 texts). A block holds O(texts x videos x (n + m)) accum-dtype numbers, never x d;
        the final per-pair algebra runs once per text chunk on its [V, F, t] forms.
        """
        num_texts, num_videos = len(text), self.num_videos
        step = max(int(chunk_size), 1)
        vstep = max(int(video_chunk_size or PAIRS_PER_BLOCK // max(min(step, num_texts), 1)), 1)
        out = torch.empty(num_texts, num_videos, dtype=self.keys.dtype, device=self.keys.device)
        for start in range(0, num_texts, step):
            ts = self._text_state(text[start : start + step])
            if vstep >= num_videos:
                forms = self._block_forms(ts, 0, num_videos)  # [V, F, t]
            else:
                forms = torch.cat([self._block_forms(ts, vs, vs + vstep) for vs in range(0, num_videos, vstep)])
            out[start : start + step] = self._finish(forms, ts, text_dim=1).T  # [V, t] -> [t, V]
        return out

    @_scoring
    def score_candidates(self, text: TextFeatures, candidates: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
        """Scores [T, k] of the pairs (t, candidates[t, i]) only, gathering the per-video tensors.

        Same formulas (``_forms``, ``_finish``) and per-video tensors as :meth:`score`; the two
        text-frame contractions run as batched products over the gathered frames, so a score
        agrees with :meth:`score` to the float32 rounding of those dot products (about 1e-7),
        not bitwise. Texts go ``chunk_size`` at a time, fewer when needed to keep at most
        ``PAIR_BUDGET`` gathered pairs (two [pairs, n, d] tensors) in memory.
        """
        num_texts, k = candidates.shape
        out = torch.empty(num_texts, k, dtype=self.keys.dtype, device=self.keys.device)
        step = max(min(int(chunk_size), PAIR_BUDGET // max(k, 1)), 1)
        for start in range(0, num_texts, step):
            ts = self._text_state(text[start : start + step])
            idx = candidates[start : start + step].to(self.keys.device)  # [t, k]
            dots = torch.einsum("td,tknd->tnk", ts.query, self.keys[idx])  # gathered [t, k, n, d] -> [t, n, k]
            att = (dots * self.scale).softmax(dim=1).to(self.acc)  # [t, n, k]: softmax over frames
            tdot = torch.einsum("td,tknd->tnk", ts.target, self.frames_g[idx]).to(self.acc)  # [t, n, k]
            att_mix = torch.einsum("tnk,tkmn->tmk", att, self.mix_t[idx])  # gathered [t, k, m, n] -> [t, m, k]
            out[start : start + step] = self._finish(self._forms(att, tdot, att_mix), ts, text_dim=0)  # [t, k]
        return out
