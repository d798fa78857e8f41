"""LAFM, the Low-Attention Feature Merger, and the set similarity (paper §3, last stage).

"region-level embeddings are combined with the original global embedding using LAFM" ... "we calculate cosine
similarity between the text embedding and each visual embedding, taking the maximum across all regions and the
global embedding."

``merge(global [N, d], regions [N, k, d], region_mask [N, k])``  -> (set [N, 1+k, d], mask [N, 1+k] bool)
``set_similarity(text [Q, d], items [N, 1+k, d], mask [N, 1+k])`` -> [Q, N]  max_j cos(t, v_j) over valid members
``set_similarity_argmax(...)``                                  -> ([Q, N] scores, [Q, N] index of the best member)

Slot 0 is the global embedding and always valid; masked (missing) region slots never win the max. A row whose mask
is all False scores -inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def merge(
    global_emb: torch.Tensor, region_emb: torch.Tensor, region_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """LAFM: the set {global} U {regions}: [N, d] + [N, k, d] (+ [N, k] bool) -> ([N, 1+k, d], [N, 1+k] bool)."""
    n, k = region_emb.shape[0], region_emb.shape[1]
    if region_mask is None:
        region_mask = torch.ones(n, k, dtype=torch.bool, device=region_emb.device)
    items = torch.cat([global_emb[:, None], region_emb.to(global_emb.dtype)], dim=1)
    mask = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=region_mask.device), region_mask.bool()], dim=1)
    return items, mask


def set_similarity_argmax(
    text: torch.Tensor, items: torch.Tensor, mask: torch.Tensor | None = None, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max cosine over each item's set: text [Q, d], items [N, S, d], mask [N, S] -> ([Q, N], argmax [Q, N])."""
    t = F.normalize(text.float(), dim=-1)
    scores, index = [], []
    n = items.shape[0]
    step = chunk_size or max(n, 1)
    for start in range(0, n, step):
        v = F.normalize(items[start : start + step].float(), dim=-1)  # [n_c, S, d]
        cos = torch.einsum("qd,nsd->qns", t, v)  # [Q, n_c, S]
        if mask is not None:
            cos = cos.masked_fill(~mask[start : start + step].bool().to(cos.device)[None], float("-inf"))
        best, arg = cos.max(dim=-1)
        scores.append(best)
        index.append(arg)
    if not scores:
        return text.new_zeros(text.shape[0], 0), torch.zeros(text.shape[0], 0, dtype=torch.long)
    return torch.cat(scores, dim=1), torch.cat(index, dim=1)


def set_similarity(
    text: torch.Tensor, items: torch.Tensor, mask: torch.Tensor | None = None, chunk_size: int | None = None
) -> torch.Tensor:
    """Paper's similarity s(q, v) = max over {global} U {regions} of cos: [Q, d] x [N, S, d] -> [Q, N]."""
    return set_similarity_argmax(text, items, mask, chunk_size)[0]
