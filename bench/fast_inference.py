"""Search latency of a :class:`lsdo.retrieval.index.VideoIndex`: fast (prefilter + exact re-rank) vs full protocol.

    python bench/fast_inference.py                          # parts a and b with the defaults below
    python bench/fast_inference.py part=a videos_a=20000 full_batch=0   # or --part a --videos-a 20000 ...
    python bench/fast_inference.py part=b nlist=1024 nprobe=8,32

Model: ``experiment=demo model=tiny`` (the tiny random-init encoder; its LSDO / X-Pool heads are paper
size, d = 512), impl ``impl`` (paper). Only the retrieval is timed: the queries are random
``TextFeatures`` (text encoding, ~10-20 ms per query for CLIP ViT-B/32 on CPU, is not included),
each query's target drawn near one video's mean frame so the prefilter has a real neighbourhood.
Latencies are wall-clock per call of ``index.search`` with one query (p50 / p90 over
``queries`` calls; 10 untimed searches start each part and 2 each row), fingerprint check
skipped (checked once up front). Rows marked "float32 accumulation" pass
``accum_dtype=torch.float32`` to the exact re-ranking (XPoolScorer's float64 default gives the
scores of ``similarity_matrix``; float32 differs by about 1e-7 and costs less on CPU).

(a) ``videos_a`` (100k) videos x 12 frames x 512, random, stored float16 in memory (1.2 GB):
    * full protocol: ``search(prefilter_k=None)``, exact X-Pool over every video (XPoolScorer
      in chunks of 1024 videos). Its cost is the per-video precomputation (O(V n d^2) per call,
      independent of the number of queries), so it is timed for one query and, amortised, for a
      batch of ``full_batch`` queries;
    * fast: ``search(prefilter_k=100)``: mean-pool prefilter (torch chunked matmul, and FAISS
      IndexFlatIP, both exact) + exact re-ranking of the 100 candidates.
    The table gives the ratio full / fast and how many of the full protocol's top-10 the fast
    search also returns (on random features and a random-init model this agreement says nothing
    about a trained model's retrieval quality; it only checks that the two paths agree where they
    should).

(b) ``videos_b`` (1M) videos: 1M x 12 x 512 float16 would be 12 GB, so the frames are NOT
    stored. ``SyntheticFrames`` generates any video's frames on demand, deterministically from its
    index: ``frames[v] = centre[v mod-hash K] + 0.7 * A[v % 8191] + 0.7 * B[v % 509]`` (tables of
    random normals; 8191 and 509 are coprime so every v < 4.1M gets its own (A, B) pair; K = 4096
    cluster centres give the means a cluster structure like real embeddings), rounded to float16.
    The index holds the real [1M, 512] float32 matrix of normalised means (2 GB; computed from the
    tables: the frames' mean before their float16 rounding, a relative difference of ~1e-4 from
    what ``VideoIndex.build`` would store, irrelevant to the timings) and fetches the frames of the
    100 candidates per query from the generator (a gather and two adds; from a memory-mapped
    float16 index, ``VideoIndex.load(mmap=True)``, it would be 100 reads of 12 KB, from the page
    cache or the disk: not measured here). Prefilters:
    torch (exact), FAISS IndexFlatIP (exact) and FAISS IndexIVFFlat (``nlist`` lists, each
    ``nprobe``; approximate: the table gives its candidates' recall against the exact prefilter
    and the training time). The full protocol at 1M is not run (about 10x part a's figure).
    The IVF-PQ prefilter an index uses by default from 1M videos, an index stored on disk at 1M
    and the stored re-ranking tensors are measured by ``bench/index_scale.py``.

The machine and its load average are printed first: other processes on the machine inflate the
wall-clock latencies, so compare rows of one run rather than runs; the "cpu ms" column (this
process's CPU time per call, all threads) is less sensitive to them: on an otherwise idle machine
a call takes between cpu / threads and cpu.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lsdo.config import compose
from lsdo.model import LSDOModel, TextFeatures, build_model
from lsdo.options import option
from lsdo.retrieval.index import VideoIndex, faiss_available, model_fingerprint

D, FRAMES = 512, 12
WARMUP = 10  # untimed searches before the first timed row of a part


@dataclass
class FastInferenceArgs:
    part: str = option("which part to run", "all", choices=("a", "b", "all"))
    videos_a: int = option("part a: stored videos", 100_000, minimum=1)
    videos_b: int = option("part b: videos generated on demand", 1_000_000, minimum=1)
    queries: int = option("timed single-query calls per row", 30, minimum=1)
    prefilter_k: int = option("candidates the prefilter keeps", 100, minimum=1)
    topk: int = option("results per query", 10, minimum=1)
    full_runs: int = option("single-query full-protocol calls (slow)", 1, minimum=1)
    full_batch: int = option("queries in one full-protocol batch (0: skip)", 64, minimum=0)
    nlist: int = option("part b: FAISS IVF lists", 1024, minimum=1)
    nprobe: list[int] = option("part b: FAISS IVF lists probed, one row each", [16, 64])
    impl: str = option("model implementation", "paper", choices=("paper", "official"))
    threads: int = option("torch / FAISS threads (0: torch's default)", 0, minimum=0)
    seed: int = option("random seed of the features and queries", 0)


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0-100) by linear interpolation."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class Timings(list):
    """Wall-clock seconds per call; ``cpu``: this process's CPU seconds per call (all its threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []

    def measure(self, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return out


def latencies(fn: Callable[[int], Any], count: int, warmup: int = 2) -> Timings:
    """Timings of fn(i) for i = warmup .. warmup + count - 1, after fn(0) .. fn(warmup - 1) untimed."""
    for i in range(warmup):
        fn(i)
    out = Timings()
    for i in range(warmup, warmup + count):
        out.measure(lambda i=i: fn(i))
    return out


def queries(means_of: Callable[[torch.Tensor], torch.Tensor], num_videos: int, count: int, seed: int) -> TextFeatures:
    """``count`` random texts; each target = a random video's mean frame direction + noise of similar norm."""
    gen = torch.Generator().manual_seed(seed)
    near = torch.randint(0, num_videos, (count,), generator=gen)
    anchor = torch.nn.functional.normalize(means_of(near), dim=-1)  # [Q, d]
    noise = torch.nn.functional.normalize(torch.randn(count, D, generator=gen), dim=-1)
    target = anchor + 0.8 * noise
    query = torch.randn(count, D, generator=gen)
    return TextFeatures(query, target, query)


def build_model_for(impl: str) -> LSDOModel:
    extra = ["impl=official"] if impl == "official" else []
    return build_model(
        compose(["experiment=demo", "model=tiny", "model.clip_cfg.vision_cfg.image_size=32", *extra])
    ).eval()


def row(name: str, secs: Timings, ref: float | None = None, extra: str = "") -> str:
    p50, p90 = percentile(secs, 50) * 1e3, percentile(secs, 90) * 1e3
    cpu = percentile(secs.cpu, 50) * 1e3
    ratio = f"{ref / (p50 / 1e3):9.0f}x" if ref else f"{'':>10}"
    return f"| {name:<52} | {p50:10.1f} | {p90:10.1f} | {cpu:10.1f} | {ratio} | {extra}"


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"| {'search':<52} | {'p50 ms':>10} | {'p90 ms':>10} | {'cpu ms p50':>10} | {'full/this':>10} | notes")
    print(f"|{'-' * 54}|{'-' * 12}|{'-' * 12}|{'-' * 12}|{'-' * 12}|------")


# ---------------------------------------------------------------------------------------------
# (a) 100k stored videos: fast vs full
# ---------------------------------------------------------------------------------------------


def part_a(args: FastInferenceArgs, model: LSDOModel) -> None:
    num = args.videos_a
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    video = torch.cat([torch.randn(min(4096, num - s), FRAMES, D, generator=gen).half() for s in range(0, num, 4096)])
    t_gen = time.perf_counter() - start
    ids = [f"v{i:07d}" for i in range(num)]
    start = time.perf_counter()
    index = VideoIndex.build(model, video, ids, dtype=video.dtype)  # [V, n, d] float16 + means [V, d]
    index.ivfpq_threshold = num + 1  # torch or FAISS flat, as each row says
    t_build = time.perf_counter() - start
    index.check_model(model)
    text = queries(lambda idx: index.means[idx], num, max(args.queries, args.full_batch, 1) + 2, args.seed + 1)
    k = args.prefilter_k
    print(f"\n(a) {num} videos x {FRAMES} frames x {D}, float16 in memory ({video.numel() * 2 / 2**30:.2f} GiB); "
          f"generated in {t_gen:.1f} s, index built (means) in {t_build:.1f} s")  # fmt: skip

    def one(i: int, prefilter: int | None, accum: torch.dtype = torch.float64) -> Any:
        q = text[i : i + 1]
        return index.search(model, q, topk=args.topk, prefilter_k=prefilter, check_model=False, accum_dtype=accum)

    results: dict[str, list[float]] = {}
    index.faiss_threshold = num + 1  # torch prefilter
    for i in range(WARMUP):  # allocator and thread-pool warm-up, untimed
        one(i % 2, k)
    results["fast torch"] = latencies(lambda i: one(i, k), args.queries)
    results["prefilter torch"] = latencies(lambda i: index.prefilter(text[i : i + 1], k), args.queries)
    results["fast torch f32"] = latencies(lambda i: one(i, k, torch.float32), args.queries)
    if faiss_available():
        index.faiss_threshold = 0  # FAISS IndexFlatIP
        t_faiss, _ = timed(index.faiss_index)
        results["fast faiss"] = latencies(lambda i: one(i, k), args.queries)
        results["prefilter faiss"] = latencies(lambda i: index.prefilter(text[i : i + 1], k), args.queries)
        print(f"FAISS IndexFlatIP over the means built in {t_faiss:.2f} s")
        index.faiss_threshold = num + 1

    full_single = Timings()
    for r in range(args.full_runs):
        full_single.measure(lambda r=r: one(r, None))
        print(f"full protocol, 1 query: {full_single[-1]:.1f} s (CPU {full_single.cpu[-1]:.1f} s)")
    full_ref = percentile(full_single, 50)
    batch_note, agree = "", ""
    if args.full_batch:
        batch = text[: args.full_batch]
        t_batch, (_, full_idx) = timed(lambda: index.search(model, batch, topk=args.topk, check_model=False))
        print(f"full protocol, batch of {args.full_batch} queries: {t_batch:.1f} s")
        _, fast_idx = index.search(model, batch, topk=args.topk, prefilter_k=k, check_model=False)
        same = sum(len(set(a) & set(b)) for a, b in zip(full_idx.tolist(), fast_idx.tolist(), strict=True))
        agree = f"{same / full_idx.numel() * 100:.0f}% of the full top-{args.topk} (random data)"
        batch_note = f"{t_batch / args.full_batch * 1e3:.0f} ms/query amortised over a batch of {args.full_batch}"

    header(f"(a) {num} videos, top-{args.topk}, one query per call (ratio: full protocol p50 / this p50)")
    print(row(f"full protocol (exact X-Pool, all {num})", full_single, full_ref, batch_note))
    print(row(f"fast k={k}, torch prefilter", results["fast torch"], full_ref, agree))
    print(row("  of which: prefilter (torch matmul + top-k)", results["prefilter torch"]))
    print(row(f"fast k={k}, torch prefilter, float32 accumulation", results["fast torch f32"], full_ref))
    if "fast faiss" in results:
        print(row(f"fast k={k}, FAISS IndexFlatIP prefilter", results["fast faiss"], full_ref))
        print(row("  of which: prefilter (FAISS flat)", results["prefilter faiss"]))


# ---------------------------------------------------------------------------------------------
# (b) 1M videos, frames generated on demand
# ---------------------------------------------------------------------------------------------


class SyntheticFrames:
    """A lazy [V, n, d] float16 FrameStore: any video's frames generated from its index (module docstring)."""

    def __init__(self, num_videos: int, seed: int, clusters: int = 4096, p1: int = 8191, p2: int = 509) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.shape = torch.Size((num_videos, FRAMES, D))
        self.dtype = torch.float16
        self.clusters, self.p1, self.p2 = clusters, p1, p2
        self.centre = torch.randn(clusters, D, generator=gen)  # [K, d]
        self.a = 0.7 * torch.randn(p1, FRAMES, D, generator=gen)  # [p1, n, d]
        self.b = 0.7 * torch.randn(p2, FRAMES, D, generator=gen)  # [p2, n, d]

    def frames(self, idx: torch.Tensor) -> torch.Tensor:
        """idx [k] long -> [k, n, d] float16."""
        cluster = (idx * 2654435761) % self.clusters  # a multiplicative hash: clusters spread over v
        out = self.centre[cluster].unsqueeze(1) + self.a[idx % self.p1] + self.b[idx % self.p2]
        return out.half()

    def means(self, chunk: int = 1 << 16) -> torch.Tensor:
        """Normalised mean frames [V, d] float32, from the tables (the mean before float16 rounding)."""
        a_mean, b_mean = self.a.mean(dim=1), self.b.mean(dim=1)  # [p1, d], [p2, d]
        out = torch.empty(self.shape[0], D)
        for start in range(0, self.shape[0], chunk):
            idx = torch.arange(start, min(start + chunk, self.shape[0]))
            mean = self.centre[(idx * 2654435761) % self.clusters] + a_mean[idx % self.p1] + b_mean[idx % self.p2]
            out[start : start + chunk] = torch.nn.functional.normalize(mean, dim=-1)
        return out

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(index, slice):
            index = torch.arange(*index.indices(self.shape[0]))
        return self.frames(index.long())


def part_b(args: FastInferenceArgs, model: LSDOModel) -> None:
    num = args.videos_b
    store = SyntheticFrames(num, args.seed)
    t_means, means = timed(store.means)
    described = {"fingerprint": model_fingerprint(model), "impl": model.impl, "variant": model.variant}
    meta = {"num_videos": num, "num_frames": FRAMES, "embed_dim": D, "dtype": "float16", "model": described}
    index = VideoIndex(store, means, [f"v{i:07d}" for i in range(num)], meta)
    index.ivfpq_threshold = num + 1  # the rows below name their prefilter; IVF-PQ at scale: bench/index_scale.py
    index.check_model(model)
    text = queries(lambda idx: means[idx], num, args.queries + 2, args.seed + 2)
    k = args.prefilter_k
    print(f"\n(b) {num} videos x {FRAMES} x {D} generated on demand (float16); means [{num}, {D}] float32 "
          f"({means.numel() * 4 / 2**30:.2f} GiB) computed in {t_means:.1f} s")  # fmt: skip

    def search(i: int, accum: torch.dtype = torch.float64) -> Any:
        q = text[i : i + 1]
        return index.search(model, q, topk=args.topk, prefilter_k=k, check_model=False, accum_dtype=accum)

    def prefilter(i: int) -> torch.Tensor:
        return index.prefilter(text[i : i + 1], k)

    index.faiss_threshold = num + 1
    exact = torch.cat([index.prefilter(text[i : i + 1], k) for i in range(args.queries + 2)])  # torch: exact

    def recall(cands: list[torch.Tensor]) -> str:
        hits = sum(len(set(c.view(-1).tolist()) & set(e.tolist())) for c, e in zip(cands, exact[2:], strict=True))
        return f"prefilter recall {hits / (len(cands) * k) * 100:.1f}% of the exact top-{k}"

    header(f"(b) {num} videos, prefilter k={k}, top-{args.topk}, one query per call")
    rows = []
    index.faiss_threshold = num + 1
    for i in range(WARMUP):  # allocator and thread-pool warm-up, untimed
        search(i % 2)
    rows.append(row("fast, torch prefilter (exact)", latencies(search, args.queries)))
    rows.append(row("  of which: prefilter", latencies(prefilter, args.queries)))
    print("\n".join(rows[-2:]))
    if not faiss_available():
        print("(FAISS not installed: pip install faiss-cpu)")
        return
    index.faiss_threshold = 0
    t_flat, _ = timed(index.faiss_index)
    print(row("fast, FAISS IndexFlatIP (exact)", latencies(search, args.queries), extra=f"add {t_flat:.1f} s"))
    print(row("  of which: prefilter", latencies(prefilter, args.queries)))
    index._faiss = None  # free the flat copy before the IVF one
    index.faiss_nlist = args.nlist
    for nprobe in args.nprobe:
        index.faiss_nprobe = nprobe
        t_train, _ = timed(index.faiss_index)
        cands = [prefilter(i) for i in range(2, args.queries + 2)]
        note = recall(cands) + (f"; train + add {t_train:.1f} s" if t_train > 0.01 else "")
        print(row(f"fast, FAISS IVF nlist={args.nlist} nprobe={nprobe}", latencies(search, args.queries), extra=note))
        print(row("  of which: prefilter", latencies(prefilter, args.queries)))
        f32 = latencies(lambda i: search(i, torch.float32), args.queries)
        print(row(f"fast, FAISS IVF nprobe={nprobe}, float32 accumulation", f32))


def run(args: FastInferenceArgs) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    faiss_version = None
    if faiss_available():
        import faiss

        faiss_version = faiss.__version__
        if args.threads:
            faiss.omp_set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), faiss {faiss_version}, load average at start {load}")  # fmt: skip
    model = build_model_for(args.impl)
    print(f"model: experiment=demo, impl={args.impl}, d={model.dim} (paper-size X-Pool heads)")
    with torch.no_grad():
        if args.part in ("a", "all"):
            part_a(args, model)
        if args.part in ("b", "all"):
            part_b(args, model)
    if load is not None:
        print(f"\nload average at the end: {os.getloadavg()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/fast_inference.py", FastInferenceArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
