"""Evaluation entry point logic (``python eval.py ckpt=PATH`` / ``lsdo-eval``).

The model is rebuilt from the checkpoint alone (its saved config); ``dataset.*`` and
``inference.*`` given on the command line override the saved values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from lsdo.data import build_datamodule
from lsdo.errors import LSDOUserError
from lsdo.lightning_module import LSDOLitModule
from lsdo.model.encoder import image_size_of
from lsdo.reporting import format_metrics_table
from lsdo.train import output_dir_of

log = logging.getLogger(__name__)


def load_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(saved config, state dict) of a training checkpoint, with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise LSDOUserError(f"ckpt: checkpoint file not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LSDOUserError(f"ckpt: cannot read {p} ({type(exc).__name__}); is it a Lightning checkpoint?") from None
    cfg = (ckpt.get("hyper_parameters") or {}).get("cfg") if isinstance(ckpt, dict) else None
    if cfg is None or "state_dict" not in ckpt:
        raise LSDOUserError(f"ckpt: {p} is not an LSDO training checkpoint (no saved config)")
    return cfg, ckpt["state_dict"]


def rebuild(cfg: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> LSDOLitModule:
    """An LSDOLitModule with the checkpoint's weights (no pretrained download)."""
    cfg = dict(cfg)
    cfg["model"] = {**cfg["model"], "pretrained": None}
    lit = LSDOLitModule(cfg)
    missing, unexpected = lit.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise LSDOUserError(
            f"ckpt: weights do not match the saved config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return lit


def run(cfg: DictConfig) -> dict[str, Any]:
    saved, state_dict = load_checkpoint(str(cfg.ckpt))
    merged = OmegaConf.merge(
        OmegaConf.create(saved), {"dataset": cfg.get("dataset") or {}, "inference": cfg.get("inference") or {}}
    )
    dm = build_datamodule(merged, image_size_of(merged.model))
    lit = rebuild(OmegaConf.to_container(merged, resolve=True), state_dict)
    out = output_dir_of(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(merged, resolve=True))
    accel = str(cfg.trainer.accelerator)
    trainer = L.Trainer(
        accelerator=accel,
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    trainer.test(lit, datamodule=dm, verbose=False)
    metrics = lit.results.get("test", {})
    print(format_metrics_table(metrics, title=f"test metrics of {cfg.ckpt}"))
    (out / "metrics.json").write_text(json.dumps({"ckpt": str(cfg.ckpt), "test": metrics}, indent=2))
    return metrics
