"""``lsdo-index build|info|verify``: make, describe and check a persistent video index.

::

    lsdo-index build ckpt=PATH videos=DIR out=INDEX [num_frames=12] [batch_size=16] [fp16=true]
                     [ext=.mp4,.avi,...] [workers=0] [shard_size=256] [device=auto] [overwrite=false]
                     [region_encoder=none|inverse_attention|grid] [region_k=4] [grid=2]
                     [rerank=false] [index_shard=50000] [prefilter=auto|ivfpq|none] [append=false]
                     [rank=0 world=1]
    lsdo-index info index=INDEX
    lsdo-index verify index=INDEX

``build`` (resumable; :mod:`lsdo.retrieval.build`) encodes every video under DIR (``append=true``:
those not in INDEX yet, as new shards; ``world=N rank=i``: the i-th of N processes, the last to
finish writes the index). ``info`` prints an index's metadata and its files. ``verify`` checks an
index completely: its structure, every shard (and a stored prefilter) against the SHA-256 recorded
in ``index.json`` when it was written, and that every stored value is finite; it prints one line
per check and ends with ``OK`` (exit 0) or a one-line ``error:`` naming what failed (exit 2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lsdo.cli.common import Subcommand, option, subcommands
from lsdo.errors import LSDOUserError
from lsdo.retrieval.build import BuildOptions, build_index
from lsdo.retrieval.index import VideoIndex, printable, verify_index


@dataclass
class InfoArgs:
    index: str = option("index directory")


@dataclass
class VerifyArgs:
    index: str = option("index directory to check (structure, SHA-256 checksums, finite values)")


def index_info(opts: InfoArgs) -> int:
    """``lsdo-index info``: print an index's metadata (quick: the checksum is not computed; see ``verify``)."""
    index = VideoIndex.load(opts.index, mmap=True, verify=False)
    meta = {k: v for k, v in index.meta.items()}
    meta["files"] = index.stored_files
    if index.checksums is not None:
        meta["checksums"] = index.checksums
    print(repr(index))
    print(json.dumps(meta, indent=1))
    return 0


def index_verify(opts: VerifyArgs) -> int:
    """``lsdo-index verify``: structure, SHA-256 checksums and finite values of an index; exit 0 (OK) or 2."""
    check = verify_index(opts.index)  # a structural problem: LSDOUserError (one line)
    for name, status, detail in check.files:
        print(f"{status:<10}  {name}  {detail}")
    if check.nonfinite:
        first = printable(check.nonfinite[0])
        count = (
            f"{len(check.nonfinite)} video holds"
            if len(check.nonfinite) == 1
            else f"{len(check.nonfinite)} videos hold"
        )
        print(f"{'FAILED':<10}  values  {count} NaN / inf, e.g. '{first}'")
    else:
        print(f"{'ok':<10}  values  every stored value of the {check.num_videos} videos is finite")
    where = printable(str(check.path))
    if not check.ok:
        raise LSDOUserError(f"index {where}: " + "; ".join(check.problems()) + "; rebuild it with lsdo-index build")
    unverified = any(status == "unverified" for _, status, _ in check.files)
    note = " (structure and values only: no checksum recorded; rebuild the index to add one)" if unverified else ""
    print(f"OK: {where}, {check.num_videos} videos{note}")
    return 0


COMMANDS = {
    "build": Subcommand("encode every video under a folder into an index (resumable)", BuildOptions, build_index),
    "info": Subcommand("print an index's metadata", InfoArgs, index_info),
    "verify": Subcommand("check an index: structure, SHA-256 checksums, finite values", VerifyArgs, index_verify),
}


def index_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-index``."""
    return subcommands("lsdo-index", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(index_main())
