"""Re-encode a video folder to a low frame rate and a small short side (CLIP4Clip-style compression).

    lsdo-prepare compress IN_DIR OUT_DIR [fps=3] [short_side=224] [workers=N] [ext=.mp4,.avi]
    (the earlier spellings --fps 3, --short-side 224, --ext .mp4 --ext .avi, --no-progress still work)

Every video under IN_DIR (recursive; sub-folders such as LSMDC's movie folders are kept) becomes
``OUT_DIR/<same relative folder>/<same stem>.mp4``: H.264 yuv420p at ``--fps`` (each output
frame is the source frame nearest in time, as FFmpeg's ``fps`` filter) with the short side
resized to ``--short-side`` (bicubic, even sizes, aspect kept), video only.

Resumable: an output is first written under a hidden temporary name and renamed when complete, so
an existing output is always whole and a rerun skips it. Bad inputs are reported (file and
reason) and counted without stopping the batch; the exit code is 1 when any failed, and the
``failed`` count is the number of ``failed:`` lines.

Name clashes are refused before any work: inputs that would become the same output (``clip.avi``
and ``clip.mp4`` in one folder both become ``clip.mp4``) stop the run with a one-line error
listing them (exit 2); rename one of each group, or pick one extension with ``--ext``. File names
may hold any bytes; listings show them on one printable line (a newline as ``\\n``, a byte that
is not valid UTF-8 as ``\\xNN``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lsdo.data.folder_jobs import Summary, attempt, run_jobs, sources
from lsdo.data.video import VIDEO_EXTENSIONS, VideoDecodeError, _av_open, frames_at_rate, open_h264_writer
from lsdo.errors import DataNotFoundError, LSDOUserError
from lsdo.options import option

VIDEO_EXTS = VIDEO_EXTENSIONS  # the one list (lsdo.data.video)


def output_path(src: Path, in_dir: Path, out_dir: Path) -> Path:
    """Where ``src`` (under ``in_dir``) is written: the same relative folder and stem under ``out_dir``, ``.mp4``."""
    return (out_dir / src.relative_to(in_dir)).with_suffix(".mp4")


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side = ``short_side`` and the aspect ratio kept, both even."""

    def even(x: float) -> int:
        return max(2, 2 * round(x / 2))

    if width <= height:
        return even(short_side), even(height * short_side / width)
    return even(width * short_side / height), even(short_side)


def compress_video(
    src: Path, dst: Path, fps: float = 3.0, short_side: int = 224, crf: int = 23, threads: int = 0
) -> int:
    """Re-encode ``src`` to ``dst`` (mp4, H.264) at ``fps`` with the given short side; the frames written.

    Writes ``.<name>.part`` next to ``dst`` and renames it when complete. Raises VideoDecodeError
    (naming ``src``) for an unreadable or undecodable input; ``dst`` is then not created.
    """
    import av

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataNotFoundError(f"video file not found: {src}")
    if src.stat().st_size == 0:
        raise VideoDecodeError(f"{src}: zero-byte file (an interrupted download or copy?)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    written = 0
    try:
        container, stream = _av_open(src)
        with container:
            width, height = output_size(stream.codec_context.width, stream.codec_context.height, short_side)
            out, ostream = open_h264_writer(tmp, width, height, fps, crf, threads=threads)
            with out:

                def emit(frame: av.VideoFrame) -> None:
                    nonlocal written
                    frame.pts, frame.time_base = written, ostream.codec_context.time_base
                    for packet in ostream.encode(frame):
                        out.mux(packet)
                    written += 1

                def scaled(frame: av.VideoFrame) -> av.VideoFrame:
                    return frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")

                # The source frames at the output rate (nearest in time: lsdo.data.video.frames_at_rate, the rule
                # lsdo-prepare frames shares); a frame filling several slots is scaled once.
                memo: list[tuple[av.VideoFrame, av.VideoFrame]] = []
                for frame in frames_at_rate(container, stream, fps, src):
                    done = next((s for f, s in memo if f is frame), None)
                    if done is None:
                        done = scaled(frame)
                        memo = [*memo[-1:], (frame, done)]
                    emit(done)
                for packet in ostream.encode(None):
                    out.mux(packet)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return written


@dataclass
class CompressOptions:
    """What ``lsdo-prepare compress`` takes (its keys and their defaults: written here once)."""

    in_dir: str = option("folder of videos (searched recursively)", positional=True)
    out_dir: str = option("output folder (same sub-folders, .mp4)", positional=True)
    fps: float = option("output frame rate", 3.0)
    short_side: int = option("output short side in pixels", 224)
    workers: int = option("parallel processes (default: all cores)", os.cpu_count() or 1)
    ext: list[str] = option("input extensions to include", list(VIDEO_EXTS))
    crf: int = option("x264 quality, lower is better", 23)
    progress: bool | None = option("a progress bar (null: when stderr is a terminal)", None)


def run(
    in_dir: Path,
    out_dir: Path,
    fps: float = CompressOptions.fps,
    short_side: int = CompressOptions.short_side,
    workers: int = 1,
    exts: Sequence[str] = VIDEO_EXTS,
    crf: int = CompressOptions.crf,
    progress: bool | None = None,
) -> Summary:
    """Compress every video under ``in_dir`` into ``out_dir``; see the module docstring."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if fps <= 0 or short_side < 2 or workers < 1:
        raise LSDOUserError(f"need --fps > 0, --short-side >= 2, --workers >= 1; got {fps}, {short_side}, {workers}")
    found = sources(in_dir, out_dir, exts, lambda src: output_path(src, in_dir, out_dir), "nothing compressed", "--ext")
    summary, todo = Summary("compressed"), []
    for src in found:
        dst = output_path(src, in_dir, out_dir)
        if dst.is_file() and dst.stat().st_size > 0:
            summary.skipped += 1
        else:
            todo.append((src, dst))
    threads = 1 if workers > 1 else 0  # one encoder thread per process when processes run in parallel
    job = functools.partial(attempt, compress_video, (fps, short_side, crf, threads))
    run_jobs(todo, job, summary, workers, "compress", progress)
    return summary
