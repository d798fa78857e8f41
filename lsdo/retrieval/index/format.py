"""The index's on-disk format: names, the layout of the files, and the checks of ``index.json``.

An index is a directory of shards (safetensors files, no pickle) and ``index.json``::

    <index>/
      features.safetensors          shard 0; shard k >= 1: features-<k:06d>.safetensors (written by appends)
        features     [Vk, n, d]       float32 | float16   fused frame features f_m (encode_video's output)
        means        [Vk, d]          float32             L2-normalised mean of the *stored* frames (prefilter)
        regions      [Vk, n, 1+K, d]  as features         optional: every frame's region set (slot 0 global)
        region_mask  [Vk, n, 1+K]     bool                optional, with regions: valid set members
        rerank_keys  [Vk, n, d]       float32             optional (rerank): XPoolScorer's keys W_k LN(f) + b_k
        rerank_frames [Vk, n, d]      float32             optional (rerank): XPoolScorer's frames_g (g * A_j)
        rerank_mix   [Vk, m, n]       float64             optional (rerank): XPoolScorer's mix_t (Grams, forms)
        metadata {"format": "lsdo-video-index", "version": "2"}
      prefilter.faiss               optional: a trained FAISS IVF-PQ index over the first P means
      index.json                    UTF-8 JSON, written last (the commit point of a save or an append)
        format       "lsdo-video-index"        version     2 (1: an older single-file index, still read)
        num_videos   V    num_frames   n    embed_dim   d    dtype   "float32" | "float16"
        model        {fingerprint, impl, variant, embed_dim, config_hash, config}  (lsdo.retrieval.index.fingerprint)
        created      {time, lsdo, torch, ...creation info}
        regions      optional, only with the region tensors: {method, k, grid, ..., num_regions: K}
        rerank       optional, only with the rerank tensors: {impl, num_mix: m, bytes_per_video, ...}
        shards       [{"file": name, "num_videos": Vk}, ...] in row order, sum Vk = V  (absent in version 1:
                     one shard, features.safetensors)
        prefilter    optional: {"file": "prefilter.faiss", "kind": "ivfpq", "nlist", "pq", "num_videos": P}
        checksums    {file: {"sha256": 64 hex digits, "bytes": size}} for every shard (and prefilter.faiss)
        ids          V unique strings, row i of the concatenated shards is video ids[i]

Rows are the concatenation of the shards in the order of ``shards``. A save to a new directory
writes one shard; a save to the directory an index was loaded from / saved to writes only the rows
added since as one new shard (an append: no existing file is rewritten, only ``index.json``).
Every file is written atomically (a temporary file renamed into place), ``index.json`` last
(:mod:`lsdo.retrieval.index.store`). An index without ``regions`` / ``rerank`` has neither the
tensors nor the keys. This module holds the names, the :class:`FrameStore` protocol (what the
features must provide), the checksums and the validation of a parsed ``index.json``: each problem
is a one-line :class:`~lsdo.errors.LSDOUserError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lsdo.errors import LSDOUserError

FORMAT = "lsdo-video-index"
FORMAT_VERSION = 2  # written; READ_VERSIONS are read
READ_VERSIONS = (1, 2)
FEATURES_FILE = "features.safetensors"  # shard 0 (the only file of a version-1 index)
META_FILE = "index.json"
PREFILTER_FILE = "prefilter.faiss"
SHARD_FILE_RE = re.compile(r"features(?:-(\d{6}))?\.safetensors")
DTYPES = {"float32": torch.float32, "float16": torch.float16}  # index.json "dtype" -> storage dtype
ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BOOL": np.bool_}  # safetensors dtypes read
TORCH_ST = {torch.float32: "F32", torch.float16: "F16", torch.float64: "F64", torch.bool: "BOOL"}
HASH_BLOCK = 1 << 22  # bytes read at a time when hashing a file
RERANK_TENSORS = ("rerank_keys", "rerank_frames", "rerank_mix")  # the stored XPoolScorer tensors


def shard_file(number: int) -> str:
    """The file of shard ``number``: ``features.safetensors`` for 0, ``features-000001.safetensors`` for 1, ..."""
    return FEATURES_FILE if number == 0 else f"features-{number:06d}.safetensors"


class FrameStore(Protocol):
    """What a :class:`~lsdo.retrieval.index.VideoIndex` needs from its frame features: a [V, n, d] tensor-like.

    A ``torch.Tensor`` is one; so is :class:`~lsdo.retrieval.index.shards.ShardedRows` (the shards
    of a memory-mapped index) and any object with ``shape``, ``dtype`` and ``__getitem__`` that
    accepts a ``slice`` (consecutive videos) or a 1-D LongTensor (a set of videos) and returns a
    tensor [k, n, d] (used by ``bench/fast_inference.py`` to generate features lazily).
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


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and len(entry["sha256"]) == 64
        and isinstance(entry.get("bytes"), int)
    )


def check_checksums(doc: dict[str, Any], meta_path: Path) -> dict[str, dict[str, Any]] | None:
    """``index.json``'s ``checksums`` (file -> {"sha256": hex, "bytes": int}); None when absent (an older index).

    Version 1 must record ``features.safetensors``; version 2 may lack an entry for a shard of an
    older index it was appended to (that shard is then unverified), but every entry must be valid.
    """
    if "checksums" not in doc:
        return None
    sums = doc["checksums"]
    valid = isinstance(sums, dict) and all(_valid_entry(e) for e in sums.values())
    if valid and doc.get("version") == 1:
        valid = _valid_entry(sums.get(FEATURES_FILE))
    if not valid:
        raise LSDOUserError(f"index: {meta_path} has a malformed 'checksums' entry; rebuild the index")
    return sums


def check_shards(doc: dict[str, Any], meta_path: Path) -> list[dict[str, Any]]:
    """The shard table [{"file", "num_videos"}] of a parsed ``index.json`` (version 1: its one file)."""
    if doc.get("version") == 1:
        return [{"file": FEATURES_FILE, "num_videos": doc["num_videos"]}]
    shards = doc.get("shards")

    def ok(entry: Any) -> bool:
        return (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and SHARD_FILE_RE.fullmatch(entry["file"]) is not None
            and isinstance(entry.get("num_videos"), int)
            and entry["num_videos"] >= 0
        )

    if not isinstance(shards, list) or not shards or not all(ok(e) for e in shards):
        raise LSDOUserError(f"index: {meta_path} has no valid 'shards' table; rebuild the index")
    if len({e["file"] for e in shards}) != len(shards):
        raise LSDOUserError(f"index: {meta_path} lists a shard twice; rebuild the index")
    return [{"file": e["file"], "num_videos": e["num_videos"]} for e in shards]


def check_meta(doc: Any, meta_path: Path) -> tuple[dict[str, Any], list[str]]:
    """(metadata, ids) of a parsed ``index.json``: everything but format, version, ids, shards and checksums."""

    def bad(what: str) -> LSDOUserError:
        return LSDOUserError(f"index: {meta_path} {what}; rebuild the index")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"is not an lsdo video index (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") not in READ_VERSIONS:
        raise LSDOUserError(
            f"index: {meta_path} has format version {doc.get('version')!r}; this lsdo reads versions "
            f"{', '.join(map(str, READ_VERSIONS))} (rebuild the index with this version's lsdo-index build)"
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
    meta = {k: v for k, v in doc.items() if k not in ("format", "version", "ids", "checksums", "shards", "prefilter")}
    return meta, ids
