"""Throughput of the Inverse-Attention Encoder vs the global embedding and grid crops, side by side in one run.

    python bench/inverse_attention.py [arch=ViT-B-32] [size=224] [batch=16] [ks=2,4,8] [grid=2] [reps=5]
                                      [device=auto] [lard=all]

A random-init open_clip model (``pretrained=None``: no download; the cost does not depend on the weights, only the
number of crops LARC returns does) encodes batches of ``batch`` frames (synthetic-benchmark frames rendered at
``size`` px, so the heatmaps have structure) with :meth:`RegionEncoder.encode`:

* ``global only``: k = 0, one encoder call per batch;
* ``grid g x g``: the frame + g^2 tiles (the crops of the whole batch in one further encoder call);
* ``inverse attention k``: the frame (one call that also yields the heatmap), LARD + LARC per frame, then every crop
  of the batch in one further call.

Random weights have no meaningful saliency, so with the default LARD thresholds the number of crops is whatever the
random heatmap gives (often fewer than k). ``lard=all`` (default here) accepts every LARD window as a candidate, so
LARC clusters the full candidate set and returns exactly k regions: the method's cost at its full crop budget, with
the most work for LARC. ``lard=default`` times the default thresholds instead.

Per method: the fastest (and the median) seconds per batch over ``reps`` rounds that time every method once in turn
(after one warm-up each; the minimum is the least disturbed by other load on a shared machine), frames/s and the
slow-down vs global only from the minimum, images encoded per frame (1 + crops) and the overhead beyond that count
(slow-down / images per frame: 1.0 means the extra time is all encoder passes; above 1, the heatmap, LARD, LARC and
cropping cost the rest; below 1, the larger crop batches run more efficiently per image).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lsdo.options import option

ABOUT = (__doc__ or "").split("\n\n")[0]


@dataclass
class InverseAttentionBenchArgs:
    arch: str = option("open_clip architecture (random init)", "ViT-B-32")
    size: int = option("input and frame size in pixels", 224, minimum=1)
    batch: int = option("frames per encode() call", 16, minimum=1)
    ks: list[int] = option("k of inverse attention", [2, 4, 8])
    grid: int = option("grid-crop baseline g (g x g tiles)", 2, minimum=1)
    reps: int = option("timed rounds, each timing every method once", 5, minimum=1)
    device: str = option("auto | cpu | cuda", "auto")
    lard: str = option(
        "all: every LARD window is a candidate (LARC returns exactly k regions); default: LARDConfig()",
        "all",
        choices=("all", "default"),
    )


def frames_for(batch: int, size: int) -> torch.Tensor:
    """uint8 [batch, 3, size, size]: frames of the synthetic benchmark (a large object, a small one, specks)."""
    from lsdo.data import synthetic

    videos = synthetic.make_split("test", 0, 20, 60, 1)
    out = [synthetic.render(videos[i % len(videos)], 1, size, 1.0, 2, 0.1)[0] for i in range(batch)]
    return torch.from_numpy(np.stack(out))


def time_methods(encoders: list[object], frames: torch.Tensor, reps: int, device: torch.device) -> list[list[float]]:
    """Seconds per encode() call of each encoder, ``reps`` rounds interleaved (each round times every encoder once).

    Interleaving spreads load changes on a shared machine over all methods instead of one.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for enc in encoders:  # warm-up
        enc.encode(frames)
    sync()
    times: list[list[float]] = [[] for _ in encoders]
    for _ in range(reps):
        for i, enc in enumerate(encoders):
            start = time.perf_counter()
            enc.encode(frames)
            sync()
            times[i].append(time.perf_counter() - start)
    return times


def run(args: InverseAttentionBenchArgs) -> int:
    import open_clip

    from lsdo.inverse_attention.encoder import RegionEncoder
    from lsdo.inverse_attention.lard import LARDConfig

    arch, size, batch, reps, g, ks = args.arch, args.size, args.batch, args.reps, args.grid, args.ks
    dev, lard_mode = args.device, args.lard
    lard = LARDConfig(window_threshold=1.01) if lard_mode == "all" else LARDConfig()
    device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else "cpu" if dev == "auto" else dev)
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None, force_image_size=size).to(device).eval()
    frames = frames_for(batch, size)
    methods = [("global only (k = 0)", "none", {}), (f"grid {g}x{g}", "grid", {"grid": g})]
    methods += [(f"inverse attention k={k}", "inverse_attention", {"k": k, "lard": lard}) for k in ks]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{arch} (random init) at {size} px, batches of {batch} frames, {where}; torch {torch.__version__}, "
        f"python {platform.python_version()}; {reps} interleaved rounds after a warm-up; LARD: {lard_mode}"
    )
    print()
    print(
        "| method | s / batch (min) | s / batch (median) | frames/s | slow-down vs global | images/frame (1 + crops) "
        "| overhead beyond images |"
    )
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        encoders = [RegionEncoder(model, method, **kw) for _, method, kw in methods]
        crops = [float(enc.encode(frames)[1][:, 1:].sum()) / batch for enc in encoders]
        times = time_methods(encoders, frames, reps, device)
    base = min(times[0])
    for (label, _, _), ts, c in zip(methods, times, crops, strict=True):
        best = min(ts)
        ratio = best / base
        print(
            f"| {label} | {best:.3f} | {statistics.median(ts):.3f} | {batch / best:.1f} | {ratio:.2f}x | {1 + c:.2f} "
            f"| {ratio / (1 + c):.2f} |"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    return run_tool("python bench/inverse_attention.py", InverseAttentionBenchArgs, run, argv, about=ABOUT)


if __name__ == "__main__":
    sys.exit(main())
