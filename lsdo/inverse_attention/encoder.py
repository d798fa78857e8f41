"""The Inverse-Attention Encoder (paper §3, Fig. 2): heatmap -> LARD -> LARC -> LACE -> re-encode -> LAFM.

``RegionEncoder(model, method=...).encode(images)`` -> (embeddings [B, 1+K, d], mask [B, 1+K] bool, boxes)

* ``images``: uint8 [B, 3, H, W] (or float in [0, 1]), or a list of [3, H_b, W_b] frames of different sizes.
* slot 0 is the global embedding of the frame's global view; slots 1..K are region embeddings, zero and masked out
  where a frame has fewer regions than K. ``boxes[b]``: [k_b, 4] int64 (x0, y0, x1, y1) regions in pixels of the
  original frame b.
* ``method``: ``"none"`` (K = 0: the standard global embedding), ``"inverse_attention"`` (K = k LARC regions; the
  paper's method), ``"grid"`` (K = g*g equal tiles; the grid-crop baseline).

All embeddings are L2-normalised. The global views go through the encoder in one call (which also yields the
heatmap, :func:`visual_forward_with_heatmap`); all crops of the batch then go through it in ONE further call.
Training-free: the model is put in eval mode and only run under ``torch.no_grad``.

The pipeline's steps after the heatmap are written once, here, and shared with the trained ``variant=regions`` model
(:mod:`lsdo.model.region_lsdo`), which differs only in what it passes:

``find_regions(heat [N, gh, gw], sizes, k, lard, seed, views)``  -> (regions N x [k_i, 4], candidates N x [M_i, 4])
``pad_regions(regions, slots)``                                  -> (boxes [N, K, 4] int64, mask [N, K] bool)
``encode_regions(encode, frames, boxes, mask, size, interpolation, like, grad)`` -> region embeddings [N, K, d]

``encode_regions`` crops every valid slot (LACE), encodes all crops in ONE call of ``encode`` and scatters the
embeddings into the slots (zero rows where masked). Callers: :class:`RegionEncoder` (uint8 frames, the view's offset,
L2-normalised embeddings, no gradient) and ``RegionLSDO`` (CLIP-normalised frames that are their own view, raw
encoder embeddings, ``grad`` = ``variant.grad_through_crops``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lsdo.inverse_attention.grid import DEFAULT_GRID, grid_boxes
from lsdo.inverse_attention.heatmap import HeatmapMethod, visual_forward_with_heatmap
from lsdo.inverse_attention.lace import crop_regions
from lsdo.inverse_attention.lafm import merge, set_similarity
from lsdo.inverse_attention.larc import DEFAULT_K, cluster_regions
from lsdo.inverse_attention.lard import LARDConfig, detect_low_attention
from lsdo.inverse_attention.preprocess import CLIP_MEAN, CLIP_STD, global_view, normalize, view_box

METHODS = ("none", "inverse_attention", "grid")


@dataclass
class RegionEncoding:
    """Everything :meth:`RegionEncoder.encode_detailed` computed for a batch of B frames."""

    embeddings: torch.Tensor  # [B, 1+K, d] L2-normalised; slot 0 = global
    mask: torch.Tensor  # [B, 1+K] bool
    boxes: list[torch.Tensor]  # B x [k_b, 4] int64 regions (original-frame pixels)
    candidates: list[torch.Tensor] = field(default_factory=list)  # B x [M_b, 4] LARD boxes (inverse_attention only)
    heatmaps: torch.Tensor | None = None  # [B, gh, gw] of the global views (inverse_attention only)
    views: list[tuple[int, int, int, int]] = field(default_factory=list)  # B x frame region shown by the global view


def _unwrap(model: nn.Module) -> nn.Module:
    """The open_clip model inside lsdo's CLIPEncoder (``.clip``), else the model itself."""
    inner = getattr(model, "clip", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "visual") else model


# ------------------------------------------------------------------ the shared steps (RegionEncoder, RegionLSDO)
def find_regions(
    heat: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    k: int,
    lard: LARDConfig,
    seed: int,
    views: Sequence[tuple[int, int, int, int]] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """LARD + LARC per frame: heatmaps [N, gh, gw] -> (regions N x [k_i, 4], candidates N x [M_i, 4]), int64 on the CPU.

    ``sizes``: N x (H, W) of the frames the boxes refer to. ``views``: N x (x0, y0, x1, y1), the part of each frame
    the heatmap was computed on (LARD runs at the view's size and its boxes are shifted by the view's offset);
    None: each heatmap covers its whole frame. LARC clusters the candidates into k_i <= ``k`` regions (seeded numpy
    k-means: deterministic, torch's RNG untouched).
    """
    heat = heat.detach().float().cpu()
    regions, candidates = [], []
    for i, (height, width) in enumerate(sizes):
        x0, y0, x1, y1 = views[i] if views is not None else (0, 0, width, height)
        cand = detect_low_attention(heat[i], (y1 - y0, x1 - x0), lard) + torch.tensor([x0, y0, x0, y0])  # [M, 4]
        candidates.append(cand)
        regions.append(cluster_regions(cand, k, (height, width), seed))  # [k_i, 4], k_i <= k
    return regions, candidates


def pad_regions(regions: Sequence[torch.Tensor], slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N x [k_i, 4] boxes (k_i <= slots) -> (boxes [N, slots, 4] int64, zero rows where empty; mask [N, slots] bool)."""
    boxes = torch.zeros(len(regions), slots, 4, dtype=torch.long)
    mask = torch.zeros(len(regions), slots, dtype=torch.bool)
    for i, reg in enumerate(regions):
        boxes[i, : reg.shape[0]] = reg
        mask[i, : reg.shape[0]] = True
    return boxes, mask


def encode_regions(
    encode: Callable[[torch.Tensor], torch.Tensor],
    frames: Sequence[torch.Tensor],
    boxes: torch.Tensor,
    mask: torch.Tensor,
    size: int | tuple[int, int],
    interpolation: str,
    like: torch.Tensor,
    *,
    grad: bool,
) -> torch.Tensor:
    """LACE + one encoder call for every valid slot: -> region embeddings [N, K, d] (zero rows where masked).

    ``frames``: N x [3, H_i, W_i]; ``boxes`` [N, K, 4] and ``mask`` [N, K] bool (slot j of frame i holds a region
    when ``mask[i, j]``); each region is cropped from its frame and resized to ``size`` (``interpolation``), and ALL
    crops go through ``encode`` ([M, 3, S, S] -> [M, d]) in one call. ``like`` [N, d]: the global features, whose
    dtype, device and width the slots take. ``grad``: the crop pass runs with autograd (when it is enabled at all);
    the scatter into the slots is differentiable either way.
    """
    n, k, d = len(frames), mask.shape[1], like.shape[-1]
    flat_mask = mask.flatten().to(like.device)  # [N, K] -> [N*K]
    slots = like.new_zeros(n * k, d)  # [N*K, d]
    parts = [crop_regions(frames[i], boxes[i][mask[i]], size, interpolation) for i in range(n) if bool(mask[i].any())]
    if parts:
        with torch.set_grad_enabled(torch.is_grad_enabled() and grad):
            emb = encode(torch.cat(parts))  # [M, 3, S, S] -> [M, d]: ONE encoder call for every crop of the batch
        index = flat_mask.nonzero().squeeze(1)  # [M]
        slots = slots.index_copy(0, index, emb.to(slots.dtype))  # differentiable scatter into the slots
    return slots.view(n, k, d)  # [N*K, d] -> [N, K, d]


class RegionEncoder:
    """Inverse-attention region embeddings for an open_clip model (CLIP, SigLIP / CustomTextCLIP)."""

    def __init__(
        self,
        model: nn.Module,
        method: str = "inverse_attention",
        *,
        k: int = DEFAULT_K,
        grid: int = DEFAULT_GRID,
        heatmap: HeatmapMethod = "attention",
        lard: LARDConfig | None = None,
        seed: int = 0,
        tokenizer: Any = None,
        image_size: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        resize_mode: str | None = None,
        interpolation: str | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"RegionEncoder.method must be one of {METHODS}, got {method!r}")
        self.model = _unwrap(model).eval()
        self.visual = self.model.visual
        self.method = method
        self.k, self.grid, self.heatmap_method, self.seed = int(k), int(grid), heatmap, int(seed)
        self.lard = lard or LARDConfig()
        self.tokenizer = tokenizer
        cfg = dict(getattr(self.visual, "preprocess_cfg", None) or {})
        size = image_size or cfg.get("size") or self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(mean or cfg.get("mean") or CLIP_MEAN)
        self.std = tuple(std or cfg.get("std") or CLIP_STD)
        self.resize_mode = resize_mode or cfg.get("resize_mode") or "shortest"
        self.interpolation = interpolation or cfg.get("interpolation") or "bicubic"
        view_box((self.image_size, self.image_size), self.resize_mode)  # validates resize_mode

    @property
    def num_regions(self) -> int:
        """K, the number of region slots after the global one."""
        return {"none": 0, "inverse_attention": self.k, "grid": self.grid**2}[self.method]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.visual.parameters()).dtype

    # ------------------------------------------------------------------ internals
    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder pass on uint8/[0,1] images [N, 3, S, S] -> L2-normalised [N, d]."""
        x = normalize(images, self.mean, self.std).to(self.device, self.dtype)
        out = self.visual(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return F.normalize(out.float(), dim=-1)

    def _views(self, frames: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([global_view(f, self.image_size, self.resize_mode, self.interpolation) for f in frames])

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def encode_detailed(self, images: torch.Tensor | list[torch.Tensor]) -> RegionEncoding:
        """All stages for a batch; see the module docstring for shapes."""
        frames = list(images) if isinstance(images, (list, tuple)) else list(images.unbind(0))
        if not frames:
            raise ValueError("RegionEncoder.encode: empty batch")
        for f in frames:
            if f.ndim != 3 or f.shape[0] != 3:
                raise ValueError(f"RegionEncoder.encode: frames must be [3, H, W], got {tuple(f.shape)}")
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in frames]
        views_box = [view_box(s, self.resize_mode) for s in sizes]
        views = self._views(frames)
        heat, candidates = None, []
        if self.method == "inverse_attention":
            x = normalize(views, self.mean, self.std).to(self.device, self.dtype)
            feats, heat = visual_forward_with_heatmap(self.visual, x, self.heatmap_method)
            global_emb = F.normalize(feats.float(), dim=-1)
            boxes, candidates = find_regions(heat, sizes, self.k, self.lard, self.seed, views_box)
        else:
            global_emb = self._embed(views)
            if self.method == "grid":
                boxes = [grid_boxes(s, self.grid) for s in sizes]
            else:
                boxes = [torch.zeros(0, 4, dtype=torch.long) for _ in sizes]

        slot_boxes, slot_mask = pad_regions(boxes, self.num_regions)  # [B, K, 4], [B, K]
        region_emb = encode_regions(
            self._embed, frames, slot_boxes, slot_mask, self.image_size, self.interpolation, global_emb, grad=False
        )  # [B, K, d]: training-free, no gradient
        region_mask = slot_mask.to(global_emb.device)
        embeddings, mask = merge(global_emb, region_emb, region_mask)
        return RegionEncoding(embeddings, mask, boxes, candidates, heat, views_box)

    def encode(
        self, images: torch.Tensor | list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(embeddings [B, 1+K, d], mask [B, 1+K] bool, boxes: B x [k_b, 4] int64) for uint8 frames [B, 3, H, W]."""
        enc = self.encode_detailed(images)
        return enc.embeddings, enc.mask, enc.boxes

    @torch.no_grad()
    def encode_text(self, texts: list[str] | torch.Tensor) -> torch.Tensor:
        """Query embeddings [Q, d], L2-normalised (strings need ``tokenizer``; token tensors pass through)."""
        if not isinstance(texts, torch.Tensor):
            if self.tokenizer is None:
                raise ValueError("RegionEncoder.encode_text: pass a tokenizer to the constructor to encode strings")
            texts = self.tokenizer(list(texts))
        return F.normalize(self.model.encode_text(texts.to(self.device)).float(), dim=-1)

    @staticmethod
    def similarity(
        text_emb: torch.Tensor, embeddings: torch.Tensor, mask: torch.Tensor, chunk_size: int | None = None
    ) -> torch.Tensor:
        """LAFM's max-over-set cosine: [Q, d] x [N, 1+K, d] (mask [N, 1+K]) -> [Q, N]."""
        return set_similarity(text_emb, embeddings, mask, chunk_size)
