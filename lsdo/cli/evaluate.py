"""``python eval.py`` / ``lsdo-eval``: a checkpoint on a test split (Hydra, configs/eval.yaml; :mod:`lsdo.evaluate`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from lsdo.cli.common import guarded, hydra_main


def _eval(cfg: DictConfig) -> Any:
    from lsdo.evaluate import run

    return run(cfg)


eval_task = guarded(_eval)


def eval_main() -> None:
    hydra_main("eval", eval_task)
