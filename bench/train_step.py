"""Training-step time and peak memory: batch 32 x 12 frames.

    python bench/train_step.py                      # tiny model on CPU (what CI machines have)
    python bench/train_step.py model=clip_b32       # ViT-B/32, bf16 on a GPU when one is present (= --model clip_b32)

Reports the median step time (forward + backward + AdamW step) over ``steps`` measured steps
after ``warmup`` steps, and the peak memory (CUDA max allocated on GPU, peak RSS on CPU), for
each variant side by side, with the baseline's time as the reference ratio.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lsdo.config import compose
from lsdo.loss import symmetric_infonce
from lsdo.model import build_model
from lsdo.options import option


@dataclass
class TrainStepArgs:
    model: str = option("model preset", "tiny", choices=("tiny", "clip_b32"))
    batch: int = option("videos per step", 32, minimum=1)
    frames: int = option("frames per video", 12, minimum=1)
    steps: int = option("measured steps", 5, minimum=1)
    warmup: int = option("steps before the measured ones", 2, minimum=0)
    variants: list[str] = option("variants to time", ["baseline", "shared", "average", "single"])
    fp32: bool = option("no bf16 autocast on GPU", False)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_variant(variant: str, args: TrainStepArgs, device: torch.device) -> dict[str, float]:
    overrides = [f"model={args.model}", f"variant={variant}"]
    if args.model == "clip_b32":
        overrides.append("model.pretrained=null")
    cfg = compose(overrides)
    model = build_model(cfg).to(device).train()
    size = model.image_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2)
    frames = torch.randn(args.batch, args.frames, 3, size, size, device=device)
    captions = [f"a red circle with a small cyan ring number {i}" for i in range(args.batch)]
    tokens = model.tokenize(captions).to(device)
    use_bf16 = device.type == "cuda" and not args.fp32
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            sims = model.similarity(model.encode_text(tokens), model.encode_video(frames))
            loss = symmetric_infonce(sims.float(), model.logit_scale.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"step_s": statistics.median(times), "peak_mb": peak}


def run(args: TrainStepArgs) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    prec = "bf16-mixed" if device.type == "cuda" and not args.fp32 else "fp32"
    print(
        f"model={args.model} batch={args.batch} frames={args.frames} device={device.type} ({where}) "
        f"precision={prec} torch={torch.__version__}"
    )
    print("| variant | step time (s) | ratio to baseline | peak memory (MiB) |")
    print("|---|---|---|---|")
    base = None
    for v in args.variants:
        r = bench_variant(v, args, device)
        base = base or r["step_s"]
        mem = "GPU max allocated" if device.type == "cuda" else "process peak RSS"
        print(f"| {v} | {r['step_s']:.3f} | {r['step_s'] / base:.2f}x | {r['peak_mb']:.0f} ({mem}) |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/train_step.py", TrainStepArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
