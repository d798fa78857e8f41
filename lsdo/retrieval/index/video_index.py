"""The :class:`VideoIndex` object: encoded videos in memory (or mapped); built, grown, saved, loaded, searched.

This module holds the object and its argument checks; each job lives in its own module and the
methods hand over to it: files (:mod:`~lsdo.retrieval.index.store`), the shards seen as one
(:mod:`~lsdo.retrieval.index.shards`), the model check (:mod:`~lsdo.retrieval.index.fingerprint`),
non-finite values (:mod:`~lsdo.retrieval.index.finite`), the mean-pool prefilter
(:mod:`~lsdo.retrieval.index.prefilter`), the stored re-ranking tensors
(:mod:`~lsdo.retrieval.index.rerank`), exact X-Pool scoring (:mod:`~lsdo.retrieval.index.exact`)
and region scoring (:mod:`~lsdo.retrieval.index.regions`). The index holds features [V, n, d] (any
:class:`~lsdo.retrieval.index.format.FrameStore`), means [V, d] float32, V ids, the metadata of
``index.json``, optionally regions [V, n, 1+K, d] with region_mask [V, n, 1+K] and the re-ranking
tensors; the FAISS index over the means is built on first use (or read from the index directory)
and cached.

**Growing.** :meth:`VideoIndex.add` appends rows without copying the memory-mapped ones (a loaded
index's shards stay mapped; the new rows are an in-memory part), and :meth:`VideoIndex.save` to the
directory the index was loaded from (or last saved to) writes only the rows added since, as one
new shard: an index built in two halves and appended is the index built at once (ids, tensors,
scores), and its first shard is never rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lsdo.errors import LSDOUserError
from lsdo.model.lsdo_model import LSDOModel, TextFeatures
from lsdo.retrieval.index.exact import DEFAULT_VIDEO_CHUNK, ExactScorer, ExtraScores, device_of
from lsdo.retrieval.index.fingerprint import check_fingerprint, creation_info, model_meta
from lsdo.retrieval.index.finite import refuse_nan_scores, refuse_nonfinite
from lsdo.retrieval.index.format import DTYPES, META_FILE, PREFILTER_FILE, RERANK_TENSORS, FrameStore, checksum_problem
from lsdo.retrieval.index.prefilter import (
    DEFAULT_FAISS_THRESHOLD,
    DEFAULT_IVFPQ_THRESHOLD,
    DEFAULT_NPROBE,
    DEFAULT_REFINE,
    FAISS_ADD_BLOCK,
    PrefilterPlan,
    build_faiss_index,
    deserialize,
    faiss_available,
    faiss_prefilter,
    mean_pool,
    plan_prefilter,
    serialize,
    torch_prefilter,
)
from lsdo.retrieval.index.regions import (
    DEFAULT_REGION_CHUNK,
    SEARCH_MODES,
    check_region_store,
    no_regions_error,
    prepare_regions,
    region_meta,
    region_topk,
    score_regions,
)
from lsdo.retrieval.index.rerank import TemplateCache, compute_rerank, rerank_meta
from lsdo.retrieval.index.shards import ShardedRows, append_rows, parts_of, row_slices
from lsdo.retrieval.index.store import (
    append_shard,
    read_features,
    read_index,
    write_bytes,
    write_index,
    write_meta,
)
from lsdo.retrieval.index.topk import check_topk

__all__ = ["VideoIndex"]

log = logging.getLogger(__name__)


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


@dataclass
class _OnDisk:
    """What the index directory ``path`` holds of this index: its shard table, checksums and prefilter entry."""

    path: Path
    shards: list[dict[str, Any]]
    checksums: dict[str, dict[str, Any]] | None
    prefilter: dict[str, Any] | None = None
    verify: bool = True

    @property
    def rows(self) -> int:
        return sum(e["num_videos"] for e in self.shards)


def _rows(store: FrameStore, start: int, stop: int) -> FrameStore:
    """Rows ``start:stop`` of a store without copying: a view, or the views of the parts they span."""
    if isinstance(store, ShardedRows):
        pieces = list(store.slices(start, stop))
        return pieces[0] if len(pieces) == 1 else ShardedRows(pieces)
    return store[start:stop]


class VideoIndex:
    """Encoded videos (frame features f_m [V, n, d], normalised mean-pool [V, d], ids) and their search.

    Build with :meth:`build` (or :meth:`load`); the constructor takes the parts as they are
    (``features`` may be any :class:`FrameStore`) and is meant for those two and for benchmarks.
    """

    def __init__(
        self,
        features: FrameStore,
        means: FrameStore,
        ids: Sequence[str],
        meta: dict[str, Any],
        *,
        faiss_threshold: int = DEFAULT_FAISS_THRESHOLD,
        faiss_nlist: int | None = None,
        faiss_nprobe: int = DEFAULT_NPROBE,
        faiss_pq: int | None = None,
        faiss_refine: int = DEFAULT_REFINE,
        ivfpq_threshold: int = DEFAULT_IVFPQ_THRESHOLD,
        source: str | None = None,
        regions: FrameStore | None = None,
        region_mask: FrameStore | None = None,
        rerank: dict[str, FrameStore] | None = None,
    ) -> None:
        """features [V, n, d]; means [V, d] float32 (normalised mean over frames); ids: V strings.

        Optional ``regions`` [V, n, 1+K, d] (region-set embeddings of every frame) with
        ``region_mask`` [V, n, 1+K] bool; ``meta["regions"]`` then describes them. Optional
        ``rerank``: the stored re-ranking tensors (:mod:`~lsdo.retrieval.index.rerank`, names
        ``rerank_keys`` / ``rerank_frames`` / ``rerank_mix``), described by ``meta["rerank"]``.
        Prefilter options (:mod:`~lsdo.retrieval.index.prefilter`): ``faiss_threshold`` (FAISS
        flat from this many videos), ``ivfpq_threshold`` (IVF-PQ from this many), ``faiss_nlist`` /
        ``faiss_pq`` (an explicit IVF / IVF-PQ), ``faiss_nprobe`` (lists probed), ``faiss_refine``
        (IVF-PQ: candidates re-scored exactly, x K).
        """
        if len(features.shape) != 3 or tuple(means.shape) != (features.shape[0], features.shape[2]):
            raise ValueError(f"features [V, n, d] and means [V, d] expected, got {features.shape}, {means.shape}")
        if len(ids) != features.shape[0]:
            raise ValueError(f"{features.shape[0]} videos but {len(ids)} ids")
        check_region_store(features, regions, region_mask)
        if rerank is not None and set(rerank) != set(RERANK_TENSORS):
            raise ValueError(f"rerank must hold exactly {RERANK_TENSORS}, got {sorted(rerank)}")
        self.regions = regions
        self.region_mask = region_mask
        self.features = features
        self.means = means
        self.rerank = rerank
        self.ids = list(ids)
        self.meta = meta
        self.faiss_threshold = int(faiss_threshold)
        self.faiss_nlist = faiss_nlist
        self.faiss_nprobe = int(faiss_nprobe)
        self.faiss_pq = faiss_pq
        self.faiss_refine = int(faiss_refine)
        self.ivfpq_threshold = int(ivfpq_threshold)
        self.source = source  # the directory it was loaded from / saved to (for messages)
        self.checksums: dict[str, dict[str, Any]] | None = None  # file -> {"sha256", "bytes"} once saved / loaded
        self._faiss: Any = None
        self._faiss_quantizer: Any = None
        self._faiss_key: tuple | None = None
        self._disk: _OnDisk | None = None  # the directory holding the first rows (loaded from / saved to)
        self._fixed_rows = 0  # leading rows memory-mapped from files: never concatenated in memory
        self._templates = TemplateCache()  # stored re-ranking: per-model scorer constants
        self.ignore_stored_prefilter = False  # True: plan the prefilter as if no prefilter.faiss were stored

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
    def has_rerank(self) -> bool:
        """Whether the exact re-ranking tensors are stored (built with ``rerank=True``)."""
        return self.rerank is not None

    @property
    def num_slots(self) -> int:
        """1 + K: set members per frame (global + regions); 0 without regions."""
        return int(self.regions.shape[2]) if self.regions is not None else 0

    @property
    def num_shards(self) -> int:
        """Parts the rows are held in (the shards of a memory-mapped index, plus rows added since)."""
        return len(parts_of(self.features))

    @property
    def stored_files(self) -> list[str]:
        """The data files of the directory this index was loaded from / saved to: its shards, then its prefilter."""
        if self._disk is None:
            return []
        files = [e["file"] for e in self._disk.shards]
        return files + ([PREFILTER_FILE] if self._disk.prefilter is not None else [])

    def __repr__(self) -> str:
        m = self.meta.get("model", {})
        return (
            f"VideoIndex({len(self)} videos x {self.num_frames} frames x {self.dim}, {self.dtype}, "
            f"impl={m.get('impl')}, variant={m.get('variant')}, fingerprint={m.get('fingerprint')}"
            + (f", regions={self.meta['regions'].get('method')} x {self.num_slots - 1}" if self.has_regions else "")
            + (", rerank tensors" if self.has_rerank else "")
            + (f", {len(self._disk.shards)} shards" if self._disk is not None and len(self._disk.shards) > 1 else "")
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
        rerank: bool = False,
        **options: Any,
    ) -> VideoIndex:
        """An index of ``video`` (f_m [V, n, d] from ``model.encode_video``) under ``ids`` (V unique strings).

        ``dtype``: storage, float32 or float16. ``config``: the training config (a checkpoint's
        saved cfg), whose model / variant / impl sections are recorded. ``info``: extra creation
        info recorded in the metadata (JSON-safe). ``regions`` [V, n, 1+K, d] / ``region_mask``
        [V, n, 1+K] bool: optional region-set embeddings of every frame (``RegionEncoder.encode``
        per frame; stored in ``dtype``), described by ``region_info`` (e.g. method, k, grid;
        recorded as ``meta["regions"]`` with ``num_regions`` = K). ``rerank``: also compute and
        store the exact re-ranking tensors (:mod:`~lsdo.retrieval.index.rerank`; about 4x the
        float16 frames on disk, a query then pays only for its candidates' attention).
        ``options``: the prefilter options of the constructor.

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
        stored_regions, stored_mask = prepare_regions(features, regions, region_mask, dtype)
        stored = {"features": features} if stored_regions is None else {"features": features, "regions": stored_regions}
        refuse_nonfinite(stored, ids, source={"features": video, "regions": regions})
        meta = {
            "num_videos": int(features.shape[0]),
            "num_frames": int(features.shape[1]),
            "embed_dim": int(features.shape[2]),
            "dtype": str(dtype).removeprefix("torch."),
            "model": model_meta(model, config),
            "created": creation_info(info),
        }
        if stored_regions is not None:
            meta["regions"] = region_meta(stored_regions, region_info)
        tensors = None
        if rerank:
            meta["rerank"] = rerank_meta(model, int(features.shape[1]), int(features.shape[2]))
            tensors = compute_rerank(model, features)  # from the stored (possibly float16) features
        means = mean_pool(features)  # [V, d] float32, from the stored (possibly float16) features
        return cls(
            features, means, ids, meta, regions=stored_regions, region_mask=stored_mask, rerank=tensors, **options
        )

    def add(
        self,
        model: LSDOModel,
        video: torch.Tensor,
        ids: Sequence[str],
        regions: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
    ) -> None:
        """Append videos (f_m [B, n, d] from the same model) under new, unused ids.

        An index with regions needs their ``regions`` [B, n, 1+K, d] and ``region_mask`` [B, n, 1+K]
        too; an index with stored re-ranking tensors computes them for the new videos. Memory-mapped
        rows (a loaded index's shards) are not copied: the new rows are kept as a part of their own
        (:mod:`~lsdo.retrieval.index.shards`) until :meth:`save` appends them as a new shard.
        """
        self.check_model(model)
        if self.has_regions != (regions is not None):
            have = "has" if self.has_regions else "has no"
            raise ValueError(f"the index {have} region embeddings: give regions/region_mask exactly when it has")
        if not all(isinstance(p, torch.Tensor) for p in parts_of(self.features)):
            raise TypeError("add needs an index whose features are tensors (not a lazy FrameStore)")
        ids = _check_ids(ids)
        if video.ndim != 3 or tuple(video.shape[1:]) != (self.num_frames, self.dim) or video.shape[0] != len(ids):
            raise ValueError(
                f"video must be [{len(ids)}, {self.num_frames}, {self.dim}] (one per id), got {tuple(video.shape)}"
            )
        clash = set(ids).intersection(self.ids)
        if clash:
            raise ValueError(f"{len(clash)} ids are already in the index, e.g. {sorted(clash)[:3]}")
        new = video.detach().to("cpu", self.dtype).contiguous()  # [B, n, d]
        refuse_nonfinite({"features": new}, ids, source={"features": video})
        rows: dict[str, torch.Tensor] = {"features": new, "means": mean_pool(new)}
        if self.regions is not None and self.region_mask is not None:
            new_r, new_m = prepare_regions(new, regions, region_mask, self.dtype)
            if new_r is None or new_m is None or new_r.shape[2] != self.num_slots:
                raise ValueError(f"regions must have {self.num_slots} slots per frame, got {tuple(regions.shape)}")
            refuse_nonfinite({"regions": new_r}, ids, source={"regions": regions})
            rows.update(regions=new_r, region_mask=new_m)
        if self.rerank is not None:
            rows.update(compute_rerank(model, new))
        fixed = self._fixed_rows
        for name, tensor in rows.items():
            if name in RERANK_TENSORS:
                assert self.rerank is not None
                self.rerank[name] = append_rows(self.rerank[name], tensor, fixed)
            else:
                setattr(self, name, append_rows(getattr(self, name), tensor, fixed))
        self.ids += ids
        self.meta["num_videos"] = len(self.ids)
        if self._faiss is not None and self._faiss_key is not None:  # grow the cached FAISS index too
            self._faiss.add(rows["means"].numpy())
            self._faiss_key = (len(self), *self._faiss_key[1:])

    # ------------------------------------------------------------------ persistence
    def _tensors(self, start: int, stop: int) -> dict[str, FrameStore]:
        """Rows ``start:stop`` of every stored tensor, by file name (views of the parts: nothing is copied)."""
        stores: dict[str, FrameStore | None] = {"features": self.features, "means": self.means}
        if self.regions is not None:
            stores.update(regions=self.regions, region_mask=self.region_mask)
        if self.rerank is not None:
            stores.update(self.rerank)
        out = {}
        for name, store in stores.items():
            assert store is not None
            if not all(isinstance(p, torch.Tensor) for p in parts_of(store)):
                raise TypeError(f"only an index whose {name} are tensors can be saved")
            out[name] = _rows(store, start, stop)
        return out

    def _same_dir(self, path: Path) -> bool:
        if self._disk is None or not path.is_dir():
            return False
        try:
            return os.path.samefile(self._disk.path, path)
        except OSError:
            return False

    def save(self, path: str | os.PathLike, *, remap: bool = False) -> Path:
        """Write the index to the directory ``path``: in full, or as an append where it already is.

        To the directory the index was loaded from (or last saved to): only the rows added since are
        written, as one new shard, and ``index.json`` is rewritten to list it (an append; existing
        shards are neither read nor rewritten). Elsewhere: one shard ``features.safetensors`` with
        every row, then ``index.json`` (the directory is created). A trained FAISS IVF prefilter in
        memory is written too (``prefilter.faiss``, a derived file of about ``pq + 8`` bytes per video).
        ``remap=True``: afterwards, the rows just written are memory-mapped from their file instead
        of held in memory (what a growing index wants: memory stays at the rows not yet saved).
        """
        path = Path(path)
        if self._same_dir(path):
            return self._append(path, remap)
        shards, checksums = write_index(path, self._tensors(0, len(self)), self.meta, self.ids)
        self._disk = _OnDisk(path, shards, checksums)
        self.checksums = checksums
        self.source = str(path)
        if remap:
            self._remap(path, shards[-1]["file"], 0)
        self._save_prefilter()
        return path

    def _remap(self, path: Path, file: str, start: int) -> None:
        """Swap rows ``start:`` of every stored tensor for their memory map in the shard ``file`` just written."""
        mapped, _ = read_features(path / file, mmap=True)
        names = ["features", "means"] + (["regions", "region_mask"] if self.regions is not None else [])
        for name in [*names, *(RERANK_TENSORS if self.rerank is not None else ())]:
            store = self.rerank[name] if name in RERANK_TENSORS and self.rerank is not None else getattr(self, name)
            head = parts_of(_rows(store, 0, start)) if start > 0 else []
            joined = ShardedRows([*head, mapped[name]]) if head else mapped[name]
            if name in RERANK_TENSORS and self.rerank is not None:
                self.rerank[name] = joined
            else:
                setattr(self, name, joined)
        self._fixed_rows = len(self)

    def _append(self, path: Path, remap: bool = False) -> Path:
        disk = self._disk
        assert disk is not None
        try:
            doc = json.loads((path / META_FILE).read_bytes().decode("utf-8"))
            on_disk = doc.get("shards", [{"file": "features.safetensors", "num_videos": doc.get("num_videos")}])
        except (OSError, ValueError):
            on_disk = None
        if on_disk != disk.shards:
            raise LSDOUserError(
                f"index: {path / META_FILE} changed since this index was loaded or saved (another process "
                f"appended to it?): load it again before adding to it, or save to another directory"
            )
        start = disk.rows
        if start < len(self):
            shards, checksums = append_shard(
                path, self._tensors(start, len(self)), self.meta, self.ids, disk.shards, disk.checksums or {},
                disk.prefilter,
            )  # fmt: skip
            disk.shards, disk.checksums = shards, checksums
            self.checksums = checksums
            if remap:
                self._remap(path, shards[-1]["file"], start)
        self.source = str(path)
        self._save_prefilter()
        return path

    def _save_prefilter(self) -> None:
        """Write the cached FAISS IVF index (``prefilter.faiss``) when it covers rows the directory's does not."""
        disk = self._disk
        if disk is None or self._faiss is None or self._faiss_key is None or self._faiss_key[0] != len(self):
            return
        plan: PrefilterPlan = self._faiss_key[1]
        if plan.kind not in ("ivf", "ivfpq") or len(self) != disk.rows:
            return
        if disk.prefilter is not None and disk.prefilter["num_videos"] == len(self):
            return
        entry = write_bytes(disk.path / PREFILTER_FILE, serialize(self._faiss))
        checksums = {**(disk.checksums or {}), PREFILTER_FILE: entry}
        prefilter = {
            "file": PREFILTER_FILE,
            "kind": plan.kind,
            "nlist": int(self._faiss.nlist),
            "pq": int(plan.pq or 0),  # 0: IVF-Flat
            "num_videos": len(self),
        }
        write_meta(disk.path, self.meta, self.ids, disk.shards, checksums, prefilter)
        disk.checksums, disk.prefilter = checksums, prefilter
        self.checksums = checksums

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False, verify: bool = True, **options: Any) -> VideoIndex:
        """Read an index directory written by :meth:`save`; any problem is a one-line LSDOUserError.

        ``mmap=True`` maps every shard (copy-on-write) instead of reading it: several shards are
        then seen as one (:class:`~lsdo.retrieval.index.shards.ShardedRows`) and nothing is copied.
        ``verify=True`` (default) checks every shard against the SHA-256 recorded in ``index.json``
        (reads each file once, about 1 s per GB); shards without checksums (written by an older
        lsdo) load with a warning. ``verify=False`` skips the hash (the sizes and the structure are
        still checked). ``options``: the prefilter options of the constructor.
        """
        s = read_index(path, mmap=mmap, verify=verify)
        index = cls(
            s.features,
            s.means,
            s.ids,
            s.meta,
            source=str(s.path),
            regions=s.regions,
            region_mask=s.region_mask,
            rerank=s.rerank,
            **options,
        )
        index.checksums = s.checksums
        index._disk = _OnDisk(s.path, s.shards, s.checksums, s.prefilter, verify)
        index._fixed_rows = len(index) if mmap else 0
        return index

    # ------------------------------------------------------------------ model check
    def check_model(self, model: LSDOModel, name: str = "the model") -> None:
        """LSDOUserError (one line) unless ``model`` is the one the index was built with."""
        check_fingerprint(self.meta, model, name, self.source)

    # ------------------------------------------------------------------ search
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
        tokens = model.tokenize(list(text)).to(device_of(model))
        return model.encode_text(tokens)

    def _refuse_nan(self, scores: torch.Tensor, videos: torch.Tensor) -> None:
        """LSDOUserError naming the first video with a NaN / +inf score: scores [T, c], their videos [T, c] or [c]."""
        refuse_nan_scores(scores, videos, self.ids, self.source)

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
        use_stored: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``topk`` videos per text: scores [T, k] float32 and indices into ``ids`` [T, k] (long), best first.

        ``text``: ``model.encode_text`` output (T texts) or strings (tokenised and encoded here).
        ``prefilter_k=None``: exact X-Pool over all videos; ``K``: mean-pool prefilter then exact
        re-ranking of K candidates per text (:mod:`~lsdo.retrieval.index.exact`); ``prefilter_k >= V``
        is the full protocol. ``k = min(topk, candidates)``.
        ``chunk_size`` texts and ``video_chunk`` videos are scored at a time. ``accum_dtype``:
        XPoolScorer's accumulation dtype; float64 (default) gives the scores of
        :func:`~lsdo.retrieval.similarity_matrix`, float32 is about 1.5-2x cheaper on CPU and
        differs from them by about 1e-7. ``use_stored``: score from the stored re-ranking tensors
        when the index has them (the same scores; False recomputes them from the frames).

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
        check_topk(topk)
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
        extra = self._region_extra(text) if mode == "both" else None  # region scores added to X-Pool's
        stored = self.rerank if use_stored else None
        scorer = ExactScorer(
            model, self.features, self._refuse_nan, chunk_size, accum_dtype, extra, stored, self._templates
        )
        if prefilter_k is None or prefilter_k >= len(self):
            return scorer.score_all(text, topk, video_chunk)
        candidates = self.prefilter(text, prefilter_k)  # [T, K]
        return scorer.rerank(text, candidates, topk)

    # ------------------------------------------------------------------ region search (LAFM)
    def require_regions(self) -> None:
        """LSDOUserError (one line) unless the index stores region embeddings."""
        if self.has_regions:
            return
        raise no_regions_error(self.source)

    def _region_extra(self, text: TextFeatures) -> ExtraScores:
        """Mode ``both``: (texts, videos) -> the region scores [t, c] of ``text.eos`` [T, d] rows ``texts``."""
        region_text = text.eos.detach().to("cpu", torch.float32)  # [T, d]
        return lambda texts, videos: self.region_scores(region_text[texts], videos)  # [t, c]

    def region_scores(self, text_emb: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
        """LAFM scores of some videos: text [T, d] x their stored sets -> [T, c] float32 (CPU).

        A video's score is max cosine over its n frames x (1+K) valid set members
        (:func:`~lsdo.inverse_attention.lafm.set_similarity`).
        """
        if self.regions is None or self.region_mask is None:
            self.require_regions()
            raise AssertionError  # unreachable: require_regions raised
        return score_regions(self.regions, self.region_mask, text_emb, index)  # type: ignore[arg-type]

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
        check_topk(topk)
        if text_emb.ndim != 2 or text_emb.shape[-1] != self.dim:
            raise ValueError(f"text embeddings [T, {self.dim}] expected, got {tuple(text_emb.shape)}")
        assert self.regions is not None and self.region_mask is not None  # require_regions
        k = min(topk, len(self))
        return region_topk(self.regions, self.region_mask, text_emb, k, video_chunk, self._refuse_nan)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ prefilter
    def prefilter_plan(self) -> PrefilterPlan:
        """The prefilter engine this index uses now (:func:`~lsdo.retrieval.index.prefilter.plan_prefilter`).

        An IVF prefilter stored in the index directory (``prefilter.faiss``) is used when no
        explicit ``faiss_nlist`` / ``faiss_pq`` asks for another and FAISS is installed.
        """
        stored = self._disk.prefilter if self._disk is not None and not self.ignore_stored_prefilter else None
        if stored is not None and self.faiss_nlist is None and self.faiss_pq is None and faiss_available():
            return PrefilterPlan(stored["kind"], stored["nlist"], stored["pq"] or None)
        return plan_prefilter(
            len(self), self.dim, self.faiss_threshold, self.faiss_nlist, self.faiss_pq, self.ivfpq_threshold
        )

    @torch.no_grad()
    def prefilter(self, text: TextFeatures | torch.Tensor, k: int) -> torch.Tensor:
        """Each text's ``k`` best videos by cos(text.target, mean frame): [T, min(k, V)] long (any order).

        torch (chunked matmul + top-k) below ``faiss_threshold`` videos, FAISS flat from it, FAISS
        IVF-PQ from ``ivfpq_threshold`` (approximate; ``faiss_nprobe`` lists, ``faiss_refine`` x k
        re-scored exactly), or the IVF / IVF-PQ asked for with ``faiss_nlist`` / ``faiss_pq``.
        """
        target = text.target if isinstance(text, TextFeatures) else text  # [T, d]
        query = F.normalize(target.detach().to("cpu", torch.float32), dim=-1)  # [T, d]
        k = max(min(int(k), len(self)), 1)
        plan = self.prefilter_plan()
        if not plan.faiss:
            return torch_prefilter(self.means, query, k, self._refuse_nan)
        nprobe = self.faiss_nprobe if plan.kind in ("ivf", "ivfpq") else None
        refine = self.faiss_refine if plan.kind == "ivfpq" else 1
        return faiss_prefilter(self.faiss_index(), query, k, nprobe, self.means, self._refuse_nan, refine)

    def faiss_index(self) -> Any:
        """The FAISS index over the normalised means (read from the directory or built on first use, then cached)."""
        plan = self.prefilter_plan()
        key = (len(self), plan)
        if self._faiss is not None and self._faiss_key == key:
            return self._faiss
        self._faiss = None  # free the previous one first
        index = self._stored_faiss(plan)
        quantizer = None
        if index is None:
            index, quantizer = build_faiss_index(self.means, plan.nlist, self._refuse_nan, plan.pq)
        self._faiss_quantizer = quantizer  # an IVF index refers to it: keep it alive
        self._faiss, self._faiss_key = index, key
        return index

    def _stored_faiss(self, plan: PrefilterPlan) -> Any:
        """The directory's ``prefilter.faiss`` when it matches ``plan`` (its missing tail rows added), else None."""
        disk = self._disk
        stored = disk.prefilter if disk is not None else None
        if disk is None or stored is None or plan.kind != stored["kind"] or plan.nlist != stored["nlist"]:
            return None
        if plan.kind == "ivfpq" and plan.pq != stored["pq"]:
            return None
        file = disk.path / PREFILTER_FILE
        if not file.is_file():
            problem: str | None = "missing"
        else:
            problem = checksum_problem(file, (disk.checksums or {}).get(PREFILTER_FILE), hash_it=disk.verify)
        if problem:
            log.warning("ignoring %s (%s): the prefilter is built again from the means", file, problem)
            return None
        index = deserialize(np.fromfile(file, dtype=np.uint8))
        covered = stored["num_videos"]
        for piece in row_slices(self.means, covered, len(self), FAISS_ADD_BLOCK):  # rows appended after it
            index.add(np.ascontiguousarray(piece.numpy(), dtype=np.float32))
        return index
