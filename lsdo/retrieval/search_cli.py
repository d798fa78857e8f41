r"""Command-line tools over :class:`~lsdo.retrieval.index.VideoIndex`: ``lsdo-index`` and ``lsdo-search``.

::

    lsdo-index build ckpt=PATH videos=DIR out=INDEX [num_frames=12] [batch_size=16] [fp16=true]
                     [ext=.mp4,.avi,...] [workers=0] [shard_size=256] [device=auto] [overwrite=false]
                     [region_encoder=none|inverse_attention|grid] [region_k=4] [grid=2]
    lsdo-index info index=INDEX
    lsdo-index verify index=INDEX
    lsdo-search index=INDEX ckpt=PATH "a man sings into a microphone" ["another query" ...]
                [--topk 10 | topk=10] [prefilter_k=K] [region_mode=xpool|regions|both] [verify=true]

``build`` indexes every file under DIR (recursively) whose extension is in ``ext``; a video's id
is its path relative to DIR without the extension, with ``/`` separators. The model is rebuilt
from the checkpoint alone; each video is decoded (``num_frames`` uniformly sampled frames, the
test transform at the encoder's resolution) and encoded with ``model.encode_video`` in batches,
without autograd. Files that cannot be decoded (zero bytes, not a video, corrupt) are reported,
skipped, and listed in ``INDEX/skipped.txt`` (one ``relative path<TAB>reason`` line each).

File names of any bytes are indexed: ids, ``skipped.txt`` and every listing use
:func:`~lsdo.retrieval.index.escape_name`'s form, one printable line per name: a backslash is
written ``\\``, a newline / carriage return / tab ``\n`` / ``\r`` / ``\t``, a byte that is not
valid UTF-8 ``\xNN`` and any other control character ``\xNN`` or ``\uNNNN`` (ordinary names are
unchanged); ``os.fsencode(unescape_name(id))`` gives the file's path back (without its
extension). A video whose features come out non-finite (NaN / inf: a checkpoint with NaN
weights, or a float16 overflow with ``fp16=true``) stops the build with a one-line error naming
the file (finished shards are kept).

``info`` prints an index's metadata. ``verify`` checks an index completely: its structure,
``features.safetensors`` against the SHA-256 recorded in ``index.json`` when it was built, and
that every stored value is finite; it prints one line per check and ends with ``OK`` (exit 0) or
a one-line ``error:`` naming what failed (exit 2). ``lsdo-search`` checks the SHA-256 on every load
too (about 1 s per GB of index; ``verify=false`` skips it) and refuses empty queries.

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

Region embeddings (training-free, paper §3): with ``region_encoder=inverse_attention`` (``region_k``
LARC regions, default 4) or ``grid`` (``grid`` x ``grid`` tiles, default 2), every sampled frame is
also encoded by a :class:`~lsdo.inverse_attention.RegionEncoder` on the checkpoint's CLIP encoder,
from the decoded uint8 frame (its own preprocessing, before the test transform), and the index
stores the [n, 1+K, d] region sets + mask per video (``regions`` / ``region_mask``; shards carry
them too). ``region_encoder=none`` (default) writes the original format.

``lsdo-search`` needs the checkpoint the index was built with (text encoder and X-Pool); another
one is a one-line error. Without ``prefilter_k`` every video is scored exactly (the full
protocol); with it the mean-pool prefilter keeps K videos per query for exact re-ranking.
``region_mode=regions`` scores each video by its best frame and region instead (max cosine of
the query's CLIP text embedding over frames x {global} U {regions}; every video, no prefilter);
``region_mode=both`` ranks by X-Pool score + region score (with or without the prefilter). Both
need an index built with a region encoder (a one-line error otherwise).
Both tools report user errors as one line ``error: ...`` and exit with status 2.
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
from lsdo.cli import run_plain
from lsdo.data.video import VIDEO_EXTENSIONS
from lsdo.errors import LSDOUserError
from lsdo.model.lsdo_model import LSDOModel
from lsdo.retrieval.index import (
    META_FILE,
    SEARCH_MODES,
    VideoIndex,
    escape_name,
    file_sha256,
    model_fingerprint,
    printable,
    verify_index,
)

log = logging.getLogger(__name__)

VIDEO_EXTS = VIDEO_EXTENSIONS  # the one list (lsdo.data.video)
PARTIAL_DIR = ".partial"
SKIPPED_FILE = "skipped.txt"
SHARD_RE = re.compile(r"shard_(\d{4,})\.json")

INDEX_KEYS = {
    "ckpt": "training checkpoint (.ckpt) whose model encodes the videos",
    "videos": "folder searched recursively for videos",
    "out": "index directory to write (features.safetensors + index.json)",
    "num_frames": "frames sampled uniformly per video (default 12)",
    "batch_size": "videos encoded at a time (default 16)",
    "fp16": "store features as float16 (default false: float32)",
    "ext": f"comma-separated video extensions (default {','.join(VIDEO_EXTS)})",
    "workers": "decoding worker processes (default 0: decode in the main process)",
    "shard_size": "videos per resumable shard (default 256)",
    "device": "auto | cpu | cuda (default auto)",
    "overwrite": "replace an existing complete index at out= (default false)",
    "region_encoder": "none | inverse_attention | grid: also store per-frame region embeddings (default none)",
    "region_k": "inverse_attention: regions per frame (default 4)",
    "grid": "grid: tiles per side (default 2)",
}
INFO_KEYS = {"index": "index directory"}
VERIFY_KEYS = {"index": "index directory to check (structure, SHA-256 checksums, finite values)"}
SEARCH_KEYS = {
    "index": "index directory written by lsdo-index build",
    "ckpt": "the checkpoint the index was built with",
    "topk": "results per query (default 10)",
    "prefilter_k": "mean-pool prefilter: re-rank only K videos per query (default: score every video)",
    "region_mode": "xpool | regions | both: X-Pool, best frame x region (LAFM), or their sum (default xpool)",
    "device": "auto | cpu | cuda (default cpu)",
    "verify": "check features.safetensors against its SHA-256 first (default true; about 1 s per GB)",
}


# ---------------------------------------------------------------------------------------------
# argument parsing (key=value and --key value)
# ---------------------------------------------------------------------------------------------


class _Help(Exception):
    """-h / --help was given."""


def parse_args(argv: list[str], keys: dict[str, str], positional: bool = False) -> tuple[dict[str, str], list[str]]:
    """``key=value``, ``--key value`` and ``--key=value`` tokens -> (options, positional texts).

    With ``positional``, any other token (a query) is returned in order; a token that looks like
    ``word=value`` (no spaces) with an unknown key is still an error (a typo), unless after ``--``.
    """
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "--" and positional:
            rest += argv[i:]
            break
        if tok in ("-h", "--help"):
            raise _Help
        if tok.startswith("--"):
            key, eq, value = tok[2:].partition("=")
            key = key.replace("-", "_")
            if key not in keys:
                raise LSDOUserError(f"unknown option --{key}; options: {', '.join(keys)}")
            if not eq:
                if i >= len(argv):
                    raise LSDOUserError(f"--{key} needs a value")
                value, i = argv[i], i + 1
            opts[key] = value
            continue
        key, eq, value = tok.partition("=")
        if eq and key in keys:
            opts[key] = value
        elif eq and re.fullmatch(r"[A-Za-z_][\w.]*", key) and " " not in tok:
            raise LSDOUserError(f"unknown argument {key!r}; keys: {', '.join(keys)}")
        elif positional:
            rest.append(tok)
        else:
            raise LSDOUserError(f"expected key=value, got {tok!r}; keys: {', '.join(keys)}")
    return opts, rest


def _usage(prog: str, keys: dict[str, str], tail: str = "") -> str:
    width = max(len(k) for k in keys)
    lines = [f"usage: {prog} " + " ".join(f"{k}=..." for k in keys) + tail, ""]
    return "\n".join(lines + [f"  {k.ljust(width)}  {v}" for k, v in keys.items()])


def _required(opts: dict[str, str], *keys: str) -> None:
    missing = [k for k in keys if not opts.get(k)]
    if missing:
        raise LSDOUserError(f"missing required argument(s): {', '.join(f'{k}=...' for k in missing)}")


def _int(opts: dict[str, str], key: str, default: int | None, minimum: int = 1) -> int | None:
    if key not in opts or opts[key].lower() in ("", "none", "null"):
        return default
    try:
        value = int(opts[key])
    except ValueError:
        raise LSDOUserError(f"{key}: expected an integer, got {opts[key]!r}") from None
    if value < minimum:
        raise LSDOUserError(f"{key}: must be >= {minimum}, got {value}")
    return value


def _bool(opts: dict[str, str], key: str, default: bool) -> bool:
    if key not in opts:
        return default
    value = opts[key].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise LSDOUserError(f"{key}: expected true or false, got {opts[key]!r}")


def _device(name: str) -> torch.device:
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LSDOUserError(f"device={name} but no CUDA GPU is available; use device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LSDOUserError(f"device: expected auto, cpu or cuda, got {name!r}") from None


def _extensions(text: str) -> tuple[str, ...]:
    """``".mp4,avi"`` -> (".mp4", ".avi"); empty -> VIDEO_EXTS."""
    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    return tuple(x if x.startswith(".") else f".{x}" for x in names) or VIDEO_EXTS


# ---------------------------------------------------------------------------------------------
# lsdo-index build
# ---------------------------------------------------------------------------------------------


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
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers)
    return iter(loader)


def _atomic_write(path: Path, text: str) -> None:
    """UTF-8 ``text`` to ``path`` via a temporary file and a rename: never a partial or empty file."""
    data = text.encode("utf-8", errors="backslashreplace")  # encoded before any file is opened
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_json(path: Path, doc: Any) -> None:
    _atomic_write(path, json.dumps(doc, indent=1))  # ASCII: any string (even a lone surrogate) round-trips


@dataclass
class _Done:
    """What the partial shards hold: id -> (shard file, row) and id -> skip reason."""

    rows: dict[str, tuple[Path, int]]
    skipped: dict[str, tuple[str, str]]
    next_shard: int


def _load_partial(partial: Path, settings: dict[str, Any], files: dict[str, VideoFile]) -> _Done:
    """Reusable shards of an interrupted build (with the same settings and unchanged files)."""
    done = _Done({}, {}, 0)
    if not partial.is_dir():
        return done
    shards = sorted(
        (int(m.group(1)), p) for p in partial.iterdir() if (m := SHARD_RE.fullmatch(p.name)) and p.is_file()
    )
    for number, meta_path in shards:
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


def _consolidate(done: _Done, ids: list[str], names: tuple[str, ...] = ("features",)) -> dict[str, torch.Tensor]:
    """The shards' tensors ``names`` of ``ids`` (in that order): e.g. features [V, n, d], regions [V, n, 1+K, d]."""
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


def _region_encoder(opts: dict[str, str], model: LSDOModel) -> tuple[Any, dict[str, Any] | None]:
    """(RegionEncoder or None, its settings for the metadata) from ``region_encoder`` / ``region_k`` / ``grid``."""
    from lsdo.inverse_attention.encoder import METHODS, RegionEncoder

    method = opts.get("region_encoder", "none").strip().lower() or "none"
    if method not in METHODS:
        raise LSDOUserError(f"region_encoder: expected one of {' | '.join(METHODS)}, got {opts['region_encoder']!r}")
    k, grid = _int(opts, "region_k", 4), _int(opts, "grid", 2)
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


def build_index(opts: dict[str, str]) -> int:
    """``lsdo-index build``: encode every video under ``videos=`` into the index ``out=``."""
    _required(opts, "ckpt", "videos", "out")
    num_frames = _int(opts, "num_frames", 12)
    batch_size = _int(opts, "batch_size", 16)
    shard_size = _int(opts, "shard_size", 256)
    workers = _int(opts, "workers", 0, minimum=0)
    fp16 = _bool(opts, "fp16", False)
    overwrite = _bool(opts, "overwrite", False)
    device = _device(opts.get("device", "auto"))
    exts = _extensions(opts.get("ext", ""))
    root, out = Path(opts["videos"]), Path(opts["out"])
    if not root.is_dir():
        raise LSDOUserError(f"videos: {root} is not a directory")
    if out.exists() and not out.is_dir():
        raise LSDOUserError(f"out: {out} exists and is not a directory")
    partial = out / PARTIAL_DIR
    if (out / META_FILE).exists() and not partial.exists() and not overwrite:
        raise LSDOUserError(f"out: {out} already holds an index; pass overwrite=true or choose another out=")

    files, dups = discover(root, exts)
    if not files:
        raise LSDOUserError(f"videos: no video files ({', '.join(exts)}) under {root}")
    from lsdo.model.encoder import image_size_of

    model, cfg = load_model(opts["ckpt"], device)
    regioner, region_info = _region_encoder(opts, model)
    image_size = image_size_of(OmegaConf.create(cfg["model"]))
    dtype = torch.float16 if fp16 else torch.float32
    settings = {
        "fingerprint": model_fingerprint(model),
        "num_frames": num_frames,
        "image_size": image_size,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if region_info is not None:  # absent with region_encoder=none: the original settings
        settings["regions"] = region_info
    by_id = {f.id: f for f in files}
    done = _load_partial(partial, settings, by_id)
    todo = [f for f in files if f.id not in done.rows and f.id not in done.skipped]
    if done.rows or done.skipped:
        print(
            f"resuming: {len(done.rows) + len(done.skipped)} of {len(files)} videos already processed in {partial}",
            file=sys.stderr,
        )
    try:
        _encode_all(
            model,
            todo,
            partial,
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

    done = _load_partial(partial, settings, by_id)
    skipped = [done.skipped[vid] for vid in sorted(done.skipped)] + dups  # (relative path, reason)
    ids = sorted(done.rows)
    out.mkdir(parents=True, exist_ok=True)
    skipped_path = out / SKIPPED_FILE
    if skipped:  # escaped names and reasons: exactly one line per skipped file
        _atomic_write(skipped_path, "".join(f"{rel}\t{printable(reason)}\n" for rel, reason in skipped))
    elif skipped_path.exists():
        skipped_path.unlink()
    if not ids:
        raise LSDOUserError(
            f"videos: none of the {len(files)} video files under {printable(str(root))} could be decoded "
            f"(see {printable(str(skipped_path))})"
        )
    info = {
        "ckpt": str(opts["ckpt"]),
        "videos": str(root),
        "num_frames": num_frames,
        "image_size": image_size,
        "sample": "uniform",
        "skipped": len(skipped),
    }
    names = ("features", "regions", "region_mask") if region_info is not None else ("features",)
    tensors = _consolidate(done, ids, names)
    index = VideoIndex.build(
        model,
        tensors["features"],
        ids,
        dtype=dtype,
        config=cfg,
        info=info,
        regions=tensors.get("regions"),
        region_mask=tensors.get("region_mask"),
        region_info=region_info,
    )
    index.save(out)
    shutil.rmtree(partial, ignore_errors=True)
    line = f"indexed {len(ids)} videos, skipped {len(skipped)}"
    print(line + (f" (unreadable; listed in {printable(str(skipped_path))})" if skipped else ""))
    return 0


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


def index_info(opts: dict[str, str]) -> int:
    """``lsdo-index info``: print an index's metadata (quick: the checksum is not computed; see ``verify``)."""
    _required(opts, "index")
    index = VideoIndex.load(opts["index"], mmap=True, verify=False)
    meta = {k: v for k, v in index.meta.items()}
    if index.checksums is not None:
        meta["checksums"] = index.checksums
    print(repr(index))
    print(json.dumps(meta, indent=1))
    return 0


def index_verify(opts: dict[str, str]) -> int:
    """``lsdo-index verify``: structure, SHA-256 checksums and finite values of an index; exit 0 (OK) or 2."""
    _required(opts, "index")
    check = verify_index(opts["index"])  # a structural problem: LSDOUserError (one line)
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


def _index(argv: list[str]) -> int:
    commands = {
        "build": (INDEX_KEYS, build_index),
        "info": (INFO_KEYS, index_info),
        "verify": (VERIFY_KEYS, index_verify),
    }
    if not argv or argv[0] in ("-h", "--help"):
        print("\n\n".join(_usage(f"lsdo-index {name}", keys) for name, (keys, _) in commands.items()))
        return 0 if argv else 2
    if argv[0] not in commands:
        raise LSDOUserError(
            f"unknown command {argv[0]!r}: use lsdo-index build ..., lsdo-index info index=... "
            "or lsdo-index verify index=..."
        )
    keys, fn = commands[argv[0]]
    try:
        opts, _ = parse_args(argv[1:], keys)
    except _Help:
        print(_usage(f"lsdo-index {argv[0]}", keys))
        return 0
    return fn(opts)


def index_main(argv: list[str] | None = None) -> int:
    """Console entry point ``lsdo-index``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return run_plain(lambda: _index(args))


# ---------------------------------------------------------------------------------------------
# lsdo-search
# ---------------------------------------------------------------------------------------------


def _search(argv: list[str]) -> int:
    try:
        opts, queries = parse_args(argv, SEARCH_KEYS, positional=True)
    except _Help:
        print(_usage("lsdo-search", SEARCH_KEYS, ' "query" ["query" ...]'))
        return 0
    _required(opts, "index", "ckpt")
    if not queries:
        raise LSDOUserError('give at least one query, e.g. lsdo-search index=... ckpt=... "a man sings"')
    empty = [i for i, q in enumerate(queries, start=1) if not q.strip()]
    if empty:
        raise LSDOUserError(
            f"query {empty[0]} of {len(queries)} is empty or only whitespace: "
            'describe the video to find, e.g. "a man sings"'
        )
    verify = _bool(opts, "verify", True)
    topk = _int(opts, "topk", 10)
    prefilter_k = _int(opts, "prefilter_k", None)
    mode = opts.get("region_mode", "xpool").strip().lower() or "xpool"
    if mode not in SEARCH_MODES:
        raise LSDOUserError(f"region_mode: expected one of {' | '.join(SEARCH_MODES)}, got {opts['region_mode']!r}")
    if mode == "regions" and prefilter_k is not None:
        raise LSDOUserError("prefilter_k applies to region_mode=xpool or both; region_mode=regions scores every video")
    index = VideoIndex.load(opts["index"], mmap=True, verify=verify)
    if mode != "xpool":
        index.require_regions()
    model, _ = load_model(opts["ckpt"], _device(opts.get("device", "cpu")))
    index.check_model(model, name=f"checkpoint {opts['ckpt']}")
    scores, found = index.search(model, queries, topk=topk, prefilter_k=prefilter_k, check_model=False, mode=mode)
    scoring = {
        "xpool": "exact X-Pool",
        "regions": f"best frame x region ({index.meta.get('regions', {}).get('method')})",
        "both": "X-Pool + best frame x region",
    }[mode]
    if prefilter_k is None or prefilter_k >= len(index):
        protocol = f"{scoring} over all {len(index)} videos"
    else:
        protocol = f"prefilter k={prefilter_k} of {len(index)} videos, {scoring} re-ranking"
    blocks = []
    for query, row_s, row_i in zip(queries, scores.tolist(), found.tolist(), strict=True):
        lines = [f"query: {printable(query)}  ({protocol})"]  # ids and queries: one printable line each
        lines += [
            f"{rank:>4}  {s:.4f}  {printable(index.ids[i])}"
            for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), start=1)
        ]
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def search_main(argv: list[str] | None = None) -> int:
    """Console entry point ``lsdo-search``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return run_plain(lambda: _search(args))


def main(argv: list[str] | None = None) -> int:
    """``python -m lsdo.retrieval.search_cli index ...`` / ``... search ...``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "index":
        return index_main(args[1:])
    if args and args[0] == "search":
        return search_main(args[1:])
    print("usage: python -m lsdo.retrieval.search_cli index build|info|verify ... | search ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
