"""Grid-crop baseline (paper §5 "Encoding Grid Crops", Table 1 row "SigLIP + Grid Crops").

"A naive approach is to crop each image into equal sized crops. then embeds each crop with addition to the full
image and take the maximum similarity between the crops and the text query."

``grid_boxes((H, W), g)`` -> [g*g, 4] int64 (x0, y0, x1, y1) tiles in row-major order

Tile edges are ``floor(i * W / g)`` and ``floor(j * H / g)``, so the g x g tiles partition the frame exactly (sizes
differ by at most one pixel when g does not divide the side). The paper does not give g; the default 2 (4 crops)
spends the same number of extra encoder passes as LARC's default k = 4. The similarity is LAFM's max over
{full frame} U {tiles} (see :mod:`lsdo.inverse_attention.lafm`).
"""

from __future__ import annotations

import torch

DEFAULT_GRID = 2


def grid_boxes(frame_size: tuple[int, int], g: int = DEFAULT_GRID) -> torch.Tensor:
    """Equal g x g tiles of an (H, W) frame: -> [g*g, 4] int64 boxes, row-major."""
    if g < 1:
        raise ValueError(f"grid size must be >= 1, got {g}")
    height, width = int(frame_size[0]), int(frame_size[1])
    xs = [(i * width) // g for i in range(g + 1)]
    ys = [(j * height) // g for j in range(g + 1)]
    return torch.tensor([[xs[i], ys[j], xs[i + 1], ys[j + 1]] for j in range(g) for i in range(g)], dtype=torch.long)
