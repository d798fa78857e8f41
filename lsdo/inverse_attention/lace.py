"""LACE, the Low-Attention Crop Extractor (paper §3, third stage).

"Each of the resulting regions is passed to LACE (Low-Attention Crop Extractor), which crops and resizes the region
from the original frame."

``crop_regions(frame [3, H, W], boxes [k, 4], size)`` -> crops [k, 3, S, S] (same dtype as ``frame``)

The crop is taken from the ORIGINAL frame at full resolution (not from the encoder's resized view), then resized to
the encoder's input size. Resize: the region is stretched to S x S ("crops and resizes"; no centre crop, which would
cut part of the low-attention region away) with antialiased bilinear (default) or bicubic interpolation. A region
that already is S x S is copied exactly. uint8 frames give uint8 crops (rounded), float frames float crops.
Boxes are half-open pixel intervals (x0, y0, x1, y1), clipped to the frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_image(image: torch.Tensor, size: int | tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """Resize [3, h, w] -> [3, S, S] keeping the dtype (exact copy when the size already matches)."""
    out_h, out_w = _size2(size)
    if tuple(image.shape[-2:]) == (out_h, out_w):
        return image.clone()
    mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
    y = F.interpolate(image[None].float(), size=(out_h, out_w), mode=mode, align_corners=False, antialias=True)[0]
    if image.dtype == torch.uint8:
        return y.round().clamp(0, 255).to(torch.uint8)
    if not image.dtype.is_floating_point:
        return y.round().to(image.dtype)
    return y.to(image.dtype)


def crop_regions(
    frame: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int], interpolation: str = "bilinear"
) -> torch.Tensor:
    """LACE: crop each box (x0, y0, x1, y1) of ``frame`` [3, H, W] and resize it: -> [k, 3, S, S]."""
    if frame.ndim != 3:
        raise ValueError(f"LACE expects one frame [3, H, W], got shape {tuple(frame.shape)}")
    out_h, out_w = _size2(size)
    height, width = frame.shape[-2:]
    crops = []
    for x0, y0, x1, y1 in boxes.detach().cpu().round().long().tolist():
        x0, x1 = max(0, x0), min(width, x1)
        y0, y1 = max(0, y0), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"LACE: empty region {(x0, y0, x1, y1)} in a {height}x{width} frame")
        crops.append(resize_image(frame[:, y0:y1, x0:x1], (out_h, out_w), interpolation))
    if not crops:
        return frame.new_zeros((0, frame.shape[0], out_h, out_w))
    return torch.stack(crops)
