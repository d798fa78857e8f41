"""The running top-k of exhaustive search: videos scored a chunk at a time, the best kept, ties to the lower index.

Exhaustive scoring (the full X-Pool protocol, region search) never holds [T, V] scores: it scores
``chunk`` videos at a time ([T, c]) and merges them into the best so far ([T, k]) with a stable
sort, so of equal scores the lower video index wins and results are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lsdo.retrieval.index.finite import NanCheck


def check_topk(topk: object) -> None:
    """ValueError unless ``topk`` is an integer >= 1 (a bool is not)."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be an integer >= 1, got {topk!r}")


def merge_topk(
    best_s: torch.Tensor, best_i: torch.Tensor, s: torch.Tensor, i: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k: (best [T, a], new [T, b]) -> the k best of both [T, min(k, a + b)], stable on ties."""
    all_s, all_i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i], dim=1)  # [T, a + b]
    order = all_s.sort(dim=1, descending=True, stable=True).indices[:, :k]  # [T, min(k, a + b)]
    return all_s.gather(1, order), all_i.gather(1, order)


def chunked_topk(
    score: Callable[[slice], torch.Tensor], num_texts: int, num_videos: int, k: int, chunk: int, check: NanCheck
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of ``num_videos`` videos per text: scores [T, k] float32 and indices [T, k] long, best first.

    ``score(slice(start, stop))``: the texts' scores of those videos [T, stop - start] (CPU float32),
    called ``chunk`` videos at a time; ``check(scores, videos)`` refuses NaN scores.
    """
    best_s = torch.empty(num_texts, 0)
    best_i = torch.empty(num_texts, 0, dtype=torch.long)
    step = max(int(chunk), 1)
    for start in range(0, num_videos, step):
        stop = min(start + step, num_videos)
        scores = score(slice(start, stop))  # [T, c]
        index = torch.arange(start, stop).expand(num_texts, -1)  # [c] -> [T, c]
        check(scores, index)
        best_s, best_i = merge_topk(best_s, best_i, scores, index, k)
    return best_s, best_i
