"""The one factory from a config to a Lightning data module: ``build_datamodule`` (the synthetic benchmark,
:mod:`lsdo.data.datamodule`; the four video datasets, :mod:`lsdo.data.video_datamodule`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from lsdo.data.datamodule import SyntheticDataModule
from lsdo.data.video_datamodule import VideoDataModule
from lsdo.errors import ConfigError, DataNotFoundError

REAL_DATASETS = {
    "msrvtt": "MSR-VTT (annotations MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, videos/)",
    "msvd": "MSVD (captions_msvd.json, train/val/test_list.txt, videos/)",
    "lsmdc": "LSMDC (the LSMDC16 csv files and the movie-clip folders; licence required)",
    "didemo": "DiDeMo (train/val/test_data.json, videos/)",
}


def build_datamodule(cfg: Any, image_size: int, report_dir: str | Path | None = None) -> L.LightningDataModule:
    """The data module of ``cfg.dataset``; raises a one-line user error when data is missing.

    ``report_dir`` receives the pre-flight reports of the real datasets (missing/corrupt video lists).
    """
    d = cfg.dataset
    name = str(d.name)
    if name == "synthetic":
        return SyntheticDataModule(d, image_size, seed=int(cfg.seed), select_on_test=bool(cfg.get("select_on_test")))
    if name in REAL_DATASETS:
        root = Path(str(d.root))
        if not root.exists() and not (d.get("ann_dir") and d.get("video_dir")):
            raise DataNotFoundError(
                f"dataset.root: {root} does not exist. Download {REAL_DATASETS[name]} as described in "
                f"data/README.md and pass dataset.root=/path/to/{name}"
            )
        return VideoDataModule(
            d,
            image_size,
            seed=int(cfg.seed),
            select_on_test=bool(cfg.get("select_on_test")),
            report_dir=report_dir,
        )
    raise ConfigError(f"dataset.name: unknown dataset '{name}' (expected synthetic, {', '.join(REAL_DATASETS)})")
