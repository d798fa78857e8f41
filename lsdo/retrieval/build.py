r"""Building an index from a folder of videos, resumably (``lsdo-index build``, :mod:`lsdo.cli.index`).

:func:`build_index` indexes every file under a folder (recursively) whose extension is in ``exts``;
a video's id is its path relative to the folder without the extension, with ``/`` separators.
The model is rebuilt from the checkpoint alone; each video is decoded (``num_frames`` uniformly
sampled frames, the test transform at the encoder's resolution) and encoded with
``model.encode_video`` in batches, without autograd. Files that cannot be decoded (zero bytes, not a
video, corrupt) are reported, skipped, and listed in ``INDEX/skipped.txt`` (one
``relative path<TAB>reason`` line each).

File names of any bytes are indexed: ids, ``skipped.txt`` and every listing use
:func:`~lsdo.retrieval.index.escape_name`'s form, one printable line per name: a backslash is
written ``\\``, a newline / carriage return / tab ``\n`` / ``\r`` / ``\t``, a byte that is not
valid UTF-8 ``\xNN`` and any other control character ``\xNN`` or ``\uNNNN`` (ordinary names are
unchanged); ``os.fsencode(unescape_name(id))`` gives the file's path back (without its
extension). A video whose features come out non-finite (NaN / inf: a checkpoint with NaN
weights, or a float16 overflow with ``fp16``) stops the build with a one-line error naming
the file (finished shards are kept).

Resumable: videos are encoded in shards of ``shard_size`` files (the sorted file list, cut in
order); each finished shard is written to ``INDEX/.partial/shard_XXXX.safetensors`` + ``.json``
(its ids, the files' sizes and modification times, its skipped files, the SHA-256 of its
tensors; both written to a temporary name and renamed, so a shard is whole or absent; a shard
whose tensors no longer match their SHA-256 is encoded again). A rerun with the same
settings reuses every shard whose files are unchanged and encodes only the rest, so an
interrupted build (killed, Ctrl-C) loses at most the shard in progress, and because the
remaining files are cut into the same shards as in an uninterrupted run the final index is the
same. At the end the shards are consolidated (ids sorted) into the index and ``.partial`` is
removed. Partial results made with other settings (checkpoint, num_frames, fp16, region
settings) are discarded.

The index is written a shard of ``index_shard`` videos at a time (:meth:`VideoIndex.add` +
:meth:`VideoIndex.save` with ``remap=True``: memory holds one shard, whatever the number of
videos); ``rerank=true`` also stores the exact re-ranking tensors
(:mod:`lsdo.retrieval.index.rerank`), ``prefilter=auto`` a trained FAISS IVF-PQ prefilter from 1M
videos (``ivfpq``: always, ``none``: never). ``append=true`` adds the videos of the folder that
are not in the index at ``out`` yet, as new shards (nothing already there is re-encoded or rewritten).

Several devices: ``world=N rank=i`` (N processes, e.g. one per GPU, ``device=auto`` then picks
``cuda:<i mod GPUs>``) split the sorted file list into consecutive pieces of ``shard_size`` files
and process every N-th piece from the i-th, writing their shards to ``INDEX/.partial/rank<i>/``;
each is resumable as above. The rank that finds every file done when it finishes (the last one)
writes the index from all the ranks' shards (a lock file ``.partial/consolidating`` keeps two
ranks finishing together from both doing it); the others say what is left and exit 0. The
result is the index a one-process build makes (the same ids in the same order, the same tensors).

Region embeddings (training-free, paper §3): with ``region_encoder="inverse_attention"``
(``region_k`` LARC regions) or ``"grid"`` (``grid`` x ``grid`` tiles), every sampled frame is
also encoded by a :class:`~lsdo.inverse_attention.RegionEncoder` on the checkpoint's CLIP encoder,
from the decoded uint8 frame (its own preprocessing, before the test transform), and the index
stores the [n, 1+K, d] region sets + mask per video (``regions`` / ``region_mask``; shards carry
them too). ``region_encoder="none"`` writes the original format.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from lsdo.checkpoint import load_model
from lsdo.data.video import VIDEO_EXTENSIONS
from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.encoder import METHODS
from lsdo.model.lsdo_model import LSDOModel
from lsdo.options import option
from lsdo.processes import loader_context
from lsdo.retrieval.index import (
    DEFAULT_IVFPQ_THRESHOLD,
    META_FILE,
    VideoIndex,
    atomic_write_text,
    escape_name,
    faiss_available,
    file_sha256,
    model_fingerprint,
    printable,
)
from lsdo.runtime import resolve_device

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
SKIPPED_FILE = "skipped.txt"
LOCK_FILE = "consolidating"  # in .partial: a rank is writing the index
SHARD_RE = re.compile(r"shard_(\d{4,})\.json")
RANK_DIR_RE = re.compile(r"rank(\d+)")
PREFILTERS = ("auto", "ivfpq", "none")


@dataclass(frozen=True)
class VideoFile:
    """One file to index: its id (escaped relative path without extension), path, escaped relative path, size, mtime."""

    id: str
    path: Path
    rel: str
    size: int
    mtime_ns: int

    def stamp(self) -> list[Any]:
        return [self.rel, self.size, self.mtime_ns]


def discover(root: Path, exts: tuple[str, ...]) -> tuple[list[VideoFile], list[tuple[str, str]]]:
    """Video files under ``root`` (recursive, sorted by id) and (relative path, reason) of duplicate ids.

    Ids and relative paths are :func:`escape_name`'d (any bytes; one printable line each).
    """
    found: dict[str, VideoFile] = {}
    dups: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # skips an index's .partial
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in exts or not path.is_file():
                continue
            raw = path.relative_to(root).as_posix()  # undecodable bytes as surrogates
            rel, vid = escape_name(raw), escape_name(raw[: -len(path.suffix)])  # printable, one line
            if vid in found:
                dups.append((rel, f"same id '{vid}' as {found[vid].rel}"))
                continue
            st = path.stat()
            found[vid] = VideoFile(vid, path, rel, st.st_size, st.st_mtime_ns)
    return [found[k] for k in sorted(found)], dups


class _Decoded(torch.utils.data.Dataset):
    """Decodes one file: (position, frames [n, 3, S, S] or None, raw uint8 [n, 3, H, W] or None, reason or None).

    The raw decoded frames are returned only with ``keep_raw`` (the region encoder's input).
    """

    def __init__(self, files: list[VideoFile], num_frames: int, image_size: int, keep_raw: bool = False) -> None:
        from lsdo.data.transforms import build_transform

        self.files, self.num_frames, self.keep_raw = files, num_frames, keep_raw
        self.transform = build_transform(image_size, train=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]:
        from lsdo.data.video import sample_frames

        f = self.files[i]
        try:
            raw = sample_frames(f.path, self.num_frames, mode="uniform")  # uint8 [n, 3, H, W]
            frames = self.transform(raw)
        except Exception as exc:  # VideoDecodeError, DataNotFoundError, odd streams
            reason = str(exc).strip() or type(exc).__name__
            prefix = f"{f.path}: "
            reason = reason[len(prefix) :] if reason.startswith(prefix) else reason
            reason = reason.replace(str(f.path), printable(str(f.path)))  # a newline in the name cuts no line
            return i, None, None, printable(reason.splitlines()[0][:300])
        return i, frames, (raw if self.keep_raw else None), None


def _decoded_stream(
    files: list[VideoFile], num_frames: int, image_size: int, workers: int, keep_raw: bool = False
) -> Iterator[tuple]:
    data = _Decoded(files, num_frames, image_size, keep_raw)
    if workers <= 0:
        return (data[i] for i in range(len(data)))
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, num_workers=workers, multiprocessing_context=loader_context(workers)
    )  # the caller may have decoded or run threads already: the workers are not forks of it (lsdo.processes)
    return iter(loader)


def _atomic_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1))  # ASCII: any string (even a lone surrogate) round-trips


@dataclass
class _Done:
    """What the partial shards hold: id -> (shard file, row) and id -> skip reason."""

    rows: dict[str, tuple[Path, int]]
    skipped: dict[str, tuple[str, str]]
    next_shard: int


def _shard_dirs(partial: Path) -> list[Path]:
    """The directories holding partial shards: ``.partial`` itself and its ``rank<i>`` folders."""
    if not partial.is_dir():
        return []
    ranks = sorted(p for p in partial.iterdir() if RANK_DIR_RE.fullmatch(p.name) and p.is_dir())
    return [partial, *ranks]


def _load_partial(
    partial: Path, settings: dict[str, Any], files: dict[str, VideoFile], mine: Path | None = None
) -> _Done:
    """Reusable shards of an interrupted build (with the same settings and unchanged files), of every rank.

    ``next_shard``: the next free shard number in ``mine`` (default ``partial``), this process's directory.
    """
    done = _Done({}, {}, 0)
    mine = mine or partial
    shards = sorted(
        (d != mine, int(m.group(1)), p)
        for d in _shard_dirs(partial)
        for p in d.iterdir()
        if (m := SHARD_RE.fullmatch(p.name)) and p.is_file()
    )
    for other, number, meta_path in shards:
        if not other:
            done.next_shard = max(done.next_shard, number + 1)
        try:
            doc = json.loads(meta_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            log.warning("ignoring unreadable partial shard %s", meta_path)
            continue
        if doc.get("settings") != settings:
            log.warning("partial results in %s were made with other settings; starting over", partial)
            shutil.rmtree(partial)
            return _Done({}, {}, 0)
        tensors = meta_path.with_suffix(".safetensors")
        if doc.get("ids") and not tensors.is_file():
            log.warning("ignoring partial shard %s (its features file is missing)", meta_path)
            continue
        if doc.get("ids") and doc.get("sha256") and file_sha256(tensors) != doc["sha256"]:
            log.warning("ignoring partial shard %s (its features file does not match its SHA-256)", meta_path)
            continue

        def fresh(vid: str, stamp: list[Any]) -> bool:
            f = files.get(vid)
            return f is not None and f.stamp() == stamp

        for row, (vid, stamp) in enumerate(zip(doc.get("ids", []), doc.get("stamps", []), strict=False)):
            if fresh(vid, stamp):
                done.rows[vid] = (tensors, row)
                done.skipped.pop(vid, None)
        for vid, stamp, reason in doc.get("skipped", []):
            if fresh(vid, stamp):
                done.skipped[vid] = (stamp[0], reason)
                done.rows.pop(vid, None)
    return done


def _write_shard(
    partial: Path,
    number: int,
    settings: dict[str, Any],
    feats: dict[str, list[torch.Tensor]],
    ids: list[VideoFile],
    skipped: list,
) -> None:
    """One finished shard: its tensors (``features`` [b, n, d], with regions also ``regions`` / ``region_mask``)."""
    partial.mkdir(parents=True, exist_ok=True)
    stem = partial / f"shard_{number:04d}"
    digest = None
    if feats["features"]:
        tmp = stem.with_name(stem.name + ".safetensors.tmp")
        try:
            save_file({name: torch.cat(parts).contiguous() for name, parts in feats.items() if parts}, str(tmp))
            digest = file_sha256(tmp)
            os.replace(tmp, stem.with_suffix(".safetensors"))
        finally:
            tmp.unlink(missing_ok=True)
    doc = {
        "settings": settings,
        "ids": [f.id for f in ids],
        "stamps": [f.stamp() for f in ids],
        "skipped": [[f.id, f.stamp(), reason] for f, reason in skipped],
        "sha256": digest,
    }
    _atomic_json(stem.with_suffix(".json"), doc)  # written last: marks the shard complete


def _gather(done: _Done, ids: list[str], names: tuple[str, ...] = ("features",)) -> dict[str, torch.Tensor]:
    """The shards' tensors ``names`` of ``ids`` (in that order): e.g. features [B, n, d], regions [B, n, 1+K, d].

    Reads only the partial shards holding these ids (one index shard's worth at a time).
    """
    cache: dict[Path, dict[str, torch.Tensor]] = {}
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for vid in ids:
        path, row = done.rows[vid]
        if path not in cache:
            try:
                cache[path] = load_file(str(path))
                missing = [name for name in names if name not in cache[path]]
                if missing:
                    raise KeyError(f"no {missing[0]}")
            except Exception as exc:
                raise LSDOUserError(
                    f"out: partial shard {path} is unreadable ({type(exc).__name__}); delete it and rerun"
                ) from None
        for name in names:
            rows[name].append(cache[path][name][row])
    return {name: torch.stack(parts) for name, parts in rows.items()}


@dataclass
class BuildOptions:
    """What ``lsdo-index build`` takes (its keys and their defaults: written here once)."""

    ckpt: str = option("training checkpoint (.ckpt) whose model encodes the videos")
    videos: str = option("folder searched recursively for videos")
    out: str = option("index directory to write (features.safetensors + index.json)")
    num_frames: int = option("frames sampled uniformly per video", 12, minimum=1)
    batch_size: int = option("videos encoded at a time", 16, minimum=1)
    fp16: bool = option("store features as float16 (false: float32)", False)
    ext: list[str] = option("video extensions to index", list(VIDEO_EXTENSIONS))
    workers: int = option("decoding worker processes (0: decode in the main process)", 0, minimum=0)
    shard_size: int = option("videos per resumable shard", 256, minimum=1)
    device: str = option("auto | cpu | cuda (auto: CUDA when there is one)", "auto")
    overwrite: bool = option("replace an existing complete index at out=", False)
    region_encoder: str = option("also store per-frame region embeddings", "none", choices=METHODS)
    region_k: int = option("inverse_attention: regions per frame", 4, minimum=1)
    grid: int = option("grid: tiles per side", 2, minimum=1)
    rerank: bool = option(
        "also store the exact re-ranking tensors (8nd + 8mn bytes per video: 51.6 KB at 12 x 512); "
        "a query then pays only for its candidates' attention",
        False,
    )
    index_shard: int = option("videos per file of the index (the build holds one in memory)", 50_000, minimum=1)
    prefilter: str = option("store a trained FAISS IVF-PQ prefilter: auto (from 1M videos), ivfpq, none", "auto",
                            choices=PREFILTERS)  # fmt: skip
    append: bool = option("add the videos not yet in the index at out= as new shards (nothing is rewritten)", False)
    rank: int = option("this process's part of a build split over world processes (0 .. world-1)", 0, minimum=0)
    world: int = option("processes (devices) the build is split over; the last to finish writes the index", 1,
                        minimum=1)  # fmt: skip


def extensions(names: list[str]) -> tuple[str, ...]:
    """``[".mp4", "avi"]`` -> (".mp4", ".avi") (lower case, with the dot); empty -> every known extension."""
    names = [x.strip().lower() for x in names if x.strip()]
    return tuple(x if x.startswith(".") else f".{x}" for x in names) or VIDEO_EXTENSIONS


def region_encoder_for(model: LSDOModel, method: str, k: int, grid: int) -> tuple[Any, dict[str, Any] | None]:
    """(RegionEncoder or None, its settings for the metadata) for ``method`` none | inverse_attention | grid."""
    from lsdo.inverse_attention.encoder import RegionEncoder

    if method == "none":
        return None, None
    if method == "inverse_attention":
        from lsdo.inverse_attention.heatmap import _describe

        try:
            _describe(model.encoder.clip.visual)
        except TypeError as exc:
            raise LSDOUserError(f"region_encoder=inverse_attention: {exc}") from None
    encoder = RegionEncoder(model.encoder, method, k=k, grid=grid)
    info = {"method": method, "k": k, "grid": grid, "image_size": encoder.image_size}
    return encoder, info


def _device_for(opts: BuildOptions) -> torch.device:
    """``opts.device``; ``auto`` with world > 1 and several GPUs: ``cuda:<rank mod GPUs>`` (one GPU per rank)."""
    if opts.device.strip().lower() == "auto" and opts.world > 1 and torch.cuda.is_available():
        return torch.device(f"cuda:{opts.rank % torch.cuda.device_count()}")
    return resolve_device(opts.device)


def _check_append(existing: VideoIndex, opts: BuildOptions, dtype: torch.dtype, region_info: Any) -> None:
    """LSDOUserError unless ``existing`` (the index at out=) was built with the settings of ``opts``."""
    problems = []
    if existing.num_frames != opts.num_frames:
        problems.append(f"num_frames={existing.num_frames}")
    if existing.dtype != dtype:
        problems.append(f"fp16={str(existing.dtype == torch.float16).lower()}")
    if existing.has_regions != (region_info is not None):
        problems.append(f"region_encoder={existing.meta.get('regions', {}).get('method', 'none')}")
    if existing.has_rerank != opts.rerank:
        problems.append(f"rerank={str(existing.has_rerank).lower()}")
    if problems:
        raise LSDOUserError(
            f"append: the index at {opts.out} was built with {', '.join(problems)}: append with the same settings"
        )


def build_index(opts: BuildOptions) -> int:
    """Encode every video under ``opts.videos`` into the index ``opts.out``; 0, or 130 when interrupted.

    With ``world`` > 1 this process encodes its part only (rank ``rank``) and writes the index if it
    finishes last; with ``append`` it adds the videos the index at ``out`` lacks.
    """
    num_frames, batch_size, shard_size, workers = opts.num_frames, opts.batch_size, opts.shard_size, opts.workers
    rank, world = opts.rank, opts.world
    if rank >= world:
        raise LSDOUserError(f"rank: expected 0 <= rank < world={world}, got {rank}")
    device = _device_for(opts)
    exts = extensions(opts.ext)
    root, out = Path(opts.videos), Path(opts.out)
    if not root.is_dir():
        raise LSDOUserError(f"videos: {root} is not a directory")
    if out.exists() and not out.is_dir():
        raise LSDOUserError(f"out: {out} exists and is not a directory")
    partial = out / PARTIAL_DIR
    has_index = (out / META_FILE).exists()
    if has_index and not partial.exists() and not opts.overwrite and not opts.append:
        raise LSDOUserError(
            f"out: {out} already holds an index; pass append=true (add new videos), overwrite=true or another out="
        )
    if opts.append and opts.overwrite:
        raise LSDOUserError("append=true and overwrite=true contradict each other: choose one")

    files, dups = discover(root, exts)
    if not files:
        raise LSDOUserError(f"videos: no video files ({', '.join(exts)}) under {root}")
    from lsdo.model.encoder import image_size_of

    model, cfg = load_model(opts.ckpt, device)
    regioner, region_info = region_encoder_for(model, opts.region_encoder, opts.region_k, opts.grid)
    image_size = image_size_of(OmegaConf.create(cfg["model"]))
    dtype = torch.float16 if opts.fp16 else torch.float32
    existing = None
    if opts.append and has_index:
        existing = VideoIndex.load(out, mmap=True, verify=False)
        existing.check_model(model, name=f"checkpoint {opts.ckpt}")
        _check_append(existing, opts, dtype, region_info)
        known = set(existing.ids)
        files = [f for f in files if f.id not in known]
        if not files:
            print(f"nothing to add: every video under {printable(str(root))} is in {printable(str(out))}")
            return 0
    settings = {
        "fingerprint": model_fingerprint(model),
        "num_frames": num_frames,
        "image_size": image_size,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if region_info is not None:  # absent with region_encoder=none: the original settings
        settings["regions"] = region_info
    by_id = {f.id: f for f in files}
    mine = partial if world == 1 else partial / f"rank{rank}"
    done = _load_partial(partial, settings, by_id, mine)
    todo = [f for f in files if f.id not in done.rows and f.id not in done.skipped]
    if world > 1:  # every world-th piece of shard_size files, from the rank-th: fixed by the file list alone
        position = {f.id: i for i, f in enumerate(files)}
        todo = [f for f in todo if (position[f.id] // shard_size) % world == rank]
    if done.rows or done.skipped:
        print(
            f"resuming: {len(done.rows) + len(done.skipped)} of {len(files)} videos already processed in {partial}",
            file=sys.stderr,
        )
    try:
        _encode_all(
            model,
            todo,
            mine,
            done.next_shard,
            settings,
            num_frames,
            image_size,
            batch_size,
            shard_size,
            workers,
            regioner,
        )
    except KeyboardInterrupt:
        print(f"interrupted: finished shards are kept in {partial}; rerun the same command to resume", file=sys.stderr)
        return 130

    done = _load_partial(partial, settings, by_id, mine)
    left = sum(1 for f in files if f.id not in done.rows and f.id not in done.skipped)
    if left:  # the other ranks' files
        print(
            f"rank {rank} of {world}: its files are done; {left} of {len(files)} files wait for the other ranks "
            f"(the last rank to finish writes the index; rerun a rank to resume it)"
        )
        return 0
    lock = partial / LOCK_FILE
    if world > 1:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            print(f"rank {rank} of {world}: done; another rank is writing the index (else delete {lock} and rerun)")
            return 0
    skipped = [done.skipped[vid] for vid in sorted(done.skipped)] + dups  # (relative path, reason)
    ids = sorted(done.rows)
    out.mkdir(parents=True, exist_ok=True)
    skipped_path = out / SKIPPED_FILE
    if skipped:  # escaped names and reasons: exactly one line per skipped file
        atomic_write_text(
            skipped_path,
            errors="backslashreplace",
            text="".join(f"{rel}\t{printable(reason)}\n" for rel, reason in skipped),
        )
    elif skipped_path.exists() and existing is None:
        skipped_path.unlink()
    if not ids and existing is None:
        lock.unlink(missing_ok=True)
        raise LSDOUserError(
            f"videos: none of the {len(files)} video files under {printable(str(root))} could be decoded "
            f"(see {printable(str(skipped_path))})"
        )
    info = {
        "ckpt": str(opts.ckpt),
        "videos": str(root),
        "num_frames": num_frames,
        "image_size": image_size,
        "sample": "uniform",
        "skipped": len(skipped),
    }
    names = ("features", "regions", "region_mask") if region_info is not None else ("features",)
    try:
        index = _write_index(out, done, ids, names, model, cfg, info, dtype, region_info, opts, existing)
    except BaseException:
        lock.unlink(missing_ok=True)  # a rerun writes the index again
        raise
    shutil.rmtree(partial, ignore_errors=True)
    line = f"indexed {len(ids)} videos, skipped {len(skipped)}"
    if existing is not None:
        line = f"added {len(ids)} videos ({len(index)} in the index), skipped {len(skipped)}"
    print(line + (f" (unreadable; listed in {printable(str(skipped_path))})" if skipped else ""))
    return 0


def _write_index(
    out: Path,
    done: _Done,
    ids: list[str],
    names: tuple[str, ...],
    model: LSDOModel,
    cfg: Any,
    info: dict[str, Any],
    dtype: torch.dtype,
    region_info: dict[str, Any] | None,
    opts: BuildOptions,
    existing: VideoIndex | None,
) -> VideoIndex:
    """Write ``ids`` (their rows from the partial shards) into the index at ``out``, ``index_shard`` videos a shard.

    A new index (``existing`` None) is saved in full with its first shard, then appended to; each
    shard, once written, is memory-mapped rather than held. Then the IVF-PQ prefilter, when due.
    """
    index = existing
    for start in range(0, len(ids), opts.index_shard):  # one index shard in memory at a time
        part = ids[start : start + opts.index_shard]
        tensors = _gather(done, part, names)
        if index is None:
            index = VideoIndex.build(
                model,
                tensors["features"],
                part,
                dtype=dtype,
                config=cfg,
                info=info,
                regions=tensors.get("regions"),
                region_mask=tensors.get("region_mask"),
                region_info=region_info,
                rerank=opts.rerank,
            )
        else:
            index.add(model, tensors["features"], part, tensors.get("regions"), tensors.get("region_mask"))
        index.save(out, remap=True)
        del tensors
    assert index is not None
    if opts.prefilter != "none" and faiss_available():
        if opts.prefilter == "ivfpq":
            index.faiss_threshold, index.ivfpq_threshold = 0, 0
        if len(index) >= DEFAULT_IVFPQ_THRESHOLD or opts.prefilter == "ivfpq":
            index.faiss_index()  # trained once here, read by every search
            index.save(out)
    return index


@torch.no_grad()
def _encode_all(
    model: LSDOModel,
    todo: list[VideoFile],
    partial: Path,
    first_shard: int,
    settings: dict[str, Any],
    num_frames: int,
    image_size: int,
    batch_size: int,
    shard_size: int,
    workers: int,
    regioner: Any = None,
) -> None:
    """Decode and encode ``todo`` shard by shard (cut in order), writing each finished shard.

    ``regioner``: a RegionEncoder (or None): each video's uint8 frames -> regions [n, 1+K, d] + mask [n, 1+K].
    """
    if not todo:
        return
    device = next(model.parameters()).device
    dtype = torch.float16 if settings["dtype"] == "float16" else torch.float32
    stream = _decoded_stream(todo, num_frames, image_size, workers, keep_raw=regioner is not None)
    bar = tqdm(total=len(todo), unit="video", desc="encoding", file=sys.stderr, dynamic_ncols=True)

    def empty() -> dict[str, list[torch.Tensor]]:
        return {"features": [], "regions": [], "region_mask": []}

    shard, feats, ok, skipped = first_shard, empty(), [], []
    batch: list[tuple[VideoFile, torch.Tensor, torch.Tensor | None]] = []

    def refuse_nonfinite(what: str, stored: torch.Tensor, computed: torch.Tensor) -> None:
        """One-line error naming the first video of the batch whose stored ``what`` [B, ...] hold NaN / inf."""
        finite = torch.isfinite(stored).flatten(1).all(dim=1)  # [B]
        if bool(finite.all()):
            return
        first = int(torch.nonzero(~finite)[0])
        if bool(torch.isfinite(computed[first]).all()):
            hint = "values beyond float16's range: build with fp16=false"
        else:
            hint = "the checkpoint's weights may hold NaN (check its training run)"
        raise LSDOUserError(
            f"videos: encoding {batch[first][0].rel} gave non-finite {what} (NaN / inf), refusing to index it: "
            f"{hint}; finished shards are kept in {printable(str(partial))}"
        )

    def flush_batch() -> None:
        if batch:
            frames = torch.stack([fr for _, fr, _ in batch]).to(device)  # [B, n, 3, S, S]
            encoded = model.encode_video(frames)  # [B, n, d]
            stored = encoded.to("cpu", dtype)
            refuse_nonfinite("features", stored, encoded)
            feats["features"].append(stored)  # [B, n, d]
            if regioner is not None:
                raw = [frame for _, _, r in batch for frame in r.unbind(0)]  # B*n uint8 [3, H, W]
                emb, mask, _ = regioner.encode(raw)  # [B*n, 1+K, d], [B*n, 1+K]
                b, n = len(batch), frames.shape[1]
                emb = emb.reshape(b, n, *emb.shape[1:])  # [B, n, 1+K, d]
                stored_emb = emb.to("cpu", dtype)
                refuse_nonfinite("region embeddings", stored_emb, emb)
                feats["regions"].append(stored_emb)  # [B, n, 1+K, d]
                feats["region_mask"].append(mask.to("cpu", torch.bool).view(b, n, -1))  # [B, n, 1+K]
            ok.extend(f for f, _, _ in batch)
            batch.clear()

    try:
        for count, (i, frames, raw, reason) in enumerate(stream, start=1):
            f = todo[i]
            if frames is None:
                skipped.append((f, reason))
                bar.write(f"skipped {f.rel}: {reason}", file=sys.stderr)
            else:
                batch.append((f, frames, raw))
                if len(batch) == batch_size:
                    flush_batch()
            bar.update(1)
            if count % shard_size == 0 or count == len(todo):  # a shard = shard_size consecutive files
                flush_batch()
                _write_shard(partial, shard, settings, feats, ok, skipped)
                shard, feats, ok, skipped = shard + 1, empty(), [], []
    finally:
        bar.close()
