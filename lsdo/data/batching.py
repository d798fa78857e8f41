"""Batching shared by every data module: the epoch-seeded training sampler (shuffle, hard-negative runs,
rank sharding), the evaluation sampler (each rank a contiguous block, no padding) and the train / eval
collate functions (batch layouts in :mod:`lsdo.data.datamodule`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler):
    """Shuffles indices with a generator seeded by (seed, epoch); yields (index, item_seed).

    ``group_size > 0`` (hard-negative batches): the shuffled order is made of runs of up to ``group_size`` items
    of the same group (synthetic benchmark: the large object's kind) with distinct ``keys`` (the combination),
    so a batch holds several videos that differ only in their small objects.

    Sharded across ranks when torch.distributed is initialised (the permutation padded with its first
    items to a multiple of world_size, every rank the same length). With ``batch_size`` B (the per-rank
    batch), the permutation is cut into global batches of world_size * B and rank r takes the r-th block
    of B of each: the W ranks' batch k, concatenated in rank order as the training step gathers them,
    is batch k of one process with batch size W * B, in the same order (DDP equals one process;
    docs/distributed.md). Without it, each rank takes every world_size-th item (ungrouped) or a
    contiguous slice (grouped).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        groups: list[int] | None = None,
        keys: list[Any] | None = None,
        group_size: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        if group_size < 0:
            raise ValueError(f"hard-negative group size must be >= 0, got {group_size}")
        if group_size and (groups is None or len(groups) != size or (keys is not None and len(keys) != size)):
            raise ValueError("hard-negative grouping needs one group (and key) per item")
        self.item_groups, self.item_keys, self.group_size = groups, keys, int(group_size)

    def _grouped_order(self, rng: np.random.Generator) -> np.ndarray:
        """Runs of ``group_size`` items of one group with distinct keys, the runs in random order.

        Each run takes one item from each of the ``group_size`` keys of its group with the most items left
        (random tie-break), so a run never repeats a key (no false negatives from one combination twice),
        every run but a group's last is full, and every item appears exactly once per epoch. The full runs come
        first (in random order), the short ones last, so with a batch size that is a multiple of ``group_size``
        every batch but the last ones is made of whole runs.
        """
        groups = self.item_groups
        assert groups is not None
        keys = self.item_keys if self.item_keys is not None else list(range(self.size))
        runs: list[list[int]] = []
        for g in sorted(set(groups)):
            left: dict[Any, list[int]] = {}
            for i in (int(j) for j in rng.permutation(self.size)):
                if groups[i] == g:
                    left.setdefault(keys[i], []).append(i)
            while left:
                names = list(left)
                tie = rng.random(len(names))
                take = sorted(range(len(names)), key=lambda n: (-len(left[names[n]]), tie[n]))[: self.group_size]
                runs.append([left[names[n]].pop() for n in take])
                left = {k: v for k, v in left.items() if v}
        full = [r for r in runs if len(r) == self.group_size]
        short = [r for r in runs if len(r) < self.group_size]  # at the end: the full runs stay batch-aligned
        ordered = [part[int(k)] for part in (full, short) for k in rng.permutation(len(part))]
        return np.array([i for run in ordered for i in run], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank(self) -> tuple[int, int]:
        return rank_and_world()

    def __len__(self) -> int:
        _, world = self._rank()
        return -(-self.size // world)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.group_size and self.shuffle:
            order = self._grouped_order(rng)
        else:
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        item_seeds = rng.integers(0, 2**62, size=self.size)
        rank, world = self._rank()
        total = len(self) * world
        order = np.concatenate([order, order[: total - self.size]]) if total > self.size else order
        if self.batch_size and world > 1:  # rank r: the r-th block of each global batch of world * B
            step = world * self.batch_size
            blocks = []
            for start in range(0, total, step):
                chunk = order[start : start + step]  # a multiple of world (the last, short one too)
                per = len(chunk) // world
                blocks.append(chunk[rank * per : (rank + 1) * per])
            mine = np.concatenate(blocks)
        elif self.group_size:  # grouped: each rank takes a contiguous slice, so the runs stay together
            mine = order[rank * len(self) : (rank + 1) * len(self)]
        else:  # every world-th item
            mine = order[rank::world]
        for i in mine:
            yield int(i), int(item_seeds[i])


class ShardSampler(Sampler):
    """Evaluation order: indices 0..size-1, rank r of W taking the r-th contiguous block (sizes differ by at most 1).

    Every item is read by exactly one rank and none twice (a ``DistributedSampler`` pads with repeats,
    which would count those videos twice in the retrieval metrics); the ranks' blocks, in rank order,
    are the split in order, as one process reads it. One process: 0..size-1. The rank is read when the
    loader is iterated (after the process group is up).
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def _bounds(self) -> tuple[int, int]:
        rank, world = rank_and_world()
        if world > self.size:
            raise ValueError(f"{self.size} evaluation items cannot be split over {world} ranks (one at least each)")
        return rank * self.size // world, (rank + 1) * self.size // world

    def __len__(self) -> int:
        start, end = self._bounds()
        return end - start

    def __iter__(self):
        start, end = self._bounds()
        return iter(range(start, end))


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"frames": torch.stack([it["frames"] for it in items]), "captions": [it["caption"] for it in items]}


def collate_eval(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Every caption of every video; ``text_to_video`` indexes the batch's videos, and ``video_index``
    [B] (when the items carry their dataset ``index``) names them, so that the features gathered from
    several ranks are put back in dataset order, each video once (lsdo.lightning_module)."""
    captions, t2v = [], []
    for v, it in enumerate(items):
        captions.extend(it["captions"])
        t2v.extend([v] * len(it["captions"]))
    batch = {
        "frames": torch.stack([it["frames"] for it in items]),
        "captions": captions,
        "text_to_video": torch.tensor(t2v, dtype=torch.long),
    }
    if items and all("index" in it for it in items):
        batch["video_index"] = torch.tensor([int(it["index"]) for it in items], dtype=torch.long)
    return batch
