"""The LSDO model: encoder -> video LSDO -> frame LSDO -> fusion -> X-Pool -> similarity.

Public API (a contract)::

    model = build_model(cfg)
    tokens = model.tokenize(["a man sings"])     # LongTensor [T, L]
    text = model.encode_text(tokens)             # TextFeatures
    video = model.encode_video(frames)           # [B, n, 3, H, W] normalised -> f_m [B, n, d]
    sims = model.similarity(text, video)         # [T, B] cosine similarities after X-Pool

``encode_video`` is text-independent, so a collection of videos can be encoded once and
searched with any text; only X-Pool (``similarity``) looks at both.

``variant=regions`` (:mod:`lsdo.model.region_lsdo`) computes f_s from the frames themselves
(inverse-attention region crops, re-encoded), so it runs through ``encode_video``;
``video_from_features`` then needs the precomputed ``f_s`` and ``key_mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lsdo.errors import ConfigError
from lsdo.model.encoder import CLIPEncoder
from lsdo.model.frame_lsdo import LEGACY_FRAME_ATTENTION, FrameObjectAttention
from lsdo.model.frame_proj import build_frame_proj
from lsdo.model.fusion import fuse
from lsdo.model.official import OfficialFusion, OfficialSceneAttention, OfficialXPool
from lsdo.model.region_lsdo import RegionLSDO
from lsdo.model.text_lsdo import TextPrototypes
from lsdo.model.video_lsdo import SharedLSDO, build_video_lsdo
from lsdo.model.xpool import XPool, cosine_scores

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


def _node(cfg: Any) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


class LSDOModel(nn.Module):
    """All components of the paper (or of the released code with ``impl=official``)."""

    def __init__(self, model_cfg: Any, variant_cfg: Any, impl: str = "paper") -> None:
        super().__init__()
        model_cfg, variant_cfg = _node(model_cfg), _node(variant_cfg)
        if impl not in ("paper", "official"):
            raise ConfigError(f"impl: expected paper | official, got '{impl}'")
        self.impl = impl
        self.variant = str(variant_cfg.name)
        self.encoder = CLIPEncoder(model_cfg)
        d = self.encoder.embed_dim
        self.dim = d
        if impl == "official":
            if self.variant not in ("average", "shared"):
                raise ConfigError(
                    f"impl=official reproduces the released code for variant=average|shared only, got "
                    f"variant={self.variant} (the release's single variant does not run)"
                )
            if self.variant == "shared" and (variant_cfg.get("init") != "file" or not variant_cfg.get("bank_path")):
                raise ConfigError(
                    "impl=official variant=shared reads its constant bank from a file: set variant.init=file and "
                    "variant.bank_path=<bank JSON> (e.g. the authors' lsdo_shared_bank_vitb32.json)"
                )
            self.use_frame_features = self.use_video_lsdo = self.use_frame_lsdo = True
            self.use_text_lsdo = False
            self.text_lsdo = None
            self.video_lsdo = (
                build_video_lsdo(variant_cfg, d, trainable_bank=False) if self.variant == "shared" else None
            )
            self.scene = OfficialSceneAttention(d, dropout=float(model_cfg.get("dropout", 0.3)))
            self.official_fusion = OfficialFusion()
            self.xpool = OfficialXPool(d, dropout=float(model_cfg.get("dropout", 0.3)))
            return

        baseline = self.variant == "baseline"
        self.use_frame_features = bool(model_cfg.get("use_frame_features", True))
        self.use_video_lsdo = bool(model_cfg.get("use_video_lsdo", True)) and not baseline
        self.use_frame_lsdo = bool(model_cfg.get("use_frame_lsdo", True)) and not baseline
        self.use_text_lsdo = bool(model_cfg.get("use_text_lsdo", True)) and not baseline
        if self.use_frame_lsdo and not self.use_video_lsdo:
            raise ConfigError("model.use_frame_lsdo=true needs model.use_video_lsdo=true (F attends to V)")
        if not self.use_frame_features and not self.use_video_lsdo:
            raise ConfigError("model.use_frame_features=false needs LSDO features (model.use_video_lsdo=true)")
        self.alpha = float(model_cfg.get("alpha", 0.8))
        self.frame_proj = build_frame_proj(str(model_cfg.get("frame_proj", "fc")), d)
        self.video_lsdo = build_video_lsdo(variant_cfg, d) if self.use_video_lsdo else None
        self.frame_lsdo = (
            FrameObjectAttention(d, str(variant_cfg.get("frame_attention", LEGACY_FRAME_ATTENTION)))
            if self.use_frame_lsdo
            else None
        )
        # Without the frame-level block (ablation rows 3-4) every frame receives Norm(f_s).
        self.video_norm = nn.LayerNorm(d) if self.use_video_lsdo and not self.use_frame_lsdo else None
        self.text_lsdo = (
            TextPrototypes(d, int(model_cfg.get("num_prototypes", 20)), float(model_cfg.get("gamma", 0.8)))
            if self.use_text_lsdo
            else None
        )
        self.xpool = XPool(d)

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
        """tokens [T, L] -> TextFeatures (Eq. 3, then Eq. 13-14 in impl=paper)."""
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
        if self.impl == "official":
            f_s = self.video_lsdo(f_v) if self.video_lsdo is not None else f_v.mean(dim=1, keepdim=True)  # [B|1, r, d]
            f_p, weights = self.scene(f_v, f_s)
            f_m = self.official_fusion(f_v, f_p)
            details = {"f_v": f_v, "f_s": f_s, "f_p": f_p, "frame_weights": weights}
            return (f_m, details) if return_details else f_m

        f_vp = self.frame_proj(f_v)  # Eq. 2: [B, n, d]
        f_p = weights = None
        if self.video_lsdo is not None:
            if f_s is None:
                if isinstance(self.video_lsdo, RegionLSDO):
                    raise ValueError(
                        "variant=regions computes f_s from the frames: call encode_video(frames), "
                        "or pass f_s= and key_mask= (RegionLSDO's outputs)"
                    )
                f_s = self.video_lsdo(f_v)  # Eq. 4-7: [B|1, r, d]
            if self.frame_lsdo is not None:
                f_p, weights = self.frame_lsdo(f_vp, f_s, key_mask)  # Eq. 8-12: [B, n, d], [B, n]
            elif key_mask is None:
                f_p = self.video_norm(f_s).mean(dim=1, keepdim=True).expand_as(f_vp)  # [B, n, d]
            else:  # mean over the valid keys only (zero for a video without any)
                m = key_mask.to(f_s.dtype).unsqueeze(-1)  # [B|1, r, 1]
                mean = (self.video_norm(f_s) * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp_min(1)
                f_p = mean.expand_as(f_vp)  # [B|1, 1, d] -> [B, n, d]
        else:
            f_s = None
        f_m = fuse(f_vp if self.use_frame_features else None, f_p, self.alpha)  # Eq. 15
        details = {"f_v": f_v, "f_s": f_s, "f_p": f_p, "frame_weights": weights}
        return (f_m, details) if return_details else f_m

    def similarity(self, text: TextFeatures, video: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """X-Pool (Eq. 16-20) and cosine: text (T texts), video f_m [B, n, d] -> [T, B].

        ``chunk_size`` bounds memory: texts are pooled ``chunk_size`` at a time ([chunk, B, d]).
        """
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


def build_model(cfg: Any) -> LSDOModel:
    """Build an :class:`LSDOModel` from a composed config (``compose([...])`` or a checkpoint's)."""
    cfg = _node(cfg)
    return LSDOModel(cfg.model, cfg.variant, str(cfg.get("impl", "paper")))
