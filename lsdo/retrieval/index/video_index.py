"""The :class:`VideoIndex` object: encoded videos in memory (or mapped), how they are built, saved, loaded and searched.

This module holds the object and its argument checks; each job lives in its own module and the
methods hand over to it: files (:mod:`~lsdo.retrieval.index.store`), the model check
(:mod:`~lsdo.retrieval.index.fingerprint`), non-finite values (:mod:`~lsdo.retrieval.index.finite`),
the mean-pool prefilter (:mod:`~lsdo.retrieval.index.prefilter`), exact X-Pool scoring
(:mod:`~lsdo.retrieval.index.exact`) and region scoring (:mod:`~lsdo.retrieval.index.regions`).
The index holds features [V, n, d] (any :class:`~lsdo.retrieval.index.format.FrameStore`), means
[V, d] float32, V ids, the metadata of ``index.json`` and optionally regions [V, n, 1+K, d] with
region_mask [V, n, 1+K]; the FAISS index over the means is built on first use and cached.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lsdo.model.lsdo_model import LSDOModel, TextFeatures
from lsdo.retrieval.index.exact import DEFAULT_VIDEO_CHUNK, ExactScorer, ExtraScores, device_of
from lsdo.retrieval.index.fingerprint import check_fingerprint, creation_info, model_meta
from lsdo.retrieval.index.finite import refuse_nan_scores, refuse_nonfinite
from lsdo.retrieval.index.format import DTYPES, FrameStore
from lsdo.retrieval.index.prefilter import (
    DEFAULT_FAISS_THRESHOLD,
    build_faiss_index,
    faiss_prefilter,
    mean_pool,
    torch_prefilter,
    use_faiss,
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
from lsdo.retrieval.index.store import read_index, write_index
from lsdo.retrieval.index.topk import check_topk

__all__ = ["VideoIndex"]


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
        check_region_store(features, regions, region_mask)
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
        ``faiss_nlist``, ``faiss_nprobe`` (see :mod:`lsdo.retrieval.index.prefilter`).

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
        means = mean_pool(features)  # [V, d] float32, from the stored (possibly float16) features
        return cls(features, means, ids, meta, regions=stored_regions, region_mask=stored_mask, **options)

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
        new = video.detach().to("cpu", self.dtype).contiguous()  # [B, n, d]
        refuse_nonfinite({"features": new}, ids, source={"features": video})
        if self.regions is not None and self.region_mask is not None:
            new_r, new_m = prepare_regions(new, regions, region_mask, self.dtype)
            if new_r is None or new_r.shape[2] != self.num_slots:
                raise ValueError(f"regions must have {self.num_slots} slots per frame, got {tuple(regions.shape)}")
            refuse_nonfinite({"regions": new_r}, ids, source={"regions": regions})
            self.regions = torch.cat([self.regions, new_r])  # type: ignore[list-item]
            self.region_mask = torch.cat([self.region_mask, new_m])  # type: ignore[list-item]
        self.features = torch.cat([self.features, new])
        self.means = torch.cat([self.means, mean_pool(new)])
        self.ids += ids
        self.meta["num_videos"] = len(self.ids)
        self._faiss = None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/features.safetensors`` and ``path/index.json`` (the directory is created)."""
        if not isinstance(self.features, torch.Tensor):
            raise TypeError("only an index whose features are a tensor can be saved")
        tensors = {"features": self.features.contiguous(), "means": self.means.contiguous()}
        if self.regions is not None and self.region_mask is not None:
            if not isinstance(self.regions, torch.Tensor):
                raise TypeError("only an index whose regions are a tensor can be saved")
            tensors.update(regions=self.regions.contiguous(), region_mask=self.region_mask.contiguous())
        path = Path(path)
        self.checksums = write_index(path, tensors, self.meta, self.ids)
        self.source = str(path)
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
        s = read_index(path, mmap=mmap, verify=verify)
        index = cls(
            s.features,
            s.means,
            s.ids,
            s.meta,
            source=str(s.path),
            regions=s.regions,
            region_mask=s.region_mask,
            **options,
        )
        index.checksums = s.checksums
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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``topk`` videos per text: scores [T, k] float32 and indices into ``ids`` [T, k] (long), best first.

        ``text``: ``model.encode_text`` output (T texts) or strings (tokenised and encoded here).
        ``prefilter_k=None``: exact X-Pool over all videos; ``K``: mean-pool prefilter then exact
        re-ranking of K candidates per text (:mod:`~lsdo.retrieval.index.exact`); ``prefilter_k >= V``
        is the full protocol. ``k = min(topk, candidates)``.
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
        scorer = ExactScorer(model, self.features, self._refuse_nan, chunk_size, accum_dtype, extra)
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
        return score_regions(self.regions, self.region_mask, text_emb, index)

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
        return region_topk(self.regions, self.region_mask, text_emb, k, video_chunk, self._refuse_nan)

    # ------------------------------------------------------------------ prefilter
    @torch.no_grad()
    def prefilter(self, text: TextFeatures | torch.Tensor, k: int) -> torch.Tensor:
        """Each text's ``k`` best videos by cos(text.target, mean frame): [T, min(k, V)] long (any order).

        torch (chunked matmul + top-k) below ``faiss_threshold`` videos, FAISS at or above it
        when importable (flat inner product; IVF with ``faiss_nlist``).
        """
        target = text.target if isinstance(text, TextFeatures) else text  # [T, d]
        query = F.normalize(target.detach().to("cpu", torch.float32), dim=-1)  # [T, d]
        k = max(min(int(k), len(self)), 1)
        if not use_faiss(len(self), self.faiss_threshold, self.faiss_nlist):
            return torch_prefilter(self.means, query, k, self._refuse_nan)
        nprobe = self.faiss_nprobe if self.faiss_nlist is not None else None
        return faiss_prefilter(self.faiss_index(), query, k, nprobe, self.means, self._refuse_nan)

    def faiss_index(self) -> Any:
        """The FAISS index over the normalised means (built on first use, then cached)."""
        key = (len(self), self.faiss_nlist)
        if self._faiss is not None and self._faiss_key == key:
            return self._faiss
        index, quantizer = build_faiss_index(self.means, self.faiss_nlist, self._refuse_nan)
        self._faiss_quantizer = quantizer  # an IVF index refers to it: keep it alive
        self._faiss, self._faiss_key = index, key
        return index
