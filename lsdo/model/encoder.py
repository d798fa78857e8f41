"""CLIP frame and text encoders (paper Eq. 1 and Eq. 3), built on open_clip.

``CLIPEncoder.encode_frames``: frames [N, 3, H, W] -> [CLS] embeddings f_v [N, d]   (Eq. 1)
``CLIPEncoder.encode_text``:   tokens [T, L]       -> f_t [T, d], f_w [T, L, d], mask [T, L]  (Eq. 3)

Weights (``model.pretrained``):
  * an open_clip pretrained tag (``openai`` by default, ``laion2b_s34b_b79k``, ...);
  * a local checkpoint file: the OpenAI ``ViT-B-32.pt`` (TorchScript archive) or an
    open_clip / plain state dict (optionally under ``state_dict`` and/or ``module.`` prefixes);
  * ``null`` for random initialisation.
The activation follows the weights: ``model.arch: null`` picks ``ViT-B-32-quickgelu`` for tags
trained with QuickGELU (``openai``, ``metaclip_*``, ...) and for OpenAI-layout files.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from lsdo.errors import ConfigError, LSDOUserError

_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

WEIGHT_OPTIONS = (
    "model.pretrained=<open_clip tag> (e.g. openai; needs internet or a warm open_clip cache), "
    "model.pretrained=/path/to/ViT-B-32.pt (a local OpenAI or open_clip checkpoint file), "
    "or model.pretrained=null (random init)"
)


def _resolve_arch(cfg: Any) -> str:
    """The open_clip architecture name for ``cfg`` (``model.arch`` wins when given)."""
    if cfg.get("arch"):
        return str(cfg.arch)
    base = str(cfg.get("base_arch", "ViT-B-32"))
    pretrained = cfg.get("pretrained")
    quick = f"{base}-quickgelu"
    if pretrained is None:
        return base
    if _looks_like_path(str(pretrained)):
        # OpenAI checkpoints (TorchScript archives or their state dicts) are QuickGELU models.
        return quick if _is_openai_checkpoint(str(pretrained)) else base
    if quick in open_clip.list_models() and str(pretrained) in open_clip.list_pretrained_tags_by_model(quick):
        return quick
    return base


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def _is_openai_checkpoint(path: str) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    if _is_torchscript(path):
        return True
    try:
        sd = load_state_dict_file(path)
    except LSDOUserError:
        return False
    return any(k in sd for k in _OPENAI_EXTRA_KEYS)


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from an OpenAI TorchScript archive or a (wrapped) state-dict file."""
    p = Path(path)
    if not p.is_file():
        raise LSDOUserError(f"model.pretrained: checkpoint file not found: {path}. Options: {WEIGHT_OPTIONS}")
    try:
        if _is_torchscript(path):
            sd = torch.jit.load(path, map_location="cpu").state_dict()
        elif path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise LSDOUserError(f"model.pretrained: cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise LSDOUserError(f"model.pretrained: {path} holds no state dict")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    return dict(sd)


def image_size_of(cfg: Any) -> int:
    """The encoder's input resolution from the ``model`` config, without building the model."""
    custom = cfg.get("clip_cfg")
    if custom is not None:
        size = custom["vision_cfg"]["image_size"]
    else:
        arch = _resolve_arch(cfg)
        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ConfigError(f"model.arch: unknown open_clip architecture '{arch}'")
        size = model_cfg["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def create_clip(cfg: Any) -> tuple[nn.Module, Any]:
    """Build the open_clip model and its tokenizer from the ``model`` config node."""
    pretrained = cfg.get("pretrained")
    custom = cfg.get("clip_cfg")
    if custom is not None:
        # A small open_clip config given inline (model=tiny): always random init.
        if pretrained is not None:
            raise ConfigError("model.pretrained must be null for an inline model.clip_cfg (model=tiny)")
        from omegaconf import OmegaConf

        kw = OmegaConf.to_container(custom, resolve=True) if not isinstance(custom, dict) else dict(custom)
        clip = open_clip.model.CLIP(
            embed_dim=kw["embed_dim"],
            vision_cfg=open_clip.model.CLIPVisionCfg(**kw["vision_cfg"]),
            text_cfg=open_clip.model.CLIPTextCfg(**kw["text_cfg"]),
            quick_gelu=kw.get("quick_gelu", False),
            init_logit_scale=float(kw.get("init_logit_scale", math.log(1 / 0.07))),
        )
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=kw["text_cfg"]["context_length"])
        return clip, tokenizer

    arch = _resolve_arch(cfg)
    if arch not in open_clip.list_models():
        raise ConfigError(f"model.arch: unknown open_clip architecture '{arch}'")
    if pretrained is not None and _looks_like_path(str(pretrained)):
        clip = open_clip.create_model(arch, pretrained=None)
        sd = load_state_dict_file(str(pretrained))
        for key in _OPENAI_EXTRA_KEYS:
            sd.pop(key, None)
        if "logit_scale" in sd and sd["logit_scale"].ndim != clip.logit_scale.ndim:
            sd["logit_scale"] = sd["logit_scale"].reshape(clip.logit_scale.shape)
        try:
            clip.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise LSDOUserError(
                f"model.pretrained: {pretrained} does not fit open_clip '{arch}' ({first}); "
                "set model.arch to the checkpoint's architecture"
            ) from None
    else:
        try:
            clip = open_clip.create_model(arch, pretrained=pretrained)
        except Exception as exc:
            raise LSDOUserError(
                f"could not load CLIP weights '{pretrained}' for {arch} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Options: {WEIGHT_OPTIONS}"
            ) from None
    tokenizer = open_clip.get_tokenizer(arch)
    return clip, tokenizer


class CLIPEncoder(nn.Module):
    """open_clip image and text towers exposing the features the LSDO heads need."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.clip, self._tokenizer = create_clip(cfg)
        if not hasattr(self.clip, "token_embedding"):
            raise ConfigError("model.arch: only open_clip models with the native CLIP text tower are supported")
        self.embed_dim = int(self.clip.text_projection.shape[1])
        self.context_length = int(self.clip.context_length)
        size = self.clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's learnable temperature (log of lambda)."""
        return self.clip.logit_scale

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """BPE tokens [T, L]; longer texts are truncated with the end-of-text token kept."""
        return self._tokenizer(list(texts), context_length=self.context_length)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. 1: [N, 3, H, W] normalised frames -> projected [CLS] embeddings f_v [N, d]."""
        return self.clip.encode_image(images)

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 3: tokens [T, L] -> (f_t [T, d], f_w [T, L, d], word mask [T, L] bool).

        f_w holds every position projected like f_t; the mask is True only on real word tokens
        (after the start token, before the end token), so padding and special tokens are excluded.
        """
        clip = self.clip
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)  # [T, L, w]
        x = x + clip.positional_embedding.to(cast_dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask)  # [T, L, w]
        x = clip.ln_final(x)
        proj = clip.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj  # [T, L, d]
        eos = tokens.argmax(dim=-1)  # end-of-text has the largest id in CLIP's vocabulary
        f_t = x[torch.arange(x.shape[0], device=x.device), eos]  # [T, d]
        pos = torch.arange(tokens.shape[1], device=tokens.device)[None]  # [1, L]
        mask = (pos > 0) & (pos < eos[:, None])  # [T, L]
        return f_t, x, mask
