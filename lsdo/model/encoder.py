"""CLIP frame and text encoders (paper Eq. 1 and Eq. 3), built on open_clip.

``CLIPEncoder.encode_frames``: frames [N, 3, H, W] -> [CLS] embeddings f_v [N, d]   (Eq. 1)
``CLIPEncoder.encode_text``:   tokens [T, L]       -> f_t [T, d], f_w [T, L, d], mask [T, L]  (Eq. 3)

Weights (``model.pretrained``):
  * an open_clip pretrained tag (``openai`` by default, ``laion2b_s34b_b79k``, ...);
  * a local checkpoint file: the OpenAI ``ViT-B-32.pt`` (TorchScript archive) or an
    open_clip / plain state dict (optionally under ``state_dict`` and/or ``module.`` prefixes);
  * ``null`` for random initialisation.
The activation follows the weights: ``model.arch: null`` picks ``ViT-B-32-quickgelu`` for tags
trained with QuickGELU (``openai``, ``metaclip_*``, ...) and for OpenAI-layout files. A plain
state-dict file does not record its activation (GELU and QuickGELU have the same weights): it is
built as ``base_arch`` (GELU) with a warning; ``model.arch=ViT-B-32-quickgelu`` (or
``model.arch=ViT-B-32``) chooses explicitly. The chosen architecture is logged.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from lsdo.errors import ConfigError, LSDOUserError

log = logging.getLogger(__name__)

_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

WEIGHT_OPTIONS = (
    "model.pretrained=<open_clip tag> (e.g. openai; needs internet or a warm open_clip cache), "
    "model.pretrained=/path/to/ViT-B-32.pt (a local OpenAI or open_clip checkpoint file), "
    "or model.pretrained=null (random init)"
)


@dataclass(frozen=True)
class WeightKeys:
    """How a tool's command line gives the CLIP weights and architecture, as its error messages and hints say it.

    ``pretrained``: the key that gave the weights (messages about them start with it); ``arch_key``: the key
    that named the architecture; ``arch_fmt``: what to type to build architecture ``{arch}`` with the same
    weights; ``keep_gelu_fmt``: what to type to confirm a GELU architecture ``{arch}`` (silences the warning
    about a state dict's unknown activation; None where the tool has no way); ``options``: the ways to give
    weights. The defaults are those of the Hydra entry points (``model.*``).
    """

    pretrained: str = "model.pretrained"
    arch_key: str = "model.arch"
    arch_fmt: str = "model.arch={arch}"
    keep_gelu_fmt: str | None = "model.arch={arch}"
    options: str = WEIGHT_OPTIONS


MODEL_KEYS = WeightKeys()


@dataclass(frozen=True)
class ArchChoice:
    """The open_clip architecture chosen for a ``model`` config and why."""

    arch: str
    why: str
    # The weights are a state-dict file and ``arch`` has a ``-quickgelu`` twin: the activation is a guess (GELU).
    activation_unknown: bool = False


def _choose_arch(cfg: Any) -> ArchChoice:
    """The open_clip architecture for ``cfg`` (``model.arch`` wins when given)."""
    if cfg.get("arch"):
        return ArchChoice(str(cfg.arch), "given by model.arch")
    base = str(cfg["base_arch"])
    pretrained = cfg.get("pretrained")
    quick = f"{base}-quickgelu"
    if pretrained is None:
        return ArchChoice(base, "random initialisation")
    if base.endswith("-quickgelu"):  # the architecture already names its activation
        return ArchChoice(base, "named with its activation")
    if _looks_like_path(str(pretrained)):
        # OpenAI checkpoints (TorchScript archives or their state dicts) are QuickGELU models.
        if _is_openai_checkpoint(str(pretrained)):
            return ArchChoice(quick, "an OpenAI checkpoint file (OpenAI's CLIP models use QuickGELU)")
        return ArchChoice(base, "a state-dict file", activation_unknown=quick in open_clip.list_models())
    if quick in open_clip.list_models() and str(pretrained) in open_clip.list_pretrained_tags_by_model(quick):
        return ArchChoice(quick, f"open_clip lists tag '{pretrained}' as trained with QuickGELU")
    return ArchChoice(base, f"open_clip tag '{pretrained}'")


def _resolve_arch(cfg: Any) -> str:
    """The open_clip architecture name for ``cfg`` (``model.arch`` wins when given)."""
    return _choose_arch(cfg).arch


def _activation(arch: str) -> str:
    model_cfg = open_clip.get_model_config(arch) or {}
    return "QuickGELU" if model_cfg.get("quick_gelu", False) else "GELU"


class _OpenClipNotes(logging.Filter):
    """Drops open_clip's root-logger notes that LSDO reports itself: "No pretrained weights loaded" before a
    local file is loaded into the model, and a failed download (the error raised then repeats it)."""

    PREFIXES = ("No pretrained weights loaded", "Failed to download weights")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "root" and "open_clip" in record.pathname and record.getMessage().startswith(self.PREFIXES)
        )


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    note_filter, root = _OpenClipNotes(), logging.getLogger()
    root.addFilter(note_filter)
    try:
        yield
    finally:
        root.removeFilter(note_filter)


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


def load_state_dict_file(path: str, keys: WeightKeys = MODEL_KEYS) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from an OpenAI TorchScript archive or a (wrapped) state-dict file."""
    p = Path(path)
    if not p.is_file():
        raise LSDOUserError(f"{keys.pretrained}: checkpoint file not found: {path}. Options: {keys.options}")
    try:
        if _is_torchscript(path):
            sd = torch.jit.load(path, map_location="cpu").state_dict()
        elif path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise LSDOUserError(f"{keys.pretrained}: cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise LSDOUserError(f"{keys.pretrained}: {path} holds no state dict")
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


def create_clip(cfg: Any, keys: WeightKeys = MODEL_KEYS) -> tuple[nn.Module, Any]:
    """Build the open_clip model and its tokenizer from the ``model`` config node.

    ``keys``: how the calling tool names the weights and architecture in its messages (default: ``model.*``).
    """
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
            **{k: v for k, v in kw.items() if k not in ("embed_dim", "vision_cfg", "text_cfg")},  # open_clip's defaults
        )  # for the keys clip_cfg leaves out (quick_gelu, init_logit_scale, ...)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=kw["text_cfg"]["context_length"])
        act = "QuickGELU" if kw.get("quick_gelu") else "GELU"  # open_clip: GELU unless quick_gelu
        log.info("CLIP: inline model.clip_cfg (%s activation), random initialisation", act)
        return clip, tokenizer

    choice = _choose_arch(cfg)
    arch = choice.arch
    if arch not in open_clip.list_models():
        raise ConfigError(
            f"{keys.arch_key}: unknown open_clip architecture '{arch}' (open_clip.list_models() lists them)"
        )
    if pretrained is not None and _looks_like_path(str(pretrained)):
        sd = load_state_dict_file(str(pretrained), keys)  # first: a wrong path fails before building the model
        with _quiet_open_clip():
            clip = open_clip.create_model(arch, pretrained=None)
        for key in _OPENAI_EXTRA_KEYS:
            sd.pop(key, None)
        if "logit_scale" in sd and sd["logit_scale"].ndim != clip.logit_scale.ndim:
            sd["logit_scale"] = sd["logit_scale"].reshape(clip.logit_scale.shape)
        try:
            clip.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise LSDOUserError(
                f"{keys.pretrained}: {pretrained} does not fit open_clip '{arch}' ({first}); "
                f"give the checkpoint's architecture: {keys.arch_fmt.format(arch='ARCH')}"
            ) from None
    else:
        try:
            with _quiet_open_clip() if pretrained is not None else nullcontext():
                clip = open_clip.create_model(arch, pretrained=pretrained)
        except Exception as exc:
            raise LSDOUserError(
                f"{keys.pretrained}: could not load CLIP weights '{pretrained}' for {arch} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Options: {keys.options}"
            ) from None
    log.info("CLIP: open_clip architecture %s (%s activation; %s)", arch, _activation(arch), choice.why)
    if choice.activation_unknown:
        quick = f"{arch}-quickgelu"
        keep = (
            f"; pass {keys.keep_gelu_fmt.format(arch=arch)} to keep GELU and silence this warning"
            if keys.keep_gelu_fmt
            else ""
        )
        log.warning(
            "%s: %s is a state dict, which does not record the activation (GELU and QuickGELU have the same weights): "
            "built as open_clip %s (GELU). If it holds QuickGELU weights (OpenAI's CLIP, open_clip's *-quickgelu "
            "models), every feature is off by about 1%%: pass %s%s",
            keys.pretrained,
            pretrained,
            arch,
            keys.arch_fmt.format(arch=quick),
            keep,
        )
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
        # model.grad_checkpointing; a config saved before the key existed trained without it (None: off)
        self.set_grad_checkpointing(bool(cfg.get("grad_checkpointing")))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in both towers (open_clip's ``set_grad_checkpointing``).

        Every transformer block's activations are recomputed in the backward pass instead of kept: the
        towers' activation memory drops to one block's plus the block inputs, for about one more forward
        pass of compute; forward values and gradients are unchanged (tests/test_precision.py). open_clip
        checkpoints the transformer blocks only: a ModifiedResNet image tower (``model=tiny_resnet``)
        keeps its activations, its text tower is checkpointed.
        """
        self.grad_checkpointing = bool(enable)
        self.clip.set_grad_checkpointing(self.grad_checkpointing)

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
