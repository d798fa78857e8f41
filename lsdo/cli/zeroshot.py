"""``python zeroshot.py`` / ``lsdo-zeroshot``: training-free region retrieval (configs/zeroshot.yaml, lsdo.zeroshot)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from lsdo.cli.common import guarded, hydra_main


def _zeroshot(cfg: DictConfig) -> Any:
    from lsdo.zeroshot import run

    return run(cfg)


zeroshot_task = guarded(_zeroshot)


def zeroshot_main() -> None:
    hydra_main("zeroshot", zeroshot_task)
