"""The synthetic benchmark's Lightning data module and its datasets (pre-rendered and fresh-render training items).

The factory from a config: :func:`lsdo.data.factory.build_datamodule`. Batch layouts (every data module):

  * train: ``{"frames": float [B, n, 3, H, W], "captions": list[str] (B)}`` - one caption per video;
  * val/test: ``{"frames": [B, n, 3, H, W], "captions": list[str] (T), "text_to_video": LongTensor [T],
    "video_index": LongTensor [B]}`` with every caption of every video (multi-caption test sets),
    ``text_to_video`` indexing the batch's videos and ``video_index`` their places in the split; read
    in order, each rank of a DDP run a contiguous block (:class:`lsdo.data.batching.ShardSampler`).

Training order and frame sampling are functions of (seed, epoch, index) only, so a run resumed
from an epoch-end checkpoint replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lsdo.data import synthetic
from lsdo.data.bank import spread_picks
from lsdo.data.batching import EpochSampler, ShardSampler, collate_eval, collate_train
from lsdo.data.sampling import segment_indices, train_sampling
from lsdo.data.transforms import normalize
from lsdo.processes import loader_context

log = logging.getLogger(__name__)


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
        return {
            "frames": normalize(self.clips[idx, self.frame_idx]),
            "captions": list(self.captions[idx]),
            "index": idx,
        }


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
        seed = int(rng.integers(0, 2**62))
        fresh = synthetic.SyntheticVideo(v.video_id, v.big, v.small, seed, v.captions, side=v.side)
        clip = torch.from_numpy(synthetic.render(fresh, **self.render_kw))  # [T, 3, H, W] uint8
        return _train_item(clip, self.captions[idx], self.num_frames, rng, self.sampling)


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
                split,
                int(d.seed),
                int(d.val_combos),
                int(d.test_combos),
                int(d.train_videos_per_combo),
                bool(d["spatial_captions"]),
            )
            clips = np.stack([synthetic.render(v, **self.render_kw()) for v in videos])
            self.splits[split] = (videos, torch.from_numpy(clips))  # [V, T, 3, H, W] uint8
        return self.splits[split]

    def render_kw(self) -> dict[str, Any]:
        """Keyword arguments of :func:`synthetic.render` for this dataset config."""
        return synthetic.render_settings(self.dcfg, self.size)

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
            "multiprocessing_context": loader_context(int(d.num_workers)),  # not a fork of a threaded trainer
        }
        if train:
            group = int(d["hard_negative_group"])
            videos = self._split("train")[0] if group else []  # hard negatives: group by the large object's kind
            kw["sampler"] = EpochSampler(
                len(dataset),
                self.seed,
                shuffle=True,
                groups=[v.big for v in videos] or None,
                keys=[(v.big, v.small) for v in videos] or None,
                group_size=group,
                batch_size=int(d.batch_size),  # DDP: W ranks x B = one process with W * B, same batches
            )
            kw["drop_last"] = True
        else:
            kw["sampler"] = ShardSampler(len(dataset))  # each rank a contiguous block, no video twice
        return DataLoader(dataset, **kw)

    def train_dataloader(self) -> DataLoader:
        videos, clips = self._split("train")
        n, sampling = int(self.dcfg.num_frames), train_sampling(self.dcfg)
        p = float(self.dcfg["small_caption_prob"])  # < 1: most captions name the large object alone
        if bool(self.dcfg["fresh_renders"]):
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
