"""Stored re-ranking tensors: XPoolScorer's per-video tensors computed once, at build time.

:class:`~lsdo.retrieval.xpool_fast.XPoolScorer` spends almost all of a re-ranking on its per-video
precomputation (O(n d^2) per candidate: the keys, the frames moved through W_v, W_out and the
LayerNorm gain, the n x n Gram matrices), which depends on the video and the model but not on the
text. With ``rerank=True`` an index stores, per video, exactly what the scorer precomputes:

* ``rerank_keys``   [n, d] float32: W_k LN(f_j) + b_k (``XPoolScorer.keys``);
* ``rerank_frames`` [n, d] float32: g * A_j, the frames the text contracts with (``frames_g``);
* ``rerank_mix``    [m, n] float64: the Gram rows and linear forms (``mix_t``; m = 2n + 1 for
  impl=paper, 3n + 3 for impl=official).

That is ``8 n d + 8 m n`` bytes per video: 51,552 at n = 12, d = 512 (impl=paper; 52,896 official),
against 12,288 for the frames in float16 (:func:`rerank_bytes`). A query then pays only for its
candidates' attention and forms (a gather of these rows and a few small products).

The tensors are the scorer's own (:func:`compute_rerank` runs XPoolScorer on the stored frames,
``RERANK_BLOCK`` videos at a time, a block never smaller than ``MIN_BLOCK`` videos so that every
video goes through the same matrix-product kernels as a re-ranking's), and the scorer that uses them
(:class:`TemplateCache`, :func:`stored_scorer`) is an XPoolScorer whose per-video tensors are
swapped for the stored rows: its per-model constants come from a one-video template, built once
per model and accumulation dtype. Scores therefore equal those computed from the frames by the same
formulas, to float32 rounding: the matrix-product kernels may differ (MKL picks its kernel by CPU,
thread count and even the tensors' memory alignment, which differs between a fresh tensor and one
loaded from a file), so ranks agree except between scores within a few float32 epsilons of each other
(tests/test_index_growth.py). With ``accum_dtype=float32`` the stored float64 forms are rounded to
float32 instead of being computed in float32: a difference of ~1e-7.
"""

from __future__ import annotations

from typing import Any

import torch

from lsdo.model.lsdo_model import LSDOModel
from lsdo.retrieval.index.format import RERANK_TENSORS, FrameStore
from lsdo.retrieval.xpool_fast import XPoolScorer

RERANK_BLOCK = 1024  # videos per XPoolScorer when computing the stored tensors
MIN_BLOCK = 64  # a smaller block (a short tail) is padded to this many videos
STORED_ACCUM = torch.float64  # the dtype of rerank_mix (XPoolScorer's default accumulation)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU without any)."""
    ref = next(model.parameters(), None)
    return ref.device if ref is not None else torch.device("cpu")


def frames_at(features: FrameStore, index: slice | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Stored features of some videos, upcast: [k, n, d] float32 on ``device``."""
    return features[index].to(device=device, dtype=torch.float32)


def num_mix(model: LSDOModel, num_frames: int) -> int:
    """m, the rows of ``rerank_mix`` per video: 2n + 1 (impl=paper) or 3n + 3 (a residual stage, impl=official)."""
    residual = getattr(model.xpool.layout(), "residual", None) is not None
    return 3 * num_frames + 3 if residual else 2 * num_frames + 1


def rerank_bytes(num_frames: int, dim: int, mix: int) -> int:
    """Disk bytes per video of the stored re-ranking tensors (float32 keys and frames, float64 forms)."""
    return 2 * num_frames * dim * 4 + mix * num_frames * 8


def rerank_meta(model: LSDOModel, num_frames: int, dim: int) -> dict[str, Any]:
    """``index.json``'s ``rerank`` entry."""
    m = num_mix(model, num_frames)
    return {
        "impl": model.impl,
        "num_mix": m,
        "accum_dtype": str(STORED_ACCUM).removeprefix("torch."),
        "bytes_per_video": rerank_bytes(num_frames, dim, m),
    }


@torch.no_grad()
def compute_rerank(
    model: LSDOModel, features: FrameStore, block: int = RERANK_BLOCK, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The stored re-ranking tensors of ``features`` [V, n, d] (as stored): RERANK_TENSORS -> [V, ...] on the CPU."""
    device = device or device_of(model)
    v, n, d = features.shape
    m = num_mix(model, n)
    out = {
        "rerank_keys": torch.empty(v, n, d, dtype=torch.float32),
        "rerank_frames": torch.empty(v, n, d, dtype=torch.float32),
        "rerank_mix": torch.empty(v, m, n, dtype=STORED_ACCUM),
    }
    for start in range(0, v, block):
        stop = min(start + block, v)
        video = frames_at(features, slice(start, stop), device)  # [c, n, d] float32
        count = stop - start
        if count < MIN_BLOCK:  # same kernels as a block of candidates (a lone video's products round differently)
            video = torch.cat([video, video[:1].expand(MIN_BLOCK - count, n, d)])
        scorer = XPoolScorer(model.xpool, video, accum_dtype=STORED_ACCUM)
        state = scorer.video_state()
        out["rerank_keys"][start:stop] = state["keys"][:count].to("cpu", torch.float32)
        out["rerank_frames"][start:stop] = state["frames_g"][:count].to("cpu", torch.float32)
        out["rerank_mix"][start:stop] = state["mix_t"][:count].to("cpu", STORED_ACCUM)
    return out


class TemplateCache:
    """One-video XPoolScorers holding a model's per-model constants, by (head, its weights' versions, dtype, device).

    Building one composes W_out W_v in float64 (a few ms for d = 512): done once per model and
    accumulation dtype rather than once per query. A change of the head's weights (in place or
    replaced) changes the key.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, XPoolScorer] = {}

    def get(
        self, model: LSDOModel, num_frames: int, dim: int, accum_dtype: torch.dtype, device: torch.device
    ) -> XPoolScorer:
        xpool = model.xpool
        params = tuple((p.data_ptr(), p._version) for p in xpool.parameters())
        key = (id(xpool), params, num_frames, dim, accum_dtype, str(device))
        template = self._cache.get(key)
        if template is None:
            dummy = torch.zeros(1, num_frames, dim, device=device)
            template = XPoolScorer(xpool, dummy, accum_dtype=accum_dtype)
            self._cache = {key: template}  # one model at a time
        return template


def stored_scorer(template: XPoolScorer, tensors: dict[str, FrameStore], videos: slice | torch.Tensor) -> XPoolScorer:
    """An XPoolScorer over ``videos`` whose per-video tensors are the stored rows (no per-video precomputation),
    moved to the template's device and dtypes."""
    keys, frames, mix = (tensors[name][videos] for name in RERANK_TENSORS)
    return template.with_videos(keys, frames, mix)
