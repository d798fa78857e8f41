"""The mean-pool prefilter: each text's K candidate videos by cosine with the video's mean frame.

Paper IV-B.3, :func:`~lsdo.retrieval.prefilter_scores` semantics: a video's coarse score is the
cosine of ``text.target`` [T, d] with its L2-normalised mean over frames (:func:`mean_pool`,
the ``means`` [V, d] float32 an index stores, computed from the *stored* features so that an index
built in one go and one consolidated from shards are identical). The K best per text (any order)
are then re-ranked exactly (:mod:`lsdo.retrieval.index.exact`). Engines (:func:`plan_prefilter`):

* torch (:func:`torch_prefilter`): matmul + top-k over the means in blocks of at most
  ``PREFILTER_BLOCK`` coarse scores [T, chunk]; exact. Below ``faiss_threshold`` videos (default
  ``DEFAULT_FAISS_THRESHOLD`` = 100k), or without FAISS (``faiss-cpu``);
* FAISS ``IndexFlatIP`` (exact) from ``faiss_threshold`` videos;
* FAISS ``IndexIVFPQ`` (approximate) from ``ivfpq_threshold`` videos (default
  ``DEFAULT_IVFPQ_THRESHOLD`` = 1M): ``nlist`` inverted lists (:func:`auto_nlist`: the power of two
  nearest sqrt(V)), each mean compressed to ``pq`` bytes (:func:`auto_pq`: d / 8, 64 for d = 512),
  ``nprobe`` lists searched per query; the ``refine`` x K best by the compressed codes are then
  re-scored exactly from the stored means (a gather of refine x K rows) and the K best kept;
* explicit: ``faiss_nlist=N`` alone is an ``IndexIVFFlat`` (approximate through the lists only),
  with ``faiss_pq=M`` an ``IndexIVFPQ``.

An IVF query whose probed lists hold fewer than K videos falls back to the exact torch prefilter.
The FAISS indexes are built from the means a block of ``FAISS_ADD_BLOCK`` rows at a time (the
means may be memory-mapped shards: never copied whole); IVF is trained on a sample of
``TRAIN_PER_LIST`` x nlist means. Measured recall against the exact top-k: docs/search.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lsdo.errors import LSDOUserError
from lsdo.retrieval.index.finite import NanCheck
from lsdo.retrieval.index.format import FrameStore
from lsdo.retrieval.index.shards import row_slices

DEFAULT_FAISS_THRESHOLD = 100_000  # FAISS IndexFlatIP (exact) from this many videos
DEFAULT_IVFPQ_THRESHOLD = 1_000_000  # FAISS IndexIVFPQ (approximate) from this many videos
DEFAULT_NPROBE = 32  # IVF lists probed per query (docs/search.md: recall against nprobe)
DEFAULT_REFINE = 16  # IVF-PQ: refine x K candidates re-scored exactly from the stored means
PREFILTER_BLOCK = 1 << 24  # torch prefilter: at most this many [T, chunk] coarse scores at a time
FAISS_ADD_BLOCK = 1 << 16  # means added to a FAISS index at a time
TRAIN_PER_LIST = 64  # IVF training sample: this many means per list (at least 256 * ... for PQ)


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


def auto_nlist(num_videos: int) -> int:
    """IVF lists for ``num_videos`` means: the power of two nearest sqrt(V), within [16, 65536] and <= V / 39."""
    target = 2 ** round(math.log2(max(num_videos, 1) ** 0.5))
    return int(max(1, min(target, 65536, max(num_videos // 39, 16))))


def auto_pq(dim: int) -> int:
    """PQ sub-quantizers (bytes per mean) for d: the largest divisor of d not above d / 8 (64 for d = 512)."""
    return max(m for m in range(1, max(dim // 8, 1) + 1) if dim % m == 0)


@dataclass(frozen=True)
class PrefilterPlan:
    """Which engine a prefilter uses: ``kind`` torch | flat | ivf | ivfpq, with IVF ``nlist`` and PQ ``pq`` bytes."""

    kind: str
    nlist: int | None = None
    pq: int | None = None

    @property
    def faiss(self) -> bool:
        return self.kind != "torch"


def plan_prefilter(
    num_videos: int,
    dim: int,
    threshold: int = DEFAULT_FAISS_THRESHOLD,
    nlist: int | None = None,
    pq: int | None = None,
    ivfpq_threshold: int = DEFAULT_IVFPQ_THRESHOLD,
) -> PrefilterPlan:
    """The engine for ``num_videos`` means of size ``dim`` (module docstring); explicit ``nlist`` / ``pq`` win."""
    if nlist is not None or pq is not None:
        if not faiss_available():
            raise LSDOUserError("faiss_nlist / faiss_pq (an IVF prefilter) need FAISS: pip install faiss-cpu")
        lists = nlist if nlist is not None else auto_nlist(num_videos)
        return PrefilterPlan("ivfpq", lists, pq) if pq is not None else PrefilterPlan("ivf", lists)
    if not faiss_available():
        return PrefilterPlan("torch")
    if num_videos >= ivfpq_threshold:
        return PrefilterPlan("ivfpq", auto_nlist(num_videos), auto_pq(dim))
    if num_videos < threshold:
        return PrefilterPlan("torch")
    return PrefilterPlan("flat")


def torch_prefilter(means: FrameStore, query: torch.Tensor, k: int, check: NanCheck) -> torch.Tensor:
    """Exact prefilter: normalised ``query`` [T, d] x ``means`` [V, d] -> the ``k`` best videos [T, k] (any order)."""
    num_texts = query.shape[0]
    best_s = torch.empty(num_texts, 0)
    best_i = torch.empty(num_texts, 0, dtype=torch.long)
    step = max(PREFILTER_BLOCK // max(num_texts, 1), 4096)
    start = 0
    for block in row_slices(means, 0, int(means.shape[0]), step):  # views of the shards: never a copy of all
        coarse = query @ block.to(query.dtype).T  # [T, c]: cosines
        check(coarse, torch.arange(start, start + coarse.shape[1]))
        top = coarse.topk(min(k, coarse.shape[1]), dim=1)
        all_s, all_i = torch.cat([best_s, top.values], 1), torch.cat([best_i, top.indices + start], 1)  # [T, <= 2k]
        keep = all_s.topk(min(k, all_s.shape[1]), dim=1).indices
        best_s, best_i = all_s.gather(1, keep), all_i.gather(1, keep)
        start += coarse.shape[1]
    return best_i


def _finite_block(array: np.ndarray, start: int, check: NanCheck) -> None:
    """Refuse (``check``) the non-finite rows of a block of means starting at row ``start``."""
    finite = np.isfinite(array).all(axis=1)  # [c]
    if not finite.all():
        rows = np.flatnonzero(~finite) + start
        check(torch.full((1, len(rows)), float("nan")), torch.from_numpy(rows)[None])


def build_faiss_index(
    means: FrameStore, nlist: int | None, check: NanCheck, pq: int | None = None, seed: int = 0
) -> tuple[Any, Any]:
    """(FAISS index, its IVF quantizer or None) over ``means`` [V, d]: flat, ``IndexIVFFlat`` or ``IndexIVFPQ``.

    ``nlist``: IVF lists (None: ``IndexFlatIP``, exact); ``pq``: bytes per mean of an IVF-PQ (None:
    IVF-Flat). The quantizer must be kept alive as long as the IVF index (the index refers to it).
    Non-finite means are refused (``check``) rather than added. The means are read a block at a time.
    """
    import faiss

    num_videos, dim = means.shape
    quantizer = None
    if nlist is None:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(1, min(int(nlist), num_videos))
        quantizer = faiss.IndexFlatIP(dim)
        if pq is None:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            size = TRAIN_PER_LIST * nlist
        else:
            if dim % pq:
                raise LSDOUserError(f"faiss_pq={pq} must divide the embedding size {dim}")
            bits = max(1, min(8, int(math.log2(max(num_videos, 2)))))  # PQ centroids 2^bits <= training points
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(pq), bits, faiss.METRIC_INNER_PRODUCT)
            size = max(TRAIN_PER_LIST * nlist, 64 * 2**bits)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(num_videos, size=min(num_videos, size), replace=False))
        train = np.ascontiguousarray(means[torch.from_numpy(sample)].numpy(), dtype=np.float32)
        _finite_block(train, 0, lambda s, v: check(s, torch.from_numpy(sample)[v]))
        index.train(train)
        del train
    start = 0
    for piece in row_slices(means, 0, num_videos, FAISS_ADD_BLOCK):
        array = np.ascontiguousarray(piece.numpy(), dtype=np.float32)  # [c, d]
        _finite_block(array, start, check)
        index.add(array)
        start += array.shape[0]
    return index, quantizer


def is_pq(index: Any) -> bool:
    """Whether a FAISS index compresses the vectors (its scores are approximate): IVF-PQ."""
    import faiss

    return isinstance(index, faiss.IndexIVFPQ)


def faiss_prefilter(
    index: Any,
    query: torch.Tensor,
    k: int,
    nprobe: int | None,
    means: FrameStore,
    check: NanCheck,
    refine: int = 1,
) -> torch.Tensor:
    """The ``k`` best videos [T, k] of normalised ``query`` [T, d] from a FAISS ``index`` over ``means`` [V, d].

    ``nprobe``: IVF lists to search (None for a flat index). ``refine`` > 1: fetch ``refine`` x k
    videos and keep the k best by their exact cosine with the stored means (for IVF-PQ, whose
    compressed scores are approximate). A text whose probed lists hold fewer than ``k`` videos gets
    the exact :func:`torch_prefilter` instead.
    """
    if nprobe is not None:
        index.nprobe = max(1, min(nprobe, index.nlist))
    num_videos = int(means.shape[0])
    fetch = min(max(int(refine), 1) * k, num_videos)
    _, found = index.search(np.ascontiguousarray(query.numpy()), fetch)  # [T, fetch], -1 where lists ran out
    found = torch.from_numpy(found).long()
    valid = found >= 0  # [T, fetch]
    if fetch > k:
        rows = means[found.clamp_min(0).reshape(-1)].reshape(*found.shape, -1).float()  # [T, fetch, d]
        exact = torch.einsum("tfd,td->tf", rows, query)  # [T, fetch]: cosines
        check(exact.masked_fill(~valid, 0.0), found.clamp_min(0))
        exact = exact.masked_fill(~valid, float("-inf"))
        keep = exact.topk(k, dim=1).indices  # [T, k]
        found, valid = found.gather(1, keep), valid.gather(1, keep)
    short = ~valid.all(dim=1)  # [T]
    if short.any():  # IVF: too few videos in the probed lists -> the exact prefilter for those texts
        found[short] = torch_prefilter(means, query[short], k, check)
    return found


def serialize(index: Any) -> np.ndarray:
    """A FAISS index as bytes (uint8 array; ``faiss.serialize_index``), quantizer included."""
    import faiss

    return faiss.serialize_index(index)


def deserialize(data: np.ndarray) -> Any:
    """The FAISS index of :func:`serialize`'s bytes."""
    import faiss

    return faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
