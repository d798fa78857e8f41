"""Data-loading throughput: 12-frame clips per second from 224-pixel mp4s, decoders and the frame cache side by side.

    python bench/data_loading.py                     # 24 videos of 10 s at 30 fps, workers 0 and 2
    python bench/data_loading.py workers=0,4,8 passes=3 video_dir=/tmp/bench_videos
    python bench/data_loading.py fps=3 loaders=decord,cache-jpeg,cache-uint8   # videos already at 3 fps

Loaders (each returns a uint8 [12, 3, H, W] clip of uniformly sampled frames, no transform):

* ``decord``: ``lsdo.data.video.sample_frames`` (decord ``VideoReader(num_threads=1)`` +
  ``get_batch``: one forward pass, seeking only past whole key-frame intervals);
* ``cv2-seek``: what the authors' loader does (X-Pool style): ``cv2.VideoCapture``, then for
  each index ``cap.set(cv2.CAP_PROP_POS_FRAMES, i); cap.read()`` and BGR -> RGB. Every seek
  goes back to the previous key frame and decodes forward again. Needs ``opencv-python-headless``.
  OpenCV decodes with one FFmpeg thread per CPU by default; ``cv2-seek-1t`` is the same loader
  with one thread, as decord and PyAV use here;
* ``pyav``: ``sample_frames(backend="pyav")``, the sequential fallback;
* ``cache-jpeg``, ``cache-uint8``: ``lsdo.data.frame_cache.sample_entry`` on the videos' prepared-frame
  cache (``lsdo-prepare frames``: ``cache_fps`` frames per second, the videos' size, JPEG at
  ``cache_quality`` or raw uint8): no video decoder, JPEG decoded with ``torchvision.io.decode_jpeg``;
* ``cache-jpeg-gpu`` (only with CUDA): the workers read the JPEG files, the main process decodes each
  batch on the GPU (``decode_jpeg(device="cuda")``, nvjpeg), as ``dataset.frame_cache_decode=gpu``.

Every loader runs through a ``torch.utils.data.DataLoader`` (batch 4) with each ``workers``
count; one warm-up pass, then ``passes`` timed passes, the loaders taking turns pass by pass.
The test videos are written once with ``write_video`` (H.264 crf 23; key frames at most
``keyint`` frames apart, x264's 250 by default) into ``video_dir`` (a temporary folder by
default) and reused when already there, their caches beside them (``frames_<format>_<fps>fps_q<quality>/``).
``CPU ms/clip`` is the CPU time of this process and of the DataLoader's worker processes (read from
``/proc`` on Linux) per clip, and ``clips/s/core`` = 1000 / it: the clips one fully busy core delivers.
On a shared machine trust these two columns more than clips/s (wall clock), which other jobs slow
down. The last line times the training transform (random resized crop, flip, normalisation to 224
pixels) on one clip, which a worker adds to each clip.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lsdo.data import frame_cache
from lsdo.data.sampling import segment_indices
from lsdo.data.transforms import build_transform
from lsdo.data.video import available_backends, probe_video, sample_frames, write_video
from lsdo.errors import LSDOUserError
from lsdo.options import option
from lsdo.processes import loader_context

LOADERS = ("decord", "pyav", "cv2-seek", "cv2-seek-1t", "cache-jpeg", "cache-uint8", "cache-jpeg-gpu")


@dataclass
class DataLoadingArgs:
    videos: int = option("test videos", 24, minimum=1)
    seconds: float = option("length of each test video in seconds", 10.0, minimum=0.1)
    fps: int = option("frames per second of the test videos", 30, minimum=1)
    short_side: int = option("short side of the test videos in pixels", 224, minimum=2)
    frames: int = option("frames per clip", 12, minimum=1)
    keyint: int = option("longest key-frame interval (x264's default: 250)", 250, minimum=1)
    batch: int = option("clips per DataLoader batch", 4, minimum=1)
    passes: int = option("timed passes over the videos", 2, minimum=1)
    repeat: int = option(
        "times each pass reads every video (more clips per pass: steadier rates with workers)", 1, minimum=1
    )
    workers: list[int] = option("DataLoader worker counts, one row each", [0, 2])
    loaders: list[str] = option("decoders to compare", list(LOADERS))
    video_dir: str | None = option("where the test videos are written / reused (null: a temporary folder)", None)
    cache_fps: float | None = option("frames per second of the frame caches (null: every frame)", 3.0)
    cache_quality: int = option("JPEG quality of the cache-jpeg loaders", 90, minimum=1)


def make_videos(root: Path, count: int, seconds: float, fps: int, short_side: int, keyint: int) -> list[Path]:
    """``count`` mp4s of moving shapes over a textured background (4:3, short side ``short_side``)."""
    h, w = short_side, 2 * round(short_side * 4 / 3 / 2)
    t_frames = round(seconds * fps)
    paths = [root / f"bench_{short_side}p_{fps}fps_{seconds:g}s_k{keyint}_{i:03d}.mp4" for i in range(count)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, path in enumerate(paths):
        if path.is_file():
            continue
        rng = np.random.default_rng(i)
        texture = rng.integers(-12, 13, (h, w, 3)).astype(np.float32)
        colour = rng.uniform(40, 215, 3).astype(np.float32)
        frames = np.empty((t_frames, h, w, 3), np.uint8)
        for t in range(t_frames):
            phase = t / fps
            bg = 128 + 60 * np.sin(xx / 23 + 2 * phase)[..., None] * np.cos(yy / 31 - phase)[..., None]
            img = bg + texture + rng.integers(-4, 5, (h, w, 3))
            cx = (w / 2 + w / 3 * np.sin(phase * 1.3 + i)) % w
            cy = (h / 2 + h / 3 * np.cos(phase * 0.9 + i)) % h
            img[(np.abs(xx - cx) < w / 8) & (np.abs(yy - cy) < h / 8)] = colour
            frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        write_video(path, frames, fps=fps, crf=23, keyint=keyint)
    return paths


def make_caches(root: Path, paths: list[Path], formats: set[str], fps: float | None, quality: int) -> dict[str, Path]:
    """The frame cache of ``paths`` in each format (``lsdo.data.frame_cache.write_entry``), reused when whole."""
    dirs = {}
    for fmt in sorted(formats):
        out = root / f"frames_{fmt}_{fps if fps is not None else 'all'}fps_q{quality if fmt == 'jpeg' else 0}"
        settings = frame_cache.cache_settings(fps, None, fmt, quality)
        for p in paths:
            dst = out / (p.stem + frame_cache.SUFFIX)
            if not frame_cache.is_done(p, dst, settings):
                frame_cache.write_entry(p, dst, fps=fps, short_side=None, fmt=fmt, quality=quality)
        dirs[fmt] = out
    return dirs


def cv2_seek_clip(path: str, num_frames: int, threads: int | None = None) -> torch.Tensor:
    """The authors' loader: one ``cap.set(POS_FRAMES, i); cap.read()`` per sampled frame.

    ``threads``: FFmpeg decoding threads (None: OpenCV's default, one per CPU, as the authors).
    """
    import cv2

    if threads is None:
        cap = cv2.VideoCapture(path)
    else:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        for i in segment_indices(total, num_frames, "uniform"):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, frame = cap.read()
            if not ok:
                raise RuntimeError(f"{path}: cv2 could not read frame {i} of {total}")
            frames.append(torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1))
        return torch.stack(frames)
    finally:
        cap.release()


class ClipDataset(Dataset):
    def __init__(
        self, paths: list[Path], loader: str, num_frames: int, caches: dict[str, Path], repeat: int = 1
    ) -> None:
        self.paths, self.loader, self.num_frames, self.repeat = [str(p) for p in paths], loader, num_frames, repeat
        if loader.startswith("cache-"):
            cache = caches["uint8" if loader == "cache-uint8" else "jpeg"]
            self.paths = [str(cache / (Path(p).stem + frame_cache.SUFFIX)) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths) * self.repeat

    def __getitem__(self, i: int) -> torch.Tensor | list[torch.Tensor]:
        i %= len(self.paths)
        if self.loader in ("cache-jpeg", "cache-uint8"):
            return frame_cache.sample_entry(self.paths[i], self.num_frames, "uniform")
        if self.loader == "cache-jpeg-gpu":  # the JPEG files; decoded in the main process on the GPU
            return frame_cache.sample_entry_encoded(self.paths[i], self.num_frames, "uniform")[0]
        if self.loader == "cv2-seek":
            return cv2_seek_clip(self.paths[i], self.num_frames)
        if self.loader == "cv2-seek-1t":
            return cv2_seek_clip(self.paths[i], self.num_frames, threads=1)
        return sample_frames(self.paths[i], self.num_frames, "uniform", backend=self.loader)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _keep_lists(items: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    return items


def _gpu_decode(batch: list[list[torch.Tensor]]) -> int:
    """Decode a batch of JPEG clips on the GPU (one batched call, as dataset.frame_cache_decode=gpu); its clips."""
    flat = [f for clip in batch for f in clip]
    frames = frame_cache.decode_jpegs(flat, [str(i) for i in range(len(flat))], "cuda")
    torch.cuda.synchronize()
    return len(batch) if frames else 0


def cpu_seconds(dl: DataLoader) -> float:
    """CPU seconds used so far by this process and by ``dl``'s (persistent) worker processes (Linux ``/proc``;
    elsewhere this process only)."""
    total = time.process_time()
    iterator = getattr(dl, "_iterator", None)
    for worker in getattr(iterator, "_workers", None) or []:
        try:
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def time_loaders(
    paths: list[Path], loaders: list[str], workers: int, args: DataLoadingArgs, caches: dict[str, Path]
) -> dict[str, tuple[float, float]]:
    """Per loader: (clips per second, CPU ms per clip of this process and its workers) over ``args.passes`` passes.

    The loaders take turns pass by pass, so a load change on a shared machine hits them alike.
    """
    dls = {
        loader: DataLoader(
            ClipDataset(paths, loader, args.frames, caches, args.repeat),
            batch_size=args.batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            multiprocessing_context=loader_context(workers),  # lsdo.processes: the loaders use it too
            worker_init_fn=_worker_init if workers > 0 else None,
            collate_fn=_keep_lists if loader == "cache-jpeg-gpu" else None,
        )
        for loader in loaders
    }
    for loader, dl in dls.items():  # warm-up: worker start, page cache, library initialisation
        for batch in dl:
            if loader == "cache-jpeg-gpu":
                _gpu_decode(batch)
    wall, cpu, clips = dict.fromkeys(loaders, 0.0), dict.fromkeys(loaders, 0.0), dict.fromkeys(loaders, 0)
    for _ in range(args.passes):
        for loader, dl in dls.items():
            t0, c0 = time.perf_counter(), cpu_seconds(dl)
            for batch in dl:
                clips[loader] += _gpu_decode(batch) if loader == "cache-jpeg-gpu" else batch.shape[0]
            wall[loader] += time.perf_counter() - t0
            cpu[loader] += cpu_seconds(dl) - c0
    return {k: (clips[k] / wall[k], 1000 * cpu[k] / clips[k]) for k in loaders}


def run(args: DataLoadingArgs) -> int:
    bad = [n for n in args.loaders if n not in LOADERS]
    if bad:
        raise LSDOUserError(f"loaders: unknown {bad[0]!r}; expected a subset of {','.join(LOADERS)}")
    if any(w < 0 for w in args.workers):
        raise LSDOUserError(f"workers: expected counts >= 0, got {','.join(map(str, args.workers))}")
    loaders = []
    for name in args.loaders:
        if name.startswith("cache-"):
            if name == "cache-jpeg-gpu" and not torch.cuda.is_available():
                print(f"skipping {name}: no GPU")
            else:
                loaders.append(name)
            continue
        have = importlib_ok("cv2") if name.startswith("cv2") else name in available_backends()
        if have:
            loaders.append(name)
        else:
            hint = " (pip install opencv-python-headless)" if name.startswith("cv2") else ""
            print(f"skipping {name}: not installed{hint}")
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="lsdo_bench_") as tmp:
        root = Path(args.video_dir) if args.video_dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = make_videos(root, args.videos, args.seconds, args.fps, args.short_side, args.keyint)
        made = time.perf_counter() - t0
        frames = probe_video(paths[0])
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        print(
            f"{len(paths)} videos, {frames} frames each ({args.seconds:g} s at {args.fps} fps, key frames "
            f"<= {args.keyint} apart), "
            f"{args.short_side}-pixel short side, {size_mb:.1f} MiB in all ({made:.1f} s to prepare) in {root}"
        )
        formats = {"uint8" if n == "cache-uint8" else "jpeg" for n in loaders if n.startswith("cache-")}
        t0 = time.perf_counter()
        caches = make_caches(root, paths, formats, args.cache_fps, args.cache_quality)
        for fmt, cache in caches.items():
            entries = [cache / (p.stem + frame_cache.SUFFIX) for p in paths]
            with frame_cache.CacheEntry(entries[0]) as e:
                count = e.frames
            mb = sum(p.stat().st_size for p in entries) / 2**20
            print(
                f"frame cache ({fmt}{f', quality {args.cache_quality}' if fmt == 'jpeg' else ''}): {count} frames "
                f"per video ({args.cache_fps if args.cache_fps is not None else 'every frame at'} fps), "
                f"{mb:.1f} MiB in all in {cache}"
            )
        if caches:
            print(f"({time.perf_counter() - t0:.1f} s to make or check the caches)")
        versions = {"torch": torch.__version__}
        for mod in ("decord", "av", "cv2"):
            if importlib_ok(mod):
                versions[mod] = __import__(mod).__version__
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
        )
        print(
            f"{args.frames}-frame clips, uniform sampling, batch {args.batch}, {args.passes} timed passes "
            f"of {len(paths) * args.repeat} clips\n"
        )

        rows = {}
        for workers in args.workers:
            for loader, result in time_loaders(paths, loaders, workers, args, caches).items():
                rows[(loader, workers)] = result
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        transform_ms = time_transform(paths[0], args.frames)

    header = f"| {'loader':<14} | workers | clips/s | clips/s/core | vs decord | vs cv2-seek | CPU ms/clip |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for (loader, workers), (rate, cpu_ms) in rows.items():
        ref, dec = rows.get(("cv2-seek", workers)), rows.get(("decord", workers))
        ratio = f"{rate / ref[0]:.2f}x" if ref else "-"
        vs_decord = f"{rate / dec[0]:.2f}x" if dec else "-"
        per_core = f"{1000 / cpu_ms:.1f}" if cpu_ms > 0 else "-"
        print(
            f"| {loader:<14} | {workers:>7} | {rate:>7.1f} | {per_core:>12} | {vs_decord:>9} | {ratio:>11} "
            f"| {cpu_ms:>11.1f} |"
        )
    for workers in args.workers:
        if ("decord", workers) in rows and ("cv2-seek", workers) in rows:
            ratio = rows[("decord", workers)][0] / rows[("cv2-seek", workers)][0]
            print(f"decord / cv2-seek with {workers} workers: {ratio:.2f}x")
    print(f"training transform to 224 px: {transform_ms:.1f} ms per {args.frames}-frame clip on one core")
    print(f"(1-minute load average at the end: {load:.1f} on {os.cpu_count()} CPUs)")
    return 0


def time_transform(path: Path, num_frames: int, repeats: int = 20) -> float:
    """ms per clip of the training transform (random resized crop + flip + normalisation to 224 px), one thread."""
    clip = sample_frames(path, num_frames, "uniform")
    transform = build_transform(224, train=True)
    gen = torch.Generator().manual_seed(0)
    transform(clip, generator=gen)
    t0 = time.perf_counter()
    for _ in range(repeats):
        transform(clip, generator=gen)
    return 1000 * (time.perf_counter() - t0) / repeats


def importlib_ok(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/data_loading.py", DataLoadingArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
