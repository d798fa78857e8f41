"""What ``impl=paper`` and ``impl=official`` share: the CLIP encoder, the order of the video
branch, X-Pool + cosine, the training helpers, and the text features they hand around.

:class:`LSDOModel` is the common base; :class:`lsdo.model.lsdo_model.PaperLSDOModel` and
:class:`lsdo.model.official.OfficialLSDOModel` build the heads and override the steps of
:meth:`LSDOModel.video_from_features` where they differ; ``build_model`` picks one by ``impl``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lsdo.model.encoder import CLIPEncoder
from lsdo.model.region_lsdo import RegionLSDO
from lsdo.model.text_lsdo import TextPrototypes
from lsdo.model.video_lsdo import SharedLSDO
from lsdo.model.xpool import cosine_scores

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class TextFeatures:
    """Encoded texts. ``query`` conditions X-Pool; ``target`` is the text side of the cosine.

    impl=paper: both are f_r (Eq. 14); impl=official: both are the raw [EOS] feature f_t.
    ``eos`` is f_t in both modes.
    """

    query: torch.Tensor  # [T, d]
    target: torch.Tensor  # [T, d]
    eos: torch.Tensor  # [T, d]

    def __len__(self) -> int:
        return self.query.shape[0]

    def __getitem__(self, idx: Any) -> TextFeatures:
        return TextFeatures(self.query[idx], self.target[idx], self.eos[idx])

    def to(self, *args: Any, **kwargs: Any) -> TextFeatures:
        return TextFeatures(
            self.query.to(*args, **kwargs), self.target.to(*args, **kwargs), self.eos.to(*args, **kwargs)
        )

    def detach(self) -> TextFeatures:
        return TextFeatures(self.query.detach(), self.target.detach(), self.eos.detach())

    @staticmethod
    def cat(parts: list[TextFeatures]) -> TextFeatures:
        return TextFeatures(
            torch.cat([p.query for p in parts]), torch.cat([p.target for p in parts]), torch.cat([p.eos for p in parts])
        )


def as_node(cfg: Any) -> DictConfig:
    """A config section as a DictConfig (a plain dict is wrapped)."""
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


class LSDOModel(nn.Module, ABC):
    """The steps both implementations share; a subclass builds the heads and fills in the rest.

    Shared: the CLIP image and text encoders (Eq. 1, Eq. 3), X-Pool and the cosine score
    (Eq. 16-20 with the subclass's ``xpool`` module), the temperature (Eq. 21-22) and the shared-bank
    initialisation (Eq. 4). The video branch runs in the order of :meth:`video_from_features`:
    ``project_frames`` -> ``video_level`` -> ``frame_level`` -> ``fuse``, each a method the
    subclass defines. ``text_lsdo`` is None where the text side is the raw [EOS] feature.

    ``isinstance(model, LSDOModel)`` holds for both implementations.
    """

    impl: ClassVar[str]  # "paper" | "official": the value of the config's ``impl``
    loss_averages_directions: ClassVar[bool]  # InfoNCE: (L_t2v + L_v2t) / 2 rather than the sum (Eq. 21-23)
    text_lsdo: TextPrototypes | None
    video_lsdo: nn.Module | None
    xpool: nn.Module

    def __init__(self, model_cfg: Any, variant_cfg: Any) -> None:
        super().__init__()
        model_cfg, variant_cfg = as_node(model_cfg), as_node(variant_cfg)
        self.variant = str(variant_cfg.name)
        self.encoder = CLIPEncoder(model_cfg)
        self.dim = self.encoder.embed_dim
        self.build_heads(model_cfg, variant_cfg, self.dim)

    @abstractmethod
    def build_heads(self, model_cfg: DictConfig, variant_cfg: DictConfig, dim: int) -> None:
        """Validate the config; register the modules after the encoder (``text_lsdo``, ``video_lsdo``, ``xpool``)."""

    # ------------------------------------------------------------------ encoder-facing API
    @property
    def logit_scale(self) -> nn.Parameter:
        """log(lambda), CLIP's learnable temperature (Eq. 21-22)."""
        return self.encoder.logit_scale

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> LongTensor [T, L] (truncated to the context, end-of-text token kept)."""
        return self.encoder.tokenize(texts)

    def encode_text(self, tokens: torch.Tensor) -> TextFeatures:
        """tokens [T, L] -> TextFeatures (Eq. 3, then Eq. 13-14 where ``text_lsdo`` is set)."""
        f_t, f_w, mask = self.encoder.encode_text(tokens)
        if self.text_lsdo is None:
            return TextFeatures(f_t, f_t, f_t)
        f_r = self.text_lsdo(f_t, f_w, mask)
        return TextFeatures(f_r, f_r, f_t)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Eq. 1: frames [B, n, 3, H, W] -> [CLS] features f_v [B, n, d]."""
        b, n = frames.shape[:2]
        f_v = self.encoder.encode_frames(frames.flatten(0, 1))  # [B*n, 3, H, W] -> [B*n, d]
        return f_v.view(b, n, -1)  # [B, n, d]

    def encode_video(self, frames: torch.Tensor, return_details: bool = False):
        """frames [B, n, 3, H, W] (CLIP-normalised) -> fused frame features f_m [B, n, d].

        With ``return_details`` also returns a dict with ``f_v``, ``f_s``, ``f_p`` and the
        per-frame LSDO attention weights ``frame_weights`` [B, n] (Fig. 8); ``variant=regions``
        adds ``region_mask`` [B, n*k] bool (the key mask of f_s) and ``region_boxes``
        [B, n, k, 4] int64 (x0, y0, x1, y1 frame pixels, zeros where masked).
        """
        if isinstance(self.video_lsdo, RegionLSDO):
            reg = self.video_lsdo(self.encoder, frames)  # f_v [B, n, d], f_s [B, n*k, d], mask [B, n*k]
            out = self.video_from_features(reg.f_v, return_details, f_s=reg.f_s, key_mask=reg.mask)
            if return_details:
                out[1].update(region_mask=reg.mask, region_boxes=reg.boxes)
            return out
        return self.video_from_features(self.encode_frames(frames), return_details)

    def video_from_features(
        self,
        f_v: torch.Tensor,
        return_details: bool = False,
        *,
        f_s: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ):
        """The video branch after the image encoder: f_v [B, n, d] -> f_m [B, n, d].

        ``f_s`` [B|1, r, d] (with its optional ``key_mask`` [B|1, r] bool) replaces the video-level
        LSDO module's output; ``variant=regions`` requires it (see ``encode_video``).
        """
        f_vp = self.project_frames(f_v)  # [B, n, d]
        f_s = self.video_level(f_v, f_s)  # [B|1, r, d] or None
        f_p, weights = self.frame_level(f_vp, f_s, key_mask)  # [B, n, d], [B, n] (or None)
        f_m = self.fuse(f_vp, f_p)  # [B, n, d]
        details = {"f_v": f_v, "f_s": f_s, "f_p": f_p, "frame_weights": weights}
        return (f_m, details) if return_details else f_m

    @abstractmethod
    def project_frames(self, f_v: torch.Tensor) -> torch.Tensor:
        """The frame features the frame-level block and the fusion see: f_v [B, n, d] -> [B, n, d]."""

    @abstractmethod
    def video_level(self, f_v: torch.Tensor, f_s: torch.Tensor | None) -> torch.Tensor | None:
        """Video-level LSDO features f_s [B|1, r, d] of f_v [B, n, d]; a given ``f_s`` is the module's output."""

    @abstractmethod
    def frame_level(
        self, f_vp: torch.Tensor, f_s: torch.Tensor | None, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Frame-level LSDO features f_p [B, n, d] and per-frame weights [B, n] (None without f_s)."""

    @abstractmethod
    def fuse(self, f_vp: torch.Tensor, f_p: torch.Tensor | None) -> torch.Tensor:
        """Fused frame features f_m [B, n, d] from the projected frames and f_p."""

    def similarity(self, text: TextFeatures, video: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """X-Pool (Eq. 16-20) and cosine: text (T texts), video f_m [B, n, d] -> [T, B].

        ``chunk_size`` bounds memory: texts are pooled ``chunk_size`` at a time ([chunk, B, d]).
        Features encoded under autocast (bf16, e.g. in the validation steps of ``precision: bf16-mixed``)
        and scored outside it (at the epoch's end) are cast to the head's dtype first.
        """
        if not torch.is_autocast_enabled(video.device.type):
            dtype = next(self.xpool.parameters()).dtype  # the head's parameter dtype
            text, video = text.to(dtype), video.to(dtype)
        step = chunk_size or len(text)
        out = []
        for start in range(0, len(text), max(step, 1)):
            part = text[start : start + step]
            pooled = self.xpool(part.query, video)  # [t, B, d]
            out.append(cosine_scores(part.target, pooled))  # [t, B]
        return torch.cat(out) if out else video.new_zeros(0, video.shape[0])

    # ------------------------------------------------------------------ training helpers
    def needs_bank_init(self) -> bool:
        """True when the shared bank must be filled from training videos (variant.init=feature)."""
        return isinstance(self.video_lsdo, SharedLSDO) and not bool(self.video_lsdo.initialised)

    @torch.no_grad()
    def init_shared_bank(self, frames: torch.Tensor) -> None:
        """Fill the shared bank (Eq. 4) from m videos [m, n, 3, H, W]: the mean of their f_v."""
        if not isinstance(self.video_lsdo, SharedLSDO):
            raise ValueError("init_shared_bank needs variant=shared")
        self.video_lsdo.set_bank(self.encode_frames(frames).mean(dim=1))  # [m, n, d] -> [m, d]

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep lambda = exp(logit_scale) <= 100."""
        self.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
