"""The index's on-disk format: names, the layout of both files, and the checks of ``index.json``.

An index is a directory of two files (no pickle)::

    <index>/
      features.safetensors    safetensors, metadata {"format": "lsdo-video-index", "version": "1"}
        features     [V, n, d]        float32 | float16   fused frame features f_m (encode_video's output)
        means        [V, d]           float32             L2-normalised mean of the *stored* frames (prefilter)
        regions      [V, n, 1+K, d]   as features         optional: every frame's region set (slot 0 global)
        region_mask  [V, n, 1+K]      bool                optional, with regions: valid set members
      index.json              UTF-8 JSON, written last
        format       "lsdo-video-index"        version     1
        num_videos   V    num_frames   n    embed_dim   d    dtype   "float32" | "float16"
        model        {fingerprint, impl, variant, embed_dim, config_hash, config}  (lsdo.retrieval.index.fingerprint)
        created      {time, lsdo, torch, ...creation info}
        regions      optional, only with the region tensors: {method, k, grid, ..., num_regions: K}
        checksums    {"features.safetensors": {"sha256": 64 hex digits, "bytes": size}}  (absent: an older index)
        ids          V unique strings, row i of every tensor is video ids[i]

Both files are written atomically (a temporary file renamed into place), ``index.json`` last
(:mod:`lsdo.retrieval.index.store`). An index without ``regions`` has neither the tensors nor the key
(the original format). This module holds the names, the :class:`FrameStore` protocol (what the
features must provide), the checksums and the validation of a parsed ``index.json``: each problem is
a one-line :class:`~lsdo.errors.LSDOUserError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lsdo.errors import LSDOUserError

FORMAT = "lsdo-video-index"
FORMAT_VERSION = 1
FEATURES_FILE = "features.safetensors"
META_FILE = "index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16}  # index.json "dtype" -> storage dtype
ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BOOL": np.bool_}  # safetensors dtypes an index may hold
HASH_BLOCK = 1 << 22  # bytes read at a time when hashing a file


class FrameStore(Protocol):
    """What a :class:`~lsdo.retrieval.index.VideoIndex` needs from its frame features: a [V, n, d] tensor-like.

    A ``torch.Tensor`` is one; so is any object with ``shape``, ``dtype`` and ``__getitem__``
    that accepts a ``slice`` (consecutive videos) or a 1-D LongTensor (a set of videos) and
    returns a tensor [k, n, d] (used by ``bench/fast_inference.py`` to generate features lazily).
    """

    shape: torch.Size
    dtype: torch.dtype

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor: ...


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's contents, read in blocks (about 1 s per GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def checksum_problem(path: Path, entry: dict[str, Any] | None, hash_it: bool = True) -> str | None:
    """Why ``path`` does not match its recorded ``entry`` ({"sha256", "bytes"}), or None when it does."""
    if entry is None:
        return "has no checksum recorded"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"has {size} bytes but {META_FILE} records {entry['bytes']}"
    if hash_it:
        got = file_sha256(path)
        if got != entry["sha256"]:
            return f"does not match its SHA-256 in {META_FILE} ({got[:12]}... instead of {entry['sha256'][:12]}...)"
    return None


def check_checksums(doc: dict[str, Any], meta_path: Path) -> dict[str, dict[str, Any]] | None:
    """``index.json``'s ``checksums`` (file -> {"sha256": hex, "bytes": int}); None when absent (an older index)."""
    if "checksums" not in doc:
        return None
    sums = doc["checksums"]
    entry = sums.get(FEATURES_FILE) if isinstance(sums, dict) else None
    valid = (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and len(entry["sha256"]) == 64
        and isinstance(entry.get("bytes"), int)
    )
    if not valid:
        raise LSDOUserError(f"index: {meta_path} has a malformed 'checksums' entry; rebuild the index")
    return sums


def check_meta(doc: Any, meta_path: Path) -> tuple[dict[str, Any], list[str]]:
    """(metadata, ids) of a parsed ``index.json``: everything but format, version, ids and checksums."""

    def bad(what: str) -> LSDOUserError:
        return LSDOUserError(f"index: {meta_path} {what}; rebuild the index")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"is not an lsdo video index (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise LSDOUserError(
            f"index: {meta_path} has format version {doc.get('version')!r}; this lsdo reads version "
            f"{FORMAT_VERSION} (rebuild the index with this version's lsdo-index build)"
        )
    ids = doc.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad("has no list of string ids")
    if len(set(ids)) != len(ids):
        raise bad("lists repeated ids")
    for key in ("num_videos", "num_frames", "embed_dim"):
        if not isinstance(doc.get(key), int) or doc[key] < 0:
            raise bad(f"has no valid '{key}'")
    if doc["num_videos"] != len(ids):
        raise bad(f"says {doc['num_videos']} videos but lists {len(ids)} ids")
    if doc.get("dtype") not in DTYPES:
        raise bad(f"has dtype {doc.get('dtype')!r} (expected float32 or float16)")
    if not isinstance(doc.get("model"), dict) or not isinstance(doc["model"].get("fingerprint"), str):
        raise bad("has no model fingerprint")
    meta = {k: v for k, v in doc.items() if k not in ("format", "version", "ids", "checksums")}
    return meta, ids
