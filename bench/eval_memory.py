"""Full-protocol evaluation memory at MSVD scale: 670 videos x 12 frames, 27,763 captions.

    python bench/eval_memory.py                  # both impls, each in its own process
    python bench/eval_memory.py impls=official      # (or --impls official)

Every caption is a query against every video (the X-Pool protocol, T x V = 18.6 M pairs) with
paper-size heads (d = 512, randomised X-Pool parameters) through
``lsdo.retrieval.similarity_matrix`` (fast exact path), then t2v / v2t metrics on the [T, V]
matrix with an MSVD-like caption distribution (about 41 per video, at most 81). Printed per impl:
time of the scores and of the metrics, peak RSS of the process (ru_maxrss) and its growth during
the evaluation, a spot check against ``model.similarity`` on random captions, and beside it the
tensors the released code would materialise at this scale (computed from the shapes, not
allocated). Targets on 2 CPU cores: peak < 4 GB, < 120 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_speed import build_bench_model, make_features, peak_rss_mb  # noqa: E402

from lsdo.errors import LSDOUserError  # noqa: E402
from lsdo.options import option  # noqa: E402
from lsdo.retrieval import similarity_matrix, t2v_metrics, v2t_metrics  # noqa: E402

IMPLS = ("paper", "official")
NUM_VIDEOS, NUM_TEXTS, MAX_CAPTIONS, FRAMES, DIM = 670, 27_763, 81, 12, 512


@dataclass
class EvalMemoryArgs:
    impls: list[str] = option("impls to measure, each in its own process", list(IMPLS))
    chunk: int = option("texts per chunk", 256, minimum=1)
    spot: int = option("captions re-scored with model.similarity as a check", 200, minimum=1)
    threads: int = option("torch threads in the workers (0: torch's default)", 0, minimum=0)
    worker: str | None = option("internal: measure this impl in this process and print JSON", None, choices=IMPLS)


def caption_counts(num_videos: int, num_texts: int, max_captions: int, seed: int = 0) -> torch.Tensor:
    """Captions per video [V]: about num_texts / V each (MSVD ~41), between 20 and max, summing to num_texts."""
    gen = torch.Generator().manual_seed(seed)
    mean = num_texts / num_videos
    counts = (mean + 10 * torch.randn(num_videos, generator=gen)).round().clamp(20, max_captions).long()
    counts[0] = max_captions  # the longest caption list fixes the release's padding
    step = 0
    while (excess := int(counts.sum()) - num_texts) != 0:  # nudge the others (not video 0) one by one
        i = 1 + step % (num_videos - 1)
        counts[i] += -1 if excess > 0 and counts[i] > 20 else (1 if excess < 0 and counts[i] < max_captions else 0)
        step += 1
    return counts


def gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.1f} GB ({num_bytes / 2**30:.1f} GiB)"


def worker(impl: str, chunk: int, spot: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    model = build_bench_model(impl)
    counts = caption_counts(NUM_VIDEOS, NUM_TEXTS, MAX_CAPTIONS)
    t2v = torch.repeat_interleave(torch.arange(NUM_VIDEOS), counts)  # [T] caption -> video
    text, video = make_features(t2v, NUM_VIDEOS, FRAMES, model.dim)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    sims = similarity_matrix(model, text, video, chunk_size=chunk)  # [T, V]
    t1 = time.perf_counter()
    t2v_m, v2t_m = t2v_metrics(sims, t2v), v2t_metrics(sims, t2v)
    t2 = time.perf_counter()
    peak = peak_rss_mb()
    idx = torch.randperm(NUM_TEXTS, generator=torch.Generator().manual_seed(1))[:spot]
    with torch.no_grad():
        naive = model.similarity(text[idx], video, chunk_size=64)  # [spot, V]
    print(
        json.dumps(
            {
                "scores_s": t1 - t0,
                "metrics_s": t2 - t1,
                "peak_mb": peak,
                "base_mb": base,
                "spot_diff": float((sims[idx] - naive).abs().max()),
                "t2v": t2v_m,
                "v2t": v2t_m,
                "counts": [int(counts.min()), float(counts.double().mean()), int(counts.max())],
            }
        )
    )


def run(args: EvalMemoryArgs) -> int:
    if args.worker:
        worker(args.worker, args.chunk, args.spot, args.threads)
        return 0
    bad = [i for i in args.impls if i not in IMPLS]
    if bad:
        raise LSDOUserError(f"impls: unknown {bad[0]!r}; expected a subset of {','.join(IMPLS)}")
    v_t_d = NUM_VIDEOS * NUM_TEXTS * DIM * 4
    v_v_c_d = NUM_VIDEOS * NUM_VIDEOS * MAX_CAPTIONS * DIM * 4
    print(
        f"MSVD-scale full protocol: {NUM_VIDEOS} videos x {FRAMES} frames x d={DIM}, {NUM_TEXTS} captions "
        f"(T x V = {NUM_TEXTS * NUM_VIDEOS / 1e6:.1f} M pairs), torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} threads, load avg {os.getloadavg()[0]:.2f}"
    )
    print("the released code would materialise (fp32, from the shapes, not allocated):")
    print(f"  pooled [V, T, d] = [{NUM_VIDEOS}, {NUM_TEXTS}, {DIM}]: {gb(v_t_d)}")
    print(f"  regrouped [V, V, max_captions, d] = [{NUM_VIDEOS}, {NUM_VIDEOS}, {MAX_CAPTIONS}, {DIM}]: {gb(v_v_c_d)}")
    print(f"  this path's output [T, V] fp32: {gb(NUM_TEXTS * NUM_VIDEOS * 4)}")
    for impl in args.impls:
        cmd = [sys.executable, __file__, f"worker={impl}", f"chunk={args.chunk}", f"spot={args.spot}"]
        cmd += [f"threads={args.threads}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{impl} failed:\n{res.stderr[-3000:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        total = r["scores_s"] + r["metrics_s"]
        lo, mean, hi = r["counts"]
        print(f"\nimpl={impl}: captions per video min {lo} / mean {mean:.1f} / max {hi}")
        print(
            f"  scores {r['scores_s']:.1f} s + metrics {r['metrics_s']:.1f} s = {total:.1f} s; peak RSS "
            f"{r['peak_mb'] / 1024:.2f} GiB (process, incl. torch + model; +{r['peak_mb'] - r['base_mb']:.0f} MB "
            f"during the evaluation); max |fast - model.similarity| on {args.spot} captions: {r['spot_diff']:.2e}"
        )
        for name in ("t2v", "v2t"):
            m = r[name]
            print(f"  {name}: " + " ".join(f"{k} {v:.1f}" for k, v in m.items()))
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/eval_memory.py", EvalMemoryArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
