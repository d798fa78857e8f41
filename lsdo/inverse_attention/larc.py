"""LARC, Low-Attention Region Clustering (paper §3, second stage).

"these bounding boxes are grouped using LARC, where k-means is used to form larger and more coherent regions"

``kmeans(points [M, D], k, seed)``                 -> (labels [M] int64, centres [k', D] float64), k' <= k
``cluster_regions(boxes [M, 4], k, (H, W), seed)`` -> regions [k', 4] int64 (x0, y0, x1, y1), k' = min(k, #distinct)

Choices (the paper states only "k-means" and its k, which was lost in extraction):

* features: the four box coordinates divided by (W, H, W, H), so both axes weigh the same on non-square frames.
  LARD's candidates share one size, so this equals k-means on the box centres (the distances differ by a constant
  factor); with mixed sizes the extent is clustered as well.
* region: the bounding box (union) of its members' boxes, which makes the regions "larger and more coherent" than
  the kernel-sized candidates.
* k-means++ seeding (Arthur & Vassilvitskii, 2007) + Lloyd iterations, in numpy with ``np.random.default_rng(seed)``:
  the same inputs and seed give the same regions. Empty clusters are re-seeded with the point farthest from its
  centre. Regions are returned in reading order (sorted by y0, x0, y1, x1).
* fewer distinct candidates than k: k-means++ stops when every remaining point coincides with a centre, so k' =
  number of distinct candidates (< k) regions are returned, never duplicates.
* zero candidates (the whole frame is salient): an empty [0, 4] tensor; the encoder then keeps only the global
  embedding for that frame (its region slots are masked out in LAFM).
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_K = 4  # the paper's k was lost with its equations; 4 matches a 2x2 grid's crop budget (grid.py)


def _sq_dists(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [M, C]."""
    return ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)


def kmeans_pp_init(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: first centre uniform, then proportional to D^2. Stops early when all D^2 = 0."""
    centres = [points[int(rng.integers(len(points)))]]
    d2 = _sq_dists(points, np.asarray(centres))[:, 0]
    while len(centres) < k:
        total = d2.sum()
        if total <= 0.0:
            break  # every point coincides with a centre: fewer distinct points than k
        idx = int(rng.choice(len(points), p=d2 / total))
        centres.append(points[idx])
        d2 = np.minimum(d2, _sq_dists(points, points[idx : idx + 1])[:, 0])
    return np.asarray(centres, dtype=np.float64)


def kmeans(points: np.ndarray, k: int, seed: int = 0, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ + Lloyd on points [M, D] -> (labels [M], centres [k', D]); deterministic for a given seed."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0 or k < 1:
        return np.zeros(0, dtype=np.int64), np.zeros((0, points.shape[-1] if points.ndim == 2 else 0))
    rng = np.random.default_rng(seed)
    centres = kmeans_pp_init(points, k, rng)
    labels = np.full(len(points), -1, dtype=np.int64)
    for _ in range(max_iter):
        d2 = _sq_dists(points, centres)
        new = d2.argmin(axis=1)  # ties -> lowest centre index
        counts = np.bincount(new, minlength=len(centres))
        for c in np.flatnonzero(counts == 0):  # re-seed an empty cluster with the worst-fitted point
            far = int(d2[np.arange(len(points)), new].argmax())
            centres[c] = points[far]
            new[far] = c
            d2[far] = 0.0
            counts = np.bincount(new, minlength=len(centres))
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(len(centres)):
            members = labels == c
            if members.any():
                centres[c] = points[members].mean(axis=0)
    keep = np.unique(labels)  # drop clusters left empty at max_iter (does not happen in practice)
    remap = np.full(len(centres), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    return remap[labels], centres[keep]


def cluster_regions(
    boxes: torch.Tensor, k: int = DEFAULT_K, frame_size: tuple[int, int] | None = None, seed: int = 0
) -> torch.Tensor:
    """LARC: k-means of candidate boxes [M, 4] into k' <= k regions [k', 4] int64 (bounding box of each cluster).

    ``frame_size`` (H, W) scales the coordinates to [0, 1] before clustering (None: the boxes' own extent).
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"LARC expects boxes [M, 4], got shape {tuple(boxes.shape)}")
    if boxes.shape[0] == 0 or k < 1:
        return torch.zeros(0, 4, dtype=torch.long, device=boxes.device)
    b = boxes.detach().cpu().double().numpy()
    if frame_size is None:
        height, width = max(b[:, 3].max(), 1.0), max(b[:, 2].max(), 1.0)
    else:
        height, width = float(frame_size[0]), float(frame_size[1])
    feats = b / np.array([width, height, width, height])
    labels, _ = kmeans(feats, k, seed)
    regions = np.stack(
        [
            np.concatenate([b[labels == c, :2].min(axis=0), b[labels == c, 2:].max(axis=0)])
            for c in range(int(labels.max()) + 1)
        ]
    )
    order = np.lexsort((regions[:, 2], regions[:, 3], regions[:, 0], regions[:, 1]))  # y0, x0, y1, x1
    return torch.from_numpy(regions[order]).round().long().to(boxes.device)
