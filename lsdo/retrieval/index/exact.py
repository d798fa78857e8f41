"""Exact X-Pool scores of stored videos: all of them (the full protocol) or each text's candidates (re-ranking).

Both use :class:`~lsdo.retrieval.xpool_fast.XPoolScorer` (the scores of
:func:`~lsdo.retrieval.similarity_matrix`): its cost is the per-video precomputation (O(n d^2) per
video, whatever the number of texts), so batch the queries. float16 features are upcast to
float32 (:func:`frames_at`).

* :meth:`ExactScorer.score_all` (``prefilter_k=None``): every video, ``video_chunk`` at a time
  with a running top-k (:mod:`lsdo.retrieval.index.topk`): memory holds one chunk's per-video
  tensors and [T, topk + chunk] scores, never [T, V] or T x V x d.
* :meth:`ExactScorer.rerank` (``prefilter_k=K``): each text's K prefilter candidates [T, K] (the
  scores :func:`~lsdo.retrieval.fast_similarity` gives them). Texts go in groups of at most
  ``RERANK_TEXTS`` whose candidates span at most ``RERANK_CAP`` distinct videos; one XPoolScorer
  per group scores the group's texts against its distinct candidates ([t, U] blocks, the same
  per-video code as the full protocol; cheaper on CPU than gathering per pair) and each text keeps
  its own candidates' scores.

``extra(texts, videos)`` [t, c], when given, is added to the X-Pool scores (the region scores of
mode ``both``). Ties go to the lower video index (stable sorts). With ``stored`` (an index built
with ``rerank=True``, :mod:`lsdo.retrieval.index.rerank`) each block reads its videos' stored
per-video tensors instead of computing them from the frames: the same scores, without the
O(n d^2) per-video cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lsdo.model.lsdo_model import LSDOModel, TextFeatures
from lsdo.retrieval.index.finite import NanCheck
from lsdo.retrieval.index.format import FrameStore
from lsdo.retrieval.index.rerank import TemplateCache, device_of, frames_at, stored_scorer
from lsdo.retrieval.index.topk import chunked_topk
from lsdo.retrieval.xpool_fast import XPoolScorer

__all__ = ["DEFAULT_VIDEO_CHUNK", "RERANK_CAP", "RERANK_TEXTS", "ExactScorer", "ExtraScores", "device_of", "frames_at"]

DEFAULT_VIDEO_CHUNK = 1024  # videos per XPoolScorer in the full protocol (a multiple of its 128-video blocks)
RERANK_CAP = 2048  # at most this many distinct candidate videos per XPoolScorer when re-ranking
RERANK_TEXTS = 64  # at most this many texts per re-ranking group

# extra(texts, videos): scores [t, c] of the texts text[texts] against the videos, added to X-Pool's
ExtraScores = Callable[[slice, slice | torch.Tensor], torch.Tensor]


@dataclass
class ExactScorer:
    """Exact X-Pool scores of texts against the stored ``features`` [V, n, d], with ``model``'s X-Pool head.

    ``check(scores, videos)`` refuses NaN scores; ``chunk_size`` texts are scored at a time;
    ``accum_dtype``: XPoolScorer's accumulation dtype; ``extra``: scores added to X-Pool's (mode both);
    ``stored``: the index's stored re-ranking tensors (name -> [V, ...]) with ``templates``, their
    per-model scorer cache.
    """

    model: LSDOModel
    features: FrameStore
    check: NanCheck
    chunk_size: int = 256
    accum_dtype: torch.dtype = torch.float64
    extra: ExtraScores | None = None
    stored: dict[str, FrameStore] | None = None
    templates: TemplateCache | None = None

    def scorer(self, videos: slice | torch.Tensor) -> XPoolScorer:
        """An XPoolScorer over ``videos``: from the stored per-video tensors, else computed from the frames."""
        device = device_of(self.model)
        if self.stored is not None:
            _, n, d = self.features.shape
            templates = self.templates if self.templates is not None else TemplateCache()
            template = templates.get(self.model, n, d, self.accum_dtype, device)
            return stored_scorer(template, self.stored, videos)
        frames = frames_at(self.features, videos, device)  # [c, n, d] float32
        return XPoolScorer(self.model.xpool, frames, accum_dtype=self.accum_dtype)  # per-video tensors

    def block(self, text: TextFeatures, texts: slice, videos: slice | torch.Tensor) -> torch.Tensor:
        """Scores [t, c] (CPU float32) of ``text[texts]`` (on the model's device) against c ``videos``."""
        scorer = self.scorer(videos)
        scores = scorer.score(text[texts], self.chunk_size).float().cpu()  # [t, c]
        return scores if self.extra is None else scores + self.extra(texts, videos)  # [t, c]

    def score_all(self, text: TextFeatures, topk: int, video_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every video, ``video_chunk`` at a time, with a running top-k: scores [T, k] and indices [T, k]."""
        text = text.to(device_of(self.model))
        num_videos = self.features.shape[0]
        score = lambda videos: self.block(text, slice(None), videos)  # [T, c]
        return chunked_topk(score, len(text), num_videos, min(topk, num_videos), video_chunk, self.check)

    def rerank(self, text: TextFeatures, candidates: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact scores of each text's candidates [T, K] -> the best [T, min(topk, K)] (stable on ties)."""
        text = text.to(device_of(self.model))
        num_texts, k = candidates.shape
        out_k = min(topk, k)
        candidates = candidates.sort(dim=1).values  # ascending video index: ties go to the lower index
        scores_out = torch.empty(num_texts, out_k)
        index_out = torch.empty(num_texts, out_k, dtype=torch.long)
        group = max(1, min(RERANK_TEXTS, RERANK_CAP // max(k, 1)))
        for start in range(0, num_texts, group):
            texts = slice(start, start + group)
            cand = candidates[texts]  # [t, K]
            videos, local = torch.unique(cand, return_inverse=True)  # U sorted distinct videos, [t, K] positions
            dense = self.block(text, texts, videos)  # [t, U]
            self.check(dense, videos)
            scores = dense.gather(1, local)  # [t, K]
            order = scores.sort(dim=1, descending=True, stable=True).indices[:, :out_k]  # [t, out_k]
            scores_out[texts] = scores.gather(1, order)
            index_out[texts] = cand.gather(1, order)
        return scores_out, index_out
