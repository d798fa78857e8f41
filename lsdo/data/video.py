"""Video decoding: read only the sampled frames of a clip, probe files, write mp4s.

Backends:

* ``decord`` (preferred): ``VideoReader(path, num_threads=1)`` + ``get_batch(indices)``: seeks to
  the key frame before each wanted frame and decodes only what it needs.
* ``pyav`` (fallback, and the reference decoder behind error messages): demuxes the clip, then
  decodes sequentially, keeping only the wanted frames and stopping after the last one.

Frame counts. A container may list more frames than it holds (metadata written from
duration x fps; a cut download). decord 0.6 then spins forever in native code, holding the GIL
(dmlc/decord#373), when asked for a frame past the real end. Both backends therefore count the
frames as ``min(listed, packets actually present)``: sampling is tolerant of such files, while
:func:`probe_video` (the pre-flight check) reports them as truncated.

Whole videos at a frame rate (``lsdo-prepare frames``): :func:`frames_at_rate` decodes every frame
with PyAV and keeps, for each output time k / fps, the source frame nearest in time (the rule of
``lsdo-prepare compress``).

Errors: a missing file raises :class:`~lsdo.errors.DataNotFoundError`; a zero-byte file, a file
that is not a video, or one that fails to decode raises :class:`VideoDecodeError`, whose message
names the file and what went wrong. When decord fails on a file, PyAV is tried before giving up,
so the message is PyAV's precise one (and decord-only quirks do not lose the clip).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsdo.data.sampling import segment_indices
from lsdo.errors import DataNotFoundError, LSDOUserError

# Video file extensions every tool looks for (data modules, lsdo-index, lsdo-prepare compress): the one list.
VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".3gp",
    ".wmv",
    ".flv",
    ".ts",
    ".ogv",
)

BACKENDS = ("decord", "pyav")


class VideoDecodeError(LSDOUserError):
    """A video file that exists but cannot be decoded; the message names the file and the reason."""


def available_backends() -> list[str]:
    """The importable decoding backends, preferred first (a subset of ``["decord", "pyav"]``)."""
    return [b for b, mod in (("decord", "decord"), ("pyav", "av")) if importlib.util.find_spec(mod) is not None]


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"video backend must be 'auto', 'decord' or 'pyav', got '{backend}'")
    have = available_backends()
    if backend == "auto":
        if not have:
            raise ImportError("no video backend: install decord (x86_64) or av (PyAV): pip install av")
        return have[0]
    if backend not in have:
        pkg = "decord" if backend == "decord" else "av"
        raise ImportError(f"video backend '{backend}' is not installed: pip install {pkg}")
    return backend


def _check_file(path: Path) -> None:
    """Missing -> DataNotFoundError; directory / zero bytes -> VideoDecodeError."""
    if not path.exists():
        raise DataNotFoundError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoDecodeError(f"{path}: not a video file (it is a directory or a special file)")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: zero-byte file (an interrupted download or copy?)")


def _short_side_dims(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``size`` (unchanged when size is None)."""
    if size is None:
        return width, height
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if width <= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


# ---------------------------------------------------------------------------------------------
# PyAV
# ---------------------------------------------------------------------------------------------


def _av_open(path: Path) -> tuple[Any, Any]:
    """Open ``path`` with PyAV: (container, first video stream), or VideoDecodeError."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"{path}: not a readable video ({_reason(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: the file holds no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # one core per DataLoader worker, like decord's num_threads=1
    return container, stream


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[-1][:300]


def _av_demux(container: Any, stream: Any, path: Path) -> tuple[list[Any], int]:
    """All non-empty packets of ``stream`` in decode order and the index of the last key packet."""
    import av

    packets, last_key = [], 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:  # the demuxer's final flush packet
                continue
            if pkt.is_keyframe:
                last_key = len(packets)
            packets.append(pkt)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(
            f"{path}: corrupt container after {len(packets)} video packets ({_reason(exc)})"
        ) from exc
    return packets, last_key


def _av_frame_count(stream: Any, packets: int) -> int:
    listed = int(stream.frames or 0)
    return min(listed, packets) if listed > 0 else packets


def _av_sample(path: Path, pick: Callable[[int], np.ndarray], size: int | None) -> torch.Tensor:
    import av

    container, stream = _av_open(path)
    with container:
        packets, _ = _av_demux(container, stream, path)
        total = _av_frame_count(stream, len(packets))
        if total == 0:
            raise VideoDecodeError(f"{path}: the video stream holds no frames")
        idx = pick(total)
        wanted: dict[int, list[int]] = {}
        for pos, i in enumerate(idx.tolist()):
            wanted.setdefault(i, []).append(pos)
        last = int(idx.max())
        w, h = _short_side_dims(stream.codec_context.width, stream.codec_context.height, size)
        out: list[np.ndarray | None] = [None] * len(idx)
        k = p = 0  # frames decoded so far (presentation order), packets sent (decode order)
        ctx = stream.codec_context
        try:
            for p, pkt in enumerate([*packets, None]):  # noqa: B007 (p names the failing packet)
                for frame in ctx.decode(pkt):
                    if k in wanted:
                        arr = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BICUBIC")
                        for pos in wanted[k]:
                            out[pos] = arr
                    k += 1
                    if k > last:
                        break
                if k > last:
                    break
        except av.error.FFmpegError as exc:
            of = max(total, int(stream.frames or 0))
            raise VideoDecodeError(f"{path}: undecodable frame {p} of {of} ({_reason(exc)})") from exc
    if k <= last:
        raise VideoDecodeError(
            f"{path}: truncated or corrupt: only {k} of {total} frames decode (frame {last} was needed)"
        )
    return _to_tensor(np.stack(out))


def _av_probe(path: Path) -> int:
    import av

    container, stream = _av_open(path)
    with container:
        packets, last_key = _av_demux(container, stream, path)
        listed = int(stream.frames or 0)
        if listed > 0 and len(packets) < listed:
            raise VideoDecodeError(
                f"{path}: truncated: the container lists {listed} frames but holds only {len(packets)} "
                "(an interrupted download or copy: download or copy it again)"
            )
        total = _av_frame_count(stream, len(packets))
        if total == 0:
            raise VideoDecodeError(f"{path}: the video stream holds no frames")
        # Decode the last GOP (from the last key frame to the end): catches a cut or damaged tail.
        ctx, decoded = stream.codec_context, 0
        try:
            for pkt in [*packets[last_key:], None]:
                decoded += len(ctx.decode(pkt))
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"{path}: undecodable frame near the end (decoding frames {last_key}-{total - 1} of {total}: "
                f"{_reason(exc)})"
            ) from exc
        if decoded == 0:
            raise VideoDecodeError(f"{path}: the last frames (from key frame {last_key} of {total}) do not decode")
    return total


def frames_at_rate(container: Any, stream: Any, fps: float | None, path: Path) -> Iterator[Any]:
    """The decoded frames of ``stream`` (PyAV ``VideoFrame``s) at ``fps`` frames per second.

    Output slot k (time k / fps) takes the source frame nearest in time, as FFmpeg's ``fps`` filter
    (the rule of ``lsdo-prepare compress`` and ``lsdo-prepare frames``); a source frame is yielded
    once per slot it fills (the same object again when it fills several, none when it fills none),
    and the last one fills the slots up to the end of its display time. ``fps=None``: every frame,
    in presentation order. Raises VideoDecodeError naming ``path`` and the frame that fails.
    """
    import av

    rate = float(stream.average_rate or stream.guessed_rate or 25)
    start = stream.start_time or 0
    written, decoded, prev, prev_t = 0, 0, None, 0.0
    try:
        for frame in container.decode(stream):
            decoded += 1
            if fps is None:
                yield frame
                continue
            t = float((frame.pts - start) * stream.time_base) if frame.pts is not None else (decoded - 1) / rate
            while written / fps <= t + 1e-9:  # output slots up to this frame's time
                slot = written / fps
                yield frame if prev is None or t - slot <= slot - prev_t else prev  # the nearer of the two
                written += 1
            prev, prev_t = frame, t
    except av.error.FFmpegError as exc:
        of = f" of {stream.frames}" if stream.frames else ""
        raise VideoDecodeError(f"{path}: undecodable frame {decoded}{of} ({_reason(exc)})") from exc
    if decoded == 0:
        raise VideoDecodeError(f"{path}: the video stream holds no decodable frames")
    if fps is not None:
        for _ in range(written, max(1, round((prev_t + 1 / rate) * fps))):
            yield prev


# ---------------------------------------------------------------------------------------------
# decord
# ---------------------------------------------------------------------------------------------

_DECORD_QUIET = False


def _decord_open(path: Path, size: int | None) -> Any:
    global _DECORD_QUIET
    import decord

    if not _DECORD_QUIET:  # decord's bundled FFmpeg prints every demuxer complaint; we raise instead
        decord.logging.set_level(decord.logging.QUIET)
        _DECORD_QUIET = True
    width = height = -1
    if size is not None:
        container, stream = _av_open(path)  # reads the header only
        with container:
            width, height = _short_side_dims(stream.codec_context.width, stream.codec_context.height, size)
    return decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=1)


def _decord_counts(vr: Any) -> tuple[int, int]:
    """(frames decord reports, packets it indexed when opening the file)."""
    reported = len(vr)
    vr.get_frame_timestamp(0)  # fills vr._frame_pts: one row per packet demuxed at open
    pts = getattr(vr, "_frame_pts", None)
    return reported, (len(pts) if pts is not None else reported)


def _decord_sample(path: Path, pick: Callable[[int], np.ndarray], size: int | None) -> torch.Tensor:
    vr = _decord_open(path, size)
    reported, packets = _decord_counts(vr)
    total = min(reported, packets)  # never ask decord for a frame past the real end (decord#373)
    idx = pick(total)
    return _to_tensor(vr.get_batch(idx.tolist()).asnumpy())


def _decord_probe(path: Path) -> int:
    container, stream = _av_open(path)  # the header only: the frame count the container lists
    with container:
        listed = int(stream.frames or 0)
    vr = _decord_open(path, None)
    reported, packets = _decord_counts(vr)
    if packets < listed or reported != packets:
        raise RuntimeError("frame count mismatch")  # PyAV's probe judges it and names the problem
    vr[packets - 1].asnumpy()
    return packets


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] numpy -> uint8 [n, 3, H, W] contiguous tensor."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def _with_fallback(path: Path, backend: str, decord_fn: Callable[[], Any], av_fn: Callable[[], Any]) -> Any:
    if _resolve_backend(backend) == "pyav":
        return av_fn()
    try:
        return decord_fn()
    except (KeyboardInterrupt, DataNotFoundError):
        raise
    except Exception as decord_exc:  # decord raises RuntimeError / DECORDError / AssertionError
        if "pyav" not in available_backends():
            raise VideoDecodeError(f"{path}: decord cannot decode it ({_reason(decord_exc)})") from decord_exc
        return av_fn()  # PyAV succeeds (a decord quirk) or raises a precise VideoDecodeError


def sample_frames(
    path: str | os.PathLike,
    num_frames: int,
    mode: str = "uniform",
    rng: np.random.Generator | None = None,
    backend: str = "auto",
    size: int | None = None,
) -> torch.Tensor:
    """Decode ``num_frames`` segment-sampled frames of a video: uint8 [num_frames, 3, H, W] (RGB).

    The clip's T frames are split into ``num_frames`` equal segments (``segment_indices``):
    ``uniform`` takes the middle frame of each, ``rand`` a random frame inside each (from
    ``rng``). Clips shorter than ``num_frames`` repeat frames. Only the sampled frames are
    decoded (plus what the codec needs to reach them). ``size`` resizes the short side on
    decode (None: native resolution). ``backend``: "auto" (decord if installed, else PyAV),
    "decord" (falls back to PyAV for a file decord fails on) or "pyav".
    Raises DataNotFoundError (missing file) or VideoDecodeError (naming the file and the problem).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode not in ("uniform", "rand"):
        raise ValueError(f"sample mode must be 'uniform' or 'rand', got '{mode}'")
    path = Path(path)
    _check_file(path)
    drawn: dict[int, np.ndarray] = {}

    def pick(total: int) -> np.ndarray:  # one draw per frame count, so a fallback reuses the indices
        if total not in drawn:
            drawn[total] = segment_indices(total, num_frames, mode, rng)
        return drawn[total]

    return _with_fallback(path, backend, lambda: _decord_sample(path, pick, size), lambda: _av_sample(path, pick, size))


def probe_video(path: str | os.PathLike, backend: str = "auto") -> int:
    """Number of frames of a video, after checking that it opens and that its last frame decodes.

    Cheap (the container is demuxed, only the last key-frame interval is decoded), for a
    pre-flight check over a whole dataset. Raises DataNotFoundError (missing) or VideoDecodeError
    (zero bytes, not a video, truncated: fewer frames than the container lists, or an
    undecodable tail).
    """
    path = Path(path)
    _check_file(path)
    return _with_fallback(path, backend, lambda: _decord_probe(path), lambda: _av_probe(path))


def _as_thwc_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames must be [T, H, W, 3] (or [T, 3, H, W]), got shape {tuple(frames.shape)}")
    if frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    if frames.shape[-1] != 3:
        raise ValueError(f"frames must have 3 (RGB) channels: [T, H, W, 3] or [T, 3, H, W], got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got {frames.dtype}")
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must hold at least one non-empty frame, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def open_h264_writer(
    path: Path,
    width: int,
    height: int,
    fps: float,
    crf: int,
    threads: int = 0,
    faststart: bool = False,
    keyint: int | None = None,
) -> tuple[Any, Any]:
    """An mp4 container writing H.264 yuv420p at ``fps``: (container, stream).

    Sizes must be even; ``threads`` 0 lets x264 choose. Give frame i ``pts = i`` and
    ``time_base = stream.codec_context.time_base`` (1 / fps).
    """
    import av

    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
    options = {"movflags": "faststart"} if faststart else {}
    container = av.open(str(path), mode="w", format="mp4", options=options)
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = 1 / rate  # frame i has pts i
    stream.options = {"crf": str(int(crf))}
    if threads:
        stream.codec_context.thread_count = int(threads)
    if keyint:
        stream.codec_context.gop_size = int(keyint)
    return container, stream


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor,
    fps: float = 8.0,
    crf: int = 12,
    faststart: bool = False,
    keyint: int | None = None,
) -> None:
    """Write uint8 RGB frames [T, H, W, 3] (or [T, 3, H, W]) as an H.264 (yuv420p) mp4.

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row or
    column, so such a video reads back one pixel taller or wider. ``crf``: 0 (lossless luma) to 51
    (worst); the default 12 is visually lossless. Parent folders are created; the file appears
    under its final name only once complete (written to a temporary name, then renamed).
    ``faststart`` puts the index (moov) before the data, as streaming sites do; ``keyint`` is the
    longest key-frame interval in frames (None: x264's default, 250).
    """
    import av

    arr = _as_thwc_uint8(frames)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        container, stream = open_h264_writer(
            tmp, arr.shape[2], arr.shape[1], fps, crf, faststart=faststart, keyint=keyint
        )
        with container:
            for i, frame in enumerate(arr):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts, vf.time_base = i, stream.codec_context.time_base
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
