"""A persistent video index: encoded frame features on disk, searched with exact X-Pool scores.

Public API (a contract)::

    video = model.encode_video(frames)                               # f_m [V, n, d]
    index = VideoIndex.build(model, video, ids, dtype=torch.float16)  # ids: V unique strings
    index.save("my_index")                                           # my_index/{index.json, features.safetensors}
    index = VideoIndex.load("my_index", mmap=True)                   # every shard mapped: features stay on disk
    index.add(model, more_video, more_ids)                           # new rows in memory, mapped ones not copied
    index.save("my_index")                                           # an append: one new shard, index.json rewritten
    scores, idx = index.search(model, ["a man sings"], topk=10)      # exact X-Pool over all videos
    scores, idx = index.search(model, text, topk=10, prefilter_k=100)  # mean-pool prefilter + exact re-rank
    best = [index.ids[i] for i in idx[0]]

**What is stored.** Per video the fused frame features f_m [n, d] (``encode_video``'s output;
float32 or float16), the L2-normalised mean over its frames [d] (float32, the prefilter's
matrix), the ids and metadata: embedding size, frame count, storage dtype, the model's
fingerprint (:func:`model_fingerprint`: impl, variant and a digest of the weights) and, when
given, the checkpoint's model / variant / impl config with its hash, plus creation info; optionally
every frame's region-set embeddings. The mean is computed from the *stored* features (after any
float16 rounding), so an index built in one go and one consolidated from stored shards are
identical. With ``rerank=True`` it also stores the exact scorer's per-video tensors
(:mod:`~lsdo.retrieval.index.rerank`), so a query pays only for its candidates' attention. The
rows live in shards (``features.safetensors``, then one ``features-NNNNNN.safetensors`` per
append), read memory-mapped as one. The files (no pickle) and their checks:
:mod:`~lsdo.retrieval.index.format` (the spec) and :mod:`~lsdo.retrieval.index.store`;
:func:`verify_index` (``lsdo-index verify``) checks everything: the structure, every shard's
checksum and that every stored value is finite.

**Ids and values.** Ids are any strings; ``lsdo-index build`` makes them from file names with
:func:`escape_name` (printable, one line, reversible with :func:`unescape_name`). Non-finite
features are refused by :meth:`VideoIndex.build` / :meth:`VideoIndex.add`
(:class:`NonFiniteFeaturesError`, naming the video); a search that meets a NaN score anyway raises
a one-line LSDOUserError naming the video. Empty or whitespace-only query strings are refused (ValueError).

**Search** (:meth:`VideoIndex.search`, returns scores [T, topk] and video indices [T, topk], best
first; ``topk`` is clipped to the number of candidates): ``prefilter_k=None`` scores every video
exactly (the full protocol); ``prefilter_k=K`` keeps each text's K best videos by the mean-pool
prefilter (torch; FAISS flat from 100k videos, FAISS IVF-PQ, approximate, from 1M) and re-ranks
only those exactly; ``prefilter_k >= V`` is the full protocol. ``mode="regions"`` / ``"both"``
score with the stored region embeddings (alone / added to X-Pool's). Ties are broken towards the
lower video index, so results are deterministic. The model must be in eval mode (XPoolScorer
refuses active X-Pool dropout) and must be the one the index was built with: ``search`` checks the
fingerprint first (``check_model=False`` skips it, e.g. in a loop after one explicit
:meth:`VideoIndex.check_model`).

Where each job lives (imports point down this list; this package re-exports the public names):

* :mod:`~lsdo.retrieval.index.format`: the on-disk format (names, layout, checks of ``index.json``, checksums);
* :mod:`~lsdo.retrieval.index.shards`: rows held in several parts (the shards) seen as one tensor-like;
* :mod:`~lsdo.retrieval.index.store`: reading / writing an index directory (streamed atomic writes, memory map);
* :mod:`~lsdo.retrieval.index.fingerprint`: which model built an index (fingerprint, config, the check);
* :mod:`~lsdo.retrieval.index.finite`: NaN / inf refused at build, found by verify, named at search;
* :mod:`~lsdo.retrieval.index.topk`: the running top-k of exhaustive search;
* :mod:`~lsdo.retrieval.index.prefilter`: the mean-pool prefilter (torch or FAISS flat / IVF / IVF-PQ);
* :mod:`~lsdo.retrieval.index.rerank`: the stored re-ranking tensors (the exact scorer's per-video part);
* :mod:`~lsdo.retrieval.index.exact`: exact X-Pool scores, full protocol and re-ranking;
* :mod:`~lsdo.retrieval.index.regions`: region embeddings and their LAFM scores, search modes;
* :mod:`~lsdo.retrieval.index.video_index`: :class:`VideoIndex`, which ties them together;
* :mod:`~lsdo.retrieval.index.verify`: :func:`verify_index`.
"""

from lsdo.names import escape_name, printable, unescape_name
from lsdo.retrieval.index.exact import DEFAULT_VIDEO_CHUNK, RERANK_CAP, RERANK_TEXTS
from lsdo.retrieval.index.fingerprint import FINGERPRINT_SAMPLES, model_fingerprint
from lsdo.retrieval.index.finite import NonFiniteFeaturesError
from lsdo.retrieval.index.format import (
    DTYPES,
    FEATURES_FILE,
    FORMAT,
    FORMAT_VERSION,
    HASH_BLOCK,
    META_FILE,
    PREFILTER_FILE,
    READ_VERSIONS,
    RERANK_TENSORS,
    FrameStore,
    file_sha256,
    shard_file,
)
from lsdo.retrieval.index.prefilter import (
    DEFAULT_FAISS_THRESHOLD,
    DEFAULT_IVFPQ_THRESHOLD,
    DEFAULT_NPROBE,
    DEFAULT_REFINE,
    PREFILTER_BLOCK,
    PrefilterPlan,
    faiss_available,
    plan_prefilter,
)
from lsdo.retrieval.index.regions import DEFAULT_REGION_CHUNK, SEARCH_MODES
from lsdo.retrieval.index.rerank import rerank_bytes
from lsdo.retrieval.index.shards import ShardedRows
from lsdo.retrieval.index.store import atomic_write_text
from lsdo.retrieval.index.verify import IndexCheck, verify_index
from lsdo.retrieval.index.video_index import VideoIndex

__all__ = [
    "DEFAULT_FAISS_THRESHOLD",
    "DEFAULT_IVFPQ_THRESHOLD",
    "DEFAULT_NPROBE",
    "DEFAULT_REFINE",
    "PREFILTER_FILE",
    "READ_VERSIONS",
    "RERANK_TENSORS",
    "PrefilterPlan",
    "ShardedRows",
    "plan_prefilter",
    "rerank_bytes",
    "shard_file",
    "DEFAULT_REGION_CHUNK",
    "DEFAULT_VIDEO_CHUNK",
    "DTYPES",
    "FEATURES_FILE",
    "FINGERPRINT_SAMPLES",
    "FORMAT",
    "FORMAT_VERSION",
    "HASH_BLOCK",
    "META_FILE",
    "PREFILTER_BLOCK",
    "RERANK_CAP",
    "RERANK_TEXTS",
    "SEARCH_MODES",
    "FrameStore",
    "IndexCheck",
    "NonFiniteFeaturesError",
    "VideoIndex",
    "atomic_write_text",
    "escape_name",
    "faiss_available",
    "file_sha256",
    "model_fingerprint",
    "printable",
    "unescape_name",
    "verify_index",
]
