"""Inverse-attention region embeddings ("Look Beyond Saliency", training-free), for open_clip encoders.

Pipeline (paper §3, Fig. 2): heatmap (:mod:`.heatmap`) -> LARD (:mod:`.lard`) -> LARC (:mod:`.larc`) -> LACE
(:mod:`.lace`) -> re-encode -> LAFM (:mod:`.lafm`); glued by :class:`RegionEncoder` (:mod:`.encoder`). Baseline:
grid crops (:mod:`.grid`). Data: Dense-Set (:mod:`.denseset`). Figure: :mod:`.viz`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RegionEncoder": "encoder",
    "RegionEncoding": "encoder",
    "grid_boxes": "grid",
    "attention_heatmap": "heatmap",
    "upsample": "heatmap",
    "visual_forward_with_heatmap": "heatmap",
    "crop_regions": "lace",
    "merge": "lafm",
    "set_similarity": "lafm",
    "set_similarity_argmax": "lafm",
    "LARDConfig": "lard",
    "detect_low_attention": "lard",
    "normalize_heatmap": "lard",
    "cluster_regions": "larc",
    "kmeans": "larc",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy exports, so the Dense-Set builder does not import torch / open_clip."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lsdo.inverse_attention.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lsdo.inverse_attention' has no attribute {name!r}")
