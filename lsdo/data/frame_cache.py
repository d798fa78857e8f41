"""A prepared-frame cache: every video's frames at a low rate, read by DataLoader workers without a video decoder.

    lsdo-prepare frames IN_DIR OUT_DIR [fps=3] [short_side=224] [format=jpeg|uint8] [quality=90] [workers=N]

Every video under IN_DIR (recursive, sub-folders kept) becomes one file,
``OUT_DIR/<same relative folder>/<same stem>.frames``, holding its frames at ``fps`` (each the source
frame nearest in time, the rule of ``lsdo-prepare compress``; ``fps=null`` keeps every frame) with the
short side resized to ``short_side`` (bicubic, aspect kept; ``null``: as decoded), decoded the way
``sample_frames(..., backend="pyav")`` decodes. ``format=jpeg`` stores each frame as a JPEG
(``quality``; about a tenth of the pixels' size, decoded when read); ``format=uint8`` the pixels
themselves (read as they are, no decoding at all). ``OUT_DIR/cache.json`` records the settings; a run
into a cache made with other settings is refused.

Resumable: an entry is written under a hidden temporary name and renamed when complete; a rerun
skips every entry that is whole and was made from the same source file (its size and modification
time, recorded in the entry) and redoes the others. Bad inputs are reported (file and reason, one
``failed:`` line each on stderr) and counted without stopping the batch; exit code 1 when any
failed. Inputs that would become the same entry (``clip.avi`` and ``clip.mp4``) are refused before
any work, as by ``lsdo-prepare compress``.

An entry file::

    b"LSDOFRM1"                                   8 bytes
    frame 0, frame 1, ..., frame T-1              the payload: JPEG files back to back (format=jpeg),
                                                  or T x [3, H, W] uint8 RGB planes (format=uint8)
    header                                        UTF-8 JSON: format, frames (T), height, width, fps,
                                                  short_side, quality, payload (bytes), offsets (jpeg:
                                                  T + 1 byte offsets into the payload), source (name,
                                                  bytes, mtime, fps, width, height)
    header length, little-endian uint64           8 bytes
    b"LSDOFRM1"                                   8 bytes

A reader checks both markers and that the file is exactly as long as its header says, so a
truncated or damaged entry is a :class:`CacheEntryError` (a :class:`VideoDecodeError`: the data
modules' ``dataset.on_corrupt`` rules apply) and a missing one a ``DataNotFoundError``
(``dataset.on_missing``). Sampling is :func:`lsdo.data.sampling.segment_indices` on the entry's
frame count, the same draw as for a video file, so a clip from the cache is the clip decoded from
the video the cache was made of (at the cache's rate and size): the same frame indices, the same
pixels for ``uint8``, JPEG's small error for ``jpeg``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsdo.data.folder_jobs import Summary, attempt, run_jobs, sources
from lsdo.data.sampling import segment_indices
from lsdo.data.video import (
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    _av_open,
    _reason,
    _short_side_dims,
    frames_at_rate,
)
from lsdo.errors import DataNotFoundError, LSDOUserError
from lsdo.options import option

MAGIC = b"LSDOFRM1"
SUFFIX = ".frames"  # one entry file per video
SETTINGS_FILE = "cache.json"
FORMATS = ("jpeg", "uint8")
# The defaults of `lsdo-prepare frames` (FrameCacheOptions) and of write_entry / run, written once.
FPS, SHORT_SIDE, FORMAT, QUALITY = 3.0, 224, "jpeg", 90
VERSION = 1
_TAIL = 16  # header length (8 bytes) + MAGIC


class CacheEntryError(VideoDecodeError):
    """A frame-cache entry that exists but cannot be read (truncated, damaged, undecodable frame)."""


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def entry_path(cache_dir: str | os.PathLike, video_file: str) -> Path:
    """The entry of the video ``video_file`` (a path relative to the video folder): the same relative
    folder and stem under ``cache_dir``, ``.frames`` (``clip.avi``, ``clip.mp4`` and DiDeMo's ``clip.``
    all map to ``clip.frames``)."""
    p = Path(video_file)
    stem = str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else str(p).rstrip(".")
    return Path(cache_dir) / (stem + SUFFIX)


def is_entry(path: str | os.PathLike) -> bool:
    return Path(path).suffix == SUFFIX


def output_path(src: Path, in_dir: Path, out_dir: Path) -> Path:
    """Where ``lsdo-prepare frames`` writes the entry of ``src`` (a video under ``in_dir``)."""
    return entry_path(out_dir, str(src.relative_to(in_dir)))


def read_settings(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The settings a cache folder was made with (``cache.json``); DataNotFoundError when it is not a cache."""
    path = Path(cache_dir) / SETTINGS_FILE
    if not Path(cache_dir).is_dir():
        raise DataNotFoundError(f"frame cache folder not found: {cache_dir}")
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataNotFoundError(
            f"{cache_dir} is not a frame cache (no {SETTINGS_FILE}); make one with lsdo-prepare frames VIDEO_DIR "
            f"{cache_dir}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LSDOUserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(settings, dict) or settings.get("format") not in FORMATS:
        raise LSDOUserError(f"{path}: not the settings of a frame cache (format: {FORMATS})")
    return settings


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class CacheEntry:
    """One open entry file: its header (``format``, ``frames``, ``height``, ``width``, ``fps``, ``source``, ...)
    and frame reads by index. A context manager (closes the file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise DataNotFoundError(f"frame-cache entry not found: {self.path}") from None
        except IsADirectoryError:
            raise CacheEntryError(f"{self.path}: not a frame-cache entry (it is a directory)") from None
        try:
            self.header = self._read_header()
        except BaseException:
            os.close(self.fd)
            raise
        h = self.header
        self.format, self.frames = str(h["format"]), int(h["frames"])
        self.height, self.width = int(h["height"]), int(h["width"])
        self.offsets: list[int] = h.get("offsets") or []

    def _read_header(self) -> dict[str, Any]:
        size = os.fstat(self.fd).st_size
        if size == 0:
            raise CacheEntryError(f"{self.path}: zero-byte file (an interrupted copy?)")
        if os.pread(self.fd, len(MAGIC), 0) != MAGIC:
            raise CacheEntryError(f"{self.path}: not a frame-cache entry (no {MAGIC.decode()} marker)")
        tail = os.pread(self.fd, _TAIL, size - _TAIL) if size >= len(MAGIC) + _TAIL else b""
        if len(tail) != _TAIL or tail[8:] != MAGIC:
            raise CacheEntryError(
                f"{self.path}: truncated ({size} bytes, no end marker: an interrupted copy?); "
                "copy it again or rerun lsdo-prepare frames"
            )
        n = int.from_bytes(tail[:8], "little")
        start = size - _TAIL - n
        if not len(MAGIC) <= start:
            raise CacheEntryError(f"{self.path}: damaged (header length {n} of a {size}-byte file)")
        try:
            header = json.loads(os.pread(self.fd, n, start))
            frames, height, width = int(header["frames"]), int(header["height"]), int(header["width"])
            fmt = header["format"]
            payload, version = int(header["payload"]), int(header.get("version", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheEntryError(f"{self.path}: damaged header ({_reason(exc)})") from None
        if version > VERSION:
            raise CacheEntryError(f"{self.path}: written by a newer lsdo (entry version {version})")
        if fmt not in FORMATS or frames < 1 or height < 1 or width < 1:
            raise CacheEntryError(f"{self.path}: damaged header (format {fmt!r}, {frames} frames of {width}x{height})")
        if len(MAGIC) + payload != start:
            raise CacheEntryError(
                f"{self.path}: damaged ({start - len(MAGIC)} payload bytes, the header says {payload})"
            )
        offsets = header.get("offsets")
        if fmt == "uint8" and payload != frames * 3 * height * width:
            raise CacheEntryError(f"{self.path}: damaged ({payload} bytes for {frames} frames of {width}x{height})")
        if fmt == "jpeg" and (
            not isinstance(offsets, list) or len(offsets) != frames + 1 or offsets[0] != 0 or offsets[-1] != payload
        ):
            raise CacheEntryError(f"{self.path}: damaged header (frame offsets)")
        return header

    def __enter__(self) -> CacheEntry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _check(self, idx: Sequence[int]) -> list[int]:
        idx = [int(i) for i in idx]
        if any(not 0 <= i < self.frames for i in idx):
            raise IndexError(f"{self.path}: frame index out of range 0-{self.frames - 1}: {idx}")
        return idx

    def read_encoded(self, idx: Sequence[int]) -> list[torch.Tensor]:
        """The JPEG files of frames ``idx``: 1-D uint8 tensors (``format=jpeg`` entries)."""
        if self.format != "jpeg":
            raise ValueError(f"{self.path}: a {self.format} entry holds no JPEG files")
        out = []
        for i in self._check(idx):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            buf = torch.empty(hi - lo, dtype=torch.uint8)
            if os.preadv(self.fd, [buf.numpy()], len(MAGIC) + lo) != hi - lo:
                raise CacheEntryError(f"{self.path}: truncated while reading frame {i}")
            out.append(buf)
        return out

    def read(self, idx: Sequence[int]) -> torch.Tensor:
        """Frames ``idx`` (repeats allowed): uint8 [len(idx), 3, H, W] RGB."""
        idx = self._check(idx)
        if self.format == "jpeg":
            return torch.stack(decode_jpegs(self.read_encoded(idx), [f"{self.path}: frame {i}" for i in idx]))
        plane = 3 * self.height * self.width
        out = torch.empty((len(idx), 3, self.height, self.width), dtype=torch.uint8)
        for k, i in enumerate(idx):
            if os.preadv(self.fd, [out[k].numpy()], len(MAGIC) + i * plane) != plane:
                raise CacheEntryError(f"{self.path}: truncated while reading frame {i}")
        return out


def decode_jpegs(
    data: list[torch.Tensor], names: Sequence[str], device: str | torch.device = "cpu"
) -> list[torch.Tensor]:
    """JPEG files (1-D uint8 CPU tensors) -> uint8 [3, H, W] RGB tensors on ``device`` (torchvision; nvjpeg on a
    GPU). A file that fails is a CacheEntryError naming it (``names[i]``)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if torch.device(device).type != "cpu":
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)  # one batched call
        except RuntimeError:
            pass  # find the file that fails, one by one
    out = []
    for buf, name in zip(data, names, strict=True):
        try:
            out.append(decode_jpeg(buf, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as exc:
            raise CacheEntryError(f"{name} does not decode ({_reason(exc)})") from None
    return out


def sample_entry(
    path: str | os.PathLike, num_frames: int, mode: str = "uniform", rng: np.random.Generator | None = None
) -> torch.Tensor:
    """``num_frames`` segment-sampled frames of a cache entry: uint8 [num_frames, 3, H, W] (RGB).

    The draw is ``sample_frames``' (``segment_indices`` on the entry's frame count, one ``rng`` call),
    so the same ``rng`` state picks the same frames from the entry as from its video.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    with CacheEntry(path) as entry:
        return entry.read(segment_indices(entry.frames, num_frames, mode, rng))


def sample_entry_encoded(
    path: str | os.PathLike, num_frames: int, mode: str = "uniform", rng: np.random.Generator | None = None
) -> tuple[list[torch.Tensor], int, int]:
    """:func:`sample_entry` without the decoding (JPEG entries): (the JPEG files, height, width)."""
    with CacheEntry(path) as entry:
        if entry.format != "jpeg":
            raise CacheEntryError(f"{entry.path}: a {entry.format} entry; decoding on the GPU needs a JPEG cache")
        return entry.read_encoded(segment_indices(entry.frames, num_frames, mode, rng)), entry.height, entry.width


def probe_entry(path: str | os.PathLike) -> int:
    """Frame count of an entry after checking that it is whole and its last frame reads (pre-flight)."""
    with CacheEntry(path) as entry:
        entry.read([entry.frames - 1])
        return entry.frames


# ---------------------------------------------------------------------------------------------
# The training transform with its random draws made in the worker, applied after decoding on a GPU
# ---------------------------------------------------------------------------------------------

# The draws are made by lsdo.data.transforms.VideoTransform.draw in the worker (with the caption: the
# flip and the caption are decided together there) and applied by transforms.apply_params on the device.


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def source_stamp(src: Path) -> dict[str, int | str]:
    st = src.stat()
    return {"name": src.name, "bytes": st.st_size, "mtime": int(st.st_mtime)}


def cache_settings(fps: float | None, short_side: int | None, fmt: str, quality: int) -> dict[str, Any]:
    return {
        "version": VERSION,
        "format": fmt,
        "fps": fps,
        "short_side": short_side,
        "quality": quality if fmt == "jpeg" else None,
    }


def write_entry(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    fps: float | None = FPS,
    short_side: int | None = SHORT_SIDE,
    fmt: str = FORMAT,
    quality: int = QUALITY,
) -> int:
    """Decode ``src`` and write its entry ``dst``; the frames written.

    Written to ``.<name>.part`` beside ``dst`` and renamed when complete. Raises VideoDecodeError
    (naming ``src``) for an unreadable or undecodable input; ``dst`` is then not created.
    """
    from torchvision.io import encode_jpeg

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataNotFoundError(f"video file not found: {src}")
    if src.stat().st_size == 0:
        raise VideoDecodeError(f"{src}: zero-byte file (an interrupted download or copy?)")
    stamp = source_stamp(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    offsets = [0]
    try:
        container, stream = _av_open(src)
        with container, open(tmp, "wb") as out:
            ctx = stream.codec_context
            w, h = _short_side_dims(ctx.width, ctx.height, short_side)
            stamp.update(fps=float(stream.average_rate or 0) or None, width=ctx.width, height=ctx.height)
            out.write(MAGIC)
            last, data = None, b""
            for frame in frames_at_rate(container, stream, fps, src):
                if frame is not last:  # a frame filling several slots is converted once
                    # the conversion of sample_frames(..., backend="pyav"): same pixels
                    rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BICUBIC")
                    chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
                    data = (
                        encode_jpeg(chw, quality=quality).numpy().tobytes() if fmt == "jpeg" else chw.numpy().tobytes()
                    )
                    last = frame
                out.write(data)
                offsets.append(offsets[-1] + len(data))
            header = {
                **cache_settings(fps, short_side, fmt, quality),
                "frames": len(offsets) - 1,
                "height": h,
                "width": w,
                "payload": offsets[-1],
                "source": stamp,
            }
            if fmt == "jpeg":
                header["offsets"] = offsets
            blob = json.dumps(header, separators=(",", ":")).encode()
            out.write(blob + len(blob).to_bytes(8, "little") + MAGIC)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return len(offsets) - 1


def is_done(src: Path, dst: Path, settings: dict[str, Any]) -> bool:
    """Whether ``dst`` is a whole entry made from ``src`` as it is now (size, mtime) with ``settings``."""
    if not dst.is_file():
        return False
    try:
        with CacheEntry(dst) as entry:
            header = entry.header
    except (LSDOUserError, OSError):
        return False
    stamp, now = header.get("source") or {}, source_stamp(src)
    same_source = stamp.get("bytes") == now["bytes"] and stamp.get("mtime") == now["mtime"]
    return same_source and all(header.get(k) == v for k, v in settings.items() if k != "version")


def _one_thread() -> None:
    torch.set_num_threads(1)


@dataclass
class FrameCacheOptions:
    """What ``lsdo-prepare frames`` takes (its keys and their defaults: written here once)."""

    in_dir: str = option("folder of videos (searched recursively)", positional=True)
    out_dir: str = option("the cache folder (same sub-folders, one .frames file per video)", positional=True)
    fps: float | None = option("frames kept per second, each the source frame nearest in time (null: every frame)", FPS)
    short_side: int | None = option(
        "short side in pixels, bicubic, aspect kept (null: as decoded)", SHORT_SIDE, minimum=2
    )
    format: str = option(
        "jpeg: JPEG files, decoded when read | uint8: the pixels, read as they are", FORMAT, choices=FORMATS
    )
    quality: int = option("JPEG quality, 1-100 (format=jpeg)", QUALITY, minimum=1)
    workers: int = option("parallel processes (default: all cores)", os.cpu_count() or 1, minimum=1)
    ext: list[str] = option("input extensions to include", list(VIDEO_EXTENSIONS))
    progress: bool | None = option("a progress bar (null: when stderr is a terminal)", None)


def _claim(out_dir: Path, settings: dict[str, Any]) -> None:
    """Write ``cache.json`` (or check that the one there has the same settings)."""
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        have = read_settings(out_dir)
        diff = [f"{k}={have.get(k)} (asked {v})" for k, v in settings.items() if have.get(k) != v]
        if diff:
            raise LSDOUserError(
                f"{out_dir} holds a frame cache made with other settings: {', '.join(diff)}; "
                "write to another folder (or delete this one)"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{SETTINGS_FILE}.part"
    tmp.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(tmp, path)


def run(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    fps: float | None = FPS,
    short_side: int | None = SHORT_SIDE,
    fmt: str = FORMAT,
    quality: int = QUALITY,
    workers: int = 1,
    exts: Sequence[str] = VIDEO_EXTENSIONS,
    progress: bool | None = None,
) -> Summary:
    """Write the entry of every video under ``in_dir`` into ``out_dir``; see the module docstring."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if (fps is not None and fps <= 0) or (short_side is not None and short_side < 2) or workers < 1:
        raise LSDOUserError(f"need fps > 0, short_side >= 2, workers >= 1; got {fps}, {short_side}, {workers}")
    if fmt not in FORMATS or not 1 <= quality <= 100:
        raise LSDOUserError(f"need format in {' | '.join(FORMATS)} and quality 1-100; got {fmt}, {quality}")
    found = sources(in_dir, out_dir, exts, lambda src: output_path(src, in_dir, out_dir), "nothing cached", "ext=")
    fps = None if fps is None else float(fps)
    settings = cache_settings(fps, short_side, fmt, quality)
    _claim(out_dir, settings)
    summary, todo = Summary("cached"), []
    for src in found:
        dst = output_path(src, in_dir, out_dir)
        if is_done(src, dst, settings):
            summary.skipped += 1
        else:
            todo.append((src, dst))
    job = functools.partial(attempt, write_entry, (fps, short_side, fmt, quality))
    run_jobs(todo, job, summary, workers, "frames", progress, initializer=_one_thread)
    return summary
