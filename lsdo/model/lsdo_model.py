"""The LSDO model: encoder -> video LSDO -> frame LSDO -> fusion -> X-Pool -> similarity.

Public API (a contract)::

    model = build_model(cfg)
    tokens = model.tokenize(["a man sings"])     # LongTensor [T, L]
    text = model.encode_text(tokens)             # TextFeatures
    video = model.encode_video(frames)           # [B, n, 3, H, W] normalised -> f_m [B, n, d]
    sims = model.similarity(text, video)         # [T, B] cosine similarities after X-Pool

``encode_video`` is text-independent, so a collection of videos can be encoded once and
searched with any text; only X-Pool (``similarity``) looks at both.

``build_model`` picks the class by ``cfg.impl``: :class:`PaperLSDOModel` (``impl=paper``, the
paper's equations) or :class:`lsdo.model.official.OfficialLSDOModel` (``impl=official``, the
authors' released code); both derive from :class:`lsdo.model.base.LSDOModel`, which holds the
shared steps.

``variant=regions`` (:mod:`lsdo.model.region_lsdo`) computes f_s from the frames themselves
(inverse-attention region crops, re-encoded), so it runs through ``encode_video``;
``video_from_features`` then needs the precomputed ``f_s`` and ``key_mask``.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from lsdo.config import upgrade
from lsdo.errors import ConfigError
from lsdo.model.base import MAX_LOGIT_SCALE, LSDOModel, TextFeatures, as_node
from lsdo.model.frame_lsdo import FrameObjectAttention
from lsdo.model.frame_proj import build_frame_proj
from lsdo.model.fusion import fuse
from lsdo.model.official import OfficialLSDOModel
from lsdo.model.region_lsdo import RegionLSDO
from lsdo.model.text_lsdo import TextPrototypes
from lsdo.model.video_lsdo import build_video_lsdo
from lsdo.model.xpool_layout import PaperXPool

__all__ = [
    "MAX_LOGIT_SCALE",
    "MODEL_CLASSES",
    "LSDOModel",
    "OfficialLSDOModel",
    "PaperLSDOModel",
    "TextFeatures",
    "build_model",
]


class PaperLSDOModel(LSDOModel):
    """``impl=paper``: every component as the paper specifies it, with the ablation switches.

    Eq. 2 (``frame_proj``), Eq. 4-7 (``video_lsdo``: shared | average | single, or the
    ``regions`` crops), Eq. 8-12 (``frame_lsdo``; ``video_norm`` replaces it in ablation rows 3-4),
    Eq. 13-14 (``text_lsdo``, the text prototypes), Eq. 15 (fixed ``alpha``), Eq. 16-20
    (:class:`~lsdo.model.xpool_layout.PaperXPool`); the cosine is taken with f_r.
    """

    impl = "paper"
    loss_averages_directions = False  # Eq. 23: L = L_t2v + L_v2t

    def build_heads(self, model_cfg: DictConfig, variant_cfg: DictConfig, dim: int) -> None:
        baseline = self.variant == "baseline"
        self.use_frame_features = bool(model_cfg.use_frame_features)
        self.use_video_lsdo = bool(model_cfg.use_video_lsdo) and not baseline
        self.use_frame_lsdo = bool(model_cfg.use_frame_lsdo) and not baseline
        self.use_text_lsdo = bool(model_cfg.use_text_lsdo) and not baseline
        if self.use_frame_lsdo and not self.use_video_lsdo:
            raise ConfigError("model.use_frame_lsdo=true needs model.use_video_lsdo=true (F attends to V)")
        if not self.use_frame_features and not self.use_video_lsdo:
            raise ConfigError("model.use_frame_features=false needs LSDO features (model.use_video_lsdo=true)")
        self.alpha = float(model_cfg.alpha)
        self.frame_proj = build_frame_proj(str(model_cfg.frame_proj), dim)
        self.video_lsdo = build_video_lsdo(variant_cfg, dim) if self.use_video_lsdo else None
        self.frame_lsdo = FrameObjectAttention(dim, str(variant_cfg.frame_attention)) if self.use_frame_lsdo else None
        # Without the frame-level block (ablation rows 3-4) every frame receives Norm(f_s).
        self.video_norm = nn.LayerNorm(dim) if self.use_video_lsdo and not self.use_frame_lsdo else None
        self.text_lsdo = (
            TextPrototypes(dim, int(model_cfg.num_prototypes), float(model_cfg.gamma)) if self.use_text_lsdo else None
        )
        self.xpool = PaperXPool(dim)

    def project_frames(self, f_v: torch.Tensor) -> torch.Tensor:
        """Eq. 2: f'_v = FC(f_v) (or the configured bottleneck), [B, n, d]."""
        return self.frame_proj(f_v)

    def video_level(self, f_v: torch.Tensor, f_s: torch.Tensor | None) -> torch.Tensor | None:
        """Eq. 4-7: f_s [B|1, r, d]; None without the video-level block (a given ``f_s`` is then unused)."""
        if self.video_lsdo is None:
            return None
        if f_s is not None:
            return f_s
        if isinstance(self.video_lsdo, RegionLSDO):
            raise ValueError(
                "variant=regions computes f_s from the frames: call encode_video(frames), "
                "or pass f_s= and key_mask= (RegionLSDO's outputs)"
            )
        return self.video_lsdo(f_v)

    def frame_level(
        self, f_vp: torch.Tensor, f_s: torch.Tensor | None, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Eq. 8-12 (f_p [B, n, d], weights [B, n]); without that block, Norm(f_s) averaged over the valid keys."""
        if f_s is None:
            return None, None
        if self.frame_lsdo is not None:
            return self.frame_lsdo(f_vp, f_s, key_mask)  # Eq. 8-12: [B, n, d], [B, n]
        if key_mask is None:
            return self.video_norm(f_s).mean(dim=1, keepdim=True).expand_as(f_vp), None  # [B, n, d]
        # mean over the valid keys only (zero for a video without any)
        m = key_mask.to(f_s.dtype).unsqueeze(-1)  # [B|1, r, 1]
        mean = (self.video_norm(f_s) * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp_min(1)
        return mean.expand_as(f_vp), None  # [B|1, 1, d] -> [B, n, d]

    def fuse(self, f_vp: torch.Tensor, f_p: torch.Tensor | None) -> torch.Tensor:
        """Eq. 15: f_m = alpha f'_v + (1 - alpha) f_p (f_p alone with ``use_frame_features=false``)."""
        return fuse(f_vp if self.use_frame_features else None, f_p, self.alpha)


MODEL_CLASSES: dict[str, type[LSDOModel]] = {"paper": PaperLSDOModel, "official": OfficialLSDOModel}


def build_model(cfg: Any) -> LSDOModel:
    """The model class of ``cfg.impl`` (paper | official), built from a composed config (or a checkpoint's)."""
    cfg = upgrade(as_node(cfg))  # a config saved before a key existed: the value it meant (lsdo.config.LEGACY)
    impl = str(cfg.impl)
    if impl not in MODEL_CLASSES:
        raise ConfigError(f"impl: expected paper | official, got '{impl}'")
    return MODEL_CLASSES[impl](cfg.model, cfg.variant)
