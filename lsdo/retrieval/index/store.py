"""Reading and writing an index directory (the format of :mod:`lsdo.retrieval.index.format`).

:func:`write_index` writes ``features.safetensors`` then ``index.json``, each through a temporary
file renamed into place, and returns the checksums it recorded. :func:`read_index` reads both
back as a :class:`StoredIndex`, checking everything a load can check cheaply (missing,
unreadable or truncated files, wrong version, shapes that disagree with the ids, the recorded
size and, with ``verify=True``, the SHA-256): any problem is a one-line
:class:`~lsdo.errors.LSDOUserError` naming the file. ``mmap=True`` maps the tensors from the file
(copy-on-write ``np.memmap`` at the offsets of the safetensors header) instead of reading them, so
a search with a prefilter touches only the means and its candidates' frames.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lsdo.errors import LSDOUserError
from lsdo.retrieval.index.format import (
    DTYPES,
    FEATURES_FILE,
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    ST_DTYPES,
    check_checksums,
    check_meta,
    checksum_problem,
    file_sha256,
)

log = logging.getLogger(__name__)  # a child of "lsdo.retrieval.index": its settings apply here


@dataclass
class StoredIndex:
    """An index directory as read by :func:`read_index`: the tensors (shapes in the format) and the metadata."""

    path: Path
    features: torch.Tensor  # [V, n, d] float32 | float16
    means: torch.Tensor  # [V, d] float32
    ids: list[str]
    meta: dict[str, Any]
    regions: torch.Tensor | None  # [V, n, 1+K, d]
    region_mask: torch.Tensor | None  # [V, n, 1+K] bool
    checksums: dict[str, dict[str, Any]] | None


def short(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), for one-line errors."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def atomic_write_text(path: Path, text: str, errors: str = "strict") -> None:
    """Write UTF-8 ``text`` to ``path`` via a temporary file and a rename: never a partial or empty file.

    ``errors``: how :meth:`str.encode` treats what UTF-8 cannot hold (lone surrogates); the text is
    encoded before any file is opened, so an encoding error leaves no file behind.
    """
    data = text.encode("utf-8", errors)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_text(doc: Any) -> str:
    """``doc`` as indented JSON; non-ASCII kept readable unless it holds lone surrogates (then escaped)."""
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a path with undecodable bytes in the creation info
        text = json.dumps(doc, indent=1)
    return text


def write_index(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any], ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Write ``path/features.safetensors`` (``tensors``) and then ``path/index.json`` (``meta``, ``ids``).

    The directory is created. Returns the checksums recorded in ``index.json`` ({file: {"sha256", "bytes"}}).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LSDOUserError(f"index: {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (FEATURES_FILE + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
        checksums = {FEATURES_FILE: {"sha256": file_sha256(tmp), "bytes": tmp.stat().st_size}}
        os.replace(tmp, path / FEATURES_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    doc = {"format": FORMAT, "version": FORMAT_VERSION, **meta, "checksums": checksums, "ids": ids}
    atomic_write_text(path / META_FILE, json_text(doc))  # written last
    return checksums


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(data start, header dict) of a safetensors file, validated against the file size."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("file too short for a safetensors header")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise ValueError("header length runs past the end of the file")
        header = json.loads(fh.read(n))
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, stop = entry["data_offsets"]
        if 8 + n + stop > size:
            raise ValueError(f"tensor '{name}' runs past the end of the file (truncated)")
    return 8 + n, header


def read_features(path: Path, mmap: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of ``features.safetensors``; LSDOUserError naming the file when unreadable."""
    if not path.is_file():
        raise LSDOUserError(f"index: {path} is missing (rebuild the index with lsdo-index build)")
    try:
        base, header = read_header(path)
        meta = header.get("__metadata__") or {}
        if not mmap:
            return load_file(str(path)), meta
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if entry["dtype"] not in ST_DTYPES:
                raise ValueError(f"tensor '{name}' has dtype {entry['dtype']} (expected F32, F16 or BOOL)")
            dtype = np.dtype(ST_DTYPES[entry["dtype"]])
            shape = tuple(int(s) for s in entry["shape"])
            start, stop = entry["data_offsets"]
            if stop - start != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor '{name}': {stop - start} bytes for shape {list(shape)}")
            # copy-on-write map: pages are read on access, writes (none here) never reach the file
            array = np.memmap(path, dtype=dtype, mode="c", offset=base + start, shape=shape)
            tensors[name] = torch.from_numpy(array)
        return tensors, meta
    except LSDOUserError:
        raise
    except Exception as exc:  # SafetensorError, ValueError, json errors, OSError
        raise LSDOUserError(f"index: {path} is corrupt or truncated ({short(exc)}); rebuild the index") from None


def read_index(path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> StoredIndex:
    """Read an index directory written by :func:`write_index`; any problem is a one-line LSDOUserError.

    ``path`` may also name one of its two files. ``verify``: check ``features.safetensors`` against
    its recorded SHA-256 (else only its size); an index without checksums loads with a warning.
    """
    path = Path(path)
    if path.is_file() and path.name in (META_FILE, FEATURES_FILE):
        path = path.parent
    if not path.exists():
        raise LSDOUserError(f"index: {path} does not exist (build one with: lsdo-index build ... out={path})")
    if not path.is_dir():
        raise LSDOUserError(f"index: {path} is not an index directory ({META_FILE} + {FEATURES_FILE})")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise LSDOUserError(f"index: {meta_path} is missing; is {path} an index written by lsdo-index build?")
    try:
        doc = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LSDOUserError(f"index: {meta_path} is not valid JSON ({short(exc)}); rebuild the index") from None
    meta, ids = check_meta(doc, meta_path)
    checksums = check_checksums(doc, meta_path)
    feats_path = path / FEATURES_FILE
    tensors, st_meta = read_features(feats_path, mmap)
    if checksums is None:
        log.warning(
            "index %s has no checksums (written by an older lsdo): its contents cannot be verified; "
            "rebuild it to add them",
            path,
        )
    else:
        problem = checksum_problem(feats_path, checksums.get(FEATURES_FILE), hash_it=verify)
        if problem:
            raise LSDOUserError(
                f"index: {feats_path} {problem}: the file is damaged or was changed after the build; "
                f"rebuild the index (lsdo-index verify index={path} checks every file)"
            )
    if st_meta.get("version") not in (None, str(FORMAT_VERSION)):
        raise LSDOUserError(
            f"index: {feats_path} has format version {st_meta.get('version')}, this lsdo reads {FORMAT_VERSION}"
        )
    features, means = tensors.get("features"), tensors.get("means")
    if features is None or means is None:
        raise LSDOUserError(f"index: {feats_path} lacks the 'features' / 'means' tensors; rebuild the index")
    v, n, d, dtype = len(ids), meta["num_frames"], meta["embed_dim"], DTYPES[meta["dtype"]]
    if tuple(features.shape) != (v, n, d) or features.dtype != dtype:
        raise LSDOUserError(
            f"index: {feats_path} holds features {list(features.shape)} {features.dtype}, but {meta_path} "
            f"lists [{v}, {n}, {d}] {dtype} ({v} ids); the two files do not belong together, rebuild the index"
        )
    if tuple(means.shape) != (v, d) or means.dtype != torch.float32:
        raise LSDOUserError(
            f"index: {feats_path} holds means {list(means.shape)} {means.dtype}, expected [{v}, {d}] float32"
        )
    regions, region_mask = tensors.get("regions"), tensors.get("region_mask")
    if "regions" in meta or regions is not None or region_mask is not None:
        info = meta.get("regions")
        k = info.get("num_regions") if isinstance(info, dict) else None
        if not isinstance(k, int) or regions is None or region_mask is None:
            raise LSDOUserError(
                f"index: {meta_path} and {feats_path} disagree about region embeddings; rebuild the index"
            )
        if tuple(regions.shape) != (v, n, 1 + k, d) or regions.dtype != dtype:
            raise LSDOUserError(
                f"index: {feats_path} holds regions {list(regions.shape)} {regions.dtype}, expected "
                f"[{v}, {n}, {1 + k}, {d}] {dtype}; rebuild the index"
            )
        if tuple(region_mask.shape) != (v, n, 1 + k) or region_mask.dtype != torch.bool:
            raise LSDOUserError(
                f"index: {feats_path} holds region_mask {list(region_mask.shape)} {region_mask.dtype}, "
                f"expected [{v}, {n}, {1 + k}] bool; rebuild the index"
            )
    return StoredIndex(path, features, means, ids, meta, regions, region_mask, checksums)
