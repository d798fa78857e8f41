"""Where a run writes and what it runs on: the run directory and the device, for every entry point.

``output_dir_of`` gives training, evaluation and zero-shot runs their directory; ``resolve_device``
turns ``auto | cpu | cuda[:i]`` into a device for the tools that are not Lightning runs
(``lsdo-index``, ``lsdo-search``, ``zeroshot.py``); ``check_accelerator`` refuses ``gpu`` on a
machine without one before any work starts. Each error names the key the user set.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lsdo.config import RUN_TOKEN
from lsdo.errors import LSDOUserError


def output_dir_of(cfg: DictConfig) -> Path:
    """The run directory: Hydra's when running under Hydra, else a new one under paths.log_dir.

    Outside Hydra the directory is claimed with an exclusive ``mkdir``, so two processes
    starting in the same second never share one (Hydra's names carry a per-process token).
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        base = Path(str(cfg.paths.log_dir)) / str(cfg.task_name) / "runs"
        base.mkdir(parents=True, exist_ok=True)
        variant = OmegaConf.select(cfg, "variant.name", default=None)
        stem = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}{f'_{variant}' if variant else ''}_{RUN_TOKEN}"
        for i in range(10_000):
            out = base / (stem if i == 0 else f"{stem}_{i}")
            try:
                out.mkdir()
                return out
            except FileExistsError:
                continue
        raise LSDOUserError(f"paths.log_dir: cannot create a new run directory under {base}") from None


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:i`` -> a device; ``key`` names it in errors."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LSDOUserError(f"{key}={name} but no CUDA GPU is available; use {key}=cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise LSDOUserError(f"{key}: expected auto, cpu or cuda, got {name!r}")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LSDOUserError(f"{key}: expected auto, cpu or cuda, got {name!r}") from None


def check_accelerator(accelerator: str, key: str = "trainer.accelerator") -> None:
    """Refuse a GPU accelerator on a machine without CUDA (before any directory or data is made)."""
    if str(accelerator) == "gpu" and not torch.cuda.is_available():
        raise LSDOUserError(f"{key}=gpu but no CUDA GPU is available on this machine; run with trainer=cpu")


@contextmanager
def owned_process_group() -> Iterator[None]:
    """Destroy the default process group at the end of a block that created it (Lightning's DDP strategy
    creates one and never destroys it; without this a gloo rank can abort at interpreter exit with
    "terminate called without an active exception", exit -6). Only when the block succeeds: destroying it
    while another rank may still wait in a collective can hang that rank."""
    import torch.distributed as dist

    owned = dist.is_available() and not dist.is_initialized()
    yield
    if owned and dist.is_initialized():
        dist.destroy_process_group()
