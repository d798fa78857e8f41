"""The real benchmarks' data module: annotation files + video files decoded with decord.

Layout under ``dataset.root`` (every path can be overridden)::

    <root>/<annotation files with their published names>     (dataset.ann_dir, dataset.files.*)
    <root>/videos/<video file>                               (dataset.video_dir)

Before any training step a pre-flight check resolves every video of the splits in use:

* a missing file is reported with the count and every id (written to
  ``<run dir>/missing_videos_<split>.txt``); ``dataset.on_missing=error`` (default) stops with
  that report, ``skip`` drops those videos and their captions and logs how many;
* with ``dataset.probe_videos=true`` (default) every file is opened and its last frame decoded;
  a zero-byte, truncated or non-video file is reported the same way under
  ``dataset.on_corrupt=error|skip``.

A file that passes the probe but fails while training is decoded is skipped with a logged
warning under ``on_corrupt=skip`` (its batch is one video shorter) and raises otherwise; during
evaluation it always raises, since dropping a test video would silently change the metrics.

Batches have the same structure as the synthetic module's (see :mod:`lsdo.data.datamodule`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lsdo.data.annotations import NoSplitError, Record, group_by_video, load_annotations
from lsdo.data.batching import EpochSampler, collate_eval
from lsdo.data.reports import write_report
from lsdo.data.sampling import train_sampling
from lsdo.data.transforms import build_transform
from lsdo.data.video import VIDEO_EXTENSIONS, VideoDecodeError, probe_video, sample_frames
from lsdo.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)


@dataclass
class VideoSplit:
    """The videos of one split after the pre-flight check."""

    video_ids: list[str]
    captions: list[list[str]]
    paths: list[Path]


def resolve_video_path(video_dir: Path, video_file: str) -> Path | None:
    """``video_dir/video_file``, or the same stem with another video extension (e.g. a compressed .mp4).

    Also covers DiDeMo's names that end in a bare dot (``..._fd25eddb2e.``).
    """
    p = video_dir / video_file
    if p.is_file():
        return p
    stems = {str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else str(p).rstrip(".")}
    for stem in sorted(stems):
        for ext in VIDEO_EXTENSIONS:
            q = Path(stem + ext)
            if q.is_file():
                return q
    return None


def _probe(path: Path, backend: str) -> str | None:
    """None if the video decodes, else the reason."""
    try:
        probe_video(path, backend=backend)  # also reports zero-byte files
        return None
    except VideoDecodeError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt file here
        return f"{type(exc).__name__}: {exc}"


def preflight(
    name: str,
    split: str,
    records: list[Record],
    video_dir: Path,
    on_missing: str = "error",
    on_corrupt: str = "error",
    probe: bool = True,
    backend: str = "auto",
    workers: int = 2,
    report_dir: Path | None = None,
) -> VideoSplit:
    """Group ``records`` by video, resolve every file, drop or report missing/corrupt ones."""
    for key, value in (("on_missing", on_missing), ("on_corrupt", on_corrupt)):
        if value not in ("error", "skip"):
            raise ConfigError(f"dataset.{key}: expected error | skip, got '{value}'")
    ids, caps, files = group_by_video(records)
    paths = [resolve_video_path(video_dir, f) for f in files]
    missing = [i for i, p in enumerate(paths) if p is None]
    if missing:
        listed = [f"{ids[i]}\t{video_dir / files[i]}" for i in missing]
        where = write_report(report_dir, f"missing_videos_{split}.txt", listed)
        head = ", ".join(ids[i] for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        msg = f"{name} {split}: {len(missing)} of {len(ids)} videos are missing under {video_dir} ({head}){where}"
        if on_missing == "error":
            raise DataNotFoundError(msg + "; pass dataset.on_missing=skip to drop them")
        log.warning("%s; dropped (dataset.on_missing=skip)", msg)
    keep = [i for i, p in enumerate(paths) if p is not None]
    if probe and keep:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reasons = list(pool.map(lambda i: _probe(paths[i], backend), keep))
        bad = [(i, r) for i, r in zip(keep, reasons, strict=True) if r is not None]
        if bad:
            listed = [f"{ids[i]}\t{paths[i]}\t{r}" for i, r in bad]
            where = write_report(report_dir, f"corrupt_videos_{split}.txt", listed)
            head = "; ".join(r if r.startswith(str(paths[i])) else f"{paths[i]}: {r}" for i, r in bad[:3])
            head += " ..." if len(bad) > 3 else ""
            msg = f"{name} {split}: {len(bad)} of {len(keep)} video files cannot be decoded ({head}){where}"
            if on_corrupt == "error":
                raise VideoDecodeError(msg + "; pass dataset.on_corrupt=skip to drop them")
            log.warning("%s; dropped (dataset.on_corrupt=skip)", msg)
            bad_set = {i for i, _ in bad}
            keep = [i for i in keep if i not in bad_set]
    if not keep:
        raise DataNotFoundError(f"{name} {split}: no usable videos under {video_dir}")
    log.info("%s %s: %d videos, %d captions", name, split, len(keep), sum(len(caps[i]) for i in keep))
    return VideoSplit([ids[i] for i in keep], [caps[i] for i in keep], [paths[i] for i in keep])  # type: ignore[misc]


class VideoTrainDataset(Dataset):
    """Training items: segment sampling (``sampling``: ``rand`` by default), the clip's augmentation, one caption.

    ``unit="caption"`` iterates over every (video, caption) pair as the published codes do;
    ``unit="video"`` over videos, each with a random caption (the synthetic module's scheme).
    Keys are ``(index, item_seed)`` from :class:`EpochSampler`: reproducible across resumes.
    """

    def __init__(
        self,
        split: VideoSplit,
        num_frames: int,
        transform: Any,
        unit: str = "caption",
        on_corrupt: str = "error",
        backend: str = "auto",
        sampling: str = "rand",
    ) -> None:
        if unit not in ("caption", "video"):
            raise ConfigError(f"dataset.train_unit: expected caption | video, got '{unit}'")
        self.split, self.num_frames, self.transform, self.sampling = split, num_frames, transform, sampling
        self.on_corrupt, self.backend, self.unit = on_corrupt, backend, unit
        self.pairs = [(v, c) for v, cs in enumerate(split.captions) for c in range(len(cs))]

    def __len__(self) -> int:
        return len(self.pairs) if self.unit == "caption" else len(self.split.paths)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any] | None:
        idx, item_seed = key
        rng = np.random.default_rng(item_seed)
        if self.unit == "caption":
            v, c = self.pairs[idx]
        else:
            v = idx
            c = int(rng.integers(len(self.split.captions[v])))
        path = self.split.paths[v]
        try:
            frames = sample_frames(path, self.num_frames, self.sampling, rng=rng, backend=self.backend)  # [n, 3, H, W]
        except (VideoDecodeError, DataNotFoundError) as exc:
            if self.on_corrupt == "skip":
                log.warning("skipping a training item: %s (dataset.on_corrupt=skip)", exc)
                return None
            raise
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return {"frames": self.transform(frames, generator=gen), "caption": self.split.captions[v][c]}


class VideoEvalDataset(Dataset):
    """Evaluation items: ``uniform`` sampling (segment middles), the test transform, every caption."""

    def __init__(self, split: VideoSplit, num_frames: int, transform: Any, backend: str = "auto") -> None:
        self.split, self.num_frames, self.transform, self.backend = split, num_frames, transform, backend

    def __len__(self) -> int:
        return len(self.split.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        frames = sample_frames(self.split.paths[idx], self.num_frames, "uniform", backend=self.backend)
        return {"frames": self.transform(frames), "captions": list(self.split.captions[idx])}


def collate_train_skipping(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack training items, leaving out the ones skipped as corrupt (``None``)."""
    kept = [it for it in items if it is not None]
    if not kept:
        raise VideoDecodeError("every video of a training batch failed to decode (see the warnings above)")
    return {"frames": torch.stack([it["frames"] for it in kept]), "captions": [it["caption"] for it in kept]}


class VideoDataModule(L.LightningDataModule):
    """MSR-VTT, MSVD, LSMDC or DiDeMo from annotation files and videos on disk."""

    def __init__(
        self,
        dcfg: Any,
        image_size: int,
        seed: int = 42,
        select_on_test: bool = False,
        report_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.dcfg = dcfg
        self.name = str(dcfg.name)
        self.image_size = int(image_size)
        self.seed = seed
        self.select_on_test = select_on_test
        self.report_dir = Path(report_dir) if report_dir else None
        root = Path(str(dcfg.root))
        self.ann_dir = Path(str(dcfg.get("ann_dir") or root))
        self.video_dir = Path(str(dcfg.get("video_dir") or root / "videos"))
        self.splits: dict[str, VideoSplit] = {}
        self.backend = str(dcfg["decode_backend"])

    # ------------------------------------------------------------------ annotations
    def _files(self) -> dict[str, str]:
        files = self.dcfg.get("files") or {}
        return {str(k): str(v) for k, v in dict(files).items() if v is not None}

    def _records(self, split: str) -> list[Record]:
        d = self.dcfg
        return load_annotations(
            self.name,
            split,
            self.ann_dir,
            **({"train_split": str(d["train_split"])} if "train_split" in d else {}),  # MSR-VTT only
            files=self._files(),
            on_empty_caption=str(d["on_empty_caption"]),
        )

    def _split_records(self) -> dict[str, list[Record]]:
        """Records of train / val / test; MSR-VTT without a val list holds out ``val_videos`` train videos."""
        out = {"train": self._records("train"), "test": self._records("test")}
        try:
            out["val"] = self._records("val")
        except NoSplitError:
            n_val = int(self.dcfg["val_videos"])
            ids = list(dict.fromkeys(r.video_id for r in out["train"]))
            if n_val <= 0 or n_val >= len(ids):
                if not self.select_on_test:
                    raise ConfigError(
                        f"dataset.val_videos={n_val}: MSR-VTT has no validation split; hold out N training videos "
                        f"with dataset.val_videos=N (0 < N < {len(ids)}), write {self.ann_dir}/MSRVTT_val.csv "
                        "(one column 'video_id'), or pass select_on_test=true"
                    ) from None
                out["val"] = out["test"]
                return out
            # A fixed, seed-independent hold-out: every run of every variant validates on the same videos.
            held = set(np.random.default_rng(0).choice(len(ids), size=n_val, replace=False).tolist())
            held_ids = {ids[i] for i in held}
            out["val"] = [r for r in out["train"] if r.video_id in held_ids]
            out["train"] = [r for r in out["train"] if r.video_id not in held_ids]
            log.info("msrvtt: %d training videos held out for validation (dataset.val_videos)", n_val)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if not self.ann_dir.is_dir():
            raise DataNotFoundError(f"dataset.ann_dir: {self.ann_dir} does not exist (see data/README.md)")
        if not self.video_dir.is_dir():
            raise DataNotFoundError(
                f"dataset.video_dir: {self.video_dir} does not exist; put the videos there or pass "
                "dataset.video_dir=/path/to/videos (see data/README.md)"
            )
        wanted = ("train", "val", "test") if stage in (None, "fit") else ("test",)
        records = self._split_records() if "train" in wanted else {"test": self._records("test")}
        d = self.dcfg
        for split in wanted:
            self.splits[split] = preflight(
                self.name,
                split,
                records[split],
                self.video_dir,
                on_missing=str(d["on_missing"]),
                on_corrupt=str(d["on_corrupt"]),
                probe=bool(d["probe_videos"]),
                backend=self.backend,
                workers=max(2, int(d["num_workers"])),
                report_dir=self.report_dir,
            )

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        d = self.dcfg
        workers = int(d["num_workers"])
        kw: dict[str, Any] = {
            "batch_size": int(d.batch_size),
            "num_workers": workers,
            "collate_fn": collate_train_skipping if train else collate_eval,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }
        if train:
            synthetic_only = [k for k in ("hard_negative_group", "fresh_renders") if d.get(k)]
            if synthetic_only:  # e.g. experiment=demo with dataset=msrvtt: keys the in-memory benchmark uses
                log.warning(
                    "dataset.%s: only the in-memory synthetic benchmark (dataset=synthetic) uses this; ignored "
                    "for dataset=%s (plain shuffled batches of the files)",
                    "/".join(synthetic_only),
                    d.name,
                )
            kw["sampler"] = EpochSampler(len(dataset), self.seed, shuffle=True)
            kw["drop_last"] = True
        return DataLoader(dataset, **kw)

    def train_dataloader(self) -> DataLoader:
        d = self.dcfg
        transform = build_transform(self.image_size, train=True, augment=bool(d["augment"]))
        ds = VideoTrainDataset(
            self.splits["train"],
            int(d.num_frames),
            transform,
            unit=str(d["train_unit"]),
            on_corrupt=str(d["on_corrupt"]),
            backend=self.backend,
            sampling=train_sampling(d),
        )
        return self._loader(ds, True)

    def _eval_loader(self, split: str) -> DataLoader:
        transform = build_transform(self.image_size, train=False)
        return self._loader(
            VideoEvalDataset(self.splits[split], int(self.dcfg.num_frames), transform, self.backend), False
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("test" if self.select_on_test else "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def bank_video_ids(self, m: int) -> list[str]:
        """m distinct training video ids, the categories in turn where the annotations have them (MSR-VTT)."""
        from lsdo.data.bank import pick_bank_videos

        return pick_bank_videos(self.name, self.ann_dir, self.splits["train"].video_ids, m, files=self._files())

    def bank_videos(self, m: int) -> torch.Tensor:
        """The frames of :meth:`bank_video_ids` (test sampling and transform): [m, n, 3, H, W]."""
        split = self.splits["train"]
        transform = build_transform(self.image_size, train=False)
        n = int(self.dcfg.num_frames)
        index = {v: i for i, v in enumerate(split.video_ids)}
        return torch.stack(
            [
                transform(sample_frames(split.paths[index[v]], n, "uniform", backend=self.backend))
                for v in self.bank_video_ids(m)
            ]
        )
