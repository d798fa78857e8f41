"""Datasets: annotation files (``load_annotations``), video decoding (``lsdo.data.video``), the
synthetic LSDO benchmark (in memory) and the Lightning data modules (``build_datamodule``)."""

from __future__ import annotations

from typing import Any

from lsdo.data.annotations import Record, load_annotations

__all__ = ["Record", "build_datamodule", "load_annotations"]


def __getattr__(name: str) -> Any:
    # Lazy: the data modules import Lightning; annotation parsing does not need it.
    if name == "build_datamodule":
        from lsdo.data.factory import build_datamodule

        return build_datamodule
    raise AttributeError(f"module 'lsdo.data' has no attribute {name!r}")
