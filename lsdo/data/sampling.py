"""Segment sampling of frame indices (shared by the synthetic and the real-video pipelines).

The clip of ``total`` frames is split into ``n`` equal segments; ``uniform`` takes the middle
frame of each (evaluation), ``rand`` a random frame inside each (training, unless
``dataset.train_sampling=uniform``). Works when ``total < n`` (frames repeat) and with 1-frame
segments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lsdo.errors import ConfigError

SAMPLE_MODES = ("rand", "uniform")


def segment_indices(total: int, n: int, mode: str = "uniform", rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices [n] into a clip of ``total`` frames."""
    if total < 1 or n < 1:
        raise ValueError(f"need total >= 1 and n >= 1, got total={total}, n={n}")
    # Integer arithmetic: segment i covers frames [i*total/n, (i+1)*total/n) exactly.
    i = np.arange(n, dtype=np.int64)
    lo = i * total // n
    hi = np.maximum(-(-(i + 1) * total // n) - 1, lo)  # inclusive upper bound (ceil - 1)
    if mode == "uniform":
        return np.minimum((2 * i + 1) * total // (2 * n), total - 1)
    if mode == "rand":
        rng = rng or np.random.default_rng()
        return np.minimum(rng.integers(lo, hi + 1), total - 1)
    raise ValueError(f"sample mode must be 'uniform' or 'rand', got '{mode}'")


def train_sampling(dcfg: Any) -> str:
    """``dataset.train_sampling`` (rand | uniform): how training frames are taken from their segments.

    The default lives in configs/train.yaml (``rand``); a dataset config built by hand without the
    key (or saved before it existed) trains with ``rand``, as every run did before the key.
    """
    mode = str(dcfg["train_sampling"])
    if mode not in SAMPLE_MODES:
        raise ConfigError(f"dataset.train_sampling: expected rand | uniform, got '{mode}'")
    return mode
