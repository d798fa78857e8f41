"""Float tolerances derived from the arithmetic, for tests that compare two different computation orders.

Bitwise equality holds only where both sides run the same operations in the same order on the same inputs
at the same memory layout (a copy, a gather, the same call twice). Anything else (a batch of another size,
a fused kernel against its einsum form, figures recorded on another CPU, even the same matrix product on
rows that sit at another alignment, which MKL takes through another kernel) rounds differently, and the
difference is bounded by the rounding of the reductions involved: :func:`reduction_tol` states that bound.
:func:`assert_same_ranking` compares two top-k results under such a bound, allowing only swaps of
near-tied scores.
"""

from __future__ import annotations

import math

import torch


def reduction_tol(dtype: torch.dtype, n: int, scale: float = 1.0, safety: float = 4.0, stages: int = 1) -> float:
    """Absolute tolerance between two evaluations, in different orders, of sums of ``n`` terms in ``dtype``.

    A sum of n terms computed in floating point carries an error of at most about ``n * eps * scale``
    (recursive summation, worst case: Higham's gamma_n), where ``scale`` is the magnitude of the terms added up
    (for a dot product of unit vectors, a cosine, 1; else the magnitude of the values compared). The rounding
    errors are independent and of either sign, so they add like a random walk: typically ``sqrt(n) * eps *
    scale``; blocked and pairwise summation (what vectorised kernels and BLAS do) are smaller still. Two orders
    differ by at most the sum of their errors. ``stages`` sums in sequence (a LayerNorm, a projection, a dot
    product...) make ``stages * n`` independent roundings, carried at their relative size through normalising
    layers: ``sqrt(stages * n) * eps * scale``. The bound returned is that times ``safety`` (4 by default: both
    sides' errors, and several standard deviations of margin). float16 / bfloat16 values computed in float32
    take float32's eps: the dtype is that of the arithmetic, not of the storage.
    """
    return safety * math.sqrt(stages * n) * torch.finfo(dtype).eps * scale


# X-Pool scores (XPoolScorer: similarity_matrix, fast_similarity, the index's searches) are cosines (scale 1)
# after four float32 reductions over d = 512 in sequence: the frames' LayerNorm, the key projection, the
# attention logits and the text-frame products (the Gram forms and the cosine run in float64). Two
# evaluations differ by their rounding wherever a product runs on another batch of videos or texts, or on
# rows at another alignment (memory-mapped safetensors data starts at the header's offset).
XPOOL_SCORE_TOL = reduction_tol(torch.float32, 512, stages=4)
# The naive X-Pool path (model.similarity: every pair pooled, then W_out and the LayerNorm) against the Gram
# scorer or against itself in other chunks: eight float32 reductions over d in sequence (LayerNorm, q / k,
# logits, pooling, W_out, LayerNorm, the cosine's norm and dot product); the Gram path's float32 part is a
# subset of them.
XPOOL_NAIVE_TOL = reduction_tol(torch.float32, 512, stages=8)


def assert_same_ranking(
    a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], tol: float, msg: object = ""
) -> None:
    """Two top-k results (scores [T, k] best first, ids [T, k]) rank alike up to ``tol`` on the scores.

    * every item found by both has scores within ``tol`` of each other, and the sorted scores agree within
      ``tol`` position by position (the k-th best moves by at most the largest score change);
    * two items in opposite orders are a near-tie: their scores lie within ``2 * tol`` (each moved by at most
      ``tol``); an item in one list only sits at the cut-off, within ``tol`` of the other list's last score.

    Without near-ties this is ``torch.equal`` on the ids and a ``tol`` check on the scores.
    """
    (sa, ia), (sb, ib) = a, b
    assert sa.shape == sb.shape == ia.shape == ib.shape, msg
    torch.testing.assert_close(sa, sb, rtol=0, atol=tol, msg=lambda m: f"{msg}: sorted scores: {m}")
    for row in range(ia.shape[0]):
        score_a = dict(zip(ia[row].tolist(), sa[row].tolist(), strict=True))
        score_b = dict(zip(ib[row].tolist(), sb[row].tolist(), strict=True))
        for item in score_a.keys() & score_b.keys():
            assert abs(score_a[item] - score_b[item]) <= tol, (msg, row, item, score_a[item], score_b[item], tol)
        for mine, other, last in ((score_a, score_b, sb[row, -1]), (score_b, score_a, sa[row, -1])):
            for item in mine.keys() - other.keys():  # at the cut-off: the other side ranked it just below
                assert mine[item] <= float(last) + tol, (msg, row, item, mine[item], float(last), tol)
        order_a, order_b = ia[row].tolist(), ib[row].tolist()
        shared = [item for item in order_a if item in score_b]
        for x, first in enumerate(shared):
            for second in shared[x + 1 :]:
                if order_b.index(second) < order_b.index(first):  # swapped: a near-tie on both sides
                    assert score_a[first] - score_a[second] <= 2 * tol, (msg, row, first, second, tol)
                    assert score_b[second] - score_b[first] <= 2 * tol, (msg, row, first, second, tol)
