"""The global view of a frame (paper §3: "each frame is encoded as a global visual embedding").

``view_box((H, W), resize_mode)``                 -> (x0, y0, x1, y1): the part of the frame the global view shows
``global_view(frame [3, H, W], S, resize_mode)`` -> [3, S, S] (same dtype as the frame)
``normalize(images [N, 3, S, S], mean, std)``     -> float [N, 3, S, S]

Preprocessing follows the model's open_clip ``preprocess_cfg``: ``resize_mode='shortest'`` (CLIP: resize the
shorter side to S, centre crop) is implemented as centre-cropping the largest central square and resizing it, which
keeps the view-to-frame mapping exact (LARD boxes found in the view are shifted back by the view's offset);
``'squash'`` (SigLIP's pretrained configs) resizes the whole frame to S x S. uint8 frames are scaled by 1/255, float
frames are taken as [0, 1].
"""

from __future__ import annotations

import torch

from lsdo.inverse_attention.lace import crop_regions

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "squash")


def view_box(frame_size: tuple[int, int], resize_mode: str = "shortest") -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the frame region shown by the global view."""
    height, width = int(frame_size[0]), int(frame_size[1])
    if resize_mode == "squash":
        return 0, 0, width, height
    if resize_mode == "shortest":
        side = min(height, width)
        x0, y0 = (width - side) // 2, (height - side) // 2
        return x0, y0, x0 + side, y0 + side
    raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")


def global_view(
    frame: torch.Tensor, size: int, resize_mode: str = "shortest", interpolation: str = "bilinear"
) -> torch.Tensor:
    """The encoder's global view [3, S, S] of ``frame`` [3, H, W] (dtype kept; normalise with :func:`normalize`)."""
    box = torch.tensor([view_box(tuple(frame.shape[-2:]), resize_mode)])
    return crop_regions(frame, box, size, interpolation)[0]


def normalize(
    images: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """[N, 3, S, S] uint8 (0..255) or float (0..1) -> float, (x - mean) / std per channel."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
