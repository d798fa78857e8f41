"""Exact fast X-Pool scoring (lsdo.retrieval): fast == naive, prefilter, DSL, memory growth.

The X-Pool parameters (weights, biases, LayerNorm gains and biases) are randomised so the
identity initialisation cannot hide a missing map; text.query and text.target differ so a
mix-up between the conditioning side and the cosine side shows.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import randomise_xpool
from tolerances import XPOOL_NAIVE_TOL, XPOOL_SCORE_TOL, assert_same_ranking, reduction_tol
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lsdo.config import compose
from lsdo.model import LSDOModel, TextFeatures, build_model
from lsdo.retrieval import (
    XPoolScorer,
    dual_softmax,
    fast_similarity,
    prefilter_scores,
    similarity_matrix,
    t2v_metrics,
    v2t_metrics,
    xpool_fast,
)
from lsdo.retrieval.metrics import t2v_ranks, v2t_ranks

D = 512
NUM_TEXTS, NUM_VIDEOS = 20, 13  # 13 videos: not divisible by the chunk sizes below


_MODELS: dict[str, LSDOModel] = {}


def _model(impl: str) -> LSDOModel:
    if impl not in _MODELS:
        overrides = ["model=tiny", "variant=average"] + (["impl=official"] if impl == "official" else [])
        m = build_model(compose(overrides)).eval()
        randomise_xpool(m, seed=1 if impl == "paper" else 2)
        _MODELS[impl] = m
    return _MODELS[impl]


@pytest.fixture(scope="module", params=["paper", "official"])
def model(request: pytest.FixtureRequest) -> LSDOModel:
    return _model(request.param)


def _features(num_texts: int, num_videos: int, n: int, seed: int = 0) -> tuple[TextFeatures, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(num_videos, n, D, generator=gen)  # [V, n, d]
    query = torch.randn(num_texts, D, generator=gen)  # [T, d]
    # target correlated with some videos' frames so the cosines spread beyond ~0
    target = 0.5 * torch.randn(num_texts, D, generator=gen) + video[torch.arange(num_texts) % num_videos].mean(1)
    return TextFeatures(query, target, query), video


@pytest.mark.parametrize("n", [1, 12])
def test_fast_equals_naive(model: LSDOModel, n: int) -> None:
    text, video = _features(NUM_TEXTS, NUM_VIDEOS, n)
    with torch.no_grad():
        ref = model.similarity(text, video)  # [T, V], every pair pooled at once
    assert ref.abs().max() > 0.1  # the check below is not vacuous
    for chunk in (1, 7, NUM_TEXTS, NUM_TEXTS + 5):
        for video_chunk in (None, 5):
            fast = similarity_matrix(model, text, video, chunk_size=chunk, method="fast", video_chunk_size=video_chunk)
            assert fast.shape == (NUM_TEXTS, NUM_VIDEOS) and fast.dtype == torch.float32
            torch.testing.assert_close(fast, ref, atol=XPOOL_NAIVE_TOL, rtol=0)
    # the naive path in other chunks: the same formulas on other batch shapes
    naive = similarity_matrix(model, text, video, chunk_size=7, method="naive", video_chunk_size=5)
    torch.testing.assert_close(naive, ref, atol=XPOOL_NAIVE_TOL, rtol=0)


# impl=paper has a single LayerNorm after the attention (the 'pre' case); official has two.
@pytest.mark.parametrize(("impl", "regime"), [("paper", "pre"), ("official", "pre"), ("official", "final")])
def test_layernorm_eps_regime(impl: str, regime: str) -> None:
    """Shrink what enters a LayerNorm until its variance is ~eps, so a wrong eps shows.

    A tenfold eps moves these scores by 0.03-0.06 (measured), far beyond XPOOL_NAIVE_TOL (3.1e-5).
    """
    model = _model(impl)
    small = copy.deepcopy(model)
    xp = small.xpool
    with torch.no_grad():
        if regime == "pre" or model.impl == "paper":  # W_out output feeds LN2 (official) / norm_out (paper)
            layers = [xp.out]
        else:  # official LN3 input: (I + P) LN2(.) + b_p with a small LN2 gain / bias and P
            layers = [xp.norm2, xp.linear_proj]
        for layer in layers:
            for p in layer.parameters():
                p.mul_(3e-3)
    text, video = _features(NUM_TEXTS, NUM_VIDEOS, 12, seed=6)
    with torch.no_grad():
        ref = small.similarity(text, video)
    torch.testing.assert_close(similarity_matrix(small, text, video, chunk_size=7), ref, atol=XPOOL_NAIVE_TOL, rtol=0)


def test_fast_close_to_float64_naive(model: LSDOModel) -> None:
    """The fast scores sit within float32 rounding of a float64 naive evaluation (the fast path's own four
    float32 stages: XPOOL_SCORE_TOL; measured ~1e-7)."""
    text, video = _features(NUM_TEXTS, NUM_VIDEOS, 12, seed=3)
    fast = similarity_matrix(model, text, video, chunk_size=6)
    model64 = build_model(compose(["model=tiny", "variant=average"] + (["impl=official"] * (model.impl == "official"))))
    model64.load_state_dict(model.state_dict())
    model64 = model64.double().eval()
    with torch.no_grad():
        ref64 = model64.similarity(text.to(torch.float64), video.double())
    assert (fast.double() - ref64).abs().max() < XPOOL_SCORE_TOL


def test_prefilter_k_at_least_v_is_the_full_matrix(model: LSDOModel) -> None:
    text, video = _features(NUM_TEXTS, NUM_VIDEOS, 12)
    full = similarity_matrix(model, text, video, chunk_size=7)
    for k in (NUM_VIDEOS, NUM_VIDEOS + 3):  # bitwise: fast_similarity calls similarity_matrix itself, same chunks
        assert torch.equal(fast_similarity(model, text, video, prefilter_k=k, chunk_size=7), full)


def test_prefilter_small_k(model: LSDOModel, monkeypatch: pytest.MonkeyPatch) -> None:
    text, video = _features(NUM_TEXTS, NUM_VIDEOS, 12, seed=4)
    k = 4
    full = similarity_matrix(model, text, video, chunk_size=7)
    out = fast_similarity(model, text, video, prefilter_k=k, chunk_size=7)
    monkeypatch.setattr(xpool_fast, "PAIR_BUDGET", 9)  # 2 texts (8 gathered pairs) at a time
    # the gathered pairs in other groups: the same formulas on other batch shapes
    budget = fast_similarity(model, text, video, prefilter_k=k, chunk_size=7)
    torch.testing.assert_close(budget, out, atol=XPOOL_SCORE_TOL, rtol=0)
    # the candidates are the top-k of the mean-pool cosine, computed here in another order: cosines (scale 1)
    # of a normalisation and a dot product over d; any candidate swapped at the cut-off is a near-tie
    pooled = video.mean(dim=1)  # [V, d]
    coarse = torch.nn.functional.cosine_similarity(text.target[:, None], pooled[None], dim=-1)  # [T, V]
    pre = prefilter_scores(text, video, k)
    coarse_tol = reduction_tol(torch.float32, D, stages=2)
    torch.testing.assert_close(pre.scores, coarse, atol=coarse_tol, rtol=0)
    expected = coarse.topk(k, dim=1)
    found = pre.scores.gather(1, pre.candidates).sort(dim=1, descending=True)
    assert_same_ranking((found.values, pre.candidates.gather(1, found.indices)), expected, coarse_tol)
    mask = torch.zeros_like(full, dtype=torch.bool).scatter_(1, pre.candidates, True)
    assert torch.equal(torch.isfinite(out), mask)
    assert torch.isneginf(out[~mask]).all()
    # score_candidates (gathered pairs) against score (all pairs): the same formulas in other blocks
    torch.testing.assert_close(out[mask], full[mask], atol=XPOOL_SCORE_TOL, rtol=0)
    # metrics: a text whose video was filtered out ranks last (pessimistic ties), v2t stays defined
    even = torch.arange(NUM_TEXTS) % 2 == 0  # even texts: ground truth = the coarse worst video (filtered out)
    t2v = torch.where(even, coarse.argmin(dim=1), coarse.argmax(dim=1))
    ranks = t2v_ranks(out, t2v)
    missed = ~mask[torch.arange(NUM_TEXTS), t2v]
    assert torch.equal(missed, even) and (ranks[missed] == NUM_VIDEOS).all()
    assert (ranks[~missed] <= k).all()
    cover = torch.arange(NUM_TEXTS) % NUM_VIDEOS  # every video has a caption (needed by v2t)
    assert ((v2t_ranks(out, cover) >= 1) & (v2t_ranks(out, cover) <= NUM_TEXTS)).all()
    assert t2v_metrics(out, t2v)["R5"] == 50.0 and set(v2t_metrics(out, cover)) == set(t2v_metrics(out, t2v))


def test_dual_softmax_by_hand() -> None:
    gen = torch.Generator().manual_seed(5)
    sims = torch.rand(6, 4, generator=gen, dtype=torch.float64) * 2 - 1
    temp = 0.05
    out = dual_softmax(sims, temperature=temp)
    for t in range(6):
        for v in range(4):
            denom = sum(math.exp(float(sims[u, v]) / temp) for u in range(6))
            assert out[t, v].item() == pytest.approx(float(sims[t, v]) * math.exp(float(sims[t, v]) / temp) / denom)
    # -inf (prefiltered) entries stay -inf and get no weight; an all -inf column stays -inf
    masked = sims.clone()
    masked[0, 0] = masked[:, 3] = float("-inf")
    res = dual_softmax(masked, temperature=temp)
    assert torch.isneginf(res[0, 0]) and torch.isneginf(res[:, 3]).all() and not res.isnan().any()
    ref = dual_softmax(sims[1:, :1], temperature=temp)
    torch.testing.assert_close(res[1:, :1], ref)


def test_rejects_other_modules_and_training_dropout() -> None:
    with pytest.raises(TypeError):
        XPoolScorer(nn.Linear(D, D), torch.randn(2, 3, D))
    m = build_model(compose(["model=tiny", "variant=average", "impl=official"]))
    text, video = _features(3, 2, 4)
    with pytest.raises(ValueError, match="eval"):
        similarity_matrix(m.train(), text, video)
    with pytest.raises(ValueError, match="method"):
        similarity_matrix(m.eval(), text, video, method="exact")


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor any aten op produces (the size of the biggest allocation)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.max_numel = max(self.max_numel, o.numel())
        return out


def _max_numel(model: LSDOModel, text: TextFeatures, video: torch.Tensor, method: str, chunk: int) -> int:
    with _MaxNumel() as probe:
        similarity_matrix(model, text, video, chunk_size=chunk, method=method)
    return probe.max_numel


def test_peak_allocation_grows_with_chunk_not_with_pairs(model: LSDOModel) -> None:
    """No op of the fast path produces a [texts, videos, d]-sized tensor; its largest does not grow with T.

    The naive path's largest is the pooled [chunk, V, d] tensor (which shows the probe sees it).
    """
    num_videos, n, chunk = 64, 4, 16
    text, video = _features(128, num_videos, n)
    pooled_chunk = chunk * num_videos * D
    fast_small = _max_numel(model, text[:64], video, "fast", chunk)
    fast_large = _max_numel(model, text, video, "fast", chunk)
    assert fast_small == fast_large  # independent of the number of texts
    assert fast_large < pooled_chunk  # never a pair x d tensor, not even per chunk
    assert fast_large <= max(D * D, num_videos * n * D)  # only per-video (V n d) or weight-sized tensors
    assert _max_numel(model, text, video, "naive", chunk) >= pooled_chunk
