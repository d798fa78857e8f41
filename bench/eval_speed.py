"""Evaluation speed at MSR-VTT 1k-A scale: the release's X-Pool protocol vs chunked naive vs fast exact.

    python bench/eval_speed.py                       # 1000 texts x 1000 videos x 12 frames x 512
    python bench/eval_speed.py impls=official methods=naive,fast   # (or --impls official --methods naive,fast)

Features are random (seeded) and precomputed; the X-Pool heads are paper size (d = 512, the
``model=tiny`` encoder's embed_dim) with randomised parameters. Per impl, three methods run side
by side, each in its own subprocess so its peak RSS (``ru_maxrss``) is its own:

(a) ``release``: the released code's test path, emulated: X-Pool pools every (video, text) pair
    at once into a [V, T, d] tensor (its multi-head layout, one head), the pooled tensor is
    regrouped per video id in Python into [V, V, max_captions, d] (padded with -inf), both sides
    are L2-normalised, a bmm gives [V, max_captions, V], and its double-argsort t2v metric ranks.
(b) ``naive``: ``similarity_matrix(method="naive")`` - ``model.similarity`` per chunk of texts.
(c) ``fast``: ``similarity_matrix(method="fast")`` - exact scores from per-video Gram matrices
    (lsdo.retrieval.xpool_fast), per-video precomputation included in the time.

Printed: seconds (best of ``repeat`` runs; the release path once by default, it takes ~30 s),
peak RSS of the process and its growth during the method, speed-up vs (a), t2v R@1 and
max |scores - naive scores|. The machine should be otherwise idle: with 2 OpenMP threads and
another process on a core, every parallel op waits for the descheduled thread (~8 ms per op
measured on a 2-core VM), which hits the many-op fast path far harder than the few huge ops of
(a); ``threads=1`` is the robust comparison then.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lsdo.config import compose
from lsdo.errors import LSDOUserError
from lsdo.model import LSDOModel, TextFeatures, build_model
from lsdo.model.official import OfficialXPool
from lsdo.options import option
from lsdo.retrieval import similarity_matrix, t2v_metrics

METHODS = ("release", "naive", "fast")
IMPLS = ("paper", "official")


@dataclass
class EvalSpeedArgs:
    texts: int = option("texts (queries)", 1000, minimum=1)
    videos: int = option("videos", 1000, minimum=1)
    frames: int = option("frames per video", 12, minimum=1)
    chunk: int = option("texts per chunk for naive and fast", 256, minimum=1)
    impls: list[str] = option("impls to measure", list(IMPLS))
    methods: list[str] = option("methods to time, each in its own process", list(METHODS))
    threads: int = option("torch threads in the workers (0: torch's default)", 0, minimum=0)
    repeat: int = option("timed runs of naive and fast (best is reported)", 3, minimum=1)
    release_repeat: int = option("timed runs of the release path (about 30 s each)", 1, minimum=1)
    worker: str | None = option("internal: time this method in this process", None, choices=METHODS)
    impl: str = option("internal: the worker's impl", "paper", choices=IMPLS)
    out: str | None = option("internal: where the worker saves its scores", None)


# ---------------------------------------------------------------------- shared set-up
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_bench_model(impl: str, seed: int = 0) -> LSDOModel:
    """``model=tiny`` (embed_dim 512: paper-size X-Pool heads) with randomised X-Pool parameters."""
    overrides = ["model=tiny", "variant=average"] + (["impl=official"] if impl == "official" else [])
    model = build_model(compose(overrides)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.xpool.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 2:
                p.copy_(0.6 * torch.eye(*p.shape) + noise / math.sqrt(p.shape[1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(0.1 * noise)
    return model


def make_features(
    text_to_video: torch.Tensor, num_videos: int, frames: int, dim: int, seed: int = 0
) -> tuple[TextFeatures, torch.Tensor]:
    """Random f_m [V, n, d] and texts near their video's mean frame (so retrieval is not chance)."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(num_videos, frames, dim, generator=gen)  # [V, n, d]
    target = video.mean(dim=1)[text_to_video] + 0.5 * torch.randn(len(text_to_video), dim, generator=gen)  # [T, d]
    return TextFeatures(target, target, target), video


# ---------------------------------------------------------------------- (a) the release's protocol
def release_pool_frames(xpool: torch.nn.Module, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """The release's pooling of all pairs at once: text [T, d], video [V, n, d] -> pooled [V, T, d].

    Its single-head attention layout: logits k @ q as [V, heads, n, T], softmax over frames,
    v @ weights as [V, heads, d_h, T], then out_proj; impl=official adds LN2, the residual
    linear_proj and LN3 (dropout is the identity in eval), impl=paper the output LayerNorm.
    """
    official = isinstance(xpool, OfficialXPool)
    norm = xpool.norm1 if official else xpool.norm_in
    text, video = norm(text), norm(video)
    num_texts, dim = text.shape
    num_vids, num_frames, _ = video.shape
    heads, head_dim = 1, dim
    q = xpool.q(text).reshape(num_texts, heads, head_dim).permute(1, 2, 0)  # [T, d] -> [heads, d_h, T]
    k = xpool.k(video).reshape(num_vids, num_frames, heads, head_dim).permute(0, 2, 1, 3)  # -> [V, heads, n, d_h]
    v = xpool.v(video).reshape(num_vids, num_frames, heads, head_dim).permute(0, 2, 3, 1)  # -> [V, heads, d_h, n]
    weights = torch.softmax((k @ q) / math.sqrt(head_dim), dim=2)  # [V, heads, n, T], softmax over frames
    attention = (v @ weights).permute(0, 3, 1, 2).reshape(num_vids, num_texts, dim)  # [V, heads, d_h, T] -> [V, T, d]
    out = xpool.out(attention)  # [V, T, d]
    if not official:
        return xpool.norm_out(out)
    out = xpool.norm2(out)
    return xpool.norm3(out + xpool.dropout(xpool.linear_proj(out)))


def _pad_stack(groups: dict[int, torch.Tensor], order: list[int], dim: int) -> torch.Tensor:
    """Stack per-id [c_i, d] tensors into [ids, max c, d], padding with -inf rows (as the release)."""
    longest = max(g.shape[0] for g in groups.values())
    padded = [torch.cat([groups[i], torch.full((longest - groups[i].shape[0], dim), float("-inf"))]) for i in order]
    return torch.stack(padded)


def release_regroup(
    text: torch.Tensor, pooled: torch.Tensor, video_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's per-video-id regrouping (Python loops over every pooled pair).

    text [T, d], pooled [V, T, d] -> texts per video [V, max_c, d] and pooled per video
    [V, V, max_c, d] (entry [i, j, c] = video i pooled for the c-th caption of video j).
    """
    dim = text.shape[-1]
    by_id: dict[int, list[torch.Tensor]] = {}
    for idx, vid in enumerate(video_ids):
        by_id.setdefault(vid, []).append(text[idx])
    order = list(by_id)
    texts = _pad_stack({vid: torch.stack(rows) for vid, rows in by_id.items()}, order, dim)
    per_video = []
    for i in range(pooled.shape[0]):
        rows_i: dict[int, list[torch.Tensor]] = {}
        for idx, vid in enumerate(video_ids):
            rows_i.setdefault(vid, []).append(pooled[i, idx, :])
        per_video.append(_pad_stack({vid: torch.stack(r) for vid, r in rows_i.items()}, order, dim))
    return texts, torch.stack(per_video)


def release_sims(texts: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """texts [V, c, d], pooled [V, V, c, d] -> sims [V, c, V] (L2-normalise both, one bmm)."""
    texts = texts / texts.norm(dim=-1, keepdim=True)
    pooled = pooled / pooled.norm(dim=-1, keepdim=True)
    num_vids, max_c, dim = texts.shape
    pooled = pooled.permute(1, 2, 3, 0).reshape(num_vids * max_c, dim, num_vids)  # [V, c, d, V] -> [V c, d, V]
    texts = texts.reshape(num_vids * max_c, 1, dim)  # [V, c, d] -> [V c, 1, d]
    return torch.bmm(texts, pooled).view(num_vids, max_c, num_vids)  # [V c, 1, V] -> [V, c, V]


def release_t2v_r1(sims: torch.Tensor) -> float:
    """The release's t2v R@1 from [V, c, V]: double argsort, ranks on the diagonal, padding dropped."""
    stacked = sims.permute(1, 0, 2)  # [c, V, V]
    order = torch.argsort(stacked, dim=-1, descending=True)
    ranks = torch.flatten(torch.diagonal(torch.argsort(order, dim=-1), dim1=1, dim2=2))  # 0-based
    valid = torch.flatten(torch.diagonal(sims, dim1=0, dim2=2))
    ranks = ranks[torch.isfinite(valid)]
    return 100.0 * float((ranks == 0).double().mean())


def run_release(model: LSDOModel, text: TextFeatures, video: torch.Tensor, t2v: torch.Tensor) -> tuple:
    pooled = release_pool_frames(model.xpool, text.query, video)  # [V, T, d]
    texts, per_video = release_regroup(text.target, pooled, t2v.tolist())
    del pooled
    sims = release_sims(texts, per_video)  # [V, c, V]
    r1 = release_t2v_r1(sims)
    # back to [T, V]: the c-th caption of the video at position j (first-appearance order) -> sims[j, c]
    position = {vid: j for j, vid in enumerate(dict.fromkeys(t2v.tolist()))}
    rows, cols, seen = [], [], {}
    for vid in t2v.tolist():
        rows.append(position[vid])
        cols.append(seen.get(vid, 0))
        seen[vid] = cols[-1] + 1
    return sims[torch.tensor(rows), torch.tensor(cols)], r1


# ---------------------------------------------------------------------- one method in one process
def worker(args: EvalSpeedArgs) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_bench_model(args.impl)
    t2v = torch.arange(args.texts) % args.videos
    text, video = make_features(t2v, args.videos, args.frames, model.dim)
    base = peak_rss_mb()
    times = []
    for _ in range(args.release_repeat if args.worker == "release" else args.repeat):
        t0 = time.perf_counter()
        with torch.no_grad():
            if args.worker == "release":
                sims, r1 = run_release(model, text, video, t2v)
            else:
                sims = similarity_matrix(model, text, video, chunk_size=args.chunk, method=args.worker)
                r1 = t2v_metrics(sims, t2v)["R1"]
        times.append(time.perf_counter() - t0)
    seconds = min(times)  # best of the repeats: the least disturbed by other processes
    torch.save(sims.contiguous(), args.out)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "base_mb": base, "r1": r1}))


def run_worker(method: str, impl: str, args: EvalSpeedArgs, out: Path) -> dict:
    cmd = [sys.executable, __file__, f"worker={method}", f"impl={impl}", f"out={out}"]
    cmd += [f"texts={args.texts}", f"videos={args.videos}", f"frames={args.frames}"]
    cmd += [f"chunk={args.chunk}", f"threads={args.threads}"]
    cmd += [f"repeat={args.repeat}", f"release_repeat={args.release_repeat}"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if res.returncode != 0:
        raise RuntimeError(f"{method}/{impl} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(args: EvalSpeedArgs) -> int:
    if args.worker:
        if not args.out:
            raise LSDOUserError("out: a worker needs a file for its scores")
        worker(args)
        return 0
    for key, given, known in (("impls", args.impls, IMPLS), ("methods", args.methods, METHODS)):
        bad = [v for v in given if v not in known]
        if bad:
            raise LSDOUserError(f"{key}: unknown {bad[0]!r}; expected a subset of {','.join(known)}")
    methods = args.methods
    cpu = platform.processor() or platform.machine()
    print(
        f"eval speed: {args.texts} texts x {args.videos} videos x {args.frames} frames x d=512 (model=tiny heads), "
        f"torch {torch.__version__}, {cpu}, {args.threads or torch.get_num_threads()} threads, "
        f"load avg {os.getloadavg()[0]:.2f}; seconds = best of {args.release_repeat} (release) / {args.repeat} runs"
    )
    header = f"{'impl':9} {'method':8} {'seconds':>8} {'peak RSS MB':>12} {'growth MB':>10} {'vs (a)':>8}"
    header += f" {'t2v R@1':>8} {'max|s - naive|':>15}"
    with tempfile.TemporaryDirectory() as tmp:
        for impl in args.impls:
            print(header)
            results, sims = {}, {}
            for method in methods:
                out = Path(tmp) / f"{impl}_{method}.pt"
                results[method] = run_worker(method, impl, args, out)
                sims[method] = torch.load(out)
            ref = sims.get("naive")
            for method in methods:
                r = results[method]
                ratio = f"{results['release']['seconds'] / r['seconds']:7.1f}x" if "release" in results else "-"
                diff = f"{float((sims[method] - ref).abs().max()):15.2e}" if ref is not None else "-"
                print(
                    f"{impl:9} {method:8} {r['seconds']:8.2f} {r['peak_mb']:12.0f} {r['peak_mb'] - r['base_mb']:10.0f}"
                    f" {ratio:>8} {r['r1']:8.1f} {diff:>15}"
                )
    print(f"load avg at the end {os.getloadavg()[0]:.2f} (other processes on the machine inflate the times)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/eval_speed.py", EvalSpeedArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
