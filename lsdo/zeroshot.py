"""Zero-shot (training-free) retrieval runs: ``python zeroshot.py`` / ``lsdo-zeroshot`` (configs/zeroshot.yaml).

    python zeroshot.py dataset=coco dataset.root=DIR model=clip_b32 model.base_arch=ViT-B-16 \
        inference.region_encoder=inverse_attention inference.region_k=4
    python zeroshot.py ckpt=PATH dataset=synthetic inference.region_encoder=grid inference.grid=2

* the encoder: ``model=...`` (an open_clip model, see configs/model/) or ``ckpt=PATH`` (the fine-tuned CLIP encoder of
  an LSDO training checkpoint; ``model=`` is then ignored). Only the CLIP towers are used: plain cosine, no LSDO heads.
* the data: ``dataset=coco`` (images, :mod:`lsdo.data.coco`; ``dataset.denseset=PATH`` for Dense-Set) or a video
  dataset's test split (``synthetic``: rendered in memory at the encoder's input size; ``msrvtt`` ...: the
  ``dataset.num_frames`` uniformly sampled frames of every test video, decoded at native resolution).
* the method: ``inference.region_encoder=none|inverse_attention|grid`` (:class:`~lsdo.inverse_attention.RegionEncoder`)
  scored by :func:`~lsdo.inverse_attention.zero_shot.evaluate_zero_shot`.

Writes ``metrics.json`` (metrics, method and settings), ``metrics.md``, ``recall_at_k.png``, ``rank_histogram.png``
and the composed ``config.yaml`` into the Hydra run directory (``logs/zeroshot/runs/<time>_<dataset>_<method>``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lsdo.errors import ConfigError
from lsdo.runtime import output_dir_of, resolve_device

log = logging.getLogger(__name__)


def build_clip(cfg: DictConfig) -> tuple[torch.nn.Module, Any, str]:
    """(open_clip model, tokenizer, label): the checkpoint's CLIP encoder (``ckpt``) or ``model``'s open_clip model."""
    if cfg.get("ckpt"):
        from lsdo.checkpoint import load_clip

        clip, tokenizer, saved = load_clip(str(cfg.ckpt))
        log.info("zero-shot: the CLIP encoder of %s (model=%s)", cfg.ckpt, saved.get("model", {}).get("name"))
        return clip, tokenizer, f"ckpt {cfg.ckpt}"
    from lsdo.model.encoder import create_clip

    torch.manual_seed(int(cfg.seed))  # random-init weights are a function of the seed
    clip, tokenizer = create_clip(cfg.model)
    m = cfg.model
    arch = m.get("arch") or m.get("base_arch") or m.get("name")
    return clip, tokenizer, f"{m.get('name')} ({arch}, pretrained={m.get('pretrained')})"


class VideoItems:
    """A video split's test items, decoded lazily: ``items[i]`` -> uint8 [num_frames, 3, H, W] (uniform sampling)."""

    def __init__(self, paths: list[Path], num_frames: int, backend: str = "auto") -> None:
        self.paths, self.num_frames, self.backend = paths, int(num_frames), backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from lsdo.data.video import sample_frames

        return sample_frames(self.paths[i], self.num_frames, "uniform", backend=self.backend)


def load_test_set(cfg: DictConfig, image_size: int, out: Path) -> tuple[Any, list[str], torch.Tensor, int, str]:
    """(items, captions [T], text_to_item [T], loader threads, label) of ``cfg.dataset``'s test set."""
    d = cfg.dataset
    name = str(d.name)
    threads = max(0, int(d["num_workers"]))
    if name == "coco":
        from lsdo.data.coco import load_coco

        split = load_coco(d, report_dir=out)
        captions, t2i = split.pairs()
        label = str(split.info["label"])
        if split.num_missing:
            label += f" ({split.num_missing} missing images skipped)"
        return split.items(), captions, t2i, threads, label
    from lsdo.data.datamodule import SyntheticDataModule
    from lsdo.data.factory import build_datamodule
    from lsdo.data.sampling import segment_indices

    dm = build_datamodule(cfg, image_size, report_dir=out)
    dm.setup("test")
    if isinstance(dm, SyntheticDataModule):
        videos, clips = dm.splits["test"]  # uint8 [V, T, 3, H, W]
        idx = torch.from_numpy(segment_indices(clips.shape[1], int(d.num_frames), "uniform"))
        items: Any = clips[:, idx]
        captions_per_item = [list(v.captions) for v in videos]
        threads = 0
    else:
        split = dm.splits["test"]
        items = VideoItems(split.paths, int(d.num_frames), dm.backend)
        captions_per_item = split.captions
    captions = [c for caps in captions_per_item for c in caps]
    t2i = torch.tensor([i for i, caps in enumerate(captions_per_item) for _ in caps], dtype=torch.long)
    return items, captions, t2i, threads, f"{name} test ({len(captions_per_item)} videos x {d.num_frames} frames)"


def build_region_encoder(cfg: DictConfig, model: torch.nn.Module, tokenizer: Any) -> Any:
    """The RegionEncoder of ``cfg.inference`` (settings checked with one-line errors)."""
    from lsdo.inverse_attention.encoder import METHODS, RegionEncoder
    from lsdo.inverse_attention.heatmap import HEATMAP_METHODS, _describe
    from lsdo.inverse_attention.lard import LARDConfig

    inf = cfg.inference
    method = str(inf.region_encoder)
    if method not in METHODS:
        raise ConfigError(f"inference.region_encoder: expected one of {' | '.join(METHODS)}, got '{method}'")
    if int(inf.region_k) < 1:
        raise ConfigError(f"inference.region_k: expected >= 1, got {inf.region_k}")
    if int(inf.grid) < 1:
        raise ConfigError(f"inference.grid: expected >= 1, got {inf.grid}")
    if str(inf.heatmap) not in HEATMAP_METHODS:
        raise ConfigError(f"inference.heatmap: expected one of {' | '.join(HEATMAP_METHODS)}, got '{inf.heatmap}'")
    for key in ("batch_size", "text_batch_size", "chunk_size"):
        if int(inf[key]) < 1:
            raise ConfigError(f"inference.{key}: expected >= 1, got {inf[key]}")
    try:
        lard = LARDConfig(**OmegaConf.to_container(inf.lard, resolve=True))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inference.lard: {exc}") from None
    if method == "inverse_attention":
        try:
            _describe(model.visual)
        except TypeError as exc:
            raise ConfigError(f"model: {exc}") from None
    return RegionEncoder(
        model,
        method,
        k=int(inf.region_k),
        grid=int(inf.grid),
        heatmap=str(inf.heatmap),  # type: ignore[arg-type]
        lard=lard,
        seed=int(inf.larc_seed),
        tokenizer=tokenizer,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg`` (configs/zeroshot.yaml) and write the reports; returns the metrics."""
    from lsdo.inverse_attention.zero_shot import evaluate_zero_shot
    from lsdo.reporting import format_metrics_table
    from lsdo.schema import SECTIONS, ZeroShotInference, check

    check(cfg, {**SECTIONS, "inference": ZeroShotInference})  # misspelt keys named before any work
    out = output_dir_of(cfg)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(str(cfg.inference.device), "inference.device")
    model, tokenizer, model_label = build_clip(cfg)
    model = model.to(device).eval()
    encoder = build_region_encoder(cfg, model, tokenizer)
    items, captions, t2i, threads, data_label = load_test_set(cfg, encoder.image_size, out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    inf = cfg.inference
    log.info("zero-shot %s on %s: %d items, %d texts", encoder.method, data_label, len(items), len(captions))
    metrics = evaluate_zero_shot(
        encoder,
        items,
        captions,
        t2i,
        batch_size=int(inf.batch_size),
        text_batch_size=int(inf.text_batch_size),
        chunk_size=int(inf.chunk_size),
        threads=threads,
        return_scores=True,
    )
    ranks = {"t2v": metrics.pop("t2v_ranks"), "v2t": metrics.pop("v2t_ranks")}
    metrics.pop("sims")
    method = encoder.method
    method_label = {
        "none": "global embedding only",
        "inverse_attention": f"inverse attention, k={encoder.k}, heatmap={encoder.heatmap_method}",
        "grid": f"grid crops {encoder.grid}x{encoder.grid}",
    }[method]
    kind = "images" if str(cfg.dataset.name) == "coco" else "videos"
    table = format_metrics_table(
        {k: v for k, v in metrics.items() if "/" in k}, title=f"zero-shot {data_label}; {method_label}; {model_label}"
    )
    table += (
        f"\n\n{metrics['num_texts']} texts, {metrics['num_items']} {kind}, {metrics['num_frames']} frames, "
        f"{metrics['mean_regions_per_frame']:.2f} regions per frame; t2v = text-to-{kind[:-1]}, "
        f"v2t = {kind[:-1]}-to-text; {metrics['frames_per_s']:.1f} frames/s on {device.type}"
    )
    print(table)
    (out / "metrics.md").write_text(table + "\n")
    settings = {
        "region_encoder": method,
        "region_k": encoder.k,
        "grid": encoder.grid,
        "heatmap": encoder.heatmap_method,
        "lard": OmegaConf.to_container(inf.lard, resolve=True),
        "larc_seed": encoder.seed,
        "image_size": encoder.image_size,
    }
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "ckpt": str(cfg.ckpt) if cfg.get("ckpt") else None,
                "model": model_label,
                "dataset": str(cfg.dataset.name),
                "data": data_label,
                "device": device.type,
                "inference": settings,
                "test": metrics,
            },
            indent=2,
        )
    )
    try:
        from lsdo.plots import plot_retrieval

        plot_retrieval(ranks, out, title=f"zero-shot recall at K ({method_label})")
    except ImportError:  # matplotlib missing: the metrics are written already
        log.warning("matplotlib is not installed: no recall plots")
    log.info("wrote %s", out)
    return metrics


__all__ = ["build_clip", "build_region_encoder", "load_test_set", "run"]
