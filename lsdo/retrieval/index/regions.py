"""Region embeddings in an index and their scoring (LAFM max-over-set; training-free, paper §3).

An index built with ``regions`` [V, n, 1+K, d] (every sampled frame's
:class:`~lsdo.inverse_attention.RegionEncoder` set: slot 0 the frame's global CLIP embedding, slots
1..K its regions, L2-normalised) and ``region_mask`` [V, n, 1+K] bool stores them next to the
features (tensors ``regions`` / ``region_mask``, in the index dtype / bool; ``meta["regions"]``
records method, k, grid and ``num_regions`` = K; :mod:`lsdo.retrieval.index.format`).

A video's region score for a text is the maximum cosine of the text's CLIP embedding
(``TextFeatures.eos`` = f_t, normalised) over its frames x {global} U {regions}
(:func:`score_regions`, :func:`~lsdo.inverse_attention.lafm.set_similarity`). Search modes
(``VideoIndex.search(..., mode=...)``, ``SEARCH_MODES``): ``"xpool"`` (default, no regions),
``"regions"`` (this score alone: :func:`region_topk`, exhaustive, ``DEFAULT_REGION_CHUNK`` videos
at a time, no prefilter) and ``"both"`` (X-Pool + region score, both cosines in [-1, 1]; with
``prefilter_k`` the mean-pool prefilter picks the candidates and both scores re-rank them).
Region search on an index without regions is a one-line :class:`~lsdo.errors.LSDOUserError`
(:func:`no_regions_error`).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.lafm import set_similarity
from lsdo.retrieval.index.finite import NanCheck
from lsdo.retrieval.index.format import FrameStore
from lsdo.retrieval.index.topk import chunked_topk

SEARCH_MODES = ("xpool", "regions", "both")
DEFAULT_REGION_CHUNK = 256  # videos per block in region scoring ([T, chunk, n * (1+K)] cosines)


def check_region_store(features: FrameStore, regions: FrameStore | None, region_mask: torch.Tensor | None) -> None:
    """ValueError unless ``regions`` [V, n, 1+K, d] and ``region_mask`` [V, n, 1+K] bool fit ``features`` [V, n, d].

    Both or neither: an index either has region embeddings or not.
    """
    if (regions is None) != (region_mask is None):
        raise ValueError("regions and region_mask go together")
    if regions is not None and region_mask is not None:
        v, n, d = features.shape
        if len(regions.shape) != 4 or (regions.shape[0], regions.shape[1], regions.shape[3]) != (v, n, d):
            raise ValueError(f"regions [{v}, {n}, 1+K, {d}] expected, got {tuple(regions.shape)}")
        if tuple(region_mask.shape) != tuple(regions.shape[:3]) or region_mask.dtype != torch.bool:
            raise ValueError(f"region_mask {list(regions.shape[:3])} bool expected, got {tuple(region_mask.shape)}")


def prepare_regions(
    features: torch.Tensor, regions: torch.Tensor | None, region_mask: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validated CPU copies: regions [V, n, 1+K, d] in ``dtype`` and region_mask [V, n, 1+K] bool (or Nones).

    The arguments of ``VideoIndex.build`` / ``add``: the messages name what to give.
    """
    if regions is None and region_mask is None:
        return None, None
    if regions is None or region_mask is None:
        raise ValueError("regions and region_mask go together: give both or neither")
    v, n, d = features.shape
    if regions.ndim != 4 or (regions.shape[0], regions.shape[1], regions.shape[3]) != (v, n, d):
        raise ValueError(f"regions must be [{v}, {n}, 1+K, {d}] (one set per frame), got {tuple(regions.shape)}")
    if tuple(region_mask.shape) != tuple(regions.shape[:3]):
        raise ValueError(f"region_mask must be {list(regions.shape[:3])}, got {tuple(region_mask.shape)}")
    return regions.detach().to("cpu", dtype).contiguous(), region_mask.detach().to("cpu", torch.bool).contiguous()


def region_meta(regions: torch.Tensor, region_info: dict[str, Any] | None) -> dict[str, Any]:
    """``meta["regions"]``: ``region_info`` (method, k, grid, ...), JSON-safe, with ``num_regions`` = K.

    ``regions``: the stored [V, n, 1+K, d].
    """
    k = int(regions.shape[2]) - 1
    return json.loads(json.dumps({**(region_info or {}), "num_regions": k}, default=str))


def no_regions_error(source: str | None) -> LSDOUserError:
    """The one-line error of a region search on an index without regions (``source``: its directory)."""
    where = f" {source}" if source else ""
    return LSDOUserError(
        f"index{where} has no region embeddings (built with region_encoder=none): rebuild it with "
        f"lsdo-index build ... region_encoder=inverse_attention|grid, or search with region_mode=xpool"
    )


def score_regions(
    regions: FrameStore, region_mask: torch.Tensor, text_emb: torch.Tensor, index: slice | torch.Tensor
) -> torch.Tensor:
    """LAFM scores of some videos: text [T, d] x their stored sets -> [T, c] float32 (CPU).

    A video's score is max cosine over its n frames x (1+K) valid set members (:func:`set_similarity`).
    """
    sets = regions[index].to("cpu", torch.float32)  # [c, n, 1+K, d]
    mask = region_mask[index].to("cpu")  # [c, n, 1+K]
    return set_similarity(
        text_emb.detach().to("cpu", torch.float32),
        sets.flatten(1, 2),  # [c, n, 1+K, d] -> [c, n (1+K), d]
        mask.flatten(1, 2),  # [c, n, 1+K] -> [c, n (1+K)]
    )


def region_topk(
    regions: FrameStore, region_mask: torch.Tensor, text_emb: torch.Tensor, k: int, video_chunk: int, check: NanCheck
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best videos per text [T, d] by region score, exhaustively: scores [T, k] and indices [T, k]."""

    def score(videos: slice) -> torch.Tensor:
        return score_regions(regions, region_mask, text_emb, videos)  # [T, c]

    return chunked_topk(score, text_emb.shape[0], regions.shape[0], k, video_chunk, check)
