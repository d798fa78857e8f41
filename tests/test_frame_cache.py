"""The prepared-frame cache (lsdo.data.frame_cache, ``lsdo-prepare frames``, ``dataset.frame_cache``).

The cache path passes the video path's frame-sampling tests (mirrored from test_video.py: frame i of
a grey clip is level 8 * i, so every sampled frame's index reads back from its mean), gives the same
clips and training / evaluation items as the videos it was made of (pixels equal for uint8, close for
JPEG), resumes, reports bad inputs, and follows ``dataset.on_missing`` / ``dataset.on_corrupt`` for
missing and damaged entries. ``frame_cache_decode=gpu`` runs here on the CPU (the same code with
``device=cpu``); the nvjpeg call itself needs a GPU.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lsdo.cli.prepare import prepare_main
from lsdo.config import compose
from lsdo.data import build_datamodule
from lsdo.data import frame_cache as fc
from lsdo.data.compress import compress_video
from lsdo.data.frame_cache import CacheEntry, CacheEntryError, FrameCacheOptions, sample_entry
from lsdo.data.sampling import segment_indices
from lsdo.data.transforms import VideoTransform, apply_params
from lsdo.data.video import VideoDecodeError, available_backends, sample_frames, write_video
from lsdo.errors import ConfigError, DataNotFoundError, LSDOUserError
from lsdo.options import parse

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64
# Where a clip comes from: a video (each backend) or the cache made of it (each format).
SOURCES = [
    *(
        pytest.param(f"video-{b}", marks=pytest.mark.skipif(b not in available_backends(), reason=f"{b} missing"))
        for b in ("decord", "pyav")
    ),
    "cache-uint8",
    "cache-jpeg",
]


def grey_clip(frames: int, h: int = H, w: int = W) -> np.ndarray:
    """uint8 [T, h, w, 3]: frame i is grey level 8 * i (T <= 32)."""
    return np.stack([np.full((h, w, 3), 8 * i, np.uint8) for i in range(frames)])


def colour_clip(frames: int, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack(
        [np.stack([(4 * xx + 8 * i) % 256, 5 * yy % 256, np.full_like(xx, 16 * i % 256)], -1) for i in range(frames)]
    ).astype(np.uint8)


def frame_ids(frames: torch.Tensor) -> list[int]:
    return (frames.float().mean(dim=(1, 2, 3)) / 8).round().int().tolist()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test videos and their caches (every frame, native size): videos/, cache-uint8/, cache-jpeg/."""
    root = tmp_path_factory.mktemp("library")
    write_video(root / "videos" / "clip24.mp4", grey_clip(24))
    write_video(root / "videos" / "short.mp4", grey_clip(5))
    write_video(root / "videos" / "one.mp4", grey_clip(1) + 100)
    write_video(root / "videos" / "sub" / "colour.mp4", colour_clip(16))
    for fmt in fc.FORMATS:
        summary = fc.run(root / "videos", root / f"cache-{fmt}", fps=None, short_side=None, fmt=fmt, quality=95)
        assert summary.line() == "cached 4, skipped 0 (already done), failed 0"
    return root


def sample(library: Path, source: str, name: str, n: int, mode: str = "uniform", rng=None) -> torch.Tensor:
    kind, _, how = source.partition("-")
    if kind == "video":
        return sample_frames(library / "videos" / name, n, mode, rng=rng, backend=how)
    return sample_entry(fc.entry_path(library / source, name), n, mode, rng)


# ----------------------------------------------------------------------------- the sampling tests of test_video.py
@pytest.mark.parametrize("source", SOURCES)
def test_uniform_frames_shape_and_order(library: Path, source: str) -> None:
    x = sample(library, source, "clip24.mp4", 8)
    assert x.shape == (8, 3, H, W) and x.dtype == torch.uint8 and x.is_contiguous()
    assert frame_ids(x) == segment_indices(24, 8, "uniform").tolist() == [1, 4, 7, 10, 13, 16, 19, 22]


@pytest.mark.parametrize("source", SOURCES)
def test_rand_frames_inside_their_segments(library: Path, source: str) -> None:
    for seed in range(5):
        ids = frame_ids(sample(library, source, "clip24.mp4", 6, "rand", np.random.default_rng(seed)))
        assert ids == segment_indices(24, 6, "rand", np.random.default_rng(seed)).tolist()
        assert all(4 * s <= i < 4 * (s + 1) for s, i in enumerate(ids))


@pytest.mark.parametrize("source", SOURCES)
def test_video_shorter_than_num_frames(library: Path, source: str) -> None:
    x = sample(library, source, "short.mp4", 12)
    assert x.shape == (12, 3, H, W)
    assert frame_ids(x) == segment_indices(5, 12, "uniform").tolist()
    rand = frame_ids(sample(library, source, "short.mp4", 12, "rand", np.random.default_rng(0)))
    assert rand == sorted(rand) and set(rand) <= set(range(5))


@pytest.mark.parametrize("source", SOURCES)
def test_one_frame_segments_and_one_frame_video(library: Path, source: str) -> None:
    assert frame_ids(sample(library, source, "clip24.mp4", 24)) == list(range(24))
    assert frame_ids(sample(library, source, "clip24.mp4", 24, "rand", np.random.default_rng(1))) == list(range(24))
    x = sample(library, source, "one.mp4", 4, "rand")
    assert x.shape == (4, 3, H, W) and torch.equal(x[0], x[3])


@pytest.mark.parametrize("source", SOURCES)
def test_bad_arguments(library: Path, source: str) -> None:
    with pytest.raises(ValueError, match="uniform"):
        sample(library, source, "clip24.mp4", 4, "middle")
    with pytest.raises(ValueError, match="num_frames"):
        sample(library, source, "clip24.mp4", 0)


def test_the_same_clip_as_the_video(library: Path) -> None:
    """Same rng state -> same frames: uint8 equals PyAV's decoding, JPEG is close; decord within its usual 2 levels."""
    for seed in range(3):
        ref = sample(library, "video-pyav", "sub/colour.mp4", 7, "rand", np.random.default_rng(seed)).int()
        raw = sample(library, "cache-uint8", "sub/colour.mp4", 7, "rand", np.random.default_rng(seed)).int()
        jpeg = sample(library, "cache-jpeg", "sub/colour.mp4", 7, "rand", np.random.default_rng(seed)).int()
        assert torch.equal(raw, ref)
        assert (jpeg - ref).abs().float().mean() < 3.5  # 2.3 at quality 95: the sharp edges of this clip
        if "decord" in available_backends():
            dec = sample(library, "video-decord", "sub/colour.mp4", 7, "rand", np.random.default_rng(seed)).int()
            assert (dec - raw).abs().max() <= 2
    with CacheEntry(fc.entry_path(library / "cache-jpeg", "sub/colour.mp4")) as entry:
        assert (entry.frames, entry.height, entry.width, entry.format) == (16, H, W, "jpeg")
        assert entry.header["source"]["name"] == "colour.mp4" and entry.header["fps"] is None


def test_compressed_rate_and_size(tmp_path: Path) -> None:
    """fps / short_side resample as lsdo-prepare compress does; the cache of a compressed video is that video."""
    write_video(tmp_path / "raw" / "a.mp4", grey_clip(30), fps=30)  # 1 s
    write_video(tmp_path / "raw" / "b.mp4", grey_clip(30, 80, 48), fps=25)  # 1.2 s, portrait
    compress_video(tmp_path / "raw" / "a.mp4", tmp_path / "small" / "a.mp4", fps=3, short_side=32)
    fc.run(tmp_path / "raw", tmp_path / "cache", fps=3, short_side=32, fmt="uint8")
    with CacheEntry(tmp_path / "cache" / "a.frames") as a, CacheEntry(tmp_path / "cache" / "b.frames") as b:
        assert frame_ids(a.read(range(a.frames))) == [0, 10, 20]  # compress's frames: nearest to 0, 1/3, 2/3 s
        assert frame_ids(b.read(range(b.frames))) == [0, 8, 17, 25]
        assert (a.height, a.width, b.height, b.width) == (32, 43, 53, 32)  # sample_frames(size=32)'s sizes
        assert a.header["source"]["fps"] == 30.0 and a.header["fps"] == 3.0
    # The cache of the compressed video (3 fps, short side 32 already): frame for frame the video, pixel for pixel.
    fc.run(tmp_path / "small", tmp_path / "cache_small", fps=3, short_side=32, fmt="uint8")
    entry = tmp_path / "cache_small" / "a.frames"
    for n, mode in ((3, "uniform"), (8, "rand"), (2, "rand")):
        got = sample_entry(entry, n, mode, np.random.default_rng(n))
        want = sample_frames(tmp_path / "small" / "a.mp4", n, mode, rng=np.random.default_rng(n), backend="pyav")
        assert torch.equal(got, want)
    # And sizes on decode: the cache at short side 24 is sample_frames(size=24).
    fc.run(tmp_path / "raw", tmp_path / "cache24", fps=None, short_side=24, fmt="uint8")
    got = sample_entry(tmp_path / "cache24" / "a.frames", 5, "uniform")
    assert torch.equal(got, sample_frames(tmp_path / "raw" / "a.mp4", 5, size=24, backend="pyav"))


# ----------------------------------------------------------------------------- damaged entries
def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_entry":
        path.write_text("this is a caption file, not a frame cache entry\n" * 20)
    elif kind == "bad_header":
        n = int.from_bytes(data[-16:-8], "little")
        path.write_bytes(data[: -16 - n] + b"x" * n + data[-16:])
    elif kind == "bad_jpeg":  # the size, markers and header intact, the frames zeroed
        end = len(data) - 16 - int.from_bytes(data[-16:-8], "little")
        path.write_bytes(data[:8] + bytes(end - 8) + data[end:])


@pytest.mark.parametrize("kind", ["zero_byte", "truncated", "not_an_entry", "bad_header", "bad_jpeg"])
def test_damaged_entries_raise_naming_the_file(library: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "clip24.frames"
    path.write_bytes(fc.entry_path(library / "cache-jpeg", "clip24.mp4").read_bytes())
    _damage(path, kind)
    with pytest.raises(CacheEntryError) as exc:
        fc.probe_entry(path)
    assert str(path) in str(exc.value) and isinstance(exc.value, VideoDecodeError | LSDOUserError)
    if kind == "truncated":
        assert "truncated" in str(exc.value)
    with pytest.raises(CacheEntryError, match=re.escape(str(path))):
        sample_entry(path, 24)
    with pytest.raises(DataNotFoundError, match="nope.frames"):
        sample_entry(tmp_path / "nope.frames", 4)


# ----------------------------------------------------------------------------- writing: resume, bad inputs, CLI
def test_resume_skips_whole_entries_and_redoes_the_rest(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    write_video(src / "m1" / "a.mp4", grey_clip(12), fps=12)
    write_video(src / "m2" / "b.mp4", grey_clip(12), fps=12)
    (src / "m2" / "broken.mp4").write_text("not a video\n" * 10)
    out = tmp_path / "out"
    args = [str(src), str(out), "fps=6", "short_side=24", "progress=false"]
    assert prepare_main(["frames", *args, "workers=2"]) == 1
    captured = capsys.readouterr()
    assert "cached 2, skipped 0 (already done), failed 1" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and str(src / "m2" / "broken.mp4") in failed[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "cache.json",
        "m1",
        "m1/a.frames",
        "m2",
        "m2/b.frames",
    ]
    assert json.loads((out / "cache.json").read_text())["fps"] == 6.0

    mtime = (out / "m1" / "a.frames").stat().st_mtime_ns
    assert prepare_main(["frames", *args, "workers=1"]) == 1
    assert "cached 0, skipped 2 (already done), failed 1" in capsys.readouterr().out
    assert (out / "m1" / "a.frames").stat().st_mtime_ns == mtime

    # A killed run leaves at most a hidden temporary file; a damaged entry and a changed source are redone.
    (out / "m1" / "a.frames").unlink()
    (out / "m1" / ".a.frames.part").write_bytes(b"half a file")
    _damage(out / "m2" / "b.frames", "truncated")
    (src / "m2" / "broken.mp4").unlink()
    assert prepare_main(["frames", *args, "workers=1"]) == 0
    assert "cached 2, skipped 0 (already done), failed 0" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "m1").iterdir()) == ["a.frames"]
    write_video(src / "m1" / "a.mp4", grey_clip(18), fps=12)  # the source changed
    os.utime(src / "m1" / "a.mp4", (1, 1))
    assert prepare_main(["frames", *args, "workers=1"]) == 0
    assert "cached 1, skipped 1 (already done), failed 0" in capsys.readouterr().out
    assert CacheEntry(out / "m1" / "a.frames").frames == 9  # 1.5 s at 6 fps

    # Other settings into the same folder: refused before any work.
    assert prepare_main(["frames", str(src), str(out), "fps=3", "short_side=24", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "other settings: fps=6.0 (asked 3.0)" in err and len(err.strip().splitlines()) == 1


def test_name_clash_and_user_errors(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    write_video(src / "clip.mp4", grey_clip(4))
    write_video(src / "clip.avi", grey_clip(4))
    out = tmp_path / "out"
    assert prepare_main(["frames", str(src), str(out), "progress=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clip.avi and clip.mp4 -> clip.frames" in err[0] and not out.exists()
    assert (
        prepare_main(["frames", str(src), str(out), "ext=.avi", "short_side=null", "format=uint8", "progress=false"])
        == 0
    )
    assert [p.name for p in out.glob("*.frames")] == ["clip.frames"]
    assert prepare_main(["frames", str(tmp_path / "missing"), str(out)]) == 2
    assert prepare_main(["frames", str(src), str(out), "format=png"]) == 2
    assert "format: expected one of jpeg | uint8" in capsys.readouterr().err
    assert prepare_main(["frames", str(src), str(out), "quality=101", "progress=false"]) == 2


def test_cli_help_and_a_real_run(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "lsdo-prepare"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lsdo.cli.prepare"]
    done = subprocess.run([*cmd, "frames", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("usage: lsdo-prepare frames IN_DIR OUT_DIR")
    for key in ("fps", "short_side", "format", "quality", "workers", "ext", "progress"):
        assert f"\n  {key} " in done.stdout
    src = tmp_path / "videos"
    for i in range(3):
        write_video(src / f"v{i}.mp4", colour_clip(10 + i), fps=10)
    rc = prepare_main(["frames", str(src), str(tmp_path / "cache"), "fps=5", "short_side=32", "progress=false"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "cache.json",
        "v0.frames",
        "v1.frames",
        "v2.frames",
    ]
    assert [CacheEntry(tmp_path / "cache" / f"v{i}.frames").frames for i in range(3)] == [5, 6, 6]


def test_documented_frames_commands_parse() -> None:
    """Every ``lsdo-prepare frames`` command in README / data/README / docs names real keys (test_cli.py's
    extraction, against FrameCacheOptions)."""
    from test_cli import _words, documented_commands

    found = [(w, c) for w, c in documented_commands() if c.startswith("lsdo-prepare frames")]
    assert found
    for where, command in found:
        try:
            parse(FrameCacheOptions, _words(command)[2:])
        except LSDOUserError as exc:  # a bare `lsdo-prepare frames` in the text lacks the folders, nothing else
            assert str(exc).startswith("missing required"), f"{where}: {command}: {exc}"


# ----------------------------------------------------------------------------- the data module on a cache
def _dataset(root: Path, train: int = 8, val: int = 2, test: int = 4) -> Path:
    """A tiny MSR-VTT layout: colour videos of 10-14 frames at 8 fps, two captions each."""
    videos, sentences, splits = [], [], {}
    rng = np.random.default_rng(0)
    k = 0
    for split, n in (("train", train), ("val", val), ("test", test)):
        splits[split] = []
        for _ in range(n):
            vid = f"video{k}"
            frames = (colour_clip(10 + k % 5, 40, 56).astype(np.int32) + rng.integers(0, 60, 3)) % 256
            write_video(root / "videos" / f"{vid}.mp4", frames.astype(np.uint8))
            videos.append({"video_id": vid, "category": k % 3, "split": split})
            sentences += [{"video_id": vid, "caption": f"clip {k} take {j}"} for j in range(2)]
            splits[split].append(vid)
            k += 1
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    for name, split in (("MSRVTT_train.9k.csv", "train"), ("MSRVTT_val.csv", "val")):
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows([["video_id"], *([v] for v in splits[split])])
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        rows = [[f"ret{i}", f"msr{i}", v, f"clip {v} test"] for i, v in enumerate(splits["test"])]
        csv.writer(f).writerows([["key", "vid_key", "video_id", "sentence"], *rows])
    return root


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset with a uint8 and a JPEG cache of its videos (every frame, native size)."""
    root = _dataset(tmp_path_factory.mktemp("msrvtt"))
    for fmt in fc.FORMATS:
        fc.run(root / "videos", root / f"cache-{fmt}", fps=None, short_side=None, fmt=fmt, quality=95)
    return root


def _dm(root: Path, *extra: str, report_dir: Path | None = None):
    over = ["dataset=msrvtt", f"dataset.root={root}", "dataset.num_workers=0", "dataset.num_frames=4"]
    over += ["dataset.batch_size=4", "dataset.decode_backend=pyav", *extra]
    dm = build_datamodule(compose(over), 32, report_dir=report_dir)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("fmt", fc.FORMATS)
def test_datamodule_items_equal_the_video_items(msrvtt: Path, fmt: str) -> None:
    """Same sampling draws, augmentation and transforms: uint8 items equal the video items, JPEG items are close."""
    video = _dm(msrvtt)
    # the cache alone: video_dir need not exist
    cached = _dm(msrvtt, f"dataset.frame_cache={msrvtt / f'cache-{fmt}'}", f"dataset.video_dir={msrvtt / 'gone'}")
    assert cached.splits["train"].video_ids == video.splits["train"].video_ids
    assert all(p.suffix == ".frames" for p in cached.splits["test"].paths)
    a, b = video.train_dataloader().dataset, cached.train_dataloader().dataset
    tol = 0.0 if fmt == "uint8" else 0.1  # in CLIP-normalised units (1/255 / 0.27 per level)
    for key in ((0, 1234), (5, 99), (11, 7)):
        x, y = a[key], b[key]
        assert x["caption"] == y["caption"] and x["frames"].shape == y["frames"].shape == (4, 3, 32, 32)
        assert (x["frames"] - y["frames"]).abs().mean() <= tol
    x, y = next(iter(video.test_dataloader())), next(iter(cached.test_dataloader()))
    assert x["captions"] == y["captions"] and torch.equal(x["text_to_video"], y["text_to_video"])
    assert (x["frames"] - y["frames"]).abs().mean() <= tol
    assert (video.bank_videos(2) - cached.bank_videos(2)).abs().mean() <= tol


@pytest.mark.parametrize("on_missing", ["error", "skip"])
def test_missing_entry_follows_on_missing(msrvtt: Path, tmp_path: Path, on_missing: str, caplog) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for p in (msrvtt / "cache-uint8").iterdir():
        (cache / p.name).write_bytes(p.read_bytes())
    (cache / "video12.frames").unlink()  # a test video
    extra = (f"dataset.frame_cache={cache}", f"dataset.on_missing={on_missing}")
    if on_missing == "error":
        with pytest.raises(DataNotFoundError) as exc:
            _dm(msrvtt, *extra, report_dir=tmp_path)
        assert "1 of 4 videos have no frame-cache entry" in str(exc.value) and "video12" in str(exc.value)
        assert "dataset.on_missing=skip" in str(exc.value)
        assert (tmp_path / "missing_videos_test.txt").read_text().startswith(f"video12\t{cache / 'video12.frames'}")
    else:
        with caplog.at_level(logging.WARNING):
            dm = _dm(msrvtt, *extra)
        assert "video12" not in dm.splits["test"].video_ids and len(dm.splits["test"].video_ids) == 3
        assert any("1 of 4" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "not_an_entry"])
def test_damaged_entry_follows_on_corrupt(msrvtt: Path, tmp_path: Path, kind: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for p in (msrvtt / "cache-jpeg").iterdir():
        (cache / p.name).write_bytes(p.read_bytes())
    _damage(cache / "video13.frames", kind)
    with pytest.raises(VideoDecodeError) as exc:
        _dm(msrvtt, f"dataset.frame_cache={cache}", report_dir=tmp_path)
    assert str(cache / "video13.frames") in str(exc.value) and "1 of 4 frame-cache entries" in str(exc.value)
    dm = _dm(msrvtt, f"dataset.frame_cache={cache}", "dataset.on_corrupt=skip", report_dir=tmp_path)
    assert dm.splits["test"].video_ids == ["video10", "video11", "video12"]
    assert str(cache / "video13.frames") in (tmp_path / "corrupt_videos_test.txt").read_text()


def test_training_time_entry_failure_skip_and_error(msrvtt: Path, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for p in (msrvtt / "cache-uint8").iterdir():
        (cache / p.name).write_bytes(p.read_bytes())
    extra = (f"dataset.frame_cache={cache}", "dataset.probe_videos=false")
    dm = _dm(msrvtt, *extra, "dataset.on_corrupt=skip")
    ds = _dm(msrvtt, *extra).train_dataloader().dataset  # on_corrupt=error
    victim = dm.splits["train"].paths[0]
    _damage(victim, "truncated")
    loader = dm.train_dataloader()
    with caplog.at_level(logging.WARNING):
        sizes = [len(b["captions"]) for b in loader]
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert skipped and all(str(victim) in r.getMessage() for r in skipped)
    assert sum(sizes) + len(skipped) == len(loader) * 4
    victim.unlink()  # deleted after the pre-flight: skipped the same way
    assert sum(len(b["captions"]) for b in loader) == sum(sizes)
    with pytest.raises(DataNotFoundError, match=victim.name):
        for i in range(len(ds)):
            ds[(i, 0)]


def test_not_a_cache_and_gpu_decode_of_uint8_are_one_line_errors(msrvtt: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="is not a frame cache .*lsdo-prepare frames"):
        _dm(msrvtt, f"dataset.frame_cache={tmp_path}")
    with pytest.raises(DataNotFoundError, match="frame cache folder not found"):
        _dm(msrvtt, f"dataset.frame_cache={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="dataset.frame_cache_decode=gpu: .* is a uint8 cache"):
        _dm(msrvtt, f"dataset.frame_cache={msrvtt / 'cache-uint8'}", "dataset.frame_cache_decode=gpu")
    with pytest.raises(ConfigError, match="frame_cache_decode: expected cpu | gpu"):
        _dm(msrvtt, "dataset.frame_cache_decode=nvjpeg")


# ----------------------------------------------------------------------------- frame_cache_decode=gpu (on the CPU here)
@pytest.mark.parametrize("train", [True, False])
def test_transform_draws_made_in_the_worker_reproduce_the_transform(train: bool) -> None:
    frames = torch.from_numpy(colour_clip(4, 40, 56)).permute(0, 3, 1, 2).contiguous()
    t = VideoTransform(32, train=train)
    for seed in range(6):
        want = t(frames, generator=torch.Generator().manual_seed(seed))
        params, _ = t.draw(40, 56, torch.Generator().manual_seed(seed))
        assert (params is None) == (not train)
        assert torch.equal(apply_params(frames, 32, params), want)


def test_gpu_decode_path_gives_the_cpu_path_batches(msrvtt: Path) -> None:
    cache = f"dataset.frame_cache={msrvtt / 'cache-jpeg'}"
    cpu, gpu = _dm(msrvtt, cache), _dm(msrvtt, cache, "dataset.frame_cache_decode=gpu")
    for kind in ("train", "test"):
        a = next(iter(getattr(cpu, f"{kind}_dataloader")()))
        raw = next(iter(getattr(gpu, f"{kind}_dataloader")()))
        assert "frames" not in raw and len(raw["jpeg"]) == 4 and len(raw["jpeg"][0]) == 4
        b = gpu.on_before_batch_transfer(raw, 0)
        assert set(a) == set(b) and a["captions"] == b["captions"]
        assert torch.equal(a["frames"], b["frames"])  # decode_jpeg on the CPU in both places


def test_gpu_decode_skips_or_raises_on_an_undecodable_jpeg(msrvtt: Path, tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for p in (msrvtt / "cache-jpeg").iterdir():
        (cache / p.name).write_bytes(p.read_bytes())
    extra = (f"dataset.frame_cache={cache}", "dataset.frame_cache_decode=gpu", "dataset.probe_videos=false")
    dm = _dm(msrvtt, *extra, "dataset.on_corrupt=skip")
    _damage(dm.splits["train"].paths[0], "bad_jpeg")
    total = 0
    with caplog.at_level(logging.WARNING):
        for raw in dm.train_dataloader():
            total += dm.on_before_batch_transfer(raw, 0)["frames"].shape[0]
    assert total < 8 * 2 and any("skipping" in r.getMessage() for r in caplog.records)
    dm = _dm(msrvtt, *extra)
    with pytest.raises(CacheEntryError, match="video0.frames"):
        for raw in dm.train_dataloader():
            dm.on_before_batch_transfer(raw, 0)


def test_lightning_calls_the_gpu_decode_hook(msrvtt: Path) -> None:
    """Through a Trainer the module's steps see decoded, transformed frames."""

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.shapes: list[tuple[int, ...]] = []

        def training_step(self, batch, batch_idx):
            self.shapes.append(tuple(batch["frames"].shape))
            return (self.w * batch["frames"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _dm(msrvtt, f"dataset.frame_cache={msrvtt / 'cache-jpeg'}", "dataset.frame_cache_decode=gpu")
    probe = Probe()
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(probe, datamodule=dm)
    assert probe.shapes == [(4, 4, 3, 32, 32)] * 2
