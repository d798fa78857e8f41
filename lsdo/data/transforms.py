"""Frame normalisation (CLIP mean/std) and clip-level train / test transforms for uint8 frame tensors.

The training transform's random draws and its flip decision live here, once: :meth:`VideoTransform.draw`
makes the draws of one clip (the crop, then the flip's random number, always both and in this order,
whatever ``flip`` says) and decides the flip together with the caption (:func:`decide_flip`), and
:func:`apply_params` applies them. The in-worker path (``VideoTransform.with_caption``) and the
deferred path of a JPEG frame cache (draws in the worker, :func:`apply_params` on the training device)
both go through them, so a clip's frames and its caption are flipped together or not at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from lsdo.data.spatial import swap_spatial
from lsdo.errors import ConfigError
from lsdo.inverse_attention.preprocess import CLIP_MEAN, CLIP_STD  # the one copy of CLIP's statistics

BILINEAR, BICUBIC = InterpolationMode.BILINEAR, InterpolationMode.BICUBIC
FLIP_MODES = ("none", "plain", "caption_aware")

# (top, left, h, w, flip) of a training clip's crop and flip, or None: the test transform.
ClipParams = tuple[int, int, int, int, bool] | None


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float [..., 3, H, W] with CLIP's mean and std (on ``frames``' device)."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


def decide_flip(mode: str, draw: float, hflip: float, caption: str | None) -> tuple[bool, str | None]:
    """(whether to flip the clip, its caption) from the flip's random number ``draw`` in [0, 1).

    * ``none``: never flipped;
    * ``plain`` (the authors'): flipped when ``draw < hflip``, the caption untouched;
    * ``caption_aware``: when ``draw < hflip``, flipped with its spatial words swapped
      (:func:`lsdo.data.spatial.swap_spatial`), or NOT flipped when a spatial word is ambiguous;
      a caption without spatial words (or no caption) is flipped as by ``plain``.
    """
    if mode not in FLIP_MODES:
        raise ValueError(f"flip must be one of {' | '.join(FLIP_MODES)}, got {mode!r}")
    if mode == "none" or draw >= hflip:
        return False, caption
    if mode == "plain" or caption is None:
        return True, caption
    swapped = swap_spatial(caption)
    return (False, caption) if swapped is None else (True, swapped)


def apply_params(frames: torch.Tensor, size: int, params: ClipParams) -> torch.Tensor:
    """A clip's transform with its draws given (:meth:`VideoTransform.draw`), on ``frames``' device:
    uint8 [n, 3, H, W] -> CLIP-normalised float [n, 3, size, size]. ``None``: the test transform."""
    if params is None:
        out = TF.center_crop(TF.resize(frames, size, interpolation=BICUBIC, antialias=True), [size, size])
    else:
        top, left, h, w, flip = params
        out = TF.resized_crop(frames, top, left, h, w, [size, size], interpolation=BILINEAR, antialias=True)
        out = out.flip(-1) if flip else out
    return normalize(out)


class VideoTransform:
    """Clip-level preprocessing: uint8 [n, 3, H, W] -> CLIP-normalised float [n, 3, size, size].

    * train: ``RandomResizedCrop(size, scale, ratio)`` (torchvision's sampling algorithm,
      bilinear, antialiased) and a horizontal flip with probability ``hflip``, with the SAME crop
      and flip for every frame of the clip (as the authors, who apply torchvision transforms to
      the stacked clip tensor). All randomness comes from ``generator`` (torch's global RNG
      when None), so a seeded generator reproduces the clip exactly. ``flip`` (:func:`decide_flip`):
      ``plain`` the authors' flip, ``none`` never, ``caption_aware`` with the caption's spatial words
      swapped (:meth:`with_caption`). ``max_cut`` (a fraction in [0, 0.5), None: no limit): the crop
      never removes more than that fraction of the height from the top or from the bottom, nor of the
      width from either side (:meth:`crop_params`);
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
        flip: str = "plain",
        max_cut: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"transform size must be >= 1, got {size}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"crop ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        if not (0 <= hflip <= 1):
            raise ValueError(f"hflip probability must be in [0, 1], got {hflip}")
        if flip not in FLIP_MODES:
            raise ValueError(f"flip must be one of {' | '.join(FLIP_MODES)}, got {flip!r}")
        if max_cut is not None and not (0 <= max_cut < 0.5):
            raise ValueError(f"crop max_cut must be in [0, 0.5), got {max_cut}")
        self.size, self.train = int(size), bool(train)
        self.scale, self.ratio, self.hflip = (float(scale[0]), float(scale[1])), tuple(map(float, ratio)), float(hflip)
        self.flip, self.max_cut = flip, None if max_cut is None else float(max_cut)

    def __repr__(self) -> str:
        if self.train:
            extra = "" if self.flip == "plain" else f", flip={self.flip!r}"
            extra += "" if self.max_cut is None else f", max_cut={self.max_cut}"
            return f"VideoTransform(size={self.size}, train=True, scale={self.scale}, hflip={self.hflip}{extra})"
        return f"VideoTransform(size={self.size}, train=False)"

    def _place(self, extent: int, full: int, generator: torch.Generator | None) -> int | None:
        """The crop's offset along one axis: anywhere, or (``max_cut``) within the band that cuts at most
        ``max_cut * full`` from each end; None when rounding leaves no such offset."""
        lo, hi = 0, full - extent
        if self.max_cut is not None:
            cut = self.max_cut * full
            lo, hi = max(lo, math.ceil(full - extent - cut - 1e-9)), min(hi, math.floor(cut + 1e-9))
            if lo > hi:
                return None
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    def crop_params(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a random resized crop: torchvision's algorithm, ``generator``'s randomness.

        With ``max_cut`` = f: sizes below (1 - 2f) of a side are rejected like sizes too large, the
        offsets are drawn within the allowed band, and the fallback is the whole frame."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        f = self.max_cut
        for _ in range(10):
            u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if not (0 < w <= width and 0 < h <= height):
                continue
            if f is not None and (h < (1 - 2 * f) * height - 1e-9 or w < (1 - 2 * f) * width - 1e-9):
                continue
            top = self._place(h, height, generator)
            left = None if top is None else self._place(w, width, generator)
            if top is not None and left is not None:
                return top, left, h, w
        if f is not None:
            return 0, 0, height, width
        # Fallback (as torchvision): the whole frame, cropped centrally to the nearest allowed ratio.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def draw(
        self, height: int, width: int, generator: torch.Generator | None = None, caption: str | None = None
    ) -> tuple[ClipParams, str | None]:
        """(the clip's draws, its caption): the crop, then the flip's random number (both always drawn,
        in this order, in every ``flip`` mode), the flip decided with the caption (:func:`decide_flip`).
        The test transform draws nothing: (None, caption)."""
        if not self.train:
            return None, caption
        top, left, h, w = self.crop_params(height, width, generator)
        flip, caption = decide_flip(self.flip, float(torch.rand(1, generator=generator)), self.hflip, caption)
        return (top, left, h, w, flip), caption

    def _check(self, frames: torch.Tensor) -> None:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be [n, 3, H, W], got shape {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")

    def with_caption(
        self, frames: torch.Tensor, caption: str | None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, str | None]:
        """(uint8 [n, 3, H, W] -> float [n, 3, size, size], the caption as it goes with them)."""
        self._check(frames)
        params, caption = self.draw(frames.shape[-2], frames.shape[-1], generator, caption)
        return apply_params(frames, self.size, params), caption

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [n, 3, H, W] -> float [n, 3, size, size], CLIP-normalised (no caption: ``caption_aware``
        flips as ``plain``)."""
        return self.with_caption(frames, None, generator)[0]


def _pair(key: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"dataset.{key}: expected [min, max], got {value!r}") from None
    return lo, hi


def build_transform(
    size: int,
    train: bool,
    augment: bool = True,
    *,
    flip: str = "plain",
    crop_scale: Sequence[float] | None = None,
    crop_ratio: Sequence[float] | None = None,
    crop_max_cut: float | None = None,
) -> VideoTransform:
    """The training transform (random crop + flip) when ``train and augment``, else the test one.

    The keyword arguments are the config's ``dataset.flip``, ``dataset.crop_scale``,
    ``dataset.crop_ratio`` and ``dataset.crop_max_cut``, checked here (a :class:`ConfigError` naming
    the key); left out (None), the crop keeps :class:`VideoTransform`'s own ranges (the authors')."""
    if flip not in FLIP_MODES:
        raise ConfigError(f"dataset.flip: expected {' | '.join(FLIP_MODES)}, got {flip!r}")
    crop: dict[str, tuple[float, float]] = {}
    if crop_scale is not None:
        crop["scale"] = _pair("crop_scale", crop_scale)
        if not (0 < crop["scale"][0] <= crop["scale"][1] <= 1):
            raise ConfigError(f"dataset.crop_scale: expected 0 < min <= max <= 1, got {list(crop['scale'])}")
    if crop_ratio is not None:
        crop["ratio"] = _pair("crop_ratio", crop_ratio)
        if not (0 < crop["ratio"][0] <= crop["ratio"][1]):
            raise ConfigError(f"dataset.crop_ratio: expected 0 < min <= max, got {list(crop['ratio'])}")
    if crop_max_cut is not None:
        bad = ConfigError(f"dataset.crop_max_cut: expected null or a number in [0, 0.5), got {crop_max_cut!r}")
        if isinstance(crop_max_cut, bool) or not isinstance(crop_max_cut, (int, float)):
            raise bad
        if not (0 <= crop_max_cut < 0.5):
            raise bad
    return VideoTransform(size, train=train and augment, flip=flip, max_cut=crop_max_cut, **crop)
