"""Video-level LSDO features from inverse-attention region crops (``variant=regions``).

The two seed methods combined: the LSDO model's video-level features f_s (Section III-B, in place
of Eq. 4-7) are the "Look Beyond Saliency" region embeddings of the video's frames (its §3):

    f_v^i, A^i = ImageEnc(r_i)                         one pass: [CLS] feature (Eq. 1) + heatmap
    boxes^i    = LARC_k(LARD(A^i))                     k' <= k low-attention regions per frame
    e^i_j      = ImageEnc(LACE(r_i, boxes^i_j))        the crops, re-encoded by the SAME encoder
    f_s        = Norm(FC([e^1_1 .. e^n_k]))            [B, n*k, d]   (Eq. 5 style, ``project``)
    mask       = [j < k'_i]                            [B, n*k]      (slots of missing regions)

then the frame-level object attention (Eq. 8-12) weighs the r = n*k keys per frame with the mask
(:class:`~lsdo.model.frame_lsdo.FrameObjectAttention`), and fusion (Eq. 15) and X-Pool run as for
the other variants.

Design decisions:

* **One encoder pass per frame gives f_v and the heatmap** (:func:`visual_forward_with_heatmap`):
  f_v keeps its gradient; the heatmap, LARD and LARC are discrete (no gradient, computed under
  ``no_grad`` on the CPU; LARC's k-means is seeded, so the regions are deterministic and never touch
  torch's RNG: exact resume is preserved).
* **Norm(FC(.)) on the region embeddings** (``project=true``): like Eq. 5, an identity-initialised
  FC and a LayerNorm map every region embedding to d_s = d. It puts the region features on the same
  footing as f_s^average (a LayerNorm output) and gives the LSDO branch its own trainable map even
  when the crop encodings are frozen (``grad_through_crops=false``).
* **Gradient through the crops** (``grad_through_crops=true``, the default): the crop pass runs
  with autograd, so the image encoder also learns from the region path. Cost: the encoder processes
  n*k crops on top of the n frames per video, i.e. up to (1 + k) times the image-encoder compute and
  activation memory of the other variants (5x for k = 4). ``false`` encodes the crops under
  ``no_grad``: same forward cost, backward and activation memory of the crop pass are saved.
* **Masking**: a frame with k' < k regions (LARD finds fewer candidates than k, or none when the
  whole frame is salient) leaves k - k' slots empty: their f_s rows are zero and ``mask`` is False,
  and the frame-level attention ignores masked keys (they add nothing to f_p and are not counted in
  its n / r rescaling). A video with no region at all gets f_p = 0, i.e. f_m = alpha f'_v.
* **Cropping normalised frames**: frames arrive CLIP-normalised at the encoder's size [B, n, 3, S, S]
  (the original high-resolution frames are not available inside ``encode_video``). LACE crops the
  normalised tensor and resizes it (bilinear, antialiased) back to S x S; normalisation is a
  per-channel affine map, so this equals normalising the resized crop up to interpolation. The
  crops are therefore up-sampled from the S-px frame (e.g. 16-40 px regions of a 64-px frame).
* **LARD on small grids**: the demo model sees an 8 x 8 patch grid (64 px, patch 8) and the tests a
  4 x 4 one (32 px), so the 3-patch kernel of the training-free method (``LARDConfig``,
  ``configs/zeroshot.yaml``) would leave few candidates; the variant uses a 2-patch kernel. Every
  setting comes from ``configs/variant/regions.yaml`` (read by :func:`build_region_lsdo`, no
  fallbacks in the code).
* **One pipeline**: the steps after the heatmap (LARD + LARC, LACE, one encoder call for all crops,
  the scatter into the slots) are those of the training-free encoder,
  :mod:`lsdo.inverse_attention.encoder` (``find_regions``, ``pad_regions``, ``encode_regions``).
  What differs is passed in: the frames are their own view, the crop encoder is the raw
  (projected, not L2-normalised) image embedding, ``grad`` = ``grad_through_crops``, and the
  embeddings then go through ``project`` instead of LAFM.

Shapes: frames [B, n, 3, H, W] -> :class:`RegionFeatures` (f_v [B, n, d], f_s [B, n*k, d],
mask [B, n*k] bool, boxes [B, n, k, 4] int64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lsdo.errors import ConfigError
from lsdo.inverse_attention.encoder import encode_regions, find_regions, pad_regions
from lsdo.inverse_attention.heatmap import HEATMAP_METHODS, visual_forward_with_heatmap
from lsdo.inverse_attention.lard import LARDConfig
from lsdo.model.layers import identity_linear


@dataclass
class RegionFeatures:
    """The outputs of :class:`RegionLSDO` for B videos of n frames (k region slots per frame)."""

    f_v: torch.Tensor  # [B, n, d] frame [CLS] features (Eq. 1), with gradient
    f_s: torch.Tensor  # [B, n*k, d] region features (zero rows where masked)
    mask: torch.Tensor  # [B, n*k] bool: True where the slot holds a region
    boxes: torch.Tensor  # [B, n, k, 4] int64 (x0, y0, x1, y1) in frame pixels, zeros where masked


def _visual(encoder: nn.Module) -> nn.Module:
    """The open_clip visual tower of lsdo's CLIPEncoder (``.clip.visual``) or of an open_clip model."""
    clip = getattr(encoder, "clip", encoder)
    visual = getattr(clip, "visual", None)
    if not isinstance(visual, nn.Module):
        raise TypeError(f"RegionLSDO needs a CLIPEncoder or an open_clip model, got {type(encoder).__name__}")
    return visual


def _encode_images(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings [N, d] of normalised images [N, 3, S, S] (CLIPEncoder or open_clip)."""
    if hasattr(encoder, "encode_frames"):
        return encoder.encode_frames(images)
    out = _visual(encoder)(images)
    return out[0] if isinstance(out, (tuple, list)) else out


class RegionLSDO(nn.Module):
    """f_s from the inverse-attention regions of every frame (see the module docstring).

    ``forward(encoder, frames [B, n, 3, H, W])`` -> :class:`RegionFeatures`. The encoder is passed
    in (not owned), so its parameters stay registered once, under ``LSDOModel.encoder``.
    """

    def __init__(
        self,
        dim: int,
        *,
        k: int,
        heatmap: str,
        lard: LARDConfig,
        grad_through_crops: bool,
        project: bool,
        seed: int,
        interpolation: str,
    ) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"variant.k must be >= 1, got {k}")
        if heatmap not in HEATMAP_METHODS:
            raise ConfigError(f"variant.heatmap: expected {' | '.join(HEATMAP_METHODS)}, got '{heatmap}'")
        if interpolation not in ("bilinear", "bicubic"):
            raise ConfigError(f"variant.interpolation: expected bilinear | bicubic, got '{interpolation}'")
        self.k = int(k)
        self.heatmap = heatmap
        self.lard = lard
        self.grad_through_crops = bool(grad_through_crops)
        self.seed = int(seed)
        self.interpolation = interpolation
        self.fc = identity_linear(dim) if project else None
        self.norm = nn.LayerNorm(dim) if project else None

    @torch.no_grad()
    def regions(self, heat: torch.Tensor, frame_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """LARD + LARC per frame: heatmaps [N, gh, gw] -> (boxes [N, k, 4] int64, mask [N, k] bool)."""
        regions, _ = find_regions(heat, [frame_size] * heat.shape[0], self.k, self.lard, self.seed)
        return pad_regions(regions, self.k)

    def project(self, f_s: torch.Tensor) -> torch.Tensor:
        """Norm(FC(.)) of every region embedding (Eq. 5 style): [..., d] -> [..., d]."""
        return f_s if self.fc is None else self.norm(self.fc(f_s))

    def forward(self, encoder: nn.Module, frames: torch.Tensor) -> RegionFeatures:
        """frames [B, n, 3, H, W] (CLIP-normalised) -> f_v [B, n, d], f_s [B, n*k, d], mask [B, n*k], boxes."""
        b, n = frames.shape[:2]
        height, width = frames.shape[-2:]
        flat = frames.flatten(0, 1)  # [B, n, 3, H, W] -> [B*n, 3, H, W]
        f_v, heat = visual_forward_with_heatmap(_visual(encoder), flat, self.heatmap)  # [B*n, d], [B*n, gh, gw]
        d = f_v.shape[-1]
        size = (int(height), int(width))
        boxes, mask = self.regions(heat, size)  # [B*n, k, 4], [B*n, k]
        slots = encode_regions(
            lambda crops: _encode_images(encoder, crops.to(f_v.dtype)),  # [M, 3, H, W] -> [M, d]
            flat.unbind(0),
            boxes,
            mask,
            size,
            self.interpolation,
            f_v,
            grad=self.grad_through_crops,
        )  # [B*n, k, d]
        f_s = self.project(slots.view(b, n * self.k, d))  # [B*n, k, d] -> [B, n*k, d]
        flat_mask = mask.flatten().to(f_v.device)  # [B*n, k] -> [B*n*k]
        key_mask = flat_mask.view(b, n * self.k)  # [B*n*k] -> [B, n*k]
        f_s = f_s * key_mask.unsqueeze(-1).to(f_s.dtype)  # masked slots are exactly zero
        return RegionFeatures(
            f_v=f_v.view(b, n, d),  # [B*n, d] -> [B, n, d]
            f_s=f_s,
            mask=key_mask,
            boxes=boxes.view(b, n, self.k, 4).to(frames.device),  # [B*n, k, 4] -> [B, n, k, 4]
        )


def build_region_lsdo(variant: Any, dim: int) -> RegionLSDO:
    """A :class:`RegionLSDO` from the ``variant=regions`` node (every key as in ``configs/variant/regions.yaml``)."""
    lard = variant.lard
    try:
        lard_cfg = LARDConfig(
            mask_threshold=float(lard.mask_threshold),
            window_threshold=float(lard.window_threshold),
            kernel=int(lard.kernel),
            stride=int(lard.stride),
            unit=str(lard.unit),
            binarize=bool(lard.binarize),
        )
    except ValueError as exc:
        raise ConfigError(f"variant.lard: {exc}") from None
    return RegionLSDO(
        dim,
        k=int(variant.k),
        heatmap=str(variant.heatmap),
        lard=lard_cfg,
        grad_through_crops=bool(variant.grad_through_crops),
        project=bool(variant.project),
        seed=int(variant.seed),
        interpolation=str(variant.interpolation),
    )
