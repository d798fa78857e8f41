"""Retrieval metrics: R@K (percent), median and mean rank (1-based).

Ranks are *pessimistic* on ties: a target tied with k other candidates gets the worst of the
tied positions, so a degenerate model that scores everything equally gets rank = #candidates,
never a free R@1.

* ``t2v_metrics``: every text is a query over the videos; its rank is that of its own video.
* ``v2t_metrics``: every video is a query over the texts; with several captions per video
  (MSVD), the video's rank is that of its best-ranked caption (the published protocol).
"""

from __future__ import annotations

import torch

RECALLS = (1, 5, 10, 50)


def _summary(ranks: torch.Tensor) -> dict[str, float]:
    ranks = ranks.double()
    out = {f"R{k}": float((ranks <= k).double().mean() * 100) for k in RECALLS}
    out["MdR"] = float(ranks.median()) if ranks.numel() % 2 else float(ranks.quantile(0.5))
    out["MnR"] = float(ranks.mean())
    return out


def _check(sims: torch.Tensor, text_to_video: torch.Tensor) -> None:
    if sims.ndim != 2 or text_to_video.ndim != 1 or text_to_video.shape[0] != sims.shape[0]:
        raise ValueError(
            f"sims must be [T, V] and text_to_video [T]; got {tuple(sims.shape)}, {tuple(text_to_video.shape)}"
        )


def t2v_ranks(sims: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    """1-based rank [T] of each text's video among all videos."""
    _check(sims, text_to_video)
    target = sims.gather(1, text_to_video.view(-1, 1).to(sims.device))  # [T, 1]
    return (sims >= target).sum(dim=1).cpu()


def v2t_ranks(sims: torch.Tensor, text_to_video: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """1-based rank [V] of each video's best-ranked caption among all texts."""
    _check(sims, text_to_video)
    t2v = text_to_video.to(sims.device)
    target = sims.gather(1, t2v.view(-1, 1)).squeeze(1)  # [T]: score of text t with its own video
    columns = sims.T.contiguous().sort(dim=1).values  # [V, T]: each video's scores over all texts, ascending
    by_text = torch.empty_like(t2v)
    for start in range(0, t2v.shape[0], chunk):  # chunks bound memory to [chunk, T]
        stop = start + chunk
        rows = columns[t2v[start:stop]]  # [c, T]
        below = torch.searchsorted(rows, target[start:stop, None], right=False).squeeze(1)  # texts scoring < target
        by_text[start:stop] = sims.shape[0] - below  # texts scoring >= target (pessimistic ties)
    num_videos = sims.shape[1]
    best = torch.full((num_videos,), torch.iinfo(torch.long).max, dtype=torch.long, device=sims.device)
    best.scatter_reduce_(0, t2v, by_text, reduce="amin")
    if (best == torch.iinfo(torch.long).max).any():
        raise ValueError("every video needs at least one caption for v2t metrics")
    return best.cpu()


def t2v_metrics(sims: torch.Tensor, text_to_video: torch.Tensor) -> dict[str, float]:
    """Text-to-video R1 R5 R10 R50 MdR MnR for sims [T, V]."""
    return _summary(t2v_ranks(sims, text_to_video))


def v2t_metrics(sims: torch.Tensor, text_to_video: torch.Tensor) -> dict[str, float]:
    """Video-to-text R1 R5 R10 R50 MdR MnR for sims [T, V] (best caption per video)."""
    return _summary(v2t_ranks(sims, text_to_video))
