"""Frame normalisation (CLIP mean/std) and clip-level train / test transforms for uint8 frame tensors."""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from lsdo.inverse_attention.preprocess import CLIP_MEAN, CLIP_STD  # the one copy of CLIP's statistics

BILINEAR, BICUBIC = InterpolationMode.BILINEAR, InterpolationMode.BICUBIC


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float [..., 3, H, W] with CLIP's mean and std."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


class VideoTransform:
    """Clip-level preprocessing: uint8 [n, 3, H, W] -> CLIP-normalised float [n, 3, size, size].

    * train: ``RandomResizedCrop(size, scale, ratio)`` (torchvision's sampling algorithm,
      bilinear, antialiased) and a horizontal flip with probability ``hflip``, with the SAME crop
      and flip for every frame of the clip (as the authors, who apply torchvision transforms to
      the stacked clip tensor). All randomness comes from ``generator`` (torch's global RNG
      when None), so a seeded generator reproduces the clip exactly;
    * test: bicubic, antialiased resize of the short side to ``size``, then a centre crop
      (CLIP's own preprocessing).

    Resizing runs batched on the uint8 clip (torch's fast uint8 kernels), then ``normalize``.
    """

    def __init__(
        self,
        size: int,
        train: bool,
        scale: tuple[float, float] = (0.5, 1.0),
        hflip: float = 0.5,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if size < 1:
            raise ValueError(f"transform size must be >= 1, got {size}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"crop ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        if not (0 <= hflip <= 1):
            raise ValueError(f"hflip probability must be in [0, 1], got {hflip}")
        self.size, self.train = int(size), bool(train)
        self.scale, self.ratio, self.hflip = (float(scale[0]), float(scale[1])), tuple(map(float, ratio)), float(hflip)

    def __repr__(self) -> str:
        if self.train:
            return f"VideoTransform(size={self.size}, train=True, scale={self.scale}, hflip={self.hflip})"
        return f"VideoTransform(size={self.size}, train=False)"

    def crop_params(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a random resized crop: torchvision's algorithm, ``generator``'s randomness."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return top, left, h, w
        # Fallback (as torchvision): the whole frame, cropped centrally to the nearest allowed ratio.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [n, 3, H, W] -> float [n, 3, size, size], CLIP-normalised."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [n, 3, H, W], got shape {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        size = [self.size, self.size]
        if self.train:
            top, left, h, w = self.crop_params(frames.shape[-2], frames.shape[-1], generator)
            out = TF.resized_crop(frames, top, left, h, w, size, interpolation=BILINEAR, antialias=True)
            if float(torch.rand(1, generator=generator)) < self.hflip:
                out = out.flip(-1)
        else:
            out = TF.resize(frames, self.size, interpolation=BICUBIC, antialias=True)
            out = TF.center_crop(out, size)
        return normalize(out)


def build_transform(size: int, train: bool, augment: bool = True) -> VideoTransform:
    """The training transform (random crop + flip) when ``train and augment``, else the test one."""
    return VideoTransform(size, train=train and augment)
