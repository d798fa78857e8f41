"""An index at scale: built by appends on disk, searched through an IVF-PQ prefilter; stored re-ranking tensors.

    python bench/index_scale.py                                  # every part (resumable; data deleted at the end)
    python bench/index_scale.py part=rerank                      # stored re-ranking tensors, 5,000 videos, k = 100
    python bench/index_scale.py part=1m videos=1000000 shard=100000 nprobe=8,16,32,64,128
    python bench/index_scale.py part=10m videos_10m=10000000     # the prefilter alone (means only)

Model: ``experiment=demo model=tiny`` (random init; its X-Pool head is paper size, d = 512,
impl=paper). Features are random, not encoded videos: each video's 12 frames are drawn by
``bench/fast_inference.py``'s ``SyntheticFrames`` (a cluster centre out of 4096 plus two random
per-video parts, rounded to float16), so the mean-pool vectors cluster as real embeddings do; the
numbers below say nothing about retrieval quality, only about cost and about how much of the exact
prefilter's candidates the approximate one returns. Queries: a random video's mean direction plus
noise of similar norm (``fast_inference.queries``). Latencies: wall clock per single-query call of
``VideoIndex.search`` (p50 / p90 over ``queries`` calls after 5 untimed ones), fingerprint check
skipped; the machine's load average is printed with them.

Parts (each stage runs in its own process, so its peak RSS is its own; results go to
``<dir>/results_<stage>.json`` and a finished stage is not run again):

* ``rerank``: ``rerank_videos`` (5,000) videos x 12 x 512 float16, one query at a time, prefilter
  k = 100, top 100: re-ranking from the frames (XPoolScorer's per-video tensors computed per query)
  against re-ranking from the stored tensors (``VideoIndex.build(..., rerank=True)``; in memory and
  memory-mapped from disk); the two must return the same scores bitwise; the disk cost per video.
* ``1m``: ``videos`` (1M) videos x 12 x 512 float16 written for real, ``shard`` (100k) videos at a
  time by the growth path (``VideoIndex.load(mmap=True)``, ``add``, ``save`` in place: one new
  shard each; resumable: a rerun continues after the last shard), then its IVF-PQ prefilter trained
  and stored (``prefilter.faiss``). Stage ``exact``: the exact prefilters (torch over the mapped
  means, FAISS flat); stage ``search``: the index as ``lsdo-search`` loads it (stored IVF-PQ,
  ``nprobe`` lists, refine 4), its latency and the recall of the exact prefilter's top-100
  (the same search with the exact prefilter) for each ``nprobe``. Re-ranking here reads the
  candidates' frames from the memory-mapped shards and computes their tensors (stored re-ranking
  tensors for 1M videos would take 51.6 GB).
* ``10m``: ``videos_10m`` (10M) means [V, 512] float32, generated a block at a time and never
  stored (20 GB), indexed by the same ``build_faiss_index`` (IVF-PQ, ``nlist_10m`` lists, auto:
  4096) and searched by the same ``faiss_prefilter``; recall against the exact top-100 (a torch scan
  over the generated means).

The 1M index (14.4 GB) is deleted at the end unless ``keep=true``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lsdo.options import option

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_inference import FRAMES, D, SyntheticFrames, build_model_for, percentile, queries  # noqa: E402

STAGES = ("rerank", "build", "exact", "search", "prefilter10m")


def sweep(args: IndexScaleArgs) -> list[tuple[int, int]]:
    """(nprobe, refine) rows: nprobe at the default refine, then refine at the default nprobe."""
    from lsdo.retrieval.index import DEFAULT_NPROBE, DEFAULT_REFINE

    rows = [(n, DEFAULT_REFINE) for n in args.nprobe]
    return rows + [(DEFAULT_NPROBE, r) for r in args.refine if (DEFAULT_NPROBE, r) not in rows]


PARTS = {"rerank": ("rerank",), "1m": ("build", "exact", "search"), "10m": ("prefilter10m",)}
WARMUP = 5


@dataclass
class IndexScaleArgs:
    part: str = option("which part to run", "all", choices=("all", "rerank", "1m", "10m"))
    stage: str = option("internal: run one stage in this process", "none", choices=("none", *STAGES))
    dir: str = option("working directory (the 1M index, results)", "/tmp/lsdo_index_scale")
    videos: int = option("part 1m: videos stored", 1_000_000, minimum=1)
    shard: int = option("part 1m: videos per appended shard", 100_000, minimum=1)
    videos_10m: int = option("part 10m: means generated", 10_000_000, minimum=1)
    nlist_10m: int | None = option("part 10m: IVF lists (null: the index's auto choice)", None, minimum=1)
    rerank_videos: int = option("part rerank: videos", 5000, minimum=1)
    queries: int = option("timed single-query calls per row", 50, minimum=1)
    prefilter_k: int = option("candidates the prefilter keeps", 100, minimum=1)
    topk: int = option("results per query", 100, minimum=1)
    nprobe: list[int] = option("IVF lists probed, one row each (at the index's default refine)", [8, 16, 32, 64, 128])
    refine: list[int] = option("IVF-PQ refine factors, one row each (at the index's default nprobe)", [1, 4, 16, 64])
    keep: bool = option("keep the 1M index on disk at the end", False)
    threads: int = option("torch / FAISS threads (0: torch's default)", 0, minimum=0)
    seed: int = option("random seed of the features and queries", 0)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""


def timings(fn: Callable[[int], Any], count: int) -> tuple[list[float], list[Any]]:
    """Wall seconds of fn(i), i = WARMUP .. WARMUP + count - 1 (after WARMUP untimed calls), and the outputs."""
    for i in range(WARMUP):
        fn(i)
    secs, outs = [], []
    for i in range(WARMUP, WARMUP + count):
        start = time.perf_counter()
        outs.append(fn(i))
        secs.append(time.perf_counter() - start)
    return secs, outs


def stats(secs: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(secs, 50) * 1e3, "p90_ms": percentile(secs, 90) * 1e3}


def recall(found: Sequence[torch.Tensor], exact: torch.Tensor) -> float:
    """Share of each exact row's videos that ``found`` (one [1, k] or [k] per query) returns, in %."""
    hits = sum(len(set(f.view(-1).tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return 100.0 * hits / exact.numel()


def video_ids(start: int, stop: int) -> list[str]:
    return [f"v{i:08d}" for i in range(start, stop)]


class LazyMeans:
    """[V, d] float32 normalised means of SyntheticFrames videos, computed for the rows asked for (never stored)."""

    def __init__(self, store: SyntheticFrames) -> None:
        self.store = store
        self.shape = torch.Size((store.shape[0], D))
        self.dtype = torch.float32
        self.a_mean, self.b_mean = store.a.mean(dim=1), store.b.mean(dim=1)  # [p1, d], [p2, d]

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(index, slice):
            index = torch.arange(*index.indices(self.shape[0]))
        idx = index.long()
        s = self.store
        mean = s.centre[(idx * 2654435761) % s.clusters] + self.a_mean[idx % s.p1] + self.b_mean[idx % s.p2]
        return torch.nn.functional.normalize(mean, dim=-1)


def bench_model(seed: int) -> Any:
    """The benchmark's model: the same random initialisation in every stage's process."""
    torch.manual_seed(seed)
    return build_model_for("paper")


def synthetic(num: int, seed: int) -> SyntheticFrames:
    return SyntheticFrames(num, seed, p2=2039)  # 8191 x 2039 coprime: 16.7M distinct videos


# ------------------------------------------------------------------------------------ stages
def stage_rerank(args: IndexScaleArgs, root: Path) -> dict[str, Any]:
    from lsdo.retrieval.index import VideoIndex

    model = bench_model(args.seed)
    num, k = args.rerank_videos, args.prefilter_k
    store = synthetic(num, args.seed)
    frames = store[0:num]  # [V, 12, 512] float16
    start = time.perf_counter()
    index = VideoIndex.build(model, frames, video_ids(0, num), dtype=torch.float16, rerank=True)
    t_build = time.perf_counter() - start
    text = queries(lambda idx: index.means[idx], num, args.queries + WARMUP, args.seed + 1)

    def search(stored: bool, on: VideoIndex = index) -> Callable[[int], Any]:
        return lambda i: on.search(model, text[i : i + 1], topk=args.topk, prefilter_k=k, check_model=False,
                                   use_stored=stored)  # fmt: skip

    rows: dict[str, Any] = {}
    before, ref = timings(search(False), args.queries)
    after, got = timings(search(True), args.queries)
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ref, got, strict=True))
    rows["frames"] = stats(before)
    rows["stored"] = stats(after)
    path = index.save(root / "rerank5k")
    mapped = VideoIndex.load(path, mmap=True)
    disk, _ = timings(search(True, mapped), args.queries)
    rows["stored_mmap"] = stats(disk)
    prefilter, _ = timings(lambda i: index.prefilter(text[i : i + 1], k), args.queries)
    rows["prefilter"] = stats(prefilter)
    full_before = timings(lambda i: index.search(model, text[i : i + 1], topk=10, check_model=False,
                                                 use_stored=False), 3)[0]  # fmt: skip
    full_after = timings(lambda i: index.search(model, text[i : i + 1], topk=10, check_model=False), 3)[0]
    rows["full_frames"], rows["full_stored"] = stats(full_before), stats(full_after)
    size = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    shutil.rmtree(path)
    return {
        "videos": num,
        "rows": rows,
        "identical": same,
        "bytes_per_video": index.meta["rerank"]["bytes_per_video"],
        "file_bytes": size,
        "build_s": t_build,
        "load": load(),
    }


def stage_build(args: IndexScaleArgs, root: Path) -> dict[str, Any]:
    from lsdo.retrieval.index import DEFAULT_IVFPQ_THRESHOLD, META_FILE, VideoIndex

    model = bench_model(args.seed)
    num = args.videos
    store = synthetic(num, args.seed)
    path = root / "index1m"
    index = VideoIndex.load(path, mmap=True, verify=False) if (path / META_FILE).exists() else None
    have = len(index) if index is not None else 0
    if have:
        print(f"resuming: {have} of {num} videos already in {path}", flush=True)
    start = time.perf_counter()
    for first in range(have, num, args.shard):
        stop = min(first + args.shard, num)
        frames = torch.cat([store[s : min(s + 8192, stop)] for s in range(first, stop, 8192)])  # [c, 12, 512] fp16
        if index is None:
            index = VideoIndex.build(model, frames, video_ids(first, stop), dtype=torch.float16)
        else:
            index.add(model, frames, video_ids(first, stop))
        index.save(path, remap=True)  # the first save writes features.safetensors, every later one a new shard
        del frames
        print(f"  {stop} videos, {time.perf_counter() - start:.0f} s, peak RSS {peak_rss_gib():.2f} GiB, {load()}",
              flush=True)  # fmt: skip
    t_append = time.perf_counter() - start
    assert index is not None
    index.ivfpq_threshold = min(DEFAULT_IVFPQ_THRESHOLD, num)  # IVF-PQ (the default from 1M)
    start = time.perf_counter()
    plan = index.prefilter_plan()
    index.faiss_index()
    index.save(path)  # stores prefilter.faiss
    t_prefilter = time.perf_counter() - start
    size = sum(p.stat().st_size for p in path.iterdir())
    return {
        "videos": num,
        "shards": len(index.stored_files) - 1,
        "append_s": t_append if have == 0 else None,
        "prefilter_s": t_prefilter,
        "plan": [plan.kind, plan.nlist, plan.pq],
        "disk_gib": size / 2**30,
        "peak_rss_gib": peak_rss_gib(),
        "load": load(),
    }


def _index_and_text(args: IndexScaleArgs, root: Path, **options: Any) -> tuple[Any, Any, Any, float]:
    from lsdo.retrieval.index import VideoIndex

    model = bench_model(args.seed)
    start = time.perf_counter()
    index = VideoIndex.load(root / "index1m", mmap=True, verify=False, **options)
    t_load = time.perf_counter() - start
    index.check_model(model)
    text = queries(lambda idx: index.means[idx], len(index), args.queries + WARMUP, args.seed + 2)
    return model, index, text, t_load


def stage_exact(args: IndexScaleArgs, root: Path) -> dict[str, Any]:
    """The exact prefilters over the 1M mapped means: torch, then FAISS flat; the exact candidates, saved."""
    from lsdo.retrieval.index import faiss_available

    model, index, text, t_load = _index_and_text(args, root)
    k = args.prefilter_k
    index.ivfpq_threshold = len(index) + 1
    index.ignore_stored_prefilter = True
    rows: dict[str, Any] = {}
    index.faiss_threshold = len(index) + 1  # torch
    exact = torch.cat([index.prefilter(text[i : i + 1], k).sort(dim=1).values for i in range(len(text))])
    torch.save(exact, root / "exact_1m.pt")

    def search(i: int) -> Any:
        return index.search(model, text[i : i + 1], topk=args.topk, prefilter_k=k, check_model=False)

    rows["torch"] = stats(timings(search, args.queries)[0])
    rows["torch_prefilter"] = stats(timings(lambda i: index.prefilter(text[i : i + 1], k), args.queries)[0])
    rss_torch = peak_rss_gib()
    if faiss_available():
        index.faiss_threshold = 0  # FAISS IndexFlatIP
        start = time.perf_counter()
        index.faiss_index()
        rows["flat_add_s"] = time.perf_counter() - start
        rows["flat"] = stats(timings(search, args.queries)[0])
        rows["flat_prefilter"] = stats(timings(lambda i: index.prefilter(text[i : i + 1], k), args.queries)[0])
    return {"rows": rows, "load_s": t_load, "peak_rss_torch_gib": rss_torch, "peak_rss_gib": peak_rss_gib(),
            "load": load()}  # fmt: skip


def stage_search(args: IndexScaleArgs, root: Path) -> dict[str, Any]:
    """The 1M index as lsdo-search loads it (stored IVF-PQ): latency and recall of the exact top-k per nprobe."""
    model, index, text, t_load = _index_and_text(args, root)
    exact = torch.load(root / "exact_1m.pt")[WARMUP:]
    plan = index.prefilter_plan()
    k = args.prefilter_k
    start = time.perf_counter()
    index.faiss_index()
    t_read = time.perf_counter() - start
    rows = []
    for nprobe, refine in sweep(args):
        index.faiss_nprobe, index.faiss_refine = nprobe, refine

        def search(i: int) -> Any:
            return index.search(model, text[i : i + 1], topk=args.topk, prefilter_k=k, check_model=False)

        secs, outs = timings(search, args.queries)
        pre, cands = timings(lambda i: index.prefilter(text[i : i + 1], k), args.queries)
        rows.append({"nprobe": nprobe, "refine": refine, "search": stats(secs), "prefilter": stats(pre),
                     "recall": recall([o[1] for o in outs], exact),
                     "recall_prefilter": recall(cands, exact)})  # fmt: skip
        print(f"  nprobe {nprobe} refine {refine}: {rows[-1]}", flush=True)
    return {"rows": rows, "plan": [plan.kind, plan.nlist, plan.pq], "load_s": t_load, "read_prefilter_s": t_read,
            "peak_rss_gib": peak_rss_gib(), "load": load()}  # fmt: skip


def stage_prefilter10m(args: IndexScaleArgs, root: Path) -> dict[str, Any]:
    """IVF-PQ over 10M generated means: build time, latency and recall of the exact top-k per nprobe."""
    from lsdo.retrieval.index.prefilter import auto_nlist, auto_pq, build_faiss_index, faiss_prefilter, torch_prefilter

    num, k = args.videos_10m, args.prefilter_k
    means = LazyMeans(synthetic(num, args.seed + 10))
    text = queries(lambda idx: means[idx], num, args.queries + WARMUP, args.seed + 3)
    query = torch.nn.functional.normalize(text.target, dim=-1)
    ignore = lambda scores, videos: None  # noqa: E731  (generated means are finite)
    start = time.perf_counter()
    exact = torch_prefilter(means, query, k, ignore)
    t_exact = time.perf_counter() - start
    nlist, pq = args.nlist_10m or auto_nlist(num), auto_pq(D)
    print(f"  exact top-{k} of {len(query)} queries over {num} means: {t_exact:.0f} s; IVF-PQ nlist={nlist} pq={pq}",
          flush=True)  # fmt: skip
    start = time.perf_counter()
    index, quantizer = build_faiss_index(means, nlist, ignore, pq)
    t_build = time.perf_counter() - start
    print(f"  IVF-PQ trained and filled in {t_build:.0f} s, peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    rows = []
    for nprobe, refine in sweep(args):

        def prefilter(i: int, nprobe: int = nprobe, refine: int = refine) -> torch.Tensor:
            return faiss_prefilter(index, query[i : i + 1], k, nprobe, means, ignore, refine)

        secs, cands = timings(prefilter, args.queries)
        rows.append(
            {"nprobe": nprobe, "refine": refine, "prefilter": stats(secs), "recall": recall(cands, exact[WARMUP:])}
        )
        print(f"  nprobe {nprobe} refine {refine}: {rows[-1]}", flush=True)
    del quantizer
    return {"videos": num, "nlist": nlist, "pq": pq, "build_s": t_build, "exact_scan_s": t_exact, "rows": rows,
            "peak_rss_gib": peak_rss_gib(), "load": load()}  # fmt: skip


# ------------------------------------------------------------------------------------ report
def report(root: Path, args: IndexScaleArgs) -> None:
    res = {
        s: json.loads((root / f"results_{s}.json").read_text()) for s in STAGES if (root / f"results_{s}.json").exists()
    }
    if "rerank" in res:
        r = res["rerank"]
        print(
            f"\nrerank: {r['videos']} videos x {FRAMES} x {D} float16, prefilter k={args.prefilter_k}, top "
            f"{args.topk}, one query per call ({r['load']}); scores identical: {r['identical']}; "
            f"{r['bytes_per_video']} bytes per video stored (index file {r['file_bytes'] / 2**20:.0f} MiB)"
        )
        print("| re-ranking | p50 ms | p90 ms |\n|---|---|---|")
        names = {
            "frames": "from the frames (per-video tensors computed per query)",
            "stored": "stored tensors, in memory",
            "stored_mmap": "stored tensors, memory-mapped from disk",
            "prefilter": "of which: the prefilter",
            "full_frames": "full protocol (all videos), from the frames",
            "full_stored": "full protocol, stored tensors",
        }
        for key, name in names.items():
            print(f"| {name} | {r['rows'][key]['p50_ms']:.1f} | {r['rows'][key]['p90_ms']:.1f} |")
    if "build" in res:
        b = res["build"]
        print(f"\n1M build: {b['videos']} videos in {b['shards']} shards, {b['disk_gib']:.1f} GiB on disk; appends "
              f"{b['append_s']} s; IVF-PQ {b['plan']} trained + filled + stored {b['prefilter_s']:.0f} s; "
              f"peak RSS {b['peak_rss_gib']:.2f} GiB ({b['load']})")  # fmt: skip
    if "exact" in res:
        e = res["exact"]
        print(f"\n1M exact prefilters (load {e['load_s']:.1f} s; peak RSS torch {e['peak_rss_torch_gib']:.2f} GiB, "
              f"with FAISS flat {e['peak_rss_gib']:.2f} GiB; {e['load']})")  # fmt: skip
        print("| prefilter | search p50 ms | p90 ms | prefilter alone p50 ms |\n|---|---|---|---|")
        for key in ("torch", "flat"):
            if key in e["rows"]:
                s, p = e["rows"][key], e["rows"][f"{key}_prefilter"]
                print(f"| {key} (exact) | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {p['p50_ms']:.1f} |")
    if "search" in res:
        s = res["search"]
        print(f"\n1M search, stored IVF-PQ {s['plan']} (load {s['load_s']:.1f} s, prefilter read "
              f"{s['read_prefilter_s']:.1f} s, peak RSS {s['peak_rss_gib']:.2f} GiB; {s['load']})")  # fmt: skip
        print("| nprobe | refine | search p50 ms | p90 ms | prefilter p50 ms | recall of the exact top-k |")
        print("|---|---|---|---|---|---|")
        for r in s["rows"]:
            print(f"| {r['nprobe']} | {r['refine']} | {r['search']['p50_ms']:.1f} | {r['search']['p90_ms']:.1f} | "
                  f"{r['prefilter']['p50_ms']:.1f} | {r['recall']:.1f}% |")  # fmt: skip
    if "prefilter10m" in res:
        p = res["prefilter10m"]
        print(f"\n10M prefilter alone: {p['videos']} means, IVF-PQ nlist={p['nlist']} pq={p['pq']} built in "
              f"{p['build_s']:.0f} s, peak RSS {p['peak_rss_gib']:.2f} GiB; exact scan {p['exact_scan_s']:.0f} s "
              f"({p['load']})")  # fmt: skip
        print("| nprobe | refine | p50 ms | p90 ms | recall of the exact top-k |\n|---|---|---|---|---|")
        for r in p["rows"]:
            print(f"| {r['nprobe']} | {r['refine']} | {r['prefilter']['p50_ms']:.1f} | {r['prefilter']['p90_ms']:.1f} "
                  f"| {r['recall']:.1f}% |")  # fmt: skip


def run(args: IndexScaleArgs) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    if args.stage != "none":
        with torch.no_grad():
            out = globals()[f"stage_{args.stage}"](args, root)
        (root / f"results_{args.stage}.json").write_text(json.dumps(out, indent=1))
        return 0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {load()}", flush=True)  # fmt: skip
    stages = [s for part, names in PARTS.items() if args.part in ("all", part) for s in names]
    passed = [f"{f.name}={','.join(map(str, v)) if isinstance(v, list) else v}" for f in fields(args)
              if f.name not in ("stage", "part") and (v := getattr(args, f.name)) is not None]  # fmt: skip
    for stage in stages:
        if (root / f"results_{stage}.json").exists():
            print(f"stage {stage}: done before ({root / f'results_{stage}.json'})")
            continue
        print(f"stage {stage} ...", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, f"stage={stage}", *passed], check=False)
        if done.returncode:
            return done.returncode
        print(f"stage {stage}: {time.perf_counter() - start:.0f} s", flush=True)
    report(root, args)
    if not args.keep and (root / "index1m").exists() and "search" in stages:
        shutil.rmtree(root / "index1m")
        (root / "exact_1m.pt").unlink(missing_ok=True)
        print(f"\ndeleted {root / 'index1m'} (keep=true keeps it)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/index_scale.py", IndexScaleArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
