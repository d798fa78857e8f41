"""Config composition outside the command line: ``compose(overrides) -> DictConfig``.

``compose`` gives exactly the config ``python train.py <overrides>`` would run with (the
``configs/train.yaml`` tree), for notebooks, tests and tools.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(os.environ.get("LSDO_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def _pick(key: str, *choices: str) -> float | str:
    """``${lsdo_pick:${dataset.train_split},9k=3e-5,7k=1e-5}`` -> the value listed for ``key``."""
    table = dict(c.split("=", 1) for c in choices)
    if str(key) not in table:
        raise ValueError(f"'{key}' is not one of {sorted(table)}")
    value = table[str(key)]
    try:
        return float(value)
    except ValueError:
        return value


def register_resolvers() -> None:
    """Register the project's OmegaConf resolvers (idempotent)."""
    if not OmegaConf.has_resolver("lsdo_pick"):
        OmegaConf.register_new_resolver("lsdo_pick", _pick)


register_resolvers()


def compose(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra command-line style ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"config directory not found: {CONFIG_DIR} (set LSDO_CONFIG_DIR)")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
