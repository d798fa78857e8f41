"""``lsdo-prepare COMMAND IN_DIR OUT_DIR ...``: data preparation.

* ``compress``: re-encode a video folder to a low rate and a small size (lsdo.data.compress);
* ``frames``: a prepared-frame cache of a video folder, read without a video decoder (lsdo.data.frame_cache);
* ``spatial``: how many captions of a benchmark say left or right, and how many the caption-aware
  flip (``dataset.flip=caption_aware``) would swap or keep unflipped (lsdo.data.spatial).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lsdo.cli.common import Subcommand, subcommands
from lsdo.data import compress, frame_cache, spatial
from lsdo.data.compress import VIDEO_EXTS, CompressOptions
from lsdo.data.frame_cache import FrameCacheOptions
from lsdo.data.spatial import SpatialOptions


def compress_videos(opts: CompressOptions) -> int:
    """0 when every video is compressed or already done, 1 when any failed."""
    exts = tuple(e if e.startswith(".") else f".{e}" for e in opts.ext) or VIDEO_EXTS
    summary = compress.run(
        opts.in_dir,
        opts.out_dir,
        fps=opts.fps,
        short_side=opts.short_side,
        workers=opts.workers,
        exts=exts,
        crf=opts.crf,
        progress=opts.progress,
    )
    print(summary.line())
    return 1 if summary.failed else 0


def cache_frames(opts: FrameCacheOptions) -> int:
    """0 when every video is cached or already done, 1 when any failed."""
    exts = tuple(e if e.startswith(".") else f".{e}" for e in opts.ext) or VIDEO_EXTS
    summary = frame_cache.run(
        opts.in_dir,
        opts.out_dir,
        fps=opts.fps,
        short_side=opts.short_side,
        fmt=opts.format,
        quality=opts.quality,
        workers=opts.workers,
        exts=exts,
        progress=opts.progress,
    )
    print(summary.line())
    return 1 if summary.failed else 0


def spatial_report(opts: SpatialOptions) -> int:
    """Print the counts of every split (and a few examples); 0."""
    print("\n".join(spatial.report(opts)))
    return 0


COMMANDS = {  # exit codes: 0 done, 1 when any video failed (compress, frames), 2 on a user error
    "compress": Subcommand(
        "re-encode a video folder to a low frame rate and a small short side", CompressOptions, compress_videos,
        (compress.__doc__ or "").split("\n\n")[0],
    ),
    "frames": Subcommand(
        "a prepared-frame cache of a video folder (JPEG or uint8 frames, read without a decoder)", FrameCacheOptions,
        cache_frames, (frame_cache.__doc__ or "").split("\n\n")[0],
    ),
    "spatial": Subcommand(
        "captions saying left/right: what dataset.flip=caption_aware would swap or not flip", SpatialOptions,
        spatial_report,
        "Captions that say left or right, and what the caption-aware flip does with them (lsdo.data.spatial).",
    ),
}  # fmt: skip


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-prepare COMMAND ...``."""
    return subcommands("lsdo-prepare", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(prepare_main())
