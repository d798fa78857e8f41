"""Datasets: the synthetic LSDO benchmark (in memory) and the real benchmarks' data modules."""

from lsdo.data.datamodule import build_datamodule

__all__ = ["build_datamodule"]
