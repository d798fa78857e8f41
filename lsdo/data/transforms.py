"""Frame normalisation (CLIP mean/std) for uint8 frame tensors."""

from __future__ import annotations

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float [..., 3, H, W] with CLIP's mean and std."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (frames.float() / 255.0 - mean) / std
