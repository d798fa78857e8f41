"""From a checkpoint file to a model: the one way, and a safe one.

Every entry point (eval, index, search, zero-shot, viz, build-bank, resume) reads checkpoints
through :func:`read_checkpoint`, which unpickles with ``torch.load(weights_only=True)``: only
tensors, numbers, strings and plain containers are accepted, so a file whose pickle would run
code is refused with one line and its payload never runs. LSDO checkpoints (Lightning's
dictionary: state dict, optimiser and scheduler states, loop and callback states, the run's
config as a plain dict) hold nothing else, so no allow-list of extra classes is needed.

* :func:`read_checkpoint` -> the checkpoint dictionary (one-line errors for missing, truncated,
  foreign or unsafe files);
* :func:`load_checkpoint` -> (saved config, model state dict);
* :func:`model_state` -> the :class:`~lsdo.model.LSDOModel` part of a Lightning state dict;
* :func:`load_model` -> (LSDOModel with the checkpoint's weights, saved config).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from lsdo.config import upgrade
from lsdo.errors import LSDOUserError
from lsdo.model import LSDOModel, build_model

MODEL_PREFIX = "model."  # LSDOLitModule keeps the LSDOModel as ``self.model``


def _unsafe_global(exc: Exception) -> str | None:
    """The global a weights-only unpickler refused (``posix.system``), if the message names one."""
    text = str(exc)
    m = re.search(r"Unsupported global:\s*(?:GLOBAL\s+)?([\w.]+)", text) or re.search(r"GLOBAL\s+([\w.]+)", text)
    return m.group(1) if m else None


def read_checkpoint(path: str | Path, what: str = "ckpt") -> dict[str, Any]:
    """The checkpoint dictionary of ``path``, unpickled with ``weights_only=True``.

    ``what`` names the key the user gave the path with (``ckpt``, ``ckpt_path``), for the
    one-line errors: file missing, a folder, truncated or not a checkpoint, or holding Python
    objects that could run code (refused before any of them is created).
    """
    p = Path(path)
    if p.is_dir():
        raise LSDOUserError(f"{what}: {p} is a folder; give a .ckpt file (e.g. {p}/checkpoints/last.ckpt)")
    if not p.is_file():
        raise LSDOUserError(f"{what}: checkpoint file not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        name = _unsafe_global(exc)
        if name is not None or "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
            raise LSDOUserError(
                f"{what}: refused {p}: it holds Python objects{f' ({name})' if name else ''} that could run code "
                "when loaded; LSDO checkpoints hold only tensors and plain values. Only load it if you trust "
                "its source, and re-save its state dict"
            ) from None
        raise LSDOUserError(f"{what}: cannot read {p} (not a checkpoint, or truncated: {exc})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError, KeyError) as exc:
        raise LSDOUserError(
            f"{what}: cannot read {p} ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
            "the file is truncated or not a Lightning checkpoint"
        ) from None
    if not isinstance(ckpt, dict):
        raise LSDOUserError(f"{what}: {p} is not an LSDO training checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def saved_config(ckpt: dict[str, Any], path: str | Path, what: str = "ckpt") -> dict[str, Any]:
    """The run config a training checkpoint carries (its ``hyper_parameters["cfg"]``), upgraded to today's keys."""
    cfg = (ckpt.get("hyper_parameters") or {}).get("cfg")
    if not isinstance(cfg, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise LSDOUserError(f"{what}: {path} is not an LSDO training checkpoint (no saved config or state dict)")
    return upgrade(cfg)  # keys added since it was saved, with the values that reproduce it (lsdo.config.LEGACY)


def load_checkpoint(path: str | Path, what: str = "ckpt") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(saved config, Lightning state dict) of a training checkpoint, read safely."""
    ckpt = read_checkpoint(path, what)
    return saved_config(ckpt, path, what), ckpt["state_dict"]


def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The :class:`LSDOModel` entries of a Lightning state dict (``model.`` prefix removed)."""
    return {k[len(MODEL_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}


def check_state_fits(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """One-line error unless ``state_dict`` has exactly ``module``'s keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        detail = "; ".join(
            s
            for s in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shapes differ: {shapes[:2]}" if shapes else "",
            )
            if s
        )
        raise LSDOUserError(f"{what}: the weights in {path} do not fit the configured model ({detail})")


def without_pretrained(cfg: dict[str, Any]) -> dict[str, Any]:
    """A saved config whose encoder starts empty: the checkpoint's weights replace any download."""
    return {**cfg, "model": {**cfg["model"], "pretrained": None}}


def build_from_config(cfg: dict[str, Any]) -> LSDOModel:
    """The model a saved config describes, without downloading pretrained weights."""
    return build_model(without_pretrained(cfg))


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[LSDOModel, dict[str, Any]]:
    """(LSDOModel in eval mode with the checkpoint's weights, saved config) from a training checkpoint alone."""
    cfg, state_dict = load_checkpoint(path)
    model = build_from_config(cfg)
    weights = model_state(state_dict)
    check_state_fits(model, weights, path, "ckpt")
    model.load_state_dict(weights)
    return model.eval().to(device), cfg


def load_clip(path: str | Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(open_clip model in eval mode, tokenizer, saved config): the fine-tuned CLIP towers of a training checkpoint,
    for the tools that use the encoder alone (zero-shot, inverse-attention figures and benchmarks)."""
    model, saved = load_model(path)
    return model.encoder.clip.eval(), model.encoder.tokenize, saved


ENCODER_PREFIX = "encoder."


def init_encoder_from(model: LSDOModel, path: str | Path, what: str = "model.init_from") -> None:
    """Replace ``model``'s CLIP encoder weights (image and text towers, lambda) with those of a training checkpoint.

    Two-stage training: the encoder of an earlier run (e.g. ``experiment=premise_stage1``) starts a new
    one; the LSDO heads and X-Pool start fresh. The encoder architectures must match exactly.
    """
    if not Path(path).is_file():
        raise LSDOUserError(
            f"{what}: no checkpoint file at {path} (a training run writes one with checkpoint.export=PATH; "
            "the premise benchmark's stage 1: python train.py experiment=premise_stage1)"
        )
    _, state_dict = load_checkpoint(path, what)
    weights = {k[len(ENCODER_PREFIX) :]: v for k, v in model_state(state_dict).items() if k.startswith(ENCODER_PREFIX)}
    check_state_fits(model.encoder, weights, path, what)
    model.encoder.load_state_dict(weights)
