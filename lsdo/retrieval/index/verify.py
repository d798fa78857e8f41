"""The full check of an index directory (``lsdo-index verify``): structure, checksums and finite values.

:func:`verify_index` loads the index without hashing (so a structural problem is the one-line
LSDOUserError of ``VideoIndex.load``), then hashes every shard (and a stored prefilter) against
``index.json`` and reads every stored value once for NaN / inf; what it finds is an :class:`IndexCheck`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lsdo.names import printable
from lsdo.retrieval.index.finite import nonfinite_rows
from lsdo.retrieval.index.format import checksum_problem
from lsdo.retrieval.index.video_index import VideoIndex


@dataclass
class IndexCheck:
    """What :func:`verify_index` found.

    ``files``: (file name, ``"ok"`` | ``"FAILED"`` | ``"unverified"``, detail) per data file (every
    shard, then ``prefilter.faiss`` when stored); ``nonfinite``: ids of the videos whose stored
    features / means / regions / re-ranking tensors hold NaN or inf.
    """

    path: Path
    num_videos: int
    files: list[tuple[str, str, str]] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.nonfinite and all(status != "FAILED" for _, status, _ in self.files)

    def problems(self) -> list[str]:
        """One phrase per problem (empty when :attr:`ok`)."""
        out = [f"{self.path / name} {detail}" for name, status, detail in self.files if status == "FAILED"]
        if self.nonfinite:
            more = f" and {len(self.nonfinite) - 1} more" if len(self.nonfinite) > 1 else ""
            out.append(f"non-finite values (NaN / inf) stored for video '{printable(self.nonfinite[0])}'{more}")
        return out


def verify_index(path: str | os.PathLike) -> IndexCheck:
    """Check an index directory completely: structure, checksums and finite values (``lsdo-index verify``).

    A structural problem (missing file, unreadable JSON, truncated tensors, shapes that disagree)
    raises the one-line LSDOUserError of :meth:`VideoIndex.load`; everything else is reported in the
    returned :class:`IndexCheck` (a checksum mismatch of any shard, a file without a recorded
    checksum, videos with NaN / inf). Reads every byte of the index once for the hashes and once
    for the values.
    """
    index = VideoIndex.load(path, mmap=True, verify=False)
    root = Path(index.source or path)
    check = IndexCheck(root, len(index))
    for name in index.stored_files:
        entry = (index.checksums or {}).get(name)
        if entry is None:
            check.files.append((name, "unverified", "has no checksum (written by an older lsdo; rebuild to add one)"))
            continue
        if not (root / name).is_file():
            check.files.append((name, "FAILED", "is missing"))
            continue
        problem = checksum_problem(root / name, entry)
        if problem:
            check.files.append((name, "FAILED", problem))
        else:
            check.files.append((name, "ok", f"sha256 {entry['sha256'][:16]}..., {entry['bytes']} bytes"))
    bad: set[int] = set()
    stores = [index.features, index.means, index.regions, *(index.rerank or {}).values()]
    for tensor in stores:
        if tensor is not None:
            bad.update(nonfinite_rows(tensor))
    check.nonfinite = [index.ids[i] for i in sorted(bad)]
    return check
