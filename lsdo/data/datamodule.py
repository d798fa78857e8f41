"""Lightning data modules.

Batches:
  * train: ``{"frames": float [B, n, 3, H, W], "captions": list[str] (B)}`` - one caption per video;
  * val/test: ``{"frames": [B, n, 3, H, W], "captions": list[str] (T), "text_to_video": LongTensor [T]}``
    with every caption of every video (multi-caption test sets), ``text_to_video`` indexing the
    batch's videos.

Training order and frame sampling are functions of (seed, epoch, index) only, so a run resumed
from an epoch-end checkpoint replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lsdo.data import synthetic
from lsdo.data.bank import spread_picks
from lsdo.data.sampling import segment_indices, train_sampling
from lsdo.data.transforms import normalize
from lsdo.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

REAL_DATASETS = {
    "msrvtt": "MSR-VTT (annotations MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, videos/)",
    "msvd": "MSVD (captions_msvd.json, train/val/test_list.txt, videos/)",
    "lsmdc": "LSMDC (the LSMDC16 csv files and the movie-clip folders; licence required)",
    "didemo": "DiDeMo (train/val/test_data.json, videos/)",
}


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


def _train_item(
    clip: torch.Tensor,
    captions: tuple[str, ...] | Callable[[np.random.Generator], str],
    num_frames: int,
    rng: np.random.Generator,
    sampling: str = "rand",
) -> dict:
    """One training item from a uint8 clip [T, 3, H, W]: a frame per segment (``sampling``), a random caption
    (uniform over ``captions``, or drawn by it when it is callable, e.g. :class:`synthetic.CaptionDraw`).

    ``sampling`` (``dataset.train_sampling``): ``rand`` a random frame inside each segment,
    ``uniform`` the middle of each (the released code's default).
    """
    frame_idx = segment_indices(clip.shape[0], num_frames, sampling, rng)
    caption = captions(rng) if callable(captions) else captions[int(rng.integers(len(captions)))]
    return {"frames": normalize(clip[torch.from_numpy(frame_idx)]), "caption": caption}


class ClipTrainDataset(Dataset):
    """Training items from pre-rendered uint8 clips [V, T, 3, H, W]: one frame per segment (``sampling``)."""

    def __init__(
        self,
        clips: torch.Tensor,
        captions: list[tuple[str, ...]] | list[tuple[str, ...] | Callable[[np.random.Generator], str]],
        num_frames: int,
        sampling: str = "rand",
    ) -> None:
        self.clips, self.captions, self.num_frames, self.sampling = clips, captions, num_frames, sampling

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        idx, item_seed = key
        rng = np.random.default_rng(item_seed)
        return _train_item(self.clips[idx], self.captions[idx], self.num_frames, rng, self.sampling)


class ClipEvalDataset(Dataset):
    """Evaluation items: the middle frame of each segment and every caption of the video."""

    def __init__(self, clips: torch.Tensor, captions: list[tuple[str, ...]], num_frames: int) -> None:
        self.clips, self.captions, self.num_frames = clips, captions, num_frames
        self.frame_idx = torch.from_numpy(segment_indices(clips.shape[1], num_frames, "uniform"))

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {"frames": normalize(self.clips[idx, self.frame_idx]), "captions": list(self.captions[idx])}


class FreshRenderTrainDataset(Dataset):
    """Training items rendered on the fly: every epoch shows *new* videos of the training combinations.

    The procedural benchmark has unlimited data; ``dataset.fresh_renders=true`` uses it. Item ``idx`` is a
    fresh rendering of training video ``idx``'s combination with the sampler's item seed (a function of
    (seed, epoch, idx)), so a run stays deterministic and resumable. The fixed training videos (those
    ``lsdo-synth`` exports) are never shown as such.
    """

    def __init__(
        self,
        videos: list[synthetic.SyntheticVideo],
        render_kw: dict[str, Any],
        num_frames: int,
        sampling: str = "rand",
        small_caption_prob: float = 1.0,
    ) -> None:
        self.videos, self.render_kw, self.num_frames, self.sampling = videos, render_kw, num_frames, sampling
        self.captions = [synthetic.training_captions(v, small_caption_prob) for v in videos]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        idx, item_seed = key
        rng = np.random.default_rng(item_seed)
        v = self.videos[idx]
        fresh = synthetic.SyntheticVideo(v.video_id, v.big, v.small, int(rng.integers(0, 2**62)), v.captions)
        clip = torch.from_numpy(synthetic.render(fresh, **self.render_kw))  # [T, 3, H, W] uint8
        return _train_item(clip, self.captions[idx], self.num_frames, rng, self.sampling)


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


class SyntheticDataModule(L.LightningDataModule):
    """The built-in synthetic LSDO benchmark (see :mod:`lsdo.data.synthetic`), rendered in memory."""

    def __init__(self, dcfg: Any, image_size: int, seed: int = 42, select_on_test: bool = False) -> None:
        super().__init__()
        self.dcfg = dcfg
        self.size = int(dcfg.get("image_size") or image_size)
        self.seed = seed
        self.select_on_test = select_on_test
        self.splits: dict[str, tuple[list[synthetic.SyntheticVideo], torch.Tensor]] = {}

    def _split(self, split: str) -> tuple[list[synthetic.SyntheticVideo], torch.Tensor]:
        if split not in self.splits:
            d = self.dcfg
            videos = synthetic.make_split(
                split, int(d.seed), int(d.val_combos), int(d.test_combos), int(d.train_videos_per_combo)
            )
            clips = np.stack([synthetic.render(v, **self.render_kw()) for v in videos])
            self.splits[split] = (videos, torch.from_numpy(clips))  # [V, T, 3, H, W] uint8
        return self.splits[split]

    def render_kw(self) -> dict[str, Any]:
        """Keyword arguments of :func:`synthetic.render` for this dataset config."""
        d = self.dcfg
        return {
            "num_frames": int(d.clip_len),
            "size": self.size,
            "small_visible_frac": float(d.small_visible_frac),
            "distractors": int(d.distractors),
            "small_radius": float(d.get("small_radius", 0.07)),
        }

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test") if stage in (None, "fit") else ("test",):
            self._split(split)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        d = self.dcfg
        kw: dict[str, Any] = {
            "batch_size": int(d.batch_size),
            "num_workers": int(d.num_workers),
            "collate_fn": collate_train if train else collate_eval,
            "persistent_workers": int(d.num_workers) > 0,
        }
        if train:
            group = int(d.get("hard_negative_group", 0))
            videos = self._split("train")[0] if group else []  # hard negatives: group by the large object's kind
            kw["sampler"] = EpochSampler(
                len(dataset),
                self.seed,
                shuffle=True,
                groups=[v.big for v in videos] or None,
                keys=[(v.big, v.small) for v in videos] or None,
                group_size=group,
            )
            kw["drop_last"] = True
        return DataLoader(dataset, **kw)

    def train_dataloader(self) -> DataLoader:
        videos, clips = self._split("train")
        n, sampling = int(self.dcfg.num_frames), train_sampling(self.dcfg)
        p = float(self.dcfg.get("small_caption_prob", 1.0))  # < 1: most captions name the large object alone
        if bool(self.dcfg.get("fresh_renders", False)):
            return self._loader(FreshRenderTrainDataset(videos, self.render_kw(), n, sampling, p), True)
        captions = [synthetic.training_captions(v, p) for v in videos]
        return self._loader(ClipTrainDataset(clips, captions, n, sampling), True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("test" if self.select_on_test else "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        videos, clips = self._split(split)
        return self._loader(ClipEvalDataset(clips, [v.captions for v in videos], int(self.dcfg.num_frames)), False)

    def bank_video_ids(self, m: int) -> list[str]:
        """Ids of the m training videos of :meth:`bank_videos`."""
        videos, _ = self._split("train")
        return [videos[i].video_id for i in self._bank_picks(m)]

    def _bank_picks(self, m: int) -> list[int]:
        """m training videos of m distinct (large, small) combinations, spread over both kinds.

        Round-robin over the large kinds (the "categories"), each pick preferring a small kind not yet
        in the bank (:func:`lsdo.data.bank.spread_picks`): with m = 20 the bank shows every one of
        the 20 small kinds and each large kind 2 or 3 times. Deterministic in the dataset seed.
        """
        videos, _ = self._split("train")
        return spread_picks([v.category for v in videos], [v.small for v in videos], m)

    def bank_videos(self, m: int) -> torch.Tensor:
        """The m training videos of :meth:`_bank_picks` (middle frame of each segment): [m, n, 3, H, W]."""
        _, clips = self._split("train")
        frame_idx = torch.from_numpy(segment_indices(clips.shape[1], int(self.dcfg.num_frames), "uniform"))
        return normalize(clips[self._bank_picks(m)][:, frame_idx])


def build_datamodule(cfg: Any, image_size: int, report_dir: str | Path | None = None) -> L.LightningDataModule:
    """The data module of ``cfg.dataset``; raises a one-line user error when data is missing.

    ``report_dir`` receives the pre-flight reports of the real datasets (missing/corrupt video lists).
    """
    d = cfg.dataset
    name = str(d.name)
    if name == "synthetic":
        return SyntheticDataModule(d, image_size, seed=int(cfg.seed), select_on_test=bool(cfg.get("select_on_test")))
    if name in REAL_DATASETS:
        root = Path(str(d.root))
        if not root.exists() and not (d.get("ann_dir") and d.get("video_dir")):
            raise DataNotFoundError(
                f"dataset.root: {root} does not exist. Download {REAL_DATASETS[name]} as described in "
                f"data/README.md and pass dataset.root=/path/to/{name}"
            )
        from lsdo.data.video_datamodule import VideoDataModule

        return VideoDataModule(
            d,
            image_size,
            seed=int(cfg.seed),
            select_on_test=bool(cfg.get("select_on_test")),
            report_dir=report_dir,
        )
    raise ConfigError(f"dataset.name: unknown dataset '{name}' (expected synthetic, {', '.join(REAL_DATASETS)})")
