"""Retrieval: the full X-Pool similarity matrix at evaluation scale, prefiltering, DSL, metrics.

Public API (a contract)::

    text = model.encode_text(tokens)                      # TextFeatures, T texts
    video = model.encode_video(frames)                    # f_m [V, n, d]
    sims = similarity_matrix(model, text, video)          # [T, V] exact X-Pool cosine scores
    sims = fast_similarity(model, text, video, prefilter_k=10)  # [T, V], -inf outside the top-k
    t2v_metrics(sims, text_to_video), v2t_metrics(sims, text_to_video)

``similarity_matrix`` scores every (text, video) pair. ``method="gram"`` (default; earlier name "fast") uses
:class:`lsdo.retrieval.xpool_fast.XPoolScorer`: the linear maps after the attention are pushed
onto the frames and the LayerNorms / cosine are evaluated through per-video n x n Gram matrices,
so a pair costs about its attention logits (2 n d) instead of d x d; it equals the naive scores
to float32 rounding (about 1e-7; float64 accumulation, see xpool_fast). ``method="naive"``
calls ``model.similarity`` per chunk (pools a [chunk, V_chunk, d] tensor). Either way texts are
processed ``chunk_size`` at a time (and videos ``video_chunk_size`` at a time when given), so
peak memory grows with the chunk, never with T x V x d. Both run without autograd and assume
eval mode (the fast path refuses an X-Pool module with active dropout).

**-inf scores.** ``fast_similarity`` puts -inf at every pair it did not re-rank. The metrics in
:mod:`lsdo.retrieval.metrics` rank pessimistically on ties (rank = number of candidates scoring
>= the target), so a query whose ground truth was filtered out (target score -inf) gets the last
rank (V for text-to-video, T for video-to-text), and -inf entries never outrank a finite one.

**DSL.** :func:`dual_softmax` is off by default: nothing here applies it; call it on the matrix.
It is transductive (uses the whole test query set), unlike the plain scores.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lsdo.model.lsdo_model import LSDOModel, TextFeatures
from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics
from lsdo.retrieval.xpool_fast import XPoolScorer

__all__ = [
    "Prefilter",
    "XPoolScorer",
    "dual_softmax",
    "fast_similarity",
    "prefilter_scores",
    "similarity_matrix",
    "t2v_metrics",
    "v2t_metrics",
]

DEFAULT_CHUNK = 256
METHODS = ("gram", "naive")
METHOD_ALIASES = {"fast": "gram"}  # the earlier name of "gram" (it is exact, not approximate)
MODES = ("full", "prefilter")
MODE_ALIASES = {"fast": "prefilter"}  # the earlier name of "prefilter" (approximate: only the top-k are re-ranked)


def canonical_method(method: str) -> str:
    """``inference.method``: "gram" (exact per-video Gram matrices) or "naive"; "fast" is the earlier name of gram."""
    return METHOD_ALIASES.get(method, method)


def canonical_mode(mode: str) -> str:
    """``inference.mode``: "full" (every pair) or "prefilter" (top-k re-ranking); "fast" = prefilter (earlier name)."""
    return MODE_ALIASES.get(mode, mode)


def _check_inputs(text: TextFeatures, video: torch.Tensor) -> None:
    if video.ndim != 3:
        raise ValueError(f"video must be the [V, n, d] output of model.encode_video, got {tuple(video.shape)}")
    if text.target.ndim != 2 or text.target.shape[-1] != video.shape[-1]:
        raise ValueError(f"text features [T, {video.shape[-1]}] expected, got {tuple(text.target.shape)}")


@torch.no_grad()
def similarity_matrix(
    model: LSDOModel,
    text: TextFeatures,
    video: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK,
    method: str = "gram",
    *,
    video_chunk_size: int | None = None,
) -> torch.Tensor:
    """X-Pool cosine scores of every pair: text (T texts), video f_m [V, n, d] -> [T, V].

    ``method``: "gram" (exact, per-video precomputation, see module docstring; "fast" is its earlier
    name) or "naive" (``model.similarity`` per chunk). ``chunk_size`` texts and ``video_chunk_size``
    videos are scored at a time (default: about 131k pairs per block for "gram", all videos for "naive").
    """
    method = canonical_method(method)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS} (or 'fast' = 'gram'), got '{method}'")
    _check_inputs(text, video)
    if method == "gram":
        return XPoolScorer(model.xpool, video).score(text, chunk_size, video_chunk_size)
    num_texts, num_videos = len(text), video.shape[0]
    step, vstep = max(int(chunk_size), 1), max(int(video_chunk_size or num_videos), 1)
    out = video.new_empty(num_texts, num_videos, dtype=torch.float32)  # fp32 scores, also for bf16 features
    for start in range(0, num_texts, step):
        part = text[start : start + step]
        for vs in range(0, num_videos, vstep):
            out[start : start + step, vs : vs + vstep] = model.similarity(part, video[vs : vs + vstep])  # [t, b]
    return out


class Prefilter(NamedTuple):
    """Coarse mean-pool scores [T, V] and each text's top-k videos [T, k] (best first)."""

    scores: torch.Tensor
    candidates: torch.Tensor


@torch.no_grad()
def prefilter_scores(text: TextFeatures | torch.Tensor, video: torch.Tensor, k: int) -> Prefilter:
    """Paper IV-B.3 prefilter: cos(text.target, mean_n f_m) [T, V] and its top-``k`` videos per text.

    ``k`` is clipped to V; ties in the coarse scores are broken by ``torch.topk``.
    """
    target = text.target if isinstance(text, TextFeatures) else text  # [T, d]
    pooled = video.mean(dim=1)  # [V, n, d] -> [V, d]: mean over frames
    coarse = F.normalize(target, dim=-1) @ F.normalize(pooled, dim=-1).T  # [T, V]
    k = max(min(int(k), video.shape[0]), 0)
    return Prefilter(coarse, coarse.topk(k, dim=1).indices)


@torch.no_grad()
def fast_similarity(
    model: LSDOModel,
    text: TextFeatures,
    video: torch.Tensor,
    prefilter_k: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Paper IV-B.3 fast inference: mean-pool prefilter, exact X-Pool re-ranking of the top-k.

    Returns [T, V]: the exact X-Pool score at each text's ``prefilter_k`` candidates (the videos
    of :func:`prefilter_scores`) and -inf elsewhere (ranked last by the metrics, see the module
    docstring). With ``prefilter_k >= V`` every video is a candidate and the result is
    :func:`similarity_matrix` itself, computed by the same code (bitwise equal). With a smaller k
    the candidates' scores come from the same per-video tensors and formulas, gathered per text
    (:meth:`XPoolScorer.score_candidates`): equal to the full matrix up to the float32 rounding
    of the batched dot products (about 1e-7).
    """
    _check_inputs(text, video)
    num_videos = video.shape[0]
    if prefilter_k >= num_videos:
        return similarity_matrix(model, text, video, chunk_size, method="gram")
    candidates = prefilter_scores(text, video, prefilter_k).candidates  # [T, k]
    scores = XPoolScorer(model.xpool, video).score_candidates(text, candidates, chunk_size)  # [T, k]
    out = video.new_full((len(text), num_videos), float("-inf"))
    return out.scatter_(1, candidates, scores)


def dual_softmax(sims: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Dual-softmax (DSL, CAMoE) post-processing of a [T, V] matrix (texts x videos).

    ``out[t, v] = sims[t, v] * softmax_t(sims[:, v] / temperature)[t]``, i.e. each score is
    multiplied by a softmax over the *text* axis (all T queries, per video); the published
    codes use ``sims * softmax(sims * 100, axis=0)``, i.e. ``temperature = 0.01``. Because the
    softmax runs over the whole test query set it is transductive: a query's scores depend on the
    other queries. Off by default (nothing applies it implicitly). -inf entries (pairs a
    prefilter dropped) get weight 0 and stay -inf; a video column with no finite entry stays -inf.
    """
    if sims.ndim != 2:
        raise ValueError(f"sims must be [T, V], got {tuple(sims.shape)}")
    finite = torch.isfinite(sims)
    weights = (sims / temperature).softmax(dim=0)  # [T, V]: softmax over texts, per video
    return torch.where(finite, sims * weights, torch.full_like(sims, float("-inf")))


# The persistent index (lsdo.retrieval.index) is part of the public API: lsdo.retrieval.VideoIndex.
from lsdo.retrieval.index import VideoIndex, model_fingerprint  # noqa: E402

__all__ += ["VideoIndex", "model_fingerprint"]
