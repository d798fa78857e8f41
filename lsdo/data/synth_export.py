"""``lsdo-synth out=DIR`` (or ``--out DIR``): the synthetic benchmark as real mp4 files in the MSR-VTT layout.

Writes, under DIR::

    videos/<video_id>.mp4          H.264, one file per video of every split
    MSRVTT_data.json               {"videos": [{video_id, category, split, ...}],
                                    "sentences": [{caption, video_id, sen_id}]}
    MSRVTT_train.9k.csv            the training videos (one column video_id); MSRVTT_train.7k.csv is the same list
    MSRVTT_val.csv                 the validation videos (same format; picked up by the MSR-VTT loader)
    MSRVTT_JSFUSION_test.csv       key,vid_key,video_id,sentence: one caption per test video

so that ``python train.py dataset=msrvtt dataset.root=DIR`` runs the real loaders end to end
(decord decoding, transforms, pre-flight checks) on the same videos and captions as the
in-memory ``dataset=synthetic`` path. The benchmark parameters default to
``configs/dataset/synthetic.yaml``; existing mp4 files are kept (resumable).
"""

from __future__ import annotations

import csv
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsdo.data import synthetic
from lsdo.errors import LSDOUserError
from lsdo.options import option
from lsdo.processes import worker_context

# Rendering holds about 55 bytes per pixel of a video (float64 noise and frames, masks): clip_len x size^2 is
# capped so that one worker stays near 1 GB.
MAX_PIXELS_PER_VIDEO = 2**24
# val + test combinations the split can hold: per large kind, the small kinds not reserved for training coverage.
MAX_HELD_OUT_COMBOS = len(synthetic.BIG_KINDS) * (
    len(synthetic.SMALL_KINDS) - math.ceil(len(synthetic.SMALL_KINDS) / len(synthetic.BIG_KINDS))
)


def _defaults() -> dict[str, Any]:
    from omegaconf import OmegaConf

    from lsdo.config import CONFIG_DIR

    return dict(OmegaConf.load(Path(CONFIG_DIR) / "dataset" / "synthetic.yaml"))


# lsdo-synth's numeric options: (lowest, highest, meaning); option ``--a-b`` is key ``a_b``.
RANGES: dict[str, tuple[float, float, str]] = {
    "size": (16, 1024, "frame side in pixels"),
    "fps": (1, 120, "frames per second"),
    "crf": (0, 51, "H.264 quality, lower is better"),
    "workers": (1, 64, "encoding processes"),
    "seed": (0, 2**32 - 1, "the benchmark's random seed"),
    "clip_len": (1, 1024, "frames per video"),
    "train_videos_per_combo": (1, 1000, "training videos per combination"),
    "val_combos": (1, MAX_HELD_OUT_COMBOS - 1, "validation combinations, one video each"),
    "test_combos": (1, MAX_HELD_OUT_COMBOS - 1, "test combinations, one video each"),
    "distractors": (0, 100, "grey specks per video"),
    "small_visible_frac": (0.01, 1.0, "fraction of frames showing the small object"),
    "small_radius": (0.01, 0.25, "the small object's radius / frame side"),
}


@dataclass
class SynthOptions:
    """What ``lsdo-synth`` takes. The benchmark's own parameters (seed ... small_radius) default to
    configs/dataset/synthetic.yaml (null here); the export's (size, fps, crf, workers) are written here once."""

    out: str = option("output folder (created)")
    size: int = option("frame side in pixels (the tiny model's input)", 64)
    fps: float = option("frames per second", 8.0)
    crf: int = option("H.264 quality, lower is better", 10)
    workers: int = option("encoding processes", 2)
    seed: int | None = option("the benchmark's random seed", None)
    clip_len: int | None = option("frames per video", None)
    train_videos_per_combo: int | None = option("training videos per combination", None)
    val_combos: int | None = option("validation combinations, one video each", None)
    test_combos: int | None = option("test combinations, one video each", None)
    distractors: int | None = option("grey specks per video", None)
    small_visible_frac: float | None = option("fraction of frames showing the small object", None)
    small_radius: float | None = option("the small object's radius / frame side", None)
    spatial_captions: bool | None = option(
        "the large object keeps to the left or right half and captions say which; val / test combinations "
        "on both sides (the flip benchmark)",
        None,
    )


EXPORT_DEFAULTS = {k: getattr(SynthOptions, k) for k in ("size", "fps", "crf", "workers")}  # not in the yaml


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_params(out: str | Path, p: dict[str, Any], d: dict[str, Any], workers: int) -> Path:
    """Raise LSDOUserError naming the command-line option for a value lsdo-synth cannot use; returns ``out``.

    ``p``: the rendering parameters (see :func:`export`); ``d``: the benchmark parameters (defaults merged).
    """
    values = {**{k: d[k] for k in ("seed", "train_videos_per_combo", "val_combos", "test_combos")}, **p}
    values["workers"] = workers
    examples = {**_defaults(), **EXPORT_DEFAULTS}
    for key, (lo, hi, what) in RANGES.items():
        value = values[key]
        if not lo <= value <= hi:  # written this way round to reject NaN too
            raise LSDOUserError(
                f"{_option(key)} must be between {_num(lo)} and {_num(hi)} ({what}), got {_num(value)}: "
                f"pass e.g. {_option(key)} {_num(examples[key])}"
            )
    held = MAX_HELD_OUT_COMBOS
    val, test = int(d["val_combos"]), int(d["test_combos"])
    if val + test > held:
        raise LSDOUserError(
            f"--val-combos + --test-combos must be at most {held} (the combinations not needed for training), "
            f"got {val} + {test} = {val + test}: lower --test-combos or --val-combos"
        )
    pixels = p["clip_len"] * p["size"] ** 2
    if pixels > MAX_PIXELS_PER_VIDEO:
        raise LSDOUserError(
            f"--clip-len {p['clip_len']} x --size {p['size']} squared = {pixels} pixels per video, more than "
            f"{MAX_PIXELS_PER_VIDEO} (about 1 GB per worker while rendering): lower --clip-len or --size"
        )
    if not str(out).strip():
        raise LSDOUserError("--out is empty: pass the output folder, e.g. --out data/synth")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise LSDOUserError(
            f"--out {out} is an existing file, not a folder: pass a folder (created if missing), "
            f"e.g. --out {out.with_name(out.stem + '_synth')}"
        )
    return out


def _write_one(job: tuple[synthetic.SyntheticVideo, Path, dict[str, Any]]) -> str:
    from lsdo.data.video import write_video

    video, path, p = job
    if path.is_file() and path.stat().st_size > 0:
        return "kept"
    frames = synthetic.render(
        video, p["clip_len"], p["size"], p["small_visible_frac"], p["distractors"], p["small_radius"]
    )  # [T, 3, H, W] uint8
    tmp = path.with_name(path.stem + ".part.mp4")
    write_video(tmp, frames.transpose(0, 2, 3, 1), fps=p["fps"], crf=p["crf"])  # [T, H, W, 3]
    os.replace(tmp, path)
    return "written"


def export(
    out: str | Path,
    size: int = SynthOptions.size,
    fps: float = SynthOptions.fps,
    crf: int = SynthOptions.crf,
    workers: int = SynthOptions.workers,
    **params: Any,
) -> dict[str, int]:
    """Write the benchmark under ``out``; returns counts per split and of files written."""
    d = {**_defaults(), **{k: v for k, v in params.items() if v is not None}}
    p = {
        "clip_len": int(d["clip_len"]),
        "size": int(size),
        "small_visible_frac": float(d["small_visible_frac"]),
        "distractors": int(d["distractors"]),
        "small_radius": float(d["small_radius"]),
        "fps": float(fps),
        "crf": int(crf),
    }
    out = check_params(out, p, d, int(workers))
    try:
        (out / "videos").mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, no permission, read-only disk, ...
        raise LSDOUserError(
            f"--out {out}: cannot create {out / 'videos'} ({exc.strerror or exc}): pass another folder"
        ) from None
    splits = {
        s: synthetic.make_split(
            s,
            int(d["seed"]),
            int(d["val_combos"]),
            int(d["test_combos"]),
            int(d["train_videos_per_combo"]),
            bool(d["spatial_captions"]),
        )
        for s in ("train", "val", "test")
    }
    jobs = [(v, out / "videos" / f"{v.video_id}.mp4", p) for vs in splits.values() for v in vs]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:  # lsdo.processes
            status = list(pool.map(_write_one, jobs, chunksize=8))
    else:
        status = [_write_one(j) for j in jobs]

    split_name = {"train": "train", "val": "validate", "test": "test"}
    videos, sentences = [], []
    for s, vs in splits.items():
        for v in vs:
            videos.append(
                {
                    "video_id": v.video_id,
                    "category": v.category,
                    "split": split_name[s],
                    "start time": 0.0,
                    "end time": p["clip_len"] / p["fps"],
                    "url": "",
                    "id": len(videos),
                }
            )
            sentences.extend(
                {"caption": c, "video_id": v.video_id, "sen_id": len(sentences) + i} for i, c in enumerate(v.captions)
            )
    (out / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    for name, s in (("MSRVTT_train.9k.csv", "train"), ("MSRVTT_train.7k.csv", "train"), ("MSRVTT_val.csv", "val")):
        with open(out / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id"])
            w.writerows([v.video_id] for v in splits[s])
    with open(out / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, v in enumerate(splits["test"]):
            w.writerow([f"ret{i}", f"msr{i}", v.video_id, v.captions[0]])
    counts = {s: len(vs) for s, vs in splits.items()}
    counts["written"] = status.count("written")
    counts["kept"] = status.count("kept")
    return counts
