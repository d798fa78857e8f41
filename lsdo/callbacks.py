"""Checkpoint writing for training runs: atomic files, a true last checkpoint, resumes into a new run.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the target folder
  and renames it into place (``os.replace``), so a run killed while saving leaves the previous
  file intact, never a truncated one.
* :class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` whose bookkeeping (best score, best
  path, top-k) follows a resumed run into *its own* run directory: the checkpoints it needs from
  the run it resumes (the best one so far) are hard-linked (or copied) into the new directory, and
  nothing in the earlier run's directory is ever written or deleted.
* :func:`checkpoint_callbacks` builds the run's callbacks: the best checkpoint on the validation
  metric (``val/t2v/R1``, or with ``checkpoint.monitor_window`` = k > 1 its mean over the last k
  validations, ``val/t2v/R1_window``, as the released code selects), and ``last.ckpt`` written at
  the end of **every** epoch (after validation, so it holds the best-checkpoint state of that
  epoch), and every ``N`` optimiser steps when asked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

BEST_METRIC = "val/t2v/R1"  # model selection: text-to-video R@1 of a validation
WINDOW_METRIC = "val/t2v/R1_window"  # its mean over the last checkpoint.monitor_window validations


def monitored_metric(monitor_window: int) -> str:
    """The key the best checkpoint follows: ``val/t2v/R1`` (window 1) or ``val/t2v/R1_window``."""
    if int(monitor_window) < 1:
        raise ValueError(f"checkpoint.monitor_window must be >= 1, got {monitor_window}")
    return BEST_METRIC if int(monitor_window) == 1 else WINDOW_METRIC


def atomic_write(target: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a file through ``write(f)`` into a temporary file beside ``target``, flush it to disk, then rename
    it into place: a process killed meanwhile leaves the previous file whole (and no temporary behind on errors)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, flushed to disk, then renamed into place (:func:`atomic_write`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_write(path, lambda f: torch.save(checkpoint, f))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that carries its state into a resumed run's own directory.

    Lightning keeps the best score only when the checkpoint folder is unchanged; a resumed run
    writes into a new folder, so this class maps the saved paths into it (adopting the best
    checkpoint file by a hard link or a copy) and then restores the full state: the next
    validation is compared with the true best so far, exactly as in an uninterrupted run.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if not old or self.dirpath is None or Path(old) == Path(self.dirpath):
            super().load_state_dict(state_dict)
            return
        new_dir = Path(self.dirpath)

        def adopt(path: str | None, copy: bool) -> str | None:
            if not path:
                return path
            src = Path(path)
            if src.parent != Path(old):
                return path  # not one of this callback's own files: leave it pointing where it was
            dst = new_dir / src.name
            if copy and src.is_file() and not dst.exists():
                _link_or_copy(src, dst)
            return str(dst)

        copy = self.monitor is not None  # the best checkpoint is needed (testing, top-k); last.ckpt is rewritten
        state = dict(state_dict)
        state["dirpath"] = self.dirpath
        state["best_model_path"] = adopt(state.get("best_model_path"), copy)
        state["kth_best_model_path"] = adopt(state.get("kth_best_model_path"), copy)
        state["last_model_path"] = adopt(state.get("last_model_path"), False)
        state["best_k_models"] = {adopt(k, copy): v for k, v in (state.get("best_k_models") or {}).items()}
        super().load_state_dict(state)


def checkpoint_callbacks(
    ckpt_dir: Path, every_n_steps: int | None = None, monitor_window: int = 1
) -> list[RunCheckpoint]:
    """[best on :func:`monitored_metric`, last every epoch, (last every N steps)] writing into ``ckpt_dir``.

    The best checkpoint comes first so that ``last.ckpt``, written after it at the same
    validation, carries the best-checkpoint state of that epoch.
    """
    best = RunCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-epoch{epoch:02d}",
        monitor=monitored_metric(monitor_window),
        mode="max",
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
    )

    def last(**trigger: Any) -> RunCheckpoint:  # last.ckpt, rewritten in place at each trigger
        return RunCheckpoint(
            dirpath=str(ckpt_dir), filename="last", monitor=None, save_top_k=1, enable_version_counter=False, **trigger
        )

    callbacks = [best, last(every_n_epochs=1, save_on_train_epoch_end=True)]  # every epoch, after its validation
    if every_n_steps:
        callbacks.append(last(every_n_train_steps=int(every_n_steps)))
    return callbacks
