"""A persistent video index: encoded frame features on disk, searched with exact X-Pool scores.

Public API (a contract)::

    video = model.encode_video(frames)                               # f_m [V, n, d]
    index = VideoIndex.build(model, video, ids, dtype=torch.float16)  # ids: V unique strings
    index.save("my_index")                                           # my_index/{index.json, features.safetensors}
    index = VideoIndex.load("my_index")                              # mmap=True: features stay on disk
    scores, idx = index.search(model, ["a man sings"], topk=10)      # exact X-Pool over all videos
    scores, idx = index.search(model, text, topk=10, prefilter_k=100)  # mean-pool prefilter + exact re-rank
    best = [index.ids[i] for i in idx[0]]

**What is stored.** Per video the fused frame features f_m [n, d] (``encode_video``'s output;
float32 or float16), the L2-normalised mean over its frames [d] (float32, the prefilter's
matrix), the ids and metadata: embedding size, frame count, storage dtype, the model's
fingerprint (:func:`model_fingerprint`: impl, variant and a digest of the weights) and, when
given, the checkpoint's model / variant / impl config with its hash, plus creation info. The
mean is computed from the *stored* features (after any float16 rounding), so an index built in
one go and one consolidated from stored shards are identical.

**On disk** (no pickle): a directory with ``features.safetensors`` (tensors ``features``
[V, n, d] and ``means`` [V, d]) and ``index.json`` (format name, format version, metadata, ids,
and ``checksums``: the SHA-256 and byte size of ``features.safetensors``). Both files are written
atomically (a temporary file renamed into place), ``index.json`` last.
:meth:`VideoIndex.load` checks both files (missing, unreadable, truncated, wrong version,
shapes that disagree with the ids, contents that do not match the recorded checksum) and raises
a one-line :class:`~lsdo.errors.LSDOUserError` naming the file. Hashing reads the whole file
(about 1 s per GB); ``load(verify=False)`` skips it. An index written before checksums existed
loads with a warning. :func:`verify_index` (``lsdo-index verify``) checks everything: the
structure, the checksums and that every stored value is finite. ``load(mmap=True)`` maps the
features instead of reading them: a search with a prefilter then touches only the means and its
candidates' frames.

**Ids and values.** Ids are any strings; ``lsdo-index build`` makes them from file names with
:func:`escape_name` (printable, one line, reversible with :func:`unescape_name`). Non-finite
features (NaN / inf, e.g. from a checkpoint with NaN weights or a float16 overflow) are refused by
:meth:`VideoIndex.build` / :meth:`VideoIndex.add` (:class:`NonFiniteFeaturesError`, naming the
video); a search that meets a NaN score anyway (a damaged or older index) raises a one-line
LSDOUserError naming the video instead of ranking it. Empty or whitespace-only query strings are
refused (ValueError).

**Search** (:meth:`VideoIndex.search`, returns scores [T, topk] and video indices [T, topk], best
first; ``topk`` is clipped to the number of candidates):

* ``prefilter_k=None`` (the full protocol): exact X-Pool scores of every video
  (:class:`~lsdo.retrieval.xpool_fast.XPoolScorer`, the scores of
  :func:`~lsdo.retrieval.similarity_matrix`), in chunks of ``video_chunk`` videos with a running
  top-k, so memory holds one chunk's per-video tensors and [T, topk + chunk] scores, never
  [T, V] or T x V x d. Its cost is dominated by the per-video precomputation (O(V n d^2) per call,
  whatever the number of texts): batch the queries;
* ``prefilter_k=K``: the mean-pool prefilter (paper IV-B.3, :func:`~lsdo.retrieval.prefilter_scores`
  semantics: cosine of ``text.target`` with each video's mean frame) keeps K videos per text,
  then only those are re-ranked exactly (XPoolScorer over the distinct candidates, the scores
  :func:`~lsdo.retrieval.fast_similarity` gives them). The prefilter runs over the stored means: torch
  matmul + top-k in chunks, or FAISS (``faiss-cpu``; ``IndexFlatIP``, exact) once the index holds
  at least ``faiss_threshold`` videos (default 100k) and faiss is importable; ``faiss_nlist=N``
  asks for an ``IndexIVFFlat`` with N lists (approximate, ``faiss_nprobe`` lists searched; a query
  whose probed lists hold fewer than K videos falls back to the exact prefilter). ``prefilter_k >= V``
  is the full protocol.

Ties are broken towards the lower video index (stable sorts), so results are deterministic.
float16 features are upcast to float32 for scoring. The model must be in eval mode (XPoolScorer
refuses active X-Pool dropout) and must be the one the index was built with: ``search`` checks
the fingerprint first (``check_model=False`` skips it, e.g. in a loop after one explicit
:meth:`VideoIndex.check_model`).

**Region embeddings** (optional, training-free, paper §3 / :mod:`lsdo.inverse_attention`). An index
built with ``regions`` [V, n, 1+K, d] (every sampled frame's :class:`~lsdo.inverse_attention.RegionEncoder`
set: slot 0 the frame's global CLIP embedding, slots 1..K its regions, L2-normalised) and
``region_mask`` [V, n, 1+K] bool also stores them (tensors ``regions`` / ``region_mask`` in
``features.safetensors``, stored in the index dtype / bool; ``meta["regions"]`` records method, k, grid
and K). An index without them has neither the tensors nor the ``regions`` key (the original format).
Search modes (``search(..., mode=...)``):

* ``"xpool"`` (default): the X-Pool protocol above;
* ``"regions"``: LAFM max-over-set scoring, a video's score for a text is the maximum cosine of the
  text's CLIP embedding (``TextFeatures.eos`` = f_t, normalised) over its frames x {global} U {regions}
  (:meth:`VideoIndex.search_regions`; exhaustive, chunked, no prefilter);
* ``"both"``: the sum of the two scores, X-Pool + regions (both cosines in [-1, 1]); with
  ``prefilter_k`` the mean-pool prefilter picks the candidates and both scores re-rank them.

Region search on an index without regions is a one-line :class:`~lsdo.errors.LSDOUserError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.lafm import set_similarity
from lsdo.model.lsdo_model import LSDOModel, TextFeatures
from lsdo.names import escape_name, printable, unescape_name  # noqa: F401  (re-exported)
from lsdo.retrieval.xpool_fast import XPoolScorer

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SEARCH_MODES",
    "FrameStore",
    "IndexCheck",
    "NonFiniteFeaturesError",
    "VideoIndex",
    "escape_name",
    "faiss_available",
    "file_sha256",
    "model_fingerprint",
    "printable",
    "unescape_name",
    "verify_index",
]

FORMAT = "lsdo-video-index"
FORMAT_VERSION = 1
FEATURES_FILE = "features.safetensors"
META_FILE = "index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_FAISS_THRESHOLD = 100_000
DEFAULT_VIDEO_CHUNK = 1024  # videos per XPoolScorer in the full protocol (a multiple of its 128-video blocks)
RERANK_CAP = 2048  # at most this many distinct candidate videos per XPoolScorer when re-ranking
RERANK_TEXTS = 64  # at most this many texts per re-ranking group
PREFILTER_BLOCK = 1 << 24  # torch prefilter: at most this many [T, chunk] coarse scores at a time
FINGERPRINT_SAMPLES = 256  # weight values sampled per tensor for the fingerprint
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BOOL": np.bool_}
SEARCH_MODES = ("xpool", "regions", "both")
DEFAULT_REGION_CHUNK = 256  # videos per block in region scoring ([T, chunk, n * (1+K)] cosines)


HASH_BLOCK = 1 << 22  # bytes read at a time when hashing a file


class NonFiniteFeaturesError(LSDOUserError, ValueError):
    """Features (or region embeddings) holding NaN or inf: refused when building or growing an index."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's contents, read in blocks (about 1 s per GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


class FrameStore(Protocol):
    """What a :class:`VideoIndex` needs from its frame features: a [V, n, d] tensor-like.

    A ``torch.Tensor`` is one; so is any object with ``shape``, ``dtype`` and ``__getitem__``
    that accepts a ``slice`` (consecutive videos) or a 1-D LongTensor (a set of videos) and
    returns a tensor [k, n, d] (used by ``bench/fast_inference.py`` to generate features lazily).
    """

    shape: torch.Size
    dtype: torch.dtype

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor: ...


def faiss_available() -> bool:
    """Whether ``import faiss`` works (the ``faiss-cpu`` package)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def model_fingerprint(model: LSDOModel) -> str:
    """A short hex digest identifying a model: impl, variant and a digest of its weights.

    Hashes every state-dict entry's name, shape and dtype and ``FINGERPRINT_SAMPLES`` evenly
    spaced values of it (cheap even for CLIP ViT-B/32), so another architecture, variant or
    training run gives another fingerprint; the same weights on another device give the same.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"impl": model.impl, "variant": model.variant, "dim": int(model.dim)}).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        if flat.numel():
            pick = torch.linspace(0, flat.numel() - 1, min(FINGERPRINT_SAMPLES, flat.numel()), device=flat.device)
            h.update(flat[pick.long()].to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


def _describe(model: LSDOModel) -> dict[str, Any]:
    return {"impl": model.impl, "variant": model.variant, "embed_dim": int(model.dim)}


def _config_sections(config: Any) -> dict[str, Any] | None:
    """The model / variant / impl part of a training config (a checkpoint's saved cfg), JSON-safe."""
    if config is None:
        return None
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    sections = {"model": config.get("model"), "variant": config.get("variant"), "impl": config.get("impl", "paper")}
    return json.loads(json.dumps(sections, default=str))


def _config_hash(sections: dict[str, Any] | None) -> str | None:
    if sections is None:
        return None
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:16]


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise TypeError(f"ids must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    if len(set(ids)) != len(ids):
        dups = sorted(i for i, count in Counter(ids).items() if count > 1)
        raise ValueError(f"ids must be unique: {len(dups)} repeated, e.g. {dups[:3]}")
    return ids


def _mean_pool(features: FrameStore, chunk: int = 8192) -> torch.Tensor:
    """L2-normalised mean over frames: features [V, n, d] -> [V, d] float32 (the prefilter's matrix)."""
    num_videos, _, dim = features.shape
    out = torch.empty(num_videos, dim, dtype=torch.float32)
    for start in range(0, num_videos, chunk):
        part = features[start : start + chunk].to("cpu", torch.float32)  # [c, n, d]
        out[start : start + chunk] = F.normalize(part.mean(dim=1), dim=-1)  # [c, d]
    return out


def _device_of(model: torch.nn.Module) -> torch.device:
    ref = next(model.parameters(), None)
    return ref.device if ref is not None else torch.device("cpu")


def _merge_topk(
    best_s: torch.Tensor, best_i: torch.Tensor, s: torch.Tensor, i: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k: (best [T, a], new [T, b]) -> the k best of both [T, min(k, a + b)], stable on ties."""
    all_s, all_i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i], dim=1)  # [T, a + b]
    order = all_s.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return all_s.gather(1, order), all_i.gather(1, order)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
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


def _read_features(path: Path, mmap: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of ``features.safetensors``; LSDOUserError naming the file when unreadable."""
    if not path.is_file():
        raise LSDOUserError(f"index: {path} is missing (rebuild the index with lsdo-index build)")
    try:
        base, header = _read_header(path)
        meta = header.get("__metadata__") or {}
        if not mmap:
            return load_file(str(path)), meta
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if entry["dtype"] not in _ST_DTYPES:
                raise ValueError(f"tensor '{name}' has dtype {entry['dtype']} (expected F32, F16 or BOOL)")
            dtype = np.dtype(_ST_DTYPES[entry["dtype"]])
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
        raise LSDOUserError(f"index: {path} is corrupt or truncated ({_short(exc)}); rebuild the index") from None


def _atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` via a temporary file and a rename: never a partial or empty file."""
    data = text.encode("utf-8")  # before opening anything: an encoding error leaves no file behind
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_text(doc: Any) -> str:
    """``doc`` as indented JSON; non-ASCII kept readable unless it holds lone surrogates (then escaped)."""
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a path with undecodable bytes in the creation info
        text = json.dumps(doc, indent=1)
    return text


def _nonfinite_rows(tensor: FrameStore, chunk: int = 4096) -> list[int]:
    """Indices of the rows (videos) of ``tensor`` [V, ...] holding NaN or inf, read ``chunk`` rows at a time."""
    bad: list[int] = []
    for start in range(0, tensor.shape[0], chunk):
        part = tensor[start : start + chunk]
        if part.dtype == torch.bool:
            continue
        ok = torch.isfinite(part).flatten(1).all(dim=1)  # [c]
        bad += (torch.nonzero(~ok).flatten() + start).tolist()
    return bad


def _refuse_nonfinite(
    tensors: dict[str, torch.Tensor], ids: Sequence[str], source: dict[str, torch.Tensor] | None = None
) -> None:
    """NonFiniteFeaturesError naming the first video whose stored ``tensors`` hold NaN / inf.

    ``source``: the same tensors before the cast to the storage dtype, to tell a float16 overflow apart.
    """
    for name, tensor in tensors.items():
        bad = _nonfinite_rows(tensor)
        if not bad:
            continue
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        what = "features" if name == "features" else f"{name.replace('_', ' ')}"
        before = source.get(name) if source else None
        if before is not None and not _nonfinite_rows(before[bad[0] : bad[0] + 1]):
            hint = "values beyond float16's range (65504): store them as float32 (dtype=torch.float32 / fp16=false)"
        else:
            hint = "NaN or inf from the model (a checkpoint with NaN weights?) or its input: check them and rebuild"
        raise NonFiniteFeaturesError(
            f"video '{printable(ids[bad[0]])}'{more} has non-finite {what}; refusing to index it: {hint}"
        )


def _checksum_problem(path: Path, entry: dict[str, Any] | None, hash_it: bool = True) -> str | None:
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


@dataclass
class IndexCheck:
    """What :func:`verify_index` found.

    ``files``: (file name, ``"ok"`` | ``"FAILED"`` | ``"unverified"``, detail) per data file;
    ``nonfinite``: ids of the videos whose stored features / means / regions hold NaN or inf.
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
    returned :class:`IndexCheck` (a checksum mismatch, a file without a recorded checksum, videos
    with NaN / inf). Reads every byte of the index once for the hash and once for the values.
    """
    index = VideoIndex.load(path, mmap=True, verify=False)
    root = Path(index.source or path)
    check = IndexCheck(root, len(index))
    entry = (index.checksums or {}).get(FEATURES_FILE)
    if entry is None:
        check.files.append(
            (FEATURES_FILE, "unverified", "has no checksum (written by an older lsdo; rebuild to add one)")
        )
    else:
        problem = _checksum_problem(root / FEATURES_FILE, entry)
        if problem:
            check.files.append((FEATURES_FILE, "FAILED", problem))
        else:
            check.files.append((FEATURES_FILE, "ok", f"sha256 {entry['sha256'][:16]}..., {entry['bytes']} bytes"))
    bad: set[int] = set()
    for tensor in (index.features, index.means, index.regions):
        if tensor is not None:
            bad.update(_nonfinite_rows(tensor))
    check.nonfinite = [index.ids[i] for i in sorted(bad)]
    return check


class VideoIndex:
    """Encoded videos (frame features f_m [V, n, d], normalised mean-pool [V, d], ids) and their search.

    Build with :meth:`build` (or :meth:`load`); the constructor takes the parts as they are
    (``features`` may be any :class:`FrameStore`) and is meant for those two and for benchmarks.
    """

    def __init__(
        self,
        features: FrameStore,
        means: torch.Tensor,
        ids: Sequence[str],
        meta: dict[str, Any],
        *,
        faiss_threshold: int = DEFAULT_FAISS_THRESHOLD,
        faiss_nlist: int | None = None,
        faiss_nprobe: int = 16,
        source: str | None = None,
        regions: FrameStore | None = None,
        region_mask: torch.Tensor | None = None,
    ) -> None:
        """features [V, n, d]; means [V, d] float32 (normalised mean over frames); ids: V strings.

        Optional ``regions`` [V, n, 1+K, d] (region-set embeddings of every frame) with
        ``region_mask`` [V, n, 1+K] bool; ``meta["regions"]`` then describes them.
        """
        if len(features.shape) != 3 or tuple(means.shape) != (features.shape[0], features.shape[2]):
            raise ValueError(f"features [V, n, d] and means [V, d] expected, got {features.shape}, {means.shape}")
        if len(ids) != features.shape[0]:
            raise ValueError(f"{features.shape[0]} videos but {len(ids)} ids")
        if (regions is None) != (region_mask is None):
            raise ValueError("regions and region_mask go together")
        if regions is not None and region_mask is not None:
            v, n, d = features.shape
            if len(regions.shape) != 4 or (regions.shape[0], regions.shape[1], regions.shape[3]) != (v, n, d):
                raise ValueError(f"regions [{v}, {n}, 1+K, {d}] expected, got {tuple(regions.shape)}")
            if tuple(region_mask.shape) != tuple(regions.shape[:3]) or region_mask.dtype != torch.bool:
                raise ValueError(f"region_mask {list(regions.shape[:3])} bool expected, got {tuple(region_mask.shape)}")
        self.regions = regions
        self.region_mask = region_mask
        self.features = features
        self.means = means
        self.ids = list(ids)
        self.meta = meta
        self.faiss_threshold = int(faiss_threshold)
        self.faiss_nlist = faiss_nlist
        self.faiss_nprobe = int(faiss_nprobe)
        self.source = source  # the directory it was loaded from / saved to (for messages)
        self.checksums: dict[str, dict[str, Any]] | None = None  # file -> {"sha256", "bytes"} once saved / loaded
        self._faiss: Any = None
        self._faiss_quantizer: Any = None
        self._faiss_key: tuple | None = None

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[1])

    @property
    def dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def dtype(self) -> torch.dtype:
        return self.features.dtype

    @property
    def fingerprint(self) -> str:
        return str(self.meta["model"]["fingerprint"])

    @property
    def has_regions(self) -> bool:
        """Whether region-set embeddings are stored (the index was built with a region encoder)."""
        return self.regions is not None

    @property
    def num_slots(self) -> int:
        """1 + K: set members per frame (global + regions); 0 without regions."""
        return int(self.regions.shape[2]) if self.regions is not None else 0

    def __repr__(self) -> str:
        m = self.meta.get("model", {})
        return (
            f"VideoIndex({len(self)} videos x {self.num_frames} frames x {self.dim}, {self.dtype}, "
            f"impl={m.get('impl')}, variant={m.get('variant')}, fingerprint={m.get('fingerprint')}"
            + (f", regions={self.meta['regions'].get('method')} x {self.num_slots - 1}" if self.has_regions else "")
            + ")"
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        model: LSDOModel,
        video: torch.Tensor,
        ids: Sequence[str],
        *,
        dtype: torch.dtype = torch.float32,
        config: Any = None,
        info: dict[str, Any] | None = None,
        regions: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        region_info: dict[str, Any] | None = None,
        **options: Any,
    ) -> VideoIndex:
        """An index of ``video`` (f_m [V, n, d] from ``model.encode_video``) under ``ids`` (V unique strings).

        ``dtype``: storage, float32 or float16. ``config``: the training config (a checkpoint's
        saved cfg), whose model / variant / impl sections are recorded. ``info``: extra creation
        info recorded in the metadata (JSON-safe). ``regions`` [V, n, 1+K, d] / ``region_mask``
        [V, n, 1+K] bool: optional region-set embeddings of every frame (``RegionEncoder.encode``
        per frame; stored in ``dtype``), described by ``region_info`` (e.g. method, k, grid;
        recorded as ``meta["regions"]`` with ``num_regions`` = K). ``options``: ``faiss_threshold``,
        ``faiss_nlist``, ``faiss_nprobe`` (see the module docstring).

        Features or regions holding NaN / inf (after the cast to ``dtype``) raise
        :class:`NonFiniteFeaturesError` (a ValueError and a one-line LSDOUserError) naming the video.
        """
        ids = _check_ids(ids)
        if not isinstance(video, torch.Tensor) or video.ndim != 3:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"video must be the [V, n, d] output of model.encode_video, got {shape}")
        if video.shape[0] != len(ids):
            raise ValueError(f"{video.shape[0]} videos but {len(ids)} ids: give one id per video")
        if video.shape[0] == 0:
            raise ValueError("an index needs at least one video")
        if video.shape[2] != model.dim:
            raise ValueError(f"video features have d={video.shape[2]} but the model's embedding size is {model.dim}")
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
        features = video.detach().to("cpu", dtype).contiguous()  # [V, n, d]
        stored_regions, stored_mask = cls._check_regions(features, regions, region_mask, dtype)
        stored = {"features": features} if stored_regions is None else {"features": features, "regions": stored_regions}
        _refuse_nonfinite(stored, ids, source={"features": video, "regions": regions})
        sections = _config_sections(config)
        meta = {
            "num_videos": int(features.shape[0]),
            "num_frames": int(features.shape[1]),
            "embed_dim": int(features.shape[2]),
            "dtype": str(dtype).removeprefix("torch."),
            "model": {
                "fingerprint": model_fingerprint(model),
                **_describe(model),
                "config_hash": _config_hash(sections),
                "config": sections,
            },
            "created": cls._created(info),
        }
        if stored_regions is not None:
            k = int(stored_regions.shape[2]) - 1
            meta["regions"] = json.loads(json.dumps({**(region_info or {}), "num_regions": k}, default=str))
        return cls(
            features, _mean_pool(features), ids, meta, regions=stored_regions, region_mask=stored_mask, **options
        )

    @staticmethod
    def _check_regions(
        features: torch.Tensor, regions: torch.Tensor | None, region_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Validated CPU copies: regions [V, n, 1+K, d] in ``dtype`` and region_mask [V, n, 1+K] bool (or Nones)."""
        if regions is None and region_mask is None:
            return None, None
        if regions is None or region_mask is None:
            raise ValueError("regions and region_mask go together: give both or neither")
        v, n, d = features.shape
        if regions.ndim != 4 or (regions.shape[0], regions.shape[1], regions.shape[3]) != (v, n, d):
            raise ValueError(f"regions must be [{v}, {n}, 1+K, {d}] (one set per frame), got {tuple(regions.shape)}")
        if tuple(region_mask.shape) != tuple(regions.shape[:3]):
            raise ValueError(f"region_mask must be {list(regions.shape[:3])}, got {tuple(region_mask.shape)}")
        return regions.detach().to("cpu", dtype).contiguous(), region_mask.detach().to("cpu", torch.bool).contiguous()

    @staticmethod
    def _created(info: dict[str, Any] | None) -> dict[str, Any]:
        try:
            from importlib.metadata import version

            lsdo_version = version("lsdo")
        except Exception:  # not installed as a distribution
            lsdo_version = None
        created = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "lsdo": lsdo_version,
            "torch": torch.__version__,
        }
        return json.loads(json.dumps({**created, **(info or {})}, default=str))

    def add(
        self,
        model: LSDOModel,
        video: torch.Tensor,
        ids: Sequence[str],
        regions: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
    ) -> None:
        """Append videos (f_m [B, n, d] from the same model) under new, unused ids.

        An index with regions needs their ``regions`` [B, n, 1+K, d] and ``region_mask`` [B, n, 1+K] too.
        """
        self.check_model(model)
        if self.has_regions != (regions is not None):
            have = "has" if self.has_regions else "has no"
            raise ValueError(f"the index {have} region embeddings: give regions/region_mask exactly when it has")
        if not isinstance(self.features, torch.Tensor):
            raise TypeError("add needs an index whose features are a tensor (not a lazy FrameStore)")
        ids = _check_ids(ids)
        if video.ndim != 3 or tuple(video.shape[1:]) != (self.num_frames, self.dim) or video.shape[0] != len(ids):
            raise ValueError(
                f"video must be [{len(ids)}, {self.num_frames}, {self.dim}] (one per id), got {tuple(video.shape)}"
            )
        clash = set(ids).intersection(self.ids)
        if clash:
            raise ValueError(f"{len(clash)} ids are already in the index, e.g. {sorted(clash)[:3]}")
        new = video.detach().to("cpu", self.dtype).contiguous()
        _refuse_nonfinite({"features": new}, ids, source={"features": video})
        if self.regions is not None and self.region_mask is not None:
            new_r, new_m = self._check_regions(new, regions, region_mask, self.dtype)
            if new_r is None or new_r.shape[2] != self.num_slots:
                raise ValueError(f"regions must have {self.num_slots} slots per frame, got {tuple(regions.shape)}")
            _refuse_nonfinite({"regions": new_r}, ids, source={"regions": regions})
            self.regions = torch.cat([self.regions, new_r])  # type: ignore[list-item]
            self.region_mask = torch.cat([self.region_mask, new_m])  # type: ignore[list-item]
        self.features = torch.cat([self.features, new])
        self.means = torch.cat([self.means, _mean_pool(new)])
        self.ids += ids
        self.meta["num_videos"] = len(self.ids)
        self._faiss = None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/features.safetensors`` and ``path/index.json`` (the directory is created)."""
        if not isinstance(self.features, torch.Tensor):
            raise TypeError("only an index whose features are a tensor can be saved")
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise LSDOUserError(f"index: {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"features": self.features.contiguous(), "means": self.means.contiguous()}
        if self.regions is not None and self.region_mask is not None:
            if not isinstance(self.regions, torch.Tensor):
                raise TypeError("only an index whose regions are a tensor can be saved")
            tensors.update(regions=self.regions.contiguous(), region_mask=self.region_mask.contiguous())
        tmp = path / (FEATURES_FILE + ".tmp")
        try:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
            checksums = {FEATURES_FILE: {"sha256": file_sha256(tmp), "bytes": tmp.stat().st_size}}
            os.replace(tmp, path / FEATURES_FILE)
        finally:
            tmp.unlink(missing_ok=True)
        doc = {"format": FORMAT, "version": FORMAT_VERSION, **self.meta, "checksums": checksums, "ids": self.ids}
        _atomic_write_text(path / META_FILE, _json_text(doc))  # written last
        self.source = str(path)
        self.checksums = checksums
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True, **options: Any) -> VideoIndex:
        """Read an index directory written by :meth:`save`; any problem is a one-line LSDOUserError.

        ``mmap=True`` maps ``features.safetensors`` (copy-on-write) instead of reading it.
        ``verify=True`` (default) checks ``features.safetensors`` against the SHA-256 recorded in
        ``index.json`` (reads the whole file once, about 1 s per GB); an index without checksums
        (written by an older lsdo) loads with a warning. ``verify=False`` skips the hash (the sizes
        and the structure are still checked).
        ``options``: ``faiss_threshold``, ``faiss_nlist``, ``faiss_nprobe``.
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
            raise LSDOUserError(f"index: {meta_path} is not valid JSON ({_short(exc)}); rebuild the index") from None
        meta, ids = cls._check_meta(doc, meta_path)
        checksums = cls._check_checksums(doc, meta_path)
        feats_path = path / FEATURES_FILE
        tensors, st_meta = _read_features(feats_path, mmap)
        if checksums is None:
            log.warning(
                "index %s has no checksums (written by an older lsdo): its contents cannot be verified; "
                "rebuild it to add them",
                path,
            )
        else:
            problem = _checksum_problem(feats_path, checksums.get(FEATURES_FILE), hash_it=verify)
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
        index = cls(features, means, ids, meta, source=str(path), regions=regions, region_mask=region_mask, **options)
        index.checksums = checksums
        return index

    @staticmethod
    def _check_checksums(doc: dict[str, Any], meta_path: Path) -> dict[str, dict[str, Any]] | None:
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

    @staticmethod
    def _check_meta(doc: Any, meta_path: Path) -> tuple[dict[str, Any], list[str]]:
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

    # ------------------------------------------------------------------ model check
    def check_model(self, model: LSDOModel, name: str = "the model") -> None:
        """LSDOUserError (one line) unless ``model`` is the one the index was built with."""
        got = model_fingerprint(model)
        if got == self.fingerprint:
            return
        m = self.meta["model"]
        have = f"impl={m.get('impl')} variant={m.get('variant')} d={m.get('embed_dim')}"
        mine = f"impl={model.impl} variant={model.variant} d={model.dim}"
        ckpt = self.meta.get("created", {}).get("ckpt")
        hint = f" ({ckpt})" if ckpt else ""
        where = f" {self.source}" if self.source else ""
        raise LSDOUserError(
            f"index{where} was built with another model ({have}, fingerprint {self.fingerprint}) than {name} "
            f"({mine}, fingerprint {got}): search with the checkpoint it was built from{hint} or rebuild the index"
        )

    # ------------------------------------------------------------------ search
    def _frames(self, index: slice | torch.Tensor, device: torch.device) -> torch.Tensor:
        """Stored features of some videos, upcast: [k, n, d] float32 on ``device``."""
        return self.features[index].to(device=device, dtype=torch.float32)

    @staticmethod
    def _as_text(model: LSDOModel, text: TextFeatures | str | Sequence[str]) -> TextFeatures:
        if isinstance(text, TextFeatures):
            return text
        if isinstance(text, str):
            text = [text]
        if not isinstance(text, Sequence) or not all(isinstance(t, str) for t in text):
            raise TypeError("text must be TextFeatures (model.encode_text) or a list of strings")
        if not text:
            raise ValueError("no query texts given")
        empty = [i for i, t in enumerate(text) if not t.strip()]
        if empty:
            raise ValueError(
                f"query text {empty[0] + 1} of {len(text)} is empty or only whitespace: "
                "describe the video to find, e.g. 'a man sings'"
            )
        tokens = model.tokenize(list(text)).to(_device_of(model))
        return model.encode_text(tokens)

    def _refuse_nan(self, scores: torch.Tensor, videos: torch.Tensor) -> None:
        """LSDOUserError naming the first video with a NaN / +inf score: scores [T, c], their videos [T, c] or [c]."""
        bad = torch.isnan(scores) | (scores == float("inf"))
        if not bool(bad.any()):
            return
        found = videos.expand_as(scores)[bad].unique()
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        where = f" {self.source}" if self.source else ""
        check = f"lsdo-index verify index={self.source}" if self.source else "lsdo-index verify"
        raise LSDOUserError(
            f"index{where}: video '{printable(self.ids[int(found[0])])}'{more} has non-finite stored values "
            f"(score {scores[bad][0].item()}): the index is damaged or was built without checks; "
            f"check it with {check} and rebuild it"
        )

    @torch.no_grad()
    def search(
        self,
        model: LSDOModel,
        text: TextFeatures | str | Sequence[str],
        topk: int = 10,
        prefilter_k: int | None = None,
        *,
        chunk_size: int = 256,
        video_chunk: int = DEFAULT_VIDEO_CHUNK,
        check_model: bool = True,
        accum_dtype: torch.dtype = torch.float64,
        mode: str = "xpool",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``topk`` videos per text: scores [T, k] float32 and indices into ``ids`` [T, k] (long), best first.

        ``text``: ``model.encode_text`` output (T texts) or strings (tokenised and encoded here).
        ``prefilter_k=None``: exact X-Pool over all videos; ``K``: mean-pool prefilter then exact
        re-ranking of K candidates per text (module docstring). ``k = min(topk, candidates)``.
        ``chunk_size`` texts and ``video_chunk`` videos are scored at a time. ``accum_dtype``:
        XPoolScorer's accumulation dtype; float64 (default) gives the scores of
        :func:`~lsdo.retrieval.similarity_matrix`, float32 is about 1.5-2x cheaper on CPU and
        differs from them by about 1e-7.

        ``mode``: ``"xpool"`` (the above), ``"regions"`` (:meth:`search_regions` with the texts' f_t,
        ``text.eos``; exhaustive, ``prefilter_k`` must be None) or ``"both"`` (X-Pool score + region
        score, with or without the prefilter). Region modes need an index built with regions
        (LSDOUserError otherwise).
        """
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        if mode != "xpool":
            self.require_regions()
        if mode == "regions" and prefilter_k is not None:
            raise ValueError("prefilter_k applies to mode='xpool' or 'both'; mode='regions' scores every video")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
        if prefilter_k is not None and (isinstance(prefilter_k, bool) or not isinstance(prefilter_k, int)):
            raise ValueError(f"prefilter_k must be None or an integer >= 1, got {prefilter_k!r}")
        if prefilter_k is not None and prefilter_k < 1:
            raise ValueError(f"prefilter_k must be None or an integer >= 1, got {prefilter_k}")
        if check_model:
            self.check_model(model)
        text = self._as_text(model, text)
        if text.target.ndim != 2 or text.target.shape[-1] != self.dim:
            raise ValueError(f"text features [T, {self.dim}] expected, got {tuple(text.target.shape)}")
        if not all(bool(torch.isfinite(t).all()) for t in (text.query, text.target, text.eos)):
            raise ValueError("the text features hold NaN or inf: the model's text encoder is broken (NaN weights?)")
        if mode == "regions":
            return self.search_regions(text.eos, topk)
        region_text = text.eos.detach().to("cpu", torch.float32) if mode == "both" else None  # [T, d]
        if prefilter_k is None or prefilter_k >= len(self):
            return self._search_full(model, text, topk, chunk_size, video_chunk, accum_dtype, region_text)
        candidates = self.prefilter(text, prefilter_k)  # [T, K]
        return self._rerank(model, text, candidates, topk, chunk_size, accum_dtype, region_text)

    # ------------------------------------------------------------------ region search (LAFM)
    def require_regions(self) -> None:
        """LSDOUserError (one line) unless the index stores region embeddings."""
        if self.has_regions:
            return
        where = f" {self.source}" if self.source else ""
        raise LSDOUserError(
            f"index{where} has no region embeddings (built with region_encoder=none): rebuild it with "
            f"lsdo-index build ... region_encoder=inverse_attention|grid, or search with region_mode=xpool"
        )

    def region_scores(self, text_emb: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
        """LAFM scores of some videos: text [T, d] x their stored sets -> [T, c] float32 (CPU).

        A video's score is max cosine over its n frames x (1+K) valid set members (:func:`set_similarity`).
        """
        if self.regions is None or self.region_mask is None:
            self.require_regions()
            raise AssertionError  # unreachable: require_regions raised
        sets = self.regions[index].to("cpu", torch.float32)  # [c, n, 1+K, d]
        mask = self.region_mask[index].to("cpu")  # [c, n, 1+K]
        return set_similarity(text_emb.detach().to("cpu", torch.float32), sets.flatten(1, 2), mask.flatten(1, 2))

    @torch.no_grad()
    def search_regions(
        self, text_emb: torch.Tensor, topk: int = 10, *, video_chunk: int = DEFAULT_REGION_CHUNK
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-free region search: best ``topk`` videos per text by max cosine over frames x {global} U {regions}.

        ``text_emb`` [T, d]: CLIP text embeddings f_t (``model.encoder.encode_text(tokens)[0]`` or
        ``TextFeatures.eos``; normalised here). Exhaustive, ``video_chunk`` videos at a time with a
        running top-k (memory [T, chunk, n (1+K)]). Returns scores [T, k] float32 and indices [T, k]
        long, best first, ``k = min(topk, V)``, ties towards the lower index.
        """
        self.require_regions()
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
        if text_emb.ndim != 2 or text_emb.shape[-1] != self.dim:
            raise ValueError(f"text embeddings [T, {self.dim}] expected, got {tuple(text_emb.shape)}")
        num_texts, k = text_emb.shape[0], min(topk, len(self))
        best_s = torch.empty(num_texts, 0)
        best_i = torch.empty(num_texts, 0, dtype=torch.long)
        step = max(int(video_chunk), 1)
        for start in range(0, len(self), step):
            stop = min(start + step, len(self))
            scores = self.region_scores(text_emb, slice(start, stop))  # [T, c]
            index = torch.arange(start, stop).expand(num_texts, -1)  # [T, c]
            self._refuse_nan(scores, index)
            best_s, best_i = _merge_topk(best_s, best_i, scores, index, k)
        return best_s, best_i

    def _search_full(
        self,
        model: LSDOModel,
        text: TextFeatures,
        topk: int,
        chunk_size: int,
        video_chunk: int,
        accum_dtype: torch.dtype = torch.float64,
        region_text: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact scores of every video, chunk by chunk, with a running top-k: [T, k] x 2.

        ``region_text`` [T, d]: when given (mode ``both``), each video's region score is added.
        """
        device = _device_of(model)
        text = text.to(device)
        num_texts, k = len(text), min(topk, len(self))
        best_s = torch.empty(num_texts, 0)
        best_i = torch.empty(num_texts, 0, dtype=torch.long)
        step = max(int(video_chunk), 1)
        for start in range(0, len(self), step):
            stop = min(start + step, len(self))
            frames = self._frames(slice(start, stop), device)  # [c, n, d] float32
            scorer = XPoolScorer(model.xpool, frames, accum_dtype=accum_dtype)  # per-video tensors
            scores = scorer.score(text, chunk_size).float().cpu()  # [T, c]
            if region_text is not None:
                scores = scores + self.region_scores(region_text, slice(start, stop))  # [T, c]
            index = torch.arange(start, stop).expand(num_texts, -1)  # [T, c]
            self._refuse_nan(scores, index)
            best_s, best_i = _merge_topk(best_s, best_i, scores, index, k)
        return best_s, best_i

    @torch.no_grad()
    def prefilter(self, text: TextFeatures | torch.Tensor, k: int) -> torch.Tensor:
        """Each text's ``k`` best videos by cos(text.target, mean frame): [T, min(k, V)] long (any order).

        torch (chunked matmul + top-k) below ``faiss_threshold`` videos, FAISS at or above it
        when importable (flat inner product; IVF with ``faiss_nlist``).
        """
        target = text.target if isinstance(text, TextFeatures) else text  # [T, d]
        query = F.normalize(target.detach().to("cpu", torch.float32), dim=-1)  # [T, d]
        k = max(min(int(k), len(self)), 1)
        if self._use_faiss():
            return self._faiss_prefilter(query, k)
        return self._torch_prefilter(query, k)

    def _torch_prefilter(self, query: torch.Tensor, k: int) -> torch.Tensor:
        num_texts = query.shape[0]
        best_s = torch.empty(num_texts, 0)
        best_i = torch.empty(num_texts, 0, dtype=torch.long)
        step = max(PREFILTER_BLOCK // max(num_texts, 1), 4096)
        for start in range(0, len(self), step):
            coarse = query @ self.means[start : start + step].T  # [T, c]: cosines
            self._refuse_nan(coarse, torch.arange(start, start + coarse.shape[1]))
            top = coarse.topk(min(k, coarse.shape[1]), dim=1)
            all_s, all_i = torch.cat([best_s, top.values], 1), torch.cat([best_i, top.indices + start], 1)
            keep = all_s.topk(min(k, all_s.shape[1]), dim=1).indices
            best_s, best_i = all_s.gather(1, keep), all_i.gather(1, keep)
        return best_i

    def _use_faiss(self) -> bool:
        if self.faiss_nlist is not None:
            if not faiss_available():
                raise LSDOUserError("faiss_nlist (an IVF prefilter) needs FAISS: pip install faiss-cpu")
            return True
        return len(self) >= self.faiss_threshold and faiss_available()

    def faiss_index(self) -> Any:
        """The FAISS index over the normalised means (built on first use, then cached)."""
        import faiss

        key = (len(self), self.faiss_nlist)
        if self._faiss is not None and self._faiss_key == key:
            return self._faiss
        means = np.ascontiguousarray(self.means.numpy(), dtype=np.float32)  # [V, d]
        finite = np.isfinite(means).all(axis=1)  # [V]
        if not finite.all():
            rows = np.flatnonzero(~finite)
            self._refuse_nan(torch.full((1, len(rows)), float("nan")), torch.from_numpy(rows)[None])
        if self.faiss_nlist is None:
            index = faiss.IndexFlatIP(self.dim)
        else:
            nlist = max(1, min(int(self.faiss_nlist), len(self)))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self._faiss_quantizer = quantizer  # the IVF index refers to it: keep it alive
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(len(self), size=min(len(self), 64 * nlist), replace=False))
            index.train(means[sample])
        index.add(means)
        self._faiss, self._faiss_key = index, key
        return index

    def _faiss_prefilter(self, query: torch.Tensor, k: int) -> torch.Tensor:
        index = self.faiss_index()
        if self.faiss_nlist is not None:
            index.nprobe = max(1, min(self.faiss_nprobe, index.nlist))
        _, found = index.search(np.ascontiguousarray(query.numpy()), k)  # [T, k], -1 where lists ran out
        found = torch.from_numpy(found).long()
        short = (found < 0).any(dim=1)
        if short.any():  # IVF: too few videos in the probed lists -> the exact prefilter for those texts
            found[short] = self._torch_prefilter(query[short], k)
        return found

    def _rerank(
        self,
        model: LSDOModel,
        text: TextFeatures,
        candidates: torch.Tensor,
        topk: int,
        chunk_size: int,
        accum_dtype: torch.dtype = torch.float64,
        region_text: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact scores of each text's candidates [T, K] -> the best [T, min(topk, K)] (stable on ties).

        ``region_text`` [T, d]: when given (mode ``both``), each candidate's region score is added.

        Texts go in groups of at most ``RERANK_TEXTS`` whose candidates span at most ``RERANK_CAP``
        distinct videos; one XPoolScorer per group scores the group's texts against its distinct
        candidates ([t, U] blocks, the same per-video code as the full protocol; cheaper on CPU
        than gathering per pair) and each text keeps its own candidates' scores.
        """
        device = _device_of(model)
        text = text.to(device)
        num_texts, k = candidates.shape
        out_k = min(topk, k)
        candidates = candidates.sort(dim=1).values  # ascending video index: ties go to the lower index
        scores_out = torch.empty(num_texts, out_k)
        index_out = torch.empty(num_texts, out_k, dtype=torch.long)
        group = max(1, min(RERANK_TEXTS, RERANK_CAP // max(k, 1)))
        for start in range(0, num_texts, group):
            cand = candidates[start : start + group]  # [t, K]
            videos, local = torch.unique(cand, return_inverse=True)  # U sorted distinct videos, [t, K] positions
            scorer = XPoolScorer(model.xpool, self._frames(videos, device), accum_dtype=accum_dtype)  # U videos
            dense = scorer.score(text[start : start + group], chunk_size).float().cpu()  # [t, U]
            if region_text is not None:
                dense = dense + self.region_scores(region_text[start : start + group], videos)  # [t, U]
            self._refuse_nan(dense, videos)
            scores = dense.gather(1, local)  # [t, K]
            order = scores.sort(dim=1, descending=True, stable=True).indices[:, :out_k]
            scores_out[start : start + group] = scores.gather(1, order)
            index_out[start : start + group] = cand.gather(1, order)
        return scores_out, index_out
