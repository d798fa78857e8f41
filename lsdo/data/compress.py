"""Re-encode a video folder to a low frame rate and a small short side (CLIP4Clip-style compression).

    python -m lsdo.data.compress IN_DIR OUT_DIR [--fps 3] [--short-side 224] [--workers N] [--ext .mp4]
    lsdo-prepare compress IN_DIR OUT_DIR ...

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

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from lsdo.data.video import VIDEO_EXTENSIONS, VideoDecodeError, _av_open, _reason, open_h264_writer
from lsdo.errors import DataNotFoundError, LSDOUserError
from lsdo.names import printable

VIDEO_EXTS = VIDEO_EXTENSIONS  # the one list (lsdo.data.video)
MAX_LISTED_CLASHES = 10  # name clashes spelled out in the error line (the count says how many in all)


def output_path(src: Path, in_dir: Path, out_dir: Path) -> Path:
    """Where ``src`` (under ``in_dir``) is written: the same relative folder and stem under ``out_dir``, ``.mp4``."""
    return (out_dir / src.relative_to(in_dir)).with_suffix(".mp4")


def name_clashes(sources: Sequence[Path], in_dir: Path, out_dir: Path) -> list[tuple[Path, list[Path]]]:
    """(output, inputs) for every output that two or more ``sources`` would be written to (sorted)."""
    by_dst: dict[Path, list[Path]] = {}
    for src in sources:
        by_dst.setdefault(output_path(src, in_dir, out_dir), []).append(src)
    return sorted((dst, sorted(srcs)) for dst, srcs in by_dst.items() if len(srcs) > 1)


@dataclass
class Summary:
    """Counts of one run; ``failures`` holds (input file, reason)."""

    compressed: int = 0
    skipped: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        return f"compressed {self.compressed}, skipped {self.skipped} (already done), failed {self.failed}"


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side = ``short_side`` and the aspect ratio kept, both even."""

    def even(x: float) -> int:
        return max(2, 2 * round(x / 2))

    if width <= height:
        return even(short_side), even(height * short_side / width)
    return even(width * short_side / height), even(short_side)


def find_videos(in_dir: Path, exts: Iterable[str] = VIDEO_EXTS, exclude: Path | None = None) -> list[Path]:
    """Video files under ``in_dir`` (recursive, sorted), skipping hidden names and the ``exclude`` tree."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    found = []
    for root, dirs, files in os.walk(in_dir):
        rootp = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or rootp / d != exclude))
        found += [rootp / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in exts]
    return sorted(found)


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
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            start = stream.start_time or 0
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

                prev = prev_scaled = None
                prev_t, decoded = 0.0, 0
                try:
                    for frame in container.decode(stream):
                        if frame.pts is not None:
                            t = float((frame.pts - start) * stream.time_base)
                        else:
                            t = decoded / rate
                        decoded += 1
                        cur_scaled = None
                        while written / fps <= t + 1e-9:  # output slots up to this frame's time
                            slot = written / fps
                            if prev is None or t - slot <= slot - prev_t:  # this frame is the nearer one
                                if cur_scaled is None:
                                    cur_scaled = scaled(frame)
                                emit(cur_scaled)
                            else:
                                if prev_scaled is None:
                                    prev_scaled = scaled(prev)
                                emit(prev_scaled)
                        prev, prev_scaled, prev_t = frame, cur_scaled, t
                except av.error.FFmpegError as exc:
                    of = f" of {stream.frames}" if stream.frames else ""
                    raise VideoDecodeError(f"{src}: undecodable frame {decoded}{of} ({_reason(exc)})") from exc
                if prev is None:
                    raise VideoDecodeError(f"{src}: the video stream holds no decodable frames")
                # The last source frame covers the slots up to the end of its display time.
                end_slots = max(1, round((prev_t + 1 / rate) * fps))
                while written < end_slots:
                    if prev_scaled is None:
                        prev_scaled = scaled(prev)
                    emit(prev_scaled)
                for packet in ostream.encode(None):
                    out.mux(packet)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _job(src: Path, dst: Path, fps: float, short_side: int, crf: int, threads: int) -> str | None:
    """Worker: None on success, else the failure reason (never raises)."""
    try:
        compress_video(src, dst, fps, short_side, crf, threads)
    except LSDOUserError as exc:
        return str(exc).removeprefix(f"{src}: ").replace(str(src), printable(str(src)))
    except Exception as exc:  # an unexpected PyAV / OS error must not stop the batch
        return f"{type(exc).__name__}: {_reason(exc)}"
    return None


def run(
    in_dir: Path,
    out_dir: Path,
    fps: float = 3.0,
    short_side: int = 224,
    workers: int = 1,
    exts: Sequence[str] = VIDEO_EXTS,
    crf: int = 23,
    progress: bool | None = None,
) -> Summary:
    """Compress every video under ``in_dir`` into ``out_dir``; see the module docstring."""
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise DataNotFoundError(f"input folder not found: {in_dir}")
    if out_dir.resolve() == in_dir.resolve():
        raise LSDOUserError(f"OUT_DIR must differ from IN_DIR (outputs would overwrite inputs): {out_dir}")
    if fps <= 0 or short_side < 2 or workers < 1:
        raise LSDOUserError(f"need --fps > 0, --short-side >= 2, --workers >= 1; got {fps}, {short_side}, {workers}")
    inside = out_dir.resolve().is_relative_to(in_dir.resolve())  # OUT_DIR under IN_DIR: do not recurse into it
    sources = find_videos(in_dir, exts, exclude=out_dir if inside else None)
    if not sources:
        raise DataNotFoundError(f"no videos ({', '.join(exts)}) under {in_dir}")

    clashes = name_clashes(sources, in_dir, out_dir)
    if clashes:  # refused before any work: one of each group would silently overwrite the others
        listed = "; ".join(
            " and ".join(printable(str(s.relative_to(in_dir))) for s in srcs)
            + f" -> {printable(str(dst.relative_to(out_dir)))}"
            for dst, srcs in clashes[:MAX_LISTED_CLASHES]
        )
        more = f"; ... ({len(clashes) - MAX_LISTED_CLASHES} more)" if len(clashes) > MAX_LISTED_CLASHES else ""
        raise LSDOUserError(
            f"{len(clashes)} output name clash(es) under {printable(str(out_dir))}, nothing compressed: "
            f"{listed}{more}; "
            "rename one file of each group (or pick one extension with --ext)"
        )

    summary, todo = Summary(), []
    for src in sources:
        dst = output_path(src, in_dir, out_dir)
        if dst.is_file() and dst.stat().st_size > 0:
            summary.skipped += 1
        else:
            todo.append((src, dst))

    bar = tqdm(total=len(todo), unit="video", desc="compress", disable=(not progress) if progress is not None else None)

    def done(src: Path, reason: str | None) -> None:
        if reason is None:
            summary.compressed += 1
        else:
            summary.failures.append((src, reason))
            bar.write(
                f"failed: {printable(str(src))}: {printable(str(reason))}", file=sys.stderr
            )  # one line per failure
        bar.update()

    threads = 1 if workers > 1 else 0  # one encoder thread per process when processes run in parallel
    if workers == 1 or len(todo) <= 1:
        for src, dst in todo:
            done(src, _job(src, dst, fps, short_side, crf, threads))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {pool.submit(_job, src, dst, fps, short_side, crf, threads): src for src, dst in todo}
            for fut in as_completed(futures):
                try:
                    reason = fut.result()
                except BrokenProcessPool:
                    reason = "a worker process died (crash or out of memory) while this file was queued; rerun to retry"
                done(futures[fut], reason)
    bar.close()
    return summary


def build_parser(prog: str = "python -m lsdo.data.compress") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder of videos (searched recursively)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder (same sub-folders, .mp4)")
    p.add_argument("--fps", type=float, default=3.0, help="output frame rate (default 3)")
    p.add_argument("--short-side", type=int, default=224, help="output short side in pixels (default 224)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    p.add_argument(
        "--ext",
        action="append",
        default=None,
        help=f"input extension to include; repeat for several (default: {' '.join(VIDEO_EXTS)})",
    )
    p.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default 23)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m lsdo.data.compress") -> int:
    """Command line: 0 when every video is compressed or already done, 1 when any failed, 2 on a usage error."""
    args = build_parser(prog).parse_args(argv)
    exts = tuple(e for arg in args.ext for e in arg.split(",") if e) if args.ext else VIDEO_EXTS
    try:
        summary = run(
            args.in_dir,
            args.out_dir,
            fps=args.fps,
            short_side=args.short_side,
            workers=args.workers,
            exts=exts,
            crf=args.crf,
            progress=False if args.no_progress else None,
        )
    except LSDOUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.line())
    return 1 if summary.failed else 0


PREPARE_USAGE = """usage: lsdo-prepare {compress} ...

  compress   re-encode a video folder to a low frame rate and a small short side
             (lsdo-prepare compress --help for its options)"""


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """``lsdo-prepare SUBCOMMAND ...``: data preparation tools (``compress``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"compress": main}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        known = bool(argv) and argv[0] in ("-h", "--help")
        if argv and not known:
            print(f"error: unknown command '{argv[0]}'", file=sys.stderr)
        print(PREPARE_USAGE, file=sys.stdout if known else sys.stderr)
        return 0 if known else 2
    return commands[argv[0]](argv[1:], prog=f"lsdo-prepare {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
