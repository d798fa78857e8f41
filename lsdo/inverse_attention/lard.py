"""LARD, the Low-Attention Region Detector (paper §3, first stage after the heatmap).

"LARD ... thresholds the heatmap to generate a binary mask. A sliding kernel moves over this mask, and regions with
mean attention below a fixed threshold are marked as candidate bounding boxes."

``normalize_heatmap(heat [..., h, w])``                    -> [..., h, w] min-max scaled to [0, 1] per map
``detect_low_attention(heat [h, w], (H, W), cfg)``         -> candidate boxes [M, 4] int64 (x0, y0, x1, y1), pixels
``detect_low_attention_batch(heat [B, h, w], sizes, cfg)`` -> list of B such tensors

Boxes are half-open pixel intervals: the box covers columns x0 .. x1-1 and rows y0 .. y1-1 of the frame the heatmap
was computed on (callers add the view's offset to reach the original frame).

Defaults of the training-free method (the paper gives no kernel or thresholds, so these are our choices;
``configs/zeroshot.yaml`` states the same values explicitly under ``inference.lard``). The trained ``variant=regions``
model does not use these defaults: ``configs/variant/regions.yaml`` states its own LARD settings (a 2-patch kernel,
sized for the 4 x 4 - 8 x 8 patch grids of the small models it trains), and :func:`detect_low_attention` always takes
its configuration from the caller:

* ``mask_threshold = 0.5``: after min-max normalisation the binary mask marks a cell "high attention" when it lies
  in the upper half of the map's range, the natural mid-point split of a [0, 1] map.
* ``kernel = 3`` patches, ``stride = 1`` patch (``unit = "patch"``): the encoder cannot localise below one patch, and
  a 3x3-patch window (48 px of a 224-px ViT-B/16 view, ~1/5 of the side) is the smallest window with context around
  a centre patch; a one-patch stride gives LARC a dense set of candidates to cluster ("larger and more coherent
  regions" come from LARC, not from a large kernel).
* ``window_threshold = 0.1``: a window is a candidate when under 10% of its area is high attention ("mean attention
  below a fixed threshold"). With the 3x3 kernel (1 cell = 11% of the window) this keeps exactly the windows
  containing no salient cell; with finer kernels (``unit="pixel"``) up to 10% overlap with the mask is tolerated.

``binarize=False`` slides the kernel over the normalised heatmap itself instead of the mask (one reading of "mean
attention"); ``unit="pixel"`` upsamples the heatmap to frame size and reads ``kernel``/``stride`` in pixels.
A constant heatmap (no salient region) normalises to all zeros, so every window is a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from lsdo.inverse_attention.heatmap import upsample


@dataclass(frozen=True)
class LARDConfig:
    """LARD hyper-parameters (see the module docstring for the choice of defaults)."""

    mask_threshold: float = 0.5
    window_threshold: float = 0.1
    kernel: int = 3
    stride: int = 1
    unit: Literal["patch", "pixel"] = "patch"
    binarize: bool = True

    def __post_init__(self) -> None:
        if self.unit not in ("patch", "pixel"):
            raise ValueError(f"LARDConfig.unit must be 'patch' or 'pixel', got {self.unit!r}")
        if self.kernel < 1 or self.stride < 1:
            raise ValueError(f"LARDConfig.kernel and stride must be >= 1, got {self.kernel}, {self.stride}")


def normalize_heatmap(heat: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map to [0, 1]: [..., h, w] -> [..., h, w] (a constant map becomes zeros)."""
    x = heat.float()
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def high_attention_mask(heat: torch.Tensor, threshold: float = LARDConfig.mask_threshold) -> torch.Tensor:
    """LARD's binary mask [..., h, w] bool: True where the normalised heatmap is >= ``threshold`` (salient)."""
    return normalize_heatmap(heat) >= threshold


def window_means(value: torch.Tensor, kernel: tuple[int, int], stride: int) -> torch.Tensor:
    """Mean of ``value`` [h, w] over every kernel window: -> [oh, ow] (window (i, j) starts at (i*stride, j*stride))."""
    return F.avg_pool2d(value[None, None].float(), kernel_size=kernel, stride=stride)[0, 0]


def detect_low_attention(heat: torch.Tensor, frame_size: tuple[int, int], cfg: LARDConfig) -> torch.Tensor:
    """Candidate low-attention boxes [M, 4] int64 (x0, y0, x1, y1) in pixels of a frame of ``frame_size`` (H, W).

    ``heat``: [h, w] heatmap at patch resolution (any non-negative scale; it is min-max normalised here).
    """
    if heat.ndim != 2:
        raise ValueError(f"LARD expects one heatmap [h, w], got shape {tuple(heat.shape)}")
    height, width = int(frame_size[0]), int(frame_size[1])
    norm = normalize_heatmap(heat)
    if cfg.unit == "pixel":
        norm = upsample(norm, (height, width))
    value = (norm >= cfg.mask_threshold).float() if cfg.binarize else norm
    h, w = value.shape
    kh, kw = min(cfg.kernel, h), min(cfg.kernel, w)
    means = window_means(value, (kh, kw), cfg.stride)
    rows, cols = torch.nonzero(means < cfg.window_threshold, as_tuple=True)
    y0, x0 = rows * cfg.stride, cols * cfg.stride
    cells = torch.stack([x0, y0, x0 + kw, y0 + kh], dim=1).double()  # [M, 4] in heatmap cells
    scale = torch.tensor([width / w, height / h, width / w, height / h], dtype=torch.float64)
    boxes = torch.round(cells * scale).long()
    return boxes.to(heat.device)


def detect_low_attention_batch(
    heat: torch.Tensor, frame_sizes: list[tuple[int, int]] | tuple[int, int], cfg: LARDConfig
) -> list[torch.Tensor]:
    """LARD for a batch: heat [B, h, w], one (H, W) per map (or one for all) -> B tensors [M_b, 4] int64."""
    sizes = [frame_sizes] * heat.shape[0] if isinstance(frame_sizes[0], int) else list(frame_sizes)
    return [detect_low_attention(heat[b], sizes[b], cfg) for b in range(heat.shape[0])]
