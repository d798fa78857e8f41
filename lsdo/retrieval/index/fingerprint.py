"""Which model built an index: its fingerprint, the checkpoint's config, creation info, and the check.

An index is only searchable with the model that encoded its videos. ``index.json`` records
(``meta["model"]``, :func:`model_meta`): the model's fingerprint (:func:`model_fingerprint`: impl,
variant, embedding size and a digest of sampled weights), its impl / variant / embedding size and,
when given, the model / variant / impl sections of the training config with their hash; and
(``meta["created"]``, :func:`creation_info`) when and with which lsdo / torch it was built, plus
any creation info (e.g. the checkpoint path). :func:`check_fingerprint` compares a model's fingerprint
with the recorded one and raises a one-line :class:`~lsdo.errors.LSDOUserError` naming both.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import torch

from lsdo.errors import LSDOUserError
from lsdo.model.lsdo_model import LSDOModel

FINGERPRINT_SAMPLES = 256  # weight values sampled per tensor for the fingerprint


def model_fingerprint(model: LSDOModel) -> str:
    """A short hex digest identifying a model: impl, variant and a digest of its weights.

    Hashes every state-dict entry's name, shape and dtype and ``FINGERPRINT_SAMPLES`` evenly
    spaced values of it (cheap even for CLIP ViT-B/32), so another architecture, variant or
    training run gives another fingerprint; the same weights on another device give the same.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"impl": model.impl, "variant": model.variant, "dim": int(model.dim)}).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)  # [numel]
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        if flat.numel():
            pick = torch.linspace(0, flat.numel() - 1, min(FINGERPRINT_SAMPLES, flat.numel()), device=flat.device)
            h.update(flat[pick.long()].to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


def describe_model(model: LSDOModel) -> dict[str, Any]:
    """impl, variant and embedding size of ``model`` (recorded next to its fingerprint)."""
    return {"impl": model.impl, "variant": model.variant, "embed_dim": int(model.dim)}


def config_sections(config: Any) -> dict[str, Any] | None:
    """The model / variant / impl part of a training config (a checkpoint's saved cfg), JSON-safe."""
    if config is None:
        return None
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    sections = {"model": config.get("model"), "variant": config.get("variant"), "impl": config.get("impl", "paper")}
    return json.loads(json.dumps(sections, default=str))


def config_hash(sections: dict[str, Any] | None) -> str | None:
    """Short hex digest of :func:`config_sections` (None without a config)."""
    if sections is None:
        return None
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:16]


def model_meta(model: LSDOModel, config: Any = None) -> dict[str, Any]:
    """``index.json``'s ``model`` entry: fingerprint, impl, variant, embed_dim, config_hash and config."""
    sections = config_sections(config)
    return {
        "fingerprint": model_fingerprint(model),
        **describe_model(model),
        "config_hash": config_hash(sections),
        "config": sections,
    }


def creation_info(info: dict[str, Any] | None) -> dict[str, Any]:
    """``index.json``'s ``created`` entry: time, lsdo and torch versions, then ``info`` (JSON-safe)."""
    try:
        from importlib.metadata import version

        lsdo_version = version("lsdo")
    except Exception:  # not installed as a distribution
        lsdo_version = None
    created = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "lsdo": lsdo_version,
        "torch": torch.__version__,
    }
    return json.loads(json.dumps({**created, **(info or {})}, default=str))


def check_fingerprint(
    meta: dict[str, Any], model: LSDOModel, name: str = "the model", source: str | None = None
) -> None:
    """LSDOUserError (one line) unless ``model`` is the one an index's ``meta`` records (``source``: its directory)."""
    got, recorded = model_fingerprint(model), str(meta["model"]["fingerprint"])
    if got == recorded:
        return
    m = meta["model"]
    have = f"impl={m.get('impl')} variant={m.get('variant')} d={m.get('embed_dim')}"
    mine = f"impl={model.impl} variant={model.variant} d={model.dim}"
    ckpt = meta.get("created", {}).get("ckpt")
    hint = f" ({ckpt})" if ckpt else ""
    where = f" {source}" if source else ""
    raise LSDOUserError(
        f"index{where} was built with another model ({have}, fingerprint {recorded}) than {name} "
        f"({mine}, fingerprint {got}): search with the checkpoint it was built from{hint} or rebuild the index"
    )
