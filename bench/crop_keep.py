"""How much of the small object each training crop keeps (issue 17): the authors' crop beside the crop keys.

    python bench/crop_keep.py                      # 120 training videos x 50 crops per setting, about 20 s
    python bench/crop_keep.py videos=60 draws=20

The synthetic benchmark's training videos (``dataset=synthetic``'s look: the small object near a corner)
are rendered with the small object's exact pixels (``synthetic.render(..., details=True)``); for each
setting the training transform of ``lsdo.data.transforms.build_transform`` draws crops
(``VideoTransform.crop_params``, the same draws as training) and the script measures, per clip, the
fraction of the small object's pixels inside the crop over the frames where it shows. Printed side by
side in one run, each setting with its ratio to the authors' crop:

* **kept**: mean fraction of the small object inside the crop;
* **cut out**: clips that keep less than half of it (a caption naming it then describes a clip without it);
* **area**: mean crop area, a fraction of the frame (how much scale augmentation is left);
* **whole frame**: crops that are the whole frame.
"""

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lsdo.options import option

# (label, build_transform keywords): the authors' crop first (the ratios' reference).
SETTINGS: list[tuple[str, dict]] = [
    ("authors' crop (crop_scale 0.5-1)", {}),
    ("crop_max_cut=0.2", {"crop_max_cut": 0.2}),
    ("crop_max_cut=0.1", {"crop_max_cut": 0.1}),
    ("crop_max_cut=0.05", {"crop_max_cut": 0.05}),
    ("crop_scale=[0.8,1.0]", {"crop_scale": [0.8, 1.0]}),
    ("augment=false", {"augment": False}),
]


@dataclass
class CropKeepArgs:
    videos: int = option("training videos of the synthetic benchmark to render", 120, minimum=1)
    draws: int = option("crops drawn per video and setting", 50, minimum=1)
    size: int = option("render size in pixels (the geometry is relative to it)", 64, minimum=16)
    seed: int = option("seed of the crop draws", 0)


def kept_fraction(pixels: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of the True pixels of ``pixels`` [T, H, W] inside the crop ``box`` (top, left, h, w); nan if none."""
    top, left, h, w = box
    total = int(pixels.sum())
    return float(pixels[:, top : top + h, left : left + w].sum()) / total if total else float("nan")


def measure(masks: list[np.ndarray], settings: list[tuple[str, dict]], draws: int, seed: int) -> dict[str, dict]:
    """Per setting: kept / cut out / area / whole frame (see the module docstring) over ``masks`` x ``draws``."""
    from lsdo.data.transforms import build_transform

    out = {}
    for label, keys in settings:
        augment = keys.get("augment", True)
        transform = build_transform(masks[0].shape[-1], train=True, **keys)
        generator = torch.Generator().manual_seed(seed)
        kept, area, whole = [], [], []
        for m in masks:
            _, height, width = m.shape
            for _ in range(draws):
                box = transform.crop_params(height, width, generator) if augment else (0, 0, height, width)
                kept.append(kept_fraction(m, box))
                area.append(box[2] * box[3] / (height * width))
                whole.append(box[2:] == (height, width))
        k = np.array(kept)
        out[label] = {
            "kept": 100 * float(np.nanmean(k)),
            "cut_out": 100 * float(np.mean(k[~np.isnan(k)] < 0.5)),
            "area": 100 * float(np.mean(area)),
            "whole": 100 * float(np.mean(whole)),
        }
    return out


def table(results: dict[str, dict]) -> list[str]:
    """Markdown lines; ratios to the first (the authors') setting."""
    ref = next(iter(results.values()))
    lines = [
        "| setting | kept (%) | cut out: < half kept (%) | vs authors' | crop area (%) | whole frame (%) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        ratio = f"{r['cut_out'] / ref['cut_out']:.2f}x" if ref["cut_out"] else "-"
        lines.append(
            f"| {label} | {r['kept']:.1f} | {r['cut_out']:.1f} | {ratio} | {r['area']:.1f} | {r['whole']:.1f} |"
        )
    return lines


def run(args: CropKeepArgs) -> int:
    import os
    import platform

    from lsdo.config import compose
    from lsdo.data import synthetic

    d = compose(["dataset=synthetic"]).dataset
    videos = synthetic.make_split("train", seed=int(d.seed))[: args.videos]
    start = time.time()
    masks = []
    for v in videos:
        _, info = synthetic.render(
            v, int(d.num_frames), args.size, float(d.small_visible_frac), int(d.distractors), float(d.small_radius),
            details=True,
        )  # fmt: skip
        masks.append(info["small_pixels"])  # [T, H, W] bool: the small object's pixels in the final frames
    results = measure(masks, SETTINGS, args.draws, args.seed)
    print("\n".join(table(results)))
    print(
        f"\n{len(masks)} training videos x {args.draws} crops per setting, {int(d.num_frames)} frames at "
        f"{args.size} px; {time.time() - start:.0f} s on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/crop_keep.py", CropKeepArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
