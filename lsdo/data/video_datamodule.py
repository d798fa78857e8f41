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

With ``dataset.frame_cache=DIR`` (a folder made by ``lsdo-prepare frames``, :mod:`lsdo.data.frame_cache`)
clips are read from the cache instead of decoded from the videos: ``DIR/<video file's stem>.frames``
for every video, with the same sampling draws, augmentation and transforms, and the same rules for
missing (``on_missing``) and damaged (``on_corrupt``) entries; ``dataset.video_dir`` is then not read.
``dataset.frame_cache_decode=gpu`` (JPEG caches) leaves the JPEG files undecoded in the workers and
decodes each batch on the training device (``torchvision.io.decode_jpeg``, nvjpeg on a GPU) in
:meth:`VideoDataModule.on_before_batch_transfer`, where the transform is applied too, with the random
draws the worker made.

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
from lsdo.data.batching import EpochSampler, ShardSampler, collate_eval
from lsdo.data.frame_cache import (
    decode_jpegs,
    entry_path,
    is_entry,
    probe_entry,
    read_settings,
    sample_entry,
    sample_entry_encoded,
)
from lsdo.data.reports import write_report
from lsdo.data.sampling import train_sampling
from lsdo.data.transforms import VideoTransform, apply_params, build_transform
from lsdo.data.video import VIDEO_EXTENSIONS, VideoDecodeError, probe_video, sample_frames
from lsdo.errors import ConfigError, DataNotFoundError
from lsdo.processes import loader_context

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


def resolve_entry(frame_cache: Path, video_file: str) -> Path | None:
    """The frame-cache entry of ``video_file`` (``lsdo.data.frame_cache.entry_path``), or None when absent."""
    p = entry_path(frame_cache, video_file)
    return p if p.is_file() else None


def load_clip(
    path: Path, num_frames: int, mode: str, rng: np.random.Generator | None = None, backend: str = "auto"
) -> torch.Tensor:
    """uint8 [num_frames, 3, H, W] of a frame-cache entry (``.frames``) or a video file, the same draw from ``rng``."""
    if is_entry(path):
        return sample_entry(path, num_frames, mode, rng)
    return sample_frames(path, num_frames, mode, rng=rng, backend=backend)


def _probe(path: Path, backend: str) -> str | None:
    """None if the video (or frame-cache entry) decodes, else the reason."""
    try:
        if is_entry(path):
            probe_entry(path)
        else:
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
    frame_cache: Path | None = None,
) -> VideoSplit:
    """Group ``records`` by video, resolve every file, drop or report missing/corrupt ones.

    ``frame_cache``: resolve and probe the videos' frame-cache entries there instead of the video files.
    """
    for key, value in (("on_missing", on_missing), ("on_corrupt", on_corrupt)):
        if value not in ("error", "skip"):
            raise ConfigError(f"dataset.{key}: expected error | skip, got '{value}'")
    ids, caps, files = group_by_video(records)
    if frame_cache is not None:
        paths = [resolve_entry(frame_cache, f) for f in files]
        wanted = [entry_path(frame_cache, f) for f in files]
        what, where_from = "videos have no frame-cache entry", frame_cache
    else:
        paths = [resolve_video_path(video_dir, f) for f in files]
        wanted = [video_dir / f for f in files]
        what, where_from = "videos are missing", video_dir
    missing = [i for i, p in enumerate(paths) if p is None]
    if missing:
        listed = [f"{ids[i]}\t{wanted[i]}" for i in missing]
        where = write_report(report_dir, f"missing_videos_{split}.txt", listed)
        head = ", ".join(ids[i] for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        msg = f"{name} {split}: {len(missing)} of {len(ids)} {what} under {where_from} ({head}){where}"
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
            kind = "frame-cache entries" if frame_cache is not None else "video files"
            msg = f"{name} {split}: {len(bad)} of {len(keep)} {kind} cannot be decoded ({head}){where}"
            if on_corrupt == "error":
                raise VideoDecodeError(msg + "; pass dataset.on_corrupt=skip to drop them")
            log.warning("%s; dropped (dataset.on_corrupt=skip)", msg)
            bad_set = {i for i, _ in bad}
            keep = [i for i in keep if i not in bad_set]
    if not keep:
        raise DataNotFoundError(f"{name} {split}: no usable videos under {where_from}")
    log.info("%s %s: %d videos, %d captions", name, split, len(keep), sum(len(caps[i]) for i in keep))
    return VideoSplit([ids[i] for i in keep], [caps[i] for i in keep], [paths[i] for i in keep])  # type: ignore[misc]


class VideoTrainDataset(Dataset):
    """Training items: segment sampling (``sampling``: ``rand`` by default), the clip's augmentation, one caption.

    ``unit="caption"`` iterates over every (video, caption) pair as the published codes do;
    ``unit="video"`` over videos, each with a random caption (the synthetic module's scheme).
    Keys are ``(index, item_seed)`` from :class:`EpochSampler`: reproducible across resumes.
    ``deferred`` (JPEG frame-cache entries, ``dataset.frame_cache_decode=gpu``): items hold the JPEG
    files and the transform's draws instead of frames (:func:`collate_deferred`).
    """

    def __init__(
        self,
        split: VideoSplit,
        num_frames: int,
        transform: VideoTransform,
        unit: str = "caption",
        on_corrupt: str = "error",
        backend: str = "auto",
        sampling: str = "rand",
        deferred: bool = False,
    ) -> None:
        if unit not in ("caption", "video"):
            raise ConfigError(f"dataset.train_unit: expected caption | video, got '{unit}'")
        self.split, self.num_frames, self.transform, self.sampling = split, num_frames, transform, sampling
        self.on_corrupt, self.backend, self.unit, self.deferred = on_corrupt, backend, unit, deferred
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
            if self.deferred:
                jpeg, height, width = sample_entry_encoded(path, self.num_frames, self.sampling, rng)
            else:
                frames = load_clip(path, self.num_frames, self.sampling, rng=rng, backend=self.backend)  # [n, 3, H, W]
        except (VideoDecodeError, DataNotFoundError) as exc:
            if self.on_corrupt == "skip":
                log.warning("skipping a training item: %s (dataset.on_corrupt=skip)", exc)
                return None
            raise
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        caption = self.split.captions[v][c]
        # The transform's draws and the flip decision, with the caption that goes with the frames
        # (dataset.flip=caption_aware swaps its spatial words or keeps the clip unflipped): one place.
        if self.deferred:
            params, caption = self.transform.draw(height, width, gen, caption)
            return {"jpeg": jpeg, "params": params, "entry": str(path), "caption": caption}
        frames, caption = self.transform.with_caption(frames, caption, generator=gen)
        return {"frames": frames, "caption": caption}


class VideoEvalDataset(Dataset):
    """Evaluation items: ``uniform`` sampling (segment middles), the test transform, every caption.

    ``deferred``: the JPEG files instead of the frames, as :class:`VideoTrainDataset`.
    """

    def __init__(
        self, split: VideoSplit, num_frames: int, transform: Any, backend: str = "auto", deferred: bool = False
    ) -> None:
        self.split, self.num_frames, self.transform, self.backend = split, num_frames, transform, backend
        self.deferred = deferred

    def __len__(self) -> int:
        return len(self.split.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        path = self.split.paths[idx]
        if self.deferred:
            jpeg, _, _ = sample_entry_encoded(path, self.num_frames, "uniform")
            captions = list(self.split.captions[idx])
            return {"jpeg": jpeg, "params": None, "entry": str(path), "captions": captions, "index": idx}
        frames = load_clip(path, self.num_frames, "uniform", backend=self.backend)
        return {"frames": self.transform(frames), "captions": list(self.split.captions[idx]), "index": idx}


def collate_train_skipping(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack training items, leaving out the ones skipped as corrupt (``None``)."""
    kept = [it for it in items if it is not None]
    if not kept:
        raise VideoDecodeError("every video of a training batch failed to decode (see the warnings above)")
    if "jpeg" in kept[0]:
        return collate_deferred(kept)
    return {"frames": torch.stack([it["frames"] for it in kept]), "captions": [it["caption"] for it in kept]}


def collate_deferred(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Items of JPEG files (``deferred``): the files, draws and entries as lists; the captions as
    :func:`collate_train_skipping` / ``collate_eval`` lay them out (their ``frames`` are made by
    :func:`decode_deferred`)."""
    batch: dict[str, Any] = {
        "jpeg": [it["jpeg"] for it in items],
        "params": [it["params"] for it in items],
        "entries": [it["entry"] for it in items],
    }
    if "caption" in items[0]:
        batch["captions"] = [it["caption"] for it in items]
        return batch
    t2v = [v for v, it in enumerate(items) for _ in it["captions"]]
    batch["captions"] = [c for it in items for c in it["captions"]]
    batch["text_to_video"] = torch.tensor(t2v, dtype=torch.long)
    if all("index" in it for it in items):
        batch["video_index"] = torch.tensor([int(it["index"]) for it in items], dtype=torch.long)
    return batch


def decode_deferred(
    batch: dict[str, Any], size: int, device: str | torch.device, on_corrupt: str = "error"
) -> dict[str, Any]:
    """A :func:`collate_deferred` batch with its ``frames`` made: the JPEG files decoded on ``device`` (one
    batched ``torchvision.io.decode_jpeg`` call; nvjpeg on a GPU), the transform applied there with the
    worker's draws. A clip that fails to decode is dropped with a warning in a training batch under
    ``on_corrupt=skip`` and raises otherwise (evaluation: always)."""
    clips, params, entries = batch.pop("jpeg"), batch.pop("params"), batch.pop("entries")
    train = "text_to_video" not in batch
    names = [f"{e}: frame {k} of the clip" for e, clip in zip(entries, clips, strict=True) for k in range(len(clip))]
    try:
        flat = decode_jpegs([f for clip in clips for f in clip], names, device)
        decoded, k = [], 0
        for clip in clips:
            decoded.append(torch.stack(flat[k : k + len(clip)]))
            k += len(clip)
    except VideoDecodeError:
        decoded = []
        for e, clip in zip(entries, clips, strict=True):  # one clip at a time: which one fails
            try:
                decoded.append(torch.stack(decode_jpegs(clip, [f"{e}: frame {k}" for k in range(len(clip))], device)))
            except VideoDecodeError as exc:
                if not (train and on_corrupt == "skip"):
                    raise
                log.warning("skipping a training item: %s (dataset.on_corrupt=skip)", exc)
                decoded.append(None)
    keep = [i for i, x in enumerate(decoded) if x is not None]
    if not keep:
        raise VideoDecodeError("every video of a training batch failed to decode (see the warnings above)")
    batch["frames"] = torch.stack([apply_params(decoded[i], size, params[i]) for i in keep])
    if len(keep) < len(decoded):
        batch["captions"] = [batch["captions"][i] for i in keep]
    return batch


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
        self.frame_cache = Path(str(dcfg["frame_cache"])) if dcfg["frame_cache"] else None
        self.cache_decode = str(dcfg["frame_cache_decode"])
        if self.cache_decode not in ("cpu", "gpu"):
            raise ConfigError(f"dataset.frame_cache_decode: expected cpu | gpu, got '{self.cache_decode}'")
        self.deferred = False  # JPEG files decoded on the training device (set up in setup())
        # dataset.augment / flip / crop_*: checked here, before any work (one-line ConfigErrors naming the key)
        self.train_transform = build_transform(
            self.image_size,
            train=True,
            augment=bool(dcfg["augment"]),
            flip=str(dcfg["flip"]),
            crop_scale=dcfg["crop_scale"],
            crop_ratio=dcfg["crop_ratio"],
            crop_max_cut=dcfg["crop_max_cut"],
        )

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
        if self.frame_cache is not None:
            settings = read_settings(self.frame_cache)  # a one-line error unless it is a cache
            log.info("%s: clips from the frame cache %s (%s)", self.name, self.frame_cache, settings)
            self.deferred = self.cache_decode == "gpu"
            if self.deferred and settings["format"] != "jpeg":
                raise ConfigError(
                    f"dataset.frame_cache_decode=gpu: {self.frame_cache} is a {settings['format']} cache (nothing to "
                    "decode); use dataset.frame_cache_decode=cpu, or a cache made with format=jpeg"
                )
        elif not self.video_dir.is_dir():
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
                frame_cache=self.frame_cache,
            )

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        d = self.dcfg
        workers = int(d["num_workers"])
        kw: dict[str, Any] = {
            "batch_size": int(d.batch_size),
            "num_workers": workers,
            "collate_fn": collate_train_skipping if train else collate_deferred if self.deferred else collate_eval,
            "persistent_workers": workers > 0,
            # preflight decoded videos in this process: a forked worker would inherit FFmpeg pools it hangs on
            "multiprocessing_context": loader_context(workers),
            "pin_memory": torch.cuda.is_available() and not self.deferred,  # deferred: frames made on the GPU
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
            kw["sampler"] = EpochSampler(len(dataset), self.seed, shuffle=True, batch_size=int(d.batch_size))
            kw["drop_last"] = True
        else:  # evaluation: each rank a contiguous block, no padding (one block without DDP)
            kw["sampler"] = ShardSampler(len(dataset))
        return DataLoader(dataset, **kw)

    def train_dataloader(self) -> DataLoader:
        d = self.dcfg
        ds = VideoTrainDataset(
            self.splits["train"],
            int(d.num_frames),
            self.train_transform,
            unit=str(d["train_unit"]),
            on_corrupt=str(d["on_corrupt"]),
            backend=self.backend,
            sampling=train_sampling(d),
            deferred=self.deferred,
        )
        return self._loader(ds, True)

    def _eval_loader(self, split: str) -> DataLoader:
        transform = build_transform(self.image_size, train=False)
        return self._loader(
            VideoEvalDataset(
                self.splits[split], int(self.dcfg.num_frames), transform, self.backend, deferred=self.deferred
            ),
            False,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("test" if self.select_on_test else "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``dataset.frame_cache_decode=gpu``: decode the batch's JPEG files on the training device (and apply the
        transform there) before Lightning moves the batch; every other batch passes unchanged."""
        if not (isinstance(batch, dict) and "jpeg" in batch):
            return batch
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if device.type != "cuda" and not getattr(self, "_warned_cpu_decode", False):
            log.warning(
                "dataset.frame_cache_decode=gpu on %s: the JPEG frames are decoded in the main process; "
                "dataset.frame_cache_decode=cpu decodes them in the DataLoader workers",
                device,
            )
            self._warned_cpu_decode = True
        return decode_deferred(batch, self.image_size, device, on_corrupt=str(self.dcfg["on_corrupt"]))

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
                transform(load_clip(split.paths[index[v]], n, "uniform", backend=self.backend))
                for v in self.bank_video_ids(m)
            ]
        )
