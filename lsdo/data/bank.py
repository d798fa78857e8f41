"""The ``shared`` variant's bank (paper IV-B): one training video per MSR-VTT category.

``lsdo-build-bank`` encodes those videos with the model's image encoder, averages each
video's frame features (raw CLIP embeddings, not normalised, as the authors' file) and writes
the bank JSON ``{"videos": [m ids], "features": [m x d]}`` read by ``variant.init=file``::

    lsdo-build-bank dataset=msrvtt dataset.root=/data/msrvtt out=bank.json            # pretrained CLIP
    lsdo-build-bank ckpt=path/to/model.ckpt dataset.root=/data/msrvtt out=bank.json   # a trained encoder
    lsdo-build-bank experiment=demo out=bank.json                                     # synthetic benchmark
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lsdo.errors import ConfigError, LSDOUserError

log = logging.getLogger(__name__)


def msrvtt_categories(ann_dir: str | Path, files: Mapping[str, str] | None = None) -> dict[str, int]:
    """``{video_id: category}`` from the ``videos`` list of ``MSRVTT_data.json`` (empty if it has none)."""
    name = (files or {}).get("data_json", "MSRVTT_data.json")
    path = Path(name) if Path(name).is_absolute() else Path(ann_dir) / name
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LSDOUserError(f"{path}: not valid JSON ({exc})") from None
    out = {}
    for i, v in enumerate(data.get("videos", []) if isinstance(data, dict) else []):
        if not isinstance(v, dict) or "video_id" not in v or "category" not in v:
            raise LSDOUserError(f"{path}: videos[{i}] lacks 'video_id' or 'category'")
        out[str(v["video_id"])] = int(v["category"])
    return out


def pick_bank_videos(
    name: str, ann_dir: str | Path, candidates: list[str], m: int, files: Mapping[str, str] | None = None
) -> list[str]:
    """m ids among ``candidates``: the first video of each category in turn (paper IV-B), cycling.

    Without categories (datasets other than MSR-VTT) m videos of a fixed random permutation.
    """
    if m < 1 or not candidates:
        raise ConfigError(f"variant.m: need m >= 1 and training videos, got m={m}, {len(candidates)} videos")
    cats = msrvtt_categories(ann_dir, files) if name == "msrvtt" else {}
    by_cat: dict[int, list[str]] = {}
    for v in candidates:
        if v in cats:
            by_cat.setdefault(cats[v], []).append(v)
    if not by_cat:
        log.info("%s: no video categories; the bank uses %d videos of a fixed random permutation", name, m)
        order = np.random.default_rng(0).permutation(len(candidates))
        return [candidates[int(order[j % len(order)])] for j in range(m)]
    keys = sorted(by_cat)
    if m > len(keys):
        log.info("variant.m=%d > %d categories: categories are used more than once", m, len(keys))
    return [by_cat[keys[j % len(keys)]][(j // len(keys)) % len(by_cat[keys[j % len(keys)]])] for j in range(m)]


def build_bank_main(argv: list[str] | None = None) -> int:
    """``lsdo-build-bank [ckpt=PATH] [m=20] out=BANK.json <config overrides>``."""
    from omegaconf import OmegaConf

    from lsdo.cli import run_plain
    from lsdo.config import compose
    from lsdo.data import build_datamodule
    from lsdo.model import build_model
    from lsdo.model.encoder import image_size_of
    from lsdo.model.video_lsdo import write_bank_file

    def main() -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        opts = {k: a.split("=", 1)[1] for a in args for k in ("out", "ckpt", "m") if a.startswith(k + "=")}
        overrides = [a for a in args if a.split("=", 1)[0] not in ("out", "ckpt", "m")]
        if "out" not in opts:
            raise ConfigError("lsdo-build-bank: give out=PATH for the bank JSON")
        if "ckpt" in opts:
            from lsdo.checkpoint import load_model as load_checkpoint_model

            model, saved = load_checkpoint_model(opts["ckpt"])
            cfg = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(overrides))
        else:
            cfg = compose(overrides)
            model = build_model(cfg)
        m = int(opts.get("m", cfg.variant.get("m", 20)))
        dm = build_datamodule(cfg, image_size_of(cfg.model))
        dm.setup("fit")
        ids = dm.bank_video_ids(m)
        frames = dm.bank_videos(m)  # [m, n, 3, H, W]
        model.eval()
        with torch.no_grad():
            feats = model.encode_frames(frames).mean(dim=1)  # [m, n, d] -> [m, d]
        write_bank_file(opts["out"], ids, feats)
        print(f"wrote {opts['out']}: {len(ids)} videos x {feats.shape[1]} ({cfg.dataset.name})")
        return 0

    return run_plain(main)


if __name__ == "__main__":
    sys.exit(build_bank_main())
