"""``python train.py`` / ``lsdo-train``: one training run (Hydra, configs/train.yaml; :mod:`lsdo.train`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from lsdo.cli.common import guarded, hydra_main


def _train(cfg: DictConfig) -> Any:
    from lsdo.train import run

    return run(cfg)


train_task = guarded(_train)


def train_main() -> None:
    hydra_main("train", train_task)
