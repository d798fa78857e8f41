"""Training entry point logic (``python train.py`` / ``lsdo-train``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from lsdo.data import build_datamodule
from lsdo.errors import ConfigError, LSDOUserError
from lsdo.lightning_module import LSDOLitModule
from lsdo.model.encoder import image_size_of
from lsdo.plots import plot_training_curves
from lsdo.reporting import format_metrics_table

log = logging.getLogger(__name__)


def output_dir_of(cfg: DictConfig) -> Path:
    """The run directory: Hydra's when running under Hydra, else a fresh one under paths.log_dir."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        base = Path(str(cfg.paths.log_dir)) / str(cfg.task_name) / "runs"
        out = base / time.strftime("%Y-%m-%d_%H-%M-%S")
        i = 0
        while out.exists():
            i += 1
            out = base / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{i}"
        out.mkdir(parents=True)
        return out


def check_accelerator(cfg: DictConfig) -> None:
    if str(cfg.trainer.accelerator) == "gpu" and not torch.cuda.is_available():
        raise LSDOUserError("trainer=gpu but no CUDA GPU is available on this machine; run with trainer=cpu")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: a file, or "last" = the newest ``last.ckpt`` under logs/<task_name>/."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if str(ckpt) == "last":
        root = Path(str(cfg.paths.log_dir)) / str(cfg.task_name)
        found = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise LSDOUserError(f"ckpt_path=last: no last.ckpt under {root}")
        return str(found[-1])
    if not Path(str(ckpt)).is_file():
        raise LSDOUserError(f"ckpt_path: checkpoint file not found: {ckpt}")
    return str(ckpt)


def build_loggers(cfg: DictConfig, out: Path) -> list[Any] | bool:
    name = str(cfg.logger.name)
    if name == "none":
        return False
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return [CSVLogger(save_dir=str(out), name="csv")]
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [TensorBoardLogger(save_dir=str(out), name="tensorboard")]
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return [WandbLogger(project=str(cfg.logger.project), save_dir=str(out), offline=bool(cfg.logger.offline))]
    raise ConfigError(f"logger.name: expected wandb | csv | tensorboard | none, got '{name}'")


def build_trainer(cfg: DictConfig, out: Path, callbacks: list[Any], loggers: Any) -> L.Trainer:
    t = cfg.trainer
    kw = {
        k: t[k]
        for k in (
            "accelerator",
            "devices",
            "strategy",
            "precision",
            "max_epochs",
            "gradient_clip_val",
            "val_check_interval",
            "check_val_every_n_epoch",
            "log_every_n_steps",
            "deterministic",
            "fast_dev_run",
            "limit_train_batches",
            "limit_val_batches",
            "limit_test_batches",
        )
        if t.get(k) is not None
    }
    return L.Trainer(
        default_root_dir=str(out),
        callbacks=callbacks,
        logger=loggers,
        use_distributed_sampler=False,
        enable_model_summary=False,
        **kw,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) as configured; returns the final metrics."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    out = output_dir_of(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # resolved config of this run

    # Cheap checks first: data paths, accelerator, checkpoint; only then build the model
    # (which may download CLIP weights).
    dm = build_datamodule(cfg, image_size_of(cfg.model), report_dir=out)
    check_accelerator(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    lit = LSDOLitModule(OmegaConf.to_container(cfg, resolve=True))
    if cfg.get("select_on_test"):
        log.warning(
            "select_on_test=true: model selection looks at the TEST split (as the published codes do); "
            "the reported test metrics are then optimistic"
        )

    # A resumed run keeps writing checkpoints beside the one it resumes from, so that the
    # best-checkpoint bookkeeping continues exactly as in an uninterrupted run.
    ckpt_dir = Path(ckpt_path).parent if (ckpt_path and cfg.get("train", True)) else out / "checkpoints"
    ckpt_cb = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-epoch{epoch:02d}",
        monitor="val/t2v/R1",
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    callbacks: list[Any] = [ckpt_cb, RichProgressBar(leave=True)]
    loggers = build_loggers(cfg, out)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = build_trainer(cfg, out, callbacks, loggers)

    results: dict[str, Any] = {"run_dir": str(out)}
    if cfg.get("train", True):
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path)
        results["val"] = lit.results.get("val", {})
    if cfg.get("test", True):
        best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
        which = best if (best and not cfg.trainer.get("fast_dev_run")) else None
        trainer.test(lit, datamodule=dm, ckpt_path=which, verbose=False)
        results["test"] = lit.results.get("test", {})
        results["test_checkpoint"] = which
        print(
            format_metrics_table(
                results["test"], title=f"test metrics ({cfg.dataset.name}, variant={cfg.variant.name}, impl={cfg.impl})"
            )
        )
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    for log_csv in out.glob("csv/*/metrics.csv"):
        plot_training_curves(log_csv, out / "training_curves.png")
    return results
