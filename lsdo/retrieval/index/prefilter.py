"""The mean-pool prefilter: each text's K candidate videos by cosine with the video's mean frame.

Paper IV-B.3, :func:`~lsdo.retrieval.prefilter_scores` semantics: a video's coarse score is the
cosine of ``text.target`` [T, d] with its L2-normalised mean over frames (:func:`mean_pool`,
the ``means`` [V, d] float32 an index stores, computed from the *stored* features so that an index
built in one go and one consolidated from shards are identical). The K best per text (any order)
are then re-ranked exactly (:mod:`lsdo.retrieval.index.exact`). Two engines:

* torch (:func:`torch_prefilter`): matmul + top-k over the means in blocks of at most
  ``PREFILTER_BLOCK`` coarse scores [T, chunk]; exact;
* FAISS (``faiss-cpu``), once the index holds at least ``faiss_threshold`` videos (default
  ``DEFAULT_FAISS_THRESHOLD`` = 100k) and faiss is importable (:func:`use_faiss`):
  ``IndexFlatIP`` (exact), or with ``faiss_nlist=N`` an ``IndexIVFFlat`` with N lists
  (approximate, ``faiss_nprobe`` lists searched; a query whose probed lists hold fewer than K
  videos falls back to the torch prefilter) (:func:`build_faiss_index`, :func:`faiss_prefilter`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lsdo.errors import LSDOUserError
from lsdo.retrieval.index.finite import NanCheck
from lsdo.retrieval.index.format import FrameStore

DEFAULT_FAISS_THRESHOLD = 100_000
PREFILTER_BLOCK = 1 << 24  # torch prefilter: at most this many [T, chunk] coarse scores at a time


def mean_pool(features: FrameStore, chunk: int = 8192) -> torch.Tensor:
    """L2-normalised mean over frames: features [V, n, d] -> [V, d] float32 (the prefilter's matrix)."""
    num_videos, _, dim = features.shape
    out = torch.empty(num_videos, dim, dtype=torch.float32)
    for start in range(0, num_videos, chunk):
        part = features[start : start + chunk].to("cpu", torch.float32)  # [c, n, d]
        out[start : start + chunk] = F.normalize(part.mean(dim=1), dim=-1)  # [c, d]
    return out


def faiss_available() -> bool:
    """Whether ``import faiss`` works (the ``faiss-cpu`` package)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def use_faiss(num_videos: int, threshold: int, nlist: int | None) -> bool:
    """Whether the prefilter runs on FAISS: always with an IVF ``nlist`` (needs faiss), else from ``threshold``."""
    if nlist is not None:
        if not faiss_available():
            raise LSDOUserError("faiss_nlist (an IVF prefilter) needs FAISS: pip install faiss-cpu")
        return True
    return num_videos >= threshold and faiss_available()


def torch_prefilter(means: torch.Tensor, query: torch.Tensor, k: int, check: NanCheck) -> torch.Tensor:
    """Exact prefilter: normalised ``query`` [T, d] x ``means`` [V, d] -> the ``k`` best videos [T, k] (any order)."""
    num_texts = query.shape[0]
    best_s = torch.empty(num_texts, 0)
    best_i = torch.empty(num_texts, 0, dtype=torch.long)
    step = max(PREFILTER_BLOCK // max(num_texts, 1), 4096)
    for start in range(0, means.shape[0], step):
        coarse = query @ means[start : start + step].T  # [T, c]: cosines
        check(coarse, torch.arange(start, start + coarse.shape[1]))
        top = coarse.topk(min(k, coarse.shape[1]), dim=1)
        all_s, all_i = torch.cat([best_s, top.values], 1), torch.cat([best_i, top.indices + start], 1)  # [T, <= 2k]
        keep = all_s.topk(min(k, all_s.shape[1]), dim=1).indices
        best_s, best_i = all_s.gather(1, keep), all_i.gather(1, keep)
    return best_i


def build_faiss_index(means: torch.Tensor, nlist: int | None, check: NanCheck) -> tuple[Any, Any]:
    """(FAISS index, its IVF quantizer or None) over ``means`` [V, d]: ``IndexFlatIP``, or ``IndexIVFFlat``.

    ``nlist``: IVF lists (None: flat, exact). The quantizer must be kept alive as long as the IVF
    index (the index refers to it). Non-finite means are refused (``check``) rather than added.
    """
    import faiss

    num_videos, dim = means.shape
    array = np.ascontiguousarray(means.numpy(), dtype=np.float32)  # [V, d]
    finite = np.isfinite(array).all(axis=1)  # [V]
    if not finite.all():
        rows = np.flatnonzero(~finite)
        check(torch.full((1, len(rows)), float("nan")), torch.from_numpy(rows)[None])
    quantizer = None
    if nlist is None:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(1, min(int(nlist), num_videos))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(num_videos, size=min(num_videos, 64 * nlist), replace=False))
        index.train(array[sample])
    index.add(array)
    return index, quantizer


def faiss_prefilter(
    index: Any, query: torch.Tensor, k: int, nprobe: int | None, means: torch.Tensor, check: NanCheck
) -> torch.Tensor:
    """The ``k`` best videos [T, k] of normalised ``query`` [T, d] from a FAISS ``index`` over ``means`` [V, d].

    ``nprobe``: IVF lists to search (None for a flat index). A text whose probed lists hold fewer
    than ``k`` videos gets the exact :func:`torch_prefilter` instead.
    """
    if nprobe is not None:
        index.nprobe = max(1, min(nprobe, index.nlist))
    _, found = index.search(np.ascontiguousarray(query.numpy()), k)  # [T, k], -1 where lists ran out
    found = torch.from_numpy(found).long()
    short = (found < 0).any(dim=1)  # [T]
    if short.any():  # IVF: too few videos in the probed lists -> the exact prefilter for those texts
        found[short] = torch_prefilter(means, query[short], k, check)
    return found
