"""Batching shared by every data module: the epoch-seeded sampler (shuffle, hard-negative runs, rank
sharding) and the train / eval collate functions (batch layouts in :mod:`lsdo.data.datamodule`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Shuffles indices with a generator seeded by (seed, epoch); yields (index, item_seed).

    ``group_size > 0`` (hard-negative batches): the shuffled order is made of runs of up to ``group_size`` items
    of the same group (synthetic benchmark: the large object's kind) with distinct ``keys`` (the combination),
    so a batch holds several videos that differ only in their small objects.

    Sharded across ranks when torch.distributed is initialised (each rank takes every
    world_size-th item of the same permutation, padded to equal length).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        groups: list[int] | None = None,
        keys: list[Any] | None = None,
        group_size: int = 0,
    ) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
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
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

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
        # grouped: each rank takes a contiguous slice, so the runs stay together; else every world-th item
        mine = order[rank * len(self) : (rank + 1) * len(self)] if self.group_size else order[rank::world]
        for i in mine:
            yield int(i), int(item_seeds[i])


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"frames": torch.stack([it["frames"] for it in items]), "captions": [it["caption"] for it in items]}


def collate_eval(items: list[dict[str, Any]]) -> dict[str, Any]:
    captions, t2v = [], []
    for v, it in enumerate(items):
        captions.extend(it["captions"])
        t2v.extend([v] * len(it["captions"]))
    return {
        "frames": torch.stack([it["frames"] for it in items]),
        "captions": captions,
        "text_to_video": torch.tensor(t2v, dtype=torch.long),
    }
