"""Evaluation entry point logic (``python eval.py ckpt=PATH`` / ``lsdo-eval``).

The model is rebuilt from the checkpoint alone (its saved config). On the command line:

* ``dataset=NAME [dataset.key=...]`` evaluates on another dataset (the preset replaces the saved
  dataset config); without it the checkpoint's own dataset settings are used;
* ``inference.mode=full|fast``, ``inference.prefilter_k=K``, ``inference.dsl=true``, ... override
  the saved protocol (keys left null keep the checkpoint's);
* ``variant=...``, ``model=...`` or ``impl=...`` must agree with the checkpoint (a checkpoint
  rebuilds its own model): a mismatch is a one-line error.

Writes into the run directory: ``metrics.json`` (metrics + the protocol used), ``metrics.md``,
``recall_at_k.png`` and ``rank_histogram.png``, and the merged ``config.yaml``.
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


def check_compatible(saved: DictConfig, cfg: DictConfig) -> None:
    """Refuse command-line model settings that differ from the checkpoint's."""
    impl = cfg.get("impl")
    if impl is not None and str(impl) != str(saved.get("impl", "paper")):
        raise LSDOUserError(f"impl={impl} given, but the checkpoint was trained with impl={saved.get('impl', 'paper')}")
    for group, key in (("variant", "name"), ("model", "name")):
        given = cfg.get(group)
        if not given:
            continue
        for k, v in given.items():
            old = OmegaConf.select(saved, f"{group}.{k}")
            if (
                v is not None
                and old is not None
                and OmegaConf.to_container(OmegaConf.create({"v": v}))["v"]
                != (OmegaConf.to_container(OmegaConf.create({"v": old}))["v"])
            ):
                label = f"{group}={v}" if k == key else f"{group}.{k}={v}"
                raise LSDOUserError(
                    f"{label} given, but the checkpoint was trained with {group}.{k}={old}; "
                    "a checkpoint rebuilds its own model (leave the model settings out)"
                )


def merge_eval_config(saved: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The checkpoint's config with the command line's dataset / inference settings."""
    base = OmegaConf.create(saved)
    check_compatible(base, cfg)
    dataset = cfg.get("dataset")
    if dataset:
        base.dataset = dataset  # an explicitly chosen dataset preset replaces the saved one
    inference = {k: v for k, v in (OmegaConf.to_container(cfg.get("inference") or {}) or {}).items() if v is not None}
    return OmegaConf.merge(base, {"inference": inference})


def protocol_label(inference: Any) -> str:
    mode = str(inference.get("mode", "full"))
    label = "full protocol" if mode == "full" else f"fast (prefilter k={inference.get('prefilter_k', 100)})"
    if inference.get("dsl"):
        label += ", DSL post-processing (transductive)"
    return label


def run(cfg: DictConfig) -> dict[str, Any]:
    from lsdo.plots import plot_retrieval
    from lsdo.retrieval.metrics import t2v_ranks, v2t_ranks

    saved, state_dict = load_checkpoint(str(cfg.ckpt))
    merged = merge_eval_config(saved, cfg)
    out = output_dir_of(cfg)
    out.mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(merged, image_size_of(merged.model), report_dir=out)
    lit = rebuild(OmegaConf.to_container(merged, resolve=True), state_dict)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(merged, resolve=True))
    accel = str(cfg.trainer.accelerator)
    if accel == "gpu" and not torch.cuda.is_available():
        raise LSDOUserError("trainer.accelerator=gpu but no CUDA GPU is available; use trainer.accelerator=cpu")
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
    label = protocol_label(merged.inference)
    table = format_metrics_table(metrics, title=f"test metrics of {cfg.ckpt} ({merged.dataset.name}; {label})")
    print(table)
    (out / "metrics.md").write_text(table + "\n")
    inference = OmegaConf.to_container(merged.inference, resolve=True)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "ckpt": str(cfg.ckpt),
                "dataset": str(merged.dataset.name),
                "protocol": label,
                "inference": inference,
                "test": metrics,
            },
            indent=2,
        )
    )
    scores = lit.eval_outputs.get("test")
    if scores is not None:
        sims, t2v = scores["sims"], scores["text_to_video"]
        plot_retrieval({"t2v": t2v_ranks(sims, t2v), "v2t": v2t_ranks(sims, t2v)}, out, title=f"recall at K ({label})")
    log.info("wrote %s", out)
    return metrics
