"""Training-free (zero-shot) retrieval with a region encoder: {global} U {regions} of every frame, max cosine.

``evaluate_zero_shot(encoder, items, captions, text_to_item, method, k)`` -> metrics dict

* ``encoder``: a :class:`~lsdo.inverse_attention.encoder.RegionEncoder`, or an open_clip model / lsdo
  ``CLIPEncoder`` (wrapped here; strings then need ``tokenizer=``).
* ``items``: a sequence (indexable, ``len``; may load lazily) of images uint8 [3, H, W] or videos' frames
  uint8 [n, 3, H, W] (frames of different items may differ in size and in number).
* ``captions``: T strings (or tokens [T, L]); ``text_to_item``: [T] index of each caption's item.

Scoring (LAFM, paper §3): an item's set is every frame's {global} U {regions} (K = 0 for ``method="none"``); its
score for a text is the maximum cosine over that set, so a video scores by its best frame and region. Text-to-item
(``t2v/*``) and item-to-text (``v2t/*``) R@K / MdR / MnR come from :mod:`lsdo.retrieval.metrics`.

Cost: frames go through the encoder ``batch_size`` at a time (one call for the global views plus one for all their
crops, :meth:`RegionEncoder.encode`); texts ``text_batch_size`` at a time; the similarity is computed in blocks of
``chunk_size`` texts x ``chunk_size`` items, so its peak memory is [chunk, chunk, frames x (1+K)], not [T, N, ...].

``encode_items(encoder, items)`` -> (sets [N, S, d], mask [N, S]) and ``score(text_emb, sets, mask)`` -> [T, N]
expose the two halves.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from lsdo.inverse_attention.encoder import METHODS, RegionEncoder
from lsdo.inverse_attention.lafm import set_similarity
from lsdo.retrieval.metrics import t2v_metrics, t2v_ranks, v2t_metrics, v2t_ranks


def region_encoder(
    encoder: RegionEncoder | nn.Module, method: str | None = None, k: int | None = None, **kwargs: Any
) -> RegionEncoder:
    """``encoder`` as a RegionEncoder with ``method`` / ``k`` (a copy when they differ; None keeps the current)."""
    if not isinstance(encoder, RegionEncoder):
        return RegionEncoder(encoder, method or "inverse_attention", **({"k": k} if k is not None else {}), **kwargs)
    if kwargs:
        raise TypeError(f"region_encoder: options {sorted(kwargs)} only apply when building from a model")
    if (method is None or method == encoder.method) and (k is None or int(k) == encoder.k):
        return encoder
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    out = copy.copy(encoder)
    out.method = method or encoder.method
    out.k = int(k) if k is not None else encoder.k
    return out


def _frames_of(item: torch.Tensor) -> list[torch.Tensor]:
    """An image [3, H, W] or a video [n, 3, H, W] -> its frames (each [3, H, W])."""
    if item.ndim == 3:
        return [item]
    if item.ndim == 4 and item.shape[0] >= 1:
        return list(item.unbind(0))
    raise ValueError(f"zero-shot items must be images [3, H, W] or frames [n, 3, H, W], got {tuple(item.shape)}")


def _iter_items(items: Sequence[torch.Tensor], threads: int) -> Iterator[torch.Tensor]:
    """Items in order; with ``threads > 0`` the next ones load in a thread pool (lazy sequences decode files)."""
    if threads <= 0:
        for i in range(len(items)):
            yield items[i]
        return
    window = 4 * threads
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(items.__getitem__, i) for i in range(min(window, len(items)))]
        for i in range(len(items)):
            item = futures[i].result()
            futures[i] = None  # type: ignore[call-overload]
            if i + window < len(items):
                futures.append(pool.submit(items.__getitem__, i + window))
            yield item


@torch.no_grad()
def encode_items(
    encoder: RegionEncoder,
    items: Sequence[torch.Tensor],
    batch_size: int = 32,
    threads: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item's set of frame embeddings: -> (sets [N, S, d] float32 on CPU, mask [N, S] bool).

    S = max frames per item x (1 + K); slot ``f * (1 + K)`` is frame f's global embedding, the next K its regions.
    Frames of consecutive items are batched ``batch_size`` at a time (a batch may span several items).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_item: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # item -> [(emb [1+K, d], mask [1+K]) per frame]
    pending: list[tuple[int, torch.Tensor]] = []  # (item index, frame)
    done = 0

    def flush() -> None:
        nonlocal done
        emb, mask, _ = encoder.encode([f for _, f in pending])
        emb, mask = emb.cpu(), mask.cpu()
        for j, (i, _) in enumerate(pending):
            per_item[i].append((emb[j], mask[j]))
        done += len(pending)
        pending.clear()
        if progress is not None:
            progress(done)

    for i, item in enumerate(_iter_items(items, threads)):
        per_item.append([])
        for frame in _frames_of(item):
            pending.append((i, frame))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    if not per_item:
        raise ValueError("zero-shot evaluation: no items")
    slots = 1 + encoder.num_regions
    dim = per_item[0][0][0].shape[-1]
    size = max(len(frames) for frames in per_item) * slots
    sets = torch.zeros(len(per_item), size, dim)
    mask = torch.zeros(len(per_item), size, dtype=torch.bool)
    for i, frames in enumerate(per_item):
        for f, (e, m) in enumerate(frames):
            sets[i, f * slots : (f + 1) * slots] = e
            mask[i, f * slots : (f + 1) * slots] = m
    return sets, mask


@torch.no_grad()
def encode_texts(encoder: RegionEncoder, captions: Sequence[str] | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Caption embeddings [T, d] (L2-normalised, CPU), ``batch_size`` at a time."""
    n = captions.shape[0] if isinstance(captions, torch.Tensor) else len(captions)
    out = [encoder.encode_text(captions[s : s + batch_size]).cpu() for s in range(0, n, batch_size)]
    if not out:
        raise ValueError("zero-shot evaluation: no captions")
    return torch.cat(out)


def score(text_emb: torch.Tensor, sets: torch.Tensor, mask: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """Max-over-set cosine [T, N] of text embeddings [T, d] and item sets [N, S, d] (mask [N, S]), in blocks."""
    rows = [
        set_similarity(text_emb[s : s + chunk_size], sets, mask, chunk_size)
        for s in range(0, text_emb.shape[0], chunk_size)
    ]
    return torch.cat(rows)


def evaluate_zero_shot(
    encoder: RegionEncoder | nn.Module,
    items: Sequence[torch.Tensor],
    captions: Sequence[str] | torch.Tensor,
    text_to_item: Sequence[int] | torch.Tensor,
    method: str | None = None,
    k: int | None = None,
    *,
    batch_size: int = 32,
    text_batch_size: int = 256,
    chunk_size: int = 256,
    threads: int = 0,
    return_scores: bool = False,
    progress: Callable[[int], None] | None = None,
    **encoder_kwargs: Any,
) -> dict[str, Any]:
    """Text-to-item and item-to-text metrics of max-over-{frames x (global U regions)} cosine scores.

    ``method`` / ``k`` override the encoder's (``"none"`` | ``"inverse_attention"`` | ``"grid"``); a model given
    instead of a RegionEncoder is wrapped with ``encoder_kwargs`` (``tokenizer=``, ``grid=``, ``heatmap=``,
    ``lard=`` ...). ``threads`` > 0 loads lazy items in a thread pool. Returns ``{"t2v/R1": ..., "v2t/R1": ...,
    "num_texts", "num_items", "num_videos" (= num_items), "num_frames", "num_regions", "method", "k",
    "encode_seconds", "frames_per_s"}``; with ``return_scores`` also ``"sims"`` [T, N], ``"t2v_ranks"`` [T]
    and ``"v2t_ranks"`` [N].
    """
    enc = region_encoder(encoder, method, k, **encoder_kwargs)
    t2i = torch.as_tensor(list(text_to_item) if not isinstance(text_to_item, torch.Tensor) else text_to_item)
    t2i = t2i.long().view(-1)
    n_items = len(items)
    if t2i.numel() and (int(t2i.min()) < 0 or int(t2i.max()) >= n_items):
        raise ValueError(f"text_to_item indexes {n_items} items, got values in [{int(t2i.min())}, {int(t2i.max())}]")
    start = time.perf_counter()
    sets, mask = encode_items(enc, items, batch_size, threads, progress)
    seconds = time.perf_counter() - start
    text_emb = encode_texts(enc, captions, text_batch_size)
    if text_emb.shape[0] != t2i.shape[0]:
        raise ValueError(f"{text_emb.shape[0]} captions but {t2i.shape[0]} text_to_item entries")
    sims = score(text_emb, sets, mask, chunk_size)
    slots = 1 + enc.num_regions
    n_frames = int(mask[:, ::slots].sum())
    metrics: dict[str, Any] = {f"t2v/{k_}": v for k_, v in t2v_metrics(sims, t2i).items()}
    metrics.update({f"v2t/{k_}": v for k_, v in v2t_metrics(sims, t2i).items()})
    metrics.update(
        {
            "num_texts": int(t2i.shape[0]),
            "num_items": n_items,
            "num_videos": n_items,
            "num_frames": n_frames,
            "num_regions": enc.num_regions,
            "mean_regions_per_frame": float(mask.sum() - n_frames) / max(n_frames, 1),
            "method": enc.method,
            "k": enc.k if enc.method == "inverse_attention" else enc.num_regions,
            "encode_seconds": seconds,
            "frames_per_s": n_frames / max(seconds, 1e-9),
        }
    )
    if return_scores:
        metrics.update({"sims": sims, "t2v_ranks": t2v_ranks(sims, t2i), "v2t_ranks": v2t_ranks(sims, t2i)})
    return metrics
