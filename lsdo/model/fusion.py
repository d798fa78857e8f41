"""Feature fusion of frame features and frame-level LSDO features (paper Eq. 15).

    f_m = alpha f'_v + (1 - alpha) f_p        [B, n, d]

With ``use_frame_features=False`` (ablation rows 1-2) f_m = f_p; with no LSDO term (baseline,
rows 0 and 5) f_m = f'_v.
"""

from __future__ import annotations

import torch


def fuse(f_v: torch.Tensor | None, f_p: torch.Tensor | None, alpha: float = 0.8) -> torch.Tensor:
    """Eq. 15 with the ablation cases: either input may be None (but not both)."""
    if f_v is None and f_p is None:
        raise ValueError("fusion needs frame features or LSDO features")
    if f_p is None:
        return f_v
    if f_v is None:
        return f_p
    return alpha * f_v + (1 - alpha) * f_p
