"""Reading and writing an index directory (the format of :mod:`lsdo.retrieval.index.format`).

Writing: :func:`write_shard` streams tensors (any :class:`~lsdo.retrieval.index.format.FrameStore`,
e.g. the memory-mapped shards of a loaded index) into one safetensors file, a block of rows at a
time, hashing as it writes: memory holds one block, never the whole index. :func:`write_meta`
writes ``index.json`` (the commit point: a shard or prefilter file not listed there is not part of
the index). :func:`write_index` is a full save (one shard), :func:`append_shard` an append (one new
shard; no existing file is rewritten but ``index.json``). Every file goes through a temporary
file renamed into place.

Reading: :func:`read_index` reads a directory back as a :class:`StoredIndex`, checking everything
a load can check cheaply (missing, unreadable or truncated files, wrong version, shapes that
disagree with the ids or between shards, the recorded sizes and, with ``verify=True``, every
shard's SHA-256): any problem is a one-line :class:`~lsdo.errors.LSDOUserError` naming the file.
``mmap=True`` maps each shard's tensors from its file (copy-on-write ``np.memmap`` at the offsets
of the safetensors header) instead of reading them, so a search with a prefilter touches only the
means and its candidates' rows; several shards are then one
:class:`~lsdo.retrieval.index.shards.ShardedRows` per tensor. ``mmap=False`` reads every shard
into memory (one tensor per name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from lsdo.errors import LSDOUserError
from lsdo.retrieval.index.format import (
    DTYPES,
    FEATURES_FILE,
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    PREFILTER_FILE,
    READ_VERSIONS,
    RERANK_TENSORS,
    SHARD_FILE_RE,
    ST_DTYPES,
    TORCH_ST,
    FrameStore,
    check_checksums,
    check_meta,
    check_shards,
    checksum_problem,
    shard_file,
)
from lsdo.retrieval.index.shards import ShardedRows, row_slices

log = logging.getLogger(__name__)  # a child of "lsdo.retrieval.index": its settings apply here

WRITE_BLOCK = 1 << 26  # bytes of rows converted and written at a time by write_shard


@dataclass
class StoredIndex:
    """An index directory as read by :func:`read_index`: the tensors (shapes in the format) and the metadata."""

    path: Path
    features: FrameStore  # [V, n, d] float32 | float16
    means: FrameStore  # [V, d] float32
    ids: list[str]
    meta: dict[str, Any]
    regions: FrameStore | None  # [V, n, 1+K, d]
    region_mask: FrameStore | None  # [V, n, 1+K] bool
    checksums: dict[str, dict[str, Any]] | None
    shards: list[dict[str, Any]] = field(default_factory=list)  # [{"file", "num_videos"}]
    rerank: dict[str, FrameStore] | None = None  # RERANK_TENSORS -> [V, ...]
    prefilter: dict[str, Any] | None = None  # index.json's "prefilter" entry (file not read here)


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


# ------------------------------------------------------------------------------------------- writing
def _blocks(store: FrameStore) -> Iterable[memoryview]:
    """The bytes of ``store`` (C order), a block of at most ``WRITE_BLOCK`` bytes' worth of rows at a time."""
    num = int(store.shape[0])
    row_bytes = max(math.prod(store.shape[1:]) * torch.empty((), dtype=store.dtype).element_size(), 1)
    rows = max(WRITE_BLOCK // row_bytes, 1)
    for piece in row_slices(store, 0, num, rows):
        array = piece.detach().to("cpu").contiguous().numpy()
        yield memoryview(array).cast("B")


def write_shard(path: Path, tensors: dict[str, FrameStore], version: int = FORMAT_VERSION) -> dict[str, Any]:
    """Write ``tensors`` (name -> [rows, ...] store) as the safetensors file ``path``; returns {"sha256", "bytes"}.

    Streams the rows (memory: one block) and hashes while writing, through ``path.tmp`` renamed into place.
    """
    header: dict[str, Any] = {"__metadata__": {"format": FORMAT, "version": str(version)}}
    offset = 0
    for name, store in tensors.items():
        if store.dtype not in TORCH_ST:
            raise TypeError(f"tensor '{name}' has dtype {store.dtype}; an index stores {sorted(TORCH_ST.values())}")
        size = math.prod(store.shape) * torch.empty((), dtype=store.dtype).element_size()
        span = [offset, offset + size]
        header[name] = {"dtype": TORCH_ST[store.dtype], "shape": list(store.shape), "data_offsets": span}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    digest = hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            for chunk in (len(text).to_bytes(8, "little"), text):
                fh.write(chunk)
                digest.update(chunk)
            for store in tensors.values():
                for block in _blocks(store):
                    fh.write(block)
                    digest.update(block)
        size = tmp.stat().st_size
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"sha256": digest.hexdigest(), "bytes": size}


def write_bytes(path: Path, data: bytes | np.ndarray) -> dict[str, Any]:
    """Write ``data`` to ``path`` atomically; returns {"sha256", "bytes"}."""
    view = memoryview(data).cast("B") if isinstance(data, np.ndarray) else memoryview(data)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(view)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"sha256": hashlib.sha256(view).hexdigest(), "bytes": len(view)}


def write_meta(
    path: Path,
    meta: dict[str, Any],
    ids: list[str],
    shards: list[dict[str, Any]],
    checksums: dict[str, dict[str, Any]],
    prefilter: dict[str, Any] | None = None,
) -> None:
    """Write ``path/index.json`` (version 2): the commit point of a save or an append."""
    doc = {"format": FORMAT, "version": FORMAT_VERSION, **meta, "shards": shards}
    if prefilter is not None:
        doc["prefilter"] = prefilter
    doc.update(checksums=checksums, ids=ids)
    atomic_write_text(path / META_FILE, json_text(doc))


def listed_files(path: Path) -> set[str]:
    """The data files an existing ``index.json`` at ``path`` lists (shards and prefilter), or none."""
    try:
        doc = json.loads((path / META_FILE).read_bytes().decode("utf-8"))
        names = {FEATURES_FILE} | {e["file"] for e in doc.get("shards", []) if isinstance(e, dict)}
        if isinstance(doc.get("prefilter"), dict):
            names.add(PREFILTER_FILE)
        return {n for n in names if isinstance(n, str) and (SHARD_FILE_RE.fullmatch(n) or n == PREFILTER_FILE)}
    except (OSError, ValueError, AttributeError):
        return set()


def prepare_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise LSDOUserError(f"index: {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)


def write_index(
    path: str | os.PathLike, tensors: dict[str, FrameStore], meta: dict[str, Any], ids: list[str]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """A full save: ``path/features.safetensors`` (every row of ``tensors``), then ``path/index.json``.

    The directory is created; the files of an index that was there before and are not part of this
    one (its other shards, its prefilter) are removed after ``index.json`` is written. Returns the
    shard table and the checksums recorded in ``index.json``.
    """
    path = Path(path)
    prepare_dir(path)
    before = listed_files(path)
    checksums = {FEATURES_FILE: write_shard(path / FEATURES_FILE, tensors)}
    shards = [{"file": FEATURES_FILE, "num_videos": len(ids)}]
    write_meta(path, meta, ids, shards, checksums)
    for name in before - {FEATURES_FILE}:
        (path / name).unlink(missing_ok=True)
    return shards, checksums


def append_shard(
    path: Path,
    tensors: dict[str, FrameStore],
    meta: dict[str, Any],
    ids: list[str],
    shards: list[dict[str, Any]],
    checksums: dict[str, dict[str, Any]],
    prefilter: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """An append: the new rows ``tensors`` as shard ``len(shards)``, then ``index.json`` listing it.

    ``shards`` / ``checksums`` / ``prefilter``: what the directory's ``index.json`` records now
    (kept as they are: no existing file is read or rewritten). Returns the new table and checksums.
    """
    name = shard_file(len(shards))
    entry = write_shard(path / name, tensors)
    rows = int(next(iter(tensors.values())).shape[0])
    shards = [*shards, {"file": name, "num_videos": rows}]
    checksums = {**checksums, name: entry}
    write_meta(path, meta, ids, shards, checksums, prefilter)
    return shards, checksums


# ------------------------------------------------------------------------------------------- reading
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
    """(tensors, metadata) of one shard file; LSDOUserError naming the file when unreadable."""
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
                raise ValueError(f"tensor '{name}' has dtype {entry['dtype']} (expected F32, F16, F64 or BOOL)")
            dtype = np.dtype(ST_DTYPES[entry["dtype"]])
            shape = tuple(int(s) for s in entry["shape"])
            start, stop = entry["data_offsets"]
            if stop - start != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor '{name}': {stop - start} bytes for shape {list(shape)}")
            if math.prod(shape) == 0:  # np.memmap cannot map zero bytes
                tensors[name] = torch.from_numpy(np.zeros(shape, dtype=dtype))
                continue
            # copy-on-write map: pages are read on access, writes (none here) never reach the file
            array = np.memmap(path, dtype=dtype, mode="c", offset=base + start, shape=shape)
            tensors[name] = torch.from_numpy(array)
        return tensors, meta
    except LSDOUserError:
        raise
    except Exception as exc:  # SafetensorError, ValueError, json errors, OSError
        raise LSDOUserError(f"index: {path} is corrupt or truncated ({short(exc)}); rebuild the index") from None


def _check_prefilter(doc: dict[str, Any], meta_path: Path, num_videos: int) -> dict[str, Any] | None:
    entry = doc.get("prefilter")
    if entry is None:
        return None
    ok = (
        isinstance(entry, dict)
        and entry.get("file") == PREFILTER_FILE
        and entry.get("kind") in ("ivf", "ivfpq")
        and all(isinstance(entry.get(k), int) and entry[k] >= 1 for k in ("nlist", "num_videos"))
        and isinstance(entry.get("pq"), int)
        and (entry["pq"] >= 1) == (entry["kind"] == "ivfpq")
        and entry["num_videos"] <= num_videos
    )
    if not ok:
        raise LSDOUserError(f"index: {meta_path} has a malformed 'prefilter' entry; rebuild the index")
    return dict(entry)


def _expect(path: Path, name: str, tensor: torch.Tensor | None, shape: tuple, dtype: torch.dtype, hint: str) -> None:
    if tensor is None:
        raise LSDOUserError(f"index: {path} lacks the '{name}' tensor; rebuild the index")
    if tuple(tensor.shape) != shape or tensor.dtype != dtype:
        raise LSDOUserError(
            f"index: {path} holds {name} {list(tensor.shape)} {tensor.dtype}, {hint} {list(shape)} {dtype}; "
            f"rebuild the index"
        )


def read_index(path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> StoredIndex:
    """Read an index directory (format version 1 or 2); any problem is a one-line LSDOUserError.

    ``path`` may also name its ``index.json`` or one of its shards. ``verify``: check every shard
    against its recorded SHA-256 (else only its size); shards without checksums load with a warning.
    """
    path = Path(path)
    if path.is_file() and (path.name == META_FILE or SHARD_FILE_RE.fullmatch(path.name)):
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
    shards = check_shards(doc, meta_path)
    prefilter = _check_prefilter(doc, meta_path, len(ids))
    v, n, d, dtype = len(ids), meta["num_frames"], meta["embed_dim"], DTYPES[meta["dtype"]]
    total = sum(e["num_videos"] for e in shards)
    if total != v:
        first = path / shards[0]["file"]
        raise LSDOUserError(
            f"index: {meta_path} lists {v} ids but its shards ({first}{' ...' if len(shards) > 1 else ''}) hold "
            f"{total} videos; the files do not belong together, rebuild the index"
        )
    if checksums is None:
        log.warning(
            "index %s has no checksums (written by an older lsdo): its contents cannot be verified; "
            "rebuild it to add them",
            path,
        )
    unverified = [e["file"] for e in shards if checksums is not None and e["file"] not in checksums]
    if unverified:
        log.warning("index %s: shard(s) %s have no checksum (appended to an older index)", path, unverified)

    has_regions = "regions" in meta
    rerank_info = meta.get("rerank")
    parts: dict[str, list[torch.Tensor]] = {}
    for entry in shards:
        shard_path, rows = path / entry["file"], entry["num_videos"]
        tensors, st_meta = read_features(shard_path, mmap)
        if checksums is not None and entry["file"] in checksums:
            problem = checksum_problem(shard_path, checksums[entry["file"]], hash_it=verify)
            if problem:
                raise LSDOUserError(
                    f"index: {shard_path} {problem}: the file is damaged or was changed after the build; "
                    f"rebuild the index (lsdo-index verify index={path} checks every file)"
                )
        if st_meta.get("version") not in (None, *map(str, READ_VERSIONS)):
            raise LSDOUserError(
                f"index: {shard_path} has format version {st_meta.get('version')}, this lsdo reads "
                f"{', '.join(map(str, READ_VERSIONS))}"
            )
        features, means = tensors.get("features"), tensors.get("means")
        if features is None or means is None:
            raise LSDOUserError(f"index: {shard_path} lacks the 'features' / 'means' tensors; rebuild the index")
        if tuple(features.shape) != (rows, n, d) or features.dtype != dtype:
            raise LSDOUserError(
                f"index: {shard_path} holds features {list(features.shape)} {features.dtype}, but {meta_path} "
                f"lists [{rows}, {n}, {d}] {dtype} ({v} ids); the two files do not belong together, rebuild the index"
            )
        if tuple(means.shape) != (rows, d) or means.dtype != torch.float32:
            raise LSDOUserError(
                f"index: {shard_path} holds means {list(means.shape)} {means.dtype}, expected [{rows}, {d}] float32"
            )
        regions, region_mask = tensors.get("regions"), tensors.get("region_mask")
        if has_regions or regions is not None or region_mask is not None:
            info = meta.get("regions")
            k = info.get("num_regions") if isinstance(info, dict) else None
            if not isinstance(k, int) or regions is None or region_mask is None:
                raise LSDOUserError(
                    f"index: {meta_path} and {shard_path} disagree about region embeddings; rebuild the index"
                )
            _expect(shard_path, "regions", regions, (rows, n, 1 + k, d), dtype, "expected")
            _expect(shard_path, "region_mask", region_mask, (rows, n, 1 + k), torch.bool, "expected")
        stored_rerank = [name for name in RERANK_TENSORS if name in tensors]
        if rerank_info is not None or stored_rerank:
            m = rerank_info.get("num_mix") if isinstance(rerank_info, dict) else None
            if not isinstance(m, int) or len(stored_rerank) != len(RERANK_TENSORS):
                raise LSDOUserError(
                    f"index: {meta_path} and {shard_path} disagree about the re-ranking tensors; rebuild the index"
                )
            _expect(shard_path, "rerank_keys", tensors["rerank_keys"], (rows, n, d), torch.float32, "expected")
            _expect(shard_path, "rerank_frames", tensors["rerank_frames"], (rows, n, d), torch.float32, "expected")
            _expect(shard_path, "rerank_mix", tensors["rerank_mix"], (rows, m, n), torch.float64, "expected")
        for name, tensor in tensors.items():
            parts.setdefault(name, []).append(tensor)

    def combine(name: str) -> FrameStore | None:
        pieces = parts.get(name)
        if pieces is None:
            return None
        if len(pieces) == 1:
            return pieces[0]
        return ShardedRows(pieces) if mmap else torch.cat(pieces)

    rerank = {name: combine(name) for name in RERANK_TENSORS} if rerank_info is not None else None
    return StoredIndex(
        path,
        combine("features"),  # type: ignore[arg-type]
        combine("means"),  # type: ignore[arg-type]
        ids,
        meta,
        combine("regions"),
        combine("region_mask"),
        checksums,
        shards,
        rerank,  # type: ignore[arg-type]
        prefilter,
    )
