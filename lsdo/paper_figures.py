"""Figures 5, 7 and 8 of the LSDO paper (IEEE TIP 2025) as PNGs: ``lsdo-viz fig5 | fig7 | fig8``.

* :func:`fig5` (Fig. 5, "the evolution of learnable parameters during training"): theta (a) and lambda (b)
  over the training iterations of several runs, overlaid, read from their Lightning CSV logs;
* :func:`fig7` (Fig. 7, "the attention maps of the last transformer layer in image encoder ... from low to
  high with the color blue to red"): one frame, then the image encoder's attention map over it for each
  checkpoint, side by side (:func:`lsdo.inverse_attention.heatmap.attention_heatmap`: the class token's
  attention in the last block of a ViT, the attnpool query's attention of a CLIP ResNet);
* :func:`fig8` (Fig. 8, "for each displayed frame above, the bar plot shows its attention weight"): the
  frames a checkpoint samples from one video at test time and the frame-level LSDO attention weight of each
  (``encode_video(..., return_details=True)[1]["frame_weights"]``, summing to 1 over the frames).

The data behind each figure comes from :func:`fig5_curves`, :func:`fig7_heatmaps` and :func:`fig8_weights`,
so what is plotted can be checked without reading pixels. Console script: :mod:`lsdo.cli.viz`; the keys of
each command are :class:`Fig5Options`, :class:`Fig7Options` and :class:`Fig8Options`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.heatmap import HEATMAP_METHODS
from lsdo.options import option
from lsdo.plots import pyplot, save, series

# Fig. 5's panels: (CSV column, panel title, y label).
FIG5_PANELS: tuple[tuple[str, str, str], ...] = (
    ("train/theta", "(a) threshold θ", "θ"),
    ("train/lambda", "(b) λ = exp(logit scale)", "λ"),
)
METRICS_FILE = "metrics.csv"
RUN_CONFIG = "config.yaml"


# ---------------------------------------------------------------------------------------------
# options (the keys of ``lsdo-viz fig5 | fig7 | fig8``)
# ---------------------------------------------------------------------------------------------


@dataclass
class Fig5Options:
    """What ``lsdo-viz fig5`` takes (its keys and their defaults: written here once)."""

    runs: list[str] = option(
        "training run folders: each holds config.yaml and the CSV logger's "
        "csv/version_*/metrics.csv (a folder of several runs: each is drawn)"
    )
    out: str = option("output PNG", "fig5.png")
    labels: list[str] = option(
        "one legend label per run found (default: the run's ablation.label or variant.name, plus its seed)",
        [],
    )


@dataclass
class Fig7Options:
    """What ``lsdo-viz fig7`` takes (its keys and their defaults: written here once)."""

    ckpt: list[str] = option("LSDO training checkpoints: one attention-map column each")
    image: str | None = option("the frame: an image file (any format PIL reads); or give video= and frame=", None)
    video: str | None = option("the frame from a video file instead of image= (see frame=)", None)
    frame: int | None = option(
        "with video=: which of the frames the first checkpoint samples at test time (0 .. dataset.num_frames-1, "
        "uniform sampling; null: the middle one)",
        None,
        minimum=0,
    )
    out: str = option("output PNG", "fig7.png")
    labels: list[str] = option(
        "one column title per checkpoint (default: ablation.label or variant.name, plus seed)", []
    )
    heatmap: str = option(
        "attention: the last layer's attention (the paper's); rollout: attention rollout", "attention",
        choices=HEATMAP_METHODS,
    )  # fmt: skip


@dataclass
class Fig8Options:
    """What ``lsdo-viz fig8`` takes (its keys and their defaults: written here once)."""

    ckpt: str = option("an LSDO training checkpoint with a frame-level LSDO block (variant single, average, shared)")
    video: str = option("a video file (any format the data pipeline decodes: .mp4, .avi, ...)")
    out: str = option("output PNG", "fig8.png")
    num_frames: int | None = option("frames to sample (null: the checkpoint's dataset.num_frames)", None, minimum=1)


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


def run_label(cfg: Mapping[str, Any] | Any) -> str:
    """A run's legend label from its config: ``ablation.label`` (an ablation row) else ``variant.name``, plus seed."""
    from omegaconf import OmegaConf

    conf = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(dict(cfg))
    ablation = OmegaConf.select(conf, "ablation", default=None)
    if ablation is not None:
        name = OmegaConf.select(conf, "ablation.label", default=None) or OmegaConf.select(conf, "ablation.name")
    else:
        name = OmegaConf.select(conf, "variant.name", default=None) or "run"
    seed = OmegaConf.select(conf, "seed", default=None)
    return f"{name} seed {seed}" if seed is not None else str(name)


def _labels(given: Sequence[str], defaults: list[str], what: str) -> list[str]:
    """The user's labels (one per item) or the defaults made unique (``#2``, ``#3`` ... on repeats)."""
    if given:
        if len(given) != len(defaults):
            raise LSDOUserError(f"labels: {len(given)} given for {len(defaults)} {what}; give one per {what[:-1]}")
        return list(given)
    seen: dict[str, int] = {}
    out = []
    for label in defaults:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


# ---------------------------------------------------------------------------------------------
# Fig. 5: theta and lambda over training
# ---------------------------------------------------------------------------------------------


@dataclass
class Curve:
    """One run's logged series of one Fig. 5 panel."""

    label: str
    steps: list[int]
    values: list[float]


def _run_dir_of(metrics: Path, root: Path) -> Path:
    """The run folder of a metrics.csv: the nearest folder above it (up to ``root``) holding config.yaml."""
    for parent in metrics.parents:
        if (parent / RUN_CONFIG).is_file():
            return parent
        if parent == root:
            break
    return root


def find_metrics(run: str | Path) -> list[Path]:
    """The CSV logs (``metrics.csv``) under a run folder (a folder of several runs: all of them, sorted)."""
    root = Path(run).expanduser()
    if not root.exists():
        raise LSDOUserError(f"runs: {run}: folder not found")
    if root.is_file():
        if root.name == METRICS_FILE:
            return [root]
        raise LSDOUserError(f"runs: {run}: give a training run folder (it holds csv/version_*/{METRICS_FILE})")
    found = sorted(p for p in root.rglob(METRICS_FILE) if p.is_file())
    if not found:
        raise LSDOUserError(
            f"runs: {run}: no {METRICS_FILE} under it; fig5 reads the CSV logger's {METRICS_FILE} "
            "(csv/version_*/metrics.csv): train with logger=csv"
        )
    return found


def _default_label(metrics: Path, root: Path) -> str:
    from omegaconf import OmegaConf

    run_dir = _run_dir_of(metrics, root)
    config = run_dir / RUN_CONFIG
    label = run_dir.name
    if config.is_file():
        try:
            label = run_label(OmegaConf.load(config))
        except Exception:  # an unreadable config.yaml: the folder's name
            label = run_dir.name
    version = metrics.parent.name
    return f"{label} ({version})" if version.startswith("version_") and version != "version_0" else label


def fig5_curves(runs: Sequence[str | Path], labels: Sequence[str] = ()) -> dict[str, list[Curve]]:
    """Fig. 5's data: panel column (``train/theta``, ``train/lambda``) -> one :class:`Curve` per run logging it.

    Panels no run logged are absent. A run logging neither is a user error naming it.
    """
    if not runs:
        raise LSDOUserError("runs: give at least one training run folder")
    found = [(m, Path(r).expanduser()) for r in runs for m in find_metrics(r)]
    names = _labels(labels, [_default_label(m, root) for m, root in found], "runs")
    panels: dict[str, list[Curve]] = {}
    for (metrics, _), label in zip(found, names, strict=True):
        with open(metrics, newline="") as fh:
            rows = list(csv.DictReader(fh))
        logged = False
        for key, _, _ in FIG5_PANELS:
            steps, values = series(rows, key)
            if steps:
                panels.setdefault(key, []).append(Curve(label, steps, values))
                logged = True
        if not logged:
            keys = " or ".join(k for k, _, _ in FIG5_PANELS)
            raise LSDOUserError(f"runs: {metrics} logged neither {keys}: not a training run's CSV log")
    return {key: panels[key] for key, _, _ in FIG5_PANELS if key in panels}


def fig5(runs: Sequence[str | Path], out: str | Path = "fig5.png", labels: Sequence[str] = ()) -> Path:
    """Paper Fig. 5: theta (a) and lambda (b) against the training iteration, the runs overlaid; returns the PNG."""
    panels = fig5_curves(runs, labels)
    plt = pyplot()
    titles = {key: (title, ylabel) for key, title, ylabel in FIG5_PANELS}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (key, curves) in zip(axes[0], panels.items(), strict=True):
        for curve in curves:
            ax.plot(curve.steps, curve.values, lw=1.3, label=curve.label)
        title, ylabel = titles[key]
        ax.set_title(title)
        ax.set_xlabel("training iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Fig. 5: the learnable parameters during training", fontsize=11)
    fig.tight_layout()
    return save(fig, out)


# ---------------------------------------------------------------------------------------------
# Fig. 7: the image encoder's last-layer attention map, one column per checkpoint
# ---------------------------------------------------------------------------------------------


def _sampled_frames(video: str | Path, num_frames: int) -> tuple[torch.Tensor, list[int] | None]:
    """The test-time frames of a video (uniform segment sampling, as in evaluation): uint8 [n, 3, H, W] and, when
    the file can be probed, their indices in the video."""
    from lsdo.data.sampling import segment_indices
    from lsdo.data.video import probe_video, sample_frames

    frames = sample_frames(video, num_frames, mode="uniform")
    try:
        indices = segment_indices(probe_video(video), num_frames, "uniform").tolist()
    except LSDOUserError:  # a truncated file still samples (its real frame count differs from the listed one)
        indices = None
    return frames, indices


def load_frame(image: str | None, video: str | None, frame: int | None, num_frames: int) -> tuple[torch.Tensor, str]:
    """Fig. 7's frame: uint8 [3, H, W] from ``image``, or the ``frame``-th of ``num_frames`` test-time frames of
    ``video``; and a caption naming it."""
    from lsdo.inverse_attention.viz import load_image

    if (image is None) == (video is None):
        raise LSDOUserError("give the frame as image=FILE or as video=FILE [frame=INDEX], one of them")
    if image is not None:
        if frame is not None:
            raise LSDOUserError("frame= picks a frame of video=; with image= leave it out")
        return load_image(image), Path(image).name
    assert video is not None
    k = num_frames // 2 if frame is None else frame
    if not 0 <= k < num_frames:
        raise LSDOUserError(f"frame={frame}: the checkpoint samples {num_frames} frames; give 0 .. {num_frames - 1}")
    frames, indices = _sampled_frames(video, num_frames)
    where = f", video frame {indices[k]}" if indices else ""
    return frames[k], f"{Path(video).name}\nsampled frame {k}/{num_frames}{where}"


def _visual_input(clip: torch.nn.Module, frame: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The image encoder's input [1, 3, S, S] for ``frame`` and the frame box it shows: the inverse-attention
    figure's preprocessing (the tower's size, resize mode, interpolation, mean and std; its global view)."""
    from lsdo.inverse_attention.encoder import RegionEncoder
    from lsdo.inverse_attention.preprocess import global_view, normalize, view_box

    enc = RegionEncoder(clip, "none")  # resolves the tower's preprocessing settings
    view = global_view(frame, enc.image_size, enc.resize_mode, enc.interpolation)
    box = view_box((int(frame.shape[-2]), int(frame.shape[-1])), enc.resize_mode)
    return normalize(view[None], enc.mean, enc.std).to(enc.device, enc.dtype), box


def fig7_heatmaps(
    models: Sequence[torch.nn.Module], frame: torch.Tensor, method: str = "attention"
) -> tuple[list[torch.Tensor], tuple[int, int, int, int]]:
    """Fig. 7's data: per model (an :class:`~lsdo.model.LSDOModel`), its image encoder's attention map over
    ``frame`` [3, H, W] uint8, upsampled to the view it sees, each in [0, 1] (min-max); and that view's box
    (x0, y0, x1, y1) in the frame."""
    from lsdo.inverse_attention.heatmap import attention_heatmap, upsample

    maps, box = [], (0, 0, int(frame.shape[-1]), int(frame.shape[-2]))
    for model in models:
        clip = model.encoder.clip.eval()
        x, box = _visual_input(clip, frame)
        try:
            with torch.no_grad():
                heat = attention_heatmap(clip.visual, x, method)[0].float().cpu()  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:  # an unsupported tower; rollout on a ResNet
            raise LSDOUserError(str(exc)) from None
        heat = upsample(heat, (box[3] - box[1], box[2] - box[0]))
        lo, hi = heat.min(), heat.max()
        maps.append((heat - lo) / (hi - lo) if hi > lo else torch.zeros_like(heat))
    return maps, box


def fig7(
    ckpts: Sequence[str | Path],
    out: str | Path = "fig7.png",
    *,
    image: str | None = None,
    video: str | None = None,
    frame: int | None = None,
    labels: Sequence[str] = (),
    heatmap: str = "attention",
) -> Path:
    """Paper Fig. 7: a frame, then each checkpoint's last-layer attention map over it (blue low, red high)."""
    from matplotlib.patches import Rectangle

    from lsdo.checkpoint import load_model

    if not ckpts:
        raise LSDOUserError("ckpt: give one or more checkpoints (two to compare, as in the paper)")
    picture = load_frame(image, video, frame, 1) if image is not None else None  # a bad image= before the models
    loaded = [load_model(c) for c in ckpts]
    titles = _labels(labels, [run_label(cfg) for _, cfg in loaded], "checkpoints")
    num_frames = int(loaded[0][1]["dataset"]["num_frames"])
    picture, caption = picture or load_frame(image, video, frame, num_frames)
    maps, (x0, y0, x1, y1) = fig7_heatmaps([m for m, _ in loaded], picture, heatmap)

    plt = pyplot()
    img = picture.permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(
        1, cols, figsize=(2.8 * cols + 0.6, 2.8 * h / w + 0.8), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    axes[0].imshow(img)
    if (x1 - x0, y1 - y0) != (w, h):
        axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=1, ec="white"))
    axes[0].set_title(caption, fontsize=8)
    shown = None
    for ax, heat, title in zip(axes[1:], maps, titles, strict=True):
        ax.imshow(img)
        box = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)  # pixel edges, as imshow places the frame
        shown = ax.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=box)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes), fraction=0.025, pad=0.01, aspect=15, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"], fontsize=8)
    fig.suptitle(f"Fig. 7: {heatmap} map of the image encoder's last layer", fontsize=10)
    return save(fig, out)


# ---------------------------------------------------------------------------------------------
# Fig. 8: the frame-level LSDO attention weight of each sampled frame
# ---------------------------------------------------------------------------------------------


def fig8_weights(model: torch.nn.Module, clip: torch.Tensor) -> torch.Tensor | None:
    """Fig. 8's data: the frame-level LSDO attention weights [n] (sum 1) of one clip [n, 3, S, S] (CLIP-normalised,
    the test transform), or None for a model without a frame-level block."""
    with torch.no_grad():
        _, details = model.encode_video(clip[None], return_details=True)  # type: ignore[operator]
    weights = details["frame_weights"]
    return None if weights is None else weights[0].float().cpu()


def fig8(ckpt: str | Path, video: str | Path, out: str | Path = "fig8.png", num_frames: int | None = None) -> Path:
    """Paper Fig. 8: a video's test-time frames in a row, each with the bar of its frame-level attention weight."""
    from lsdo.checkpoint import load_model
    from lsdo.data.transforms import build_transform

    model, cfg = load_model(ckpt)
    n = int(num_frames or cfg["dataset"]["num_frames"])
    frames, indices = _sampled_frames(video, n)
    size = int(cfg["dataset"].get("image_size") or model.image_size)
    weights = fig8_weights(model, build_transform(size, train=False)(frames))
    if weights is None:
        variant = cfg["variant"]["name"]
        why = "no LSDO blocks" if variant == "baseline" else "model.use_frame_lsdo=false"
        raise LSDOUserError(
            f"ckpt: {ckpt} has no frame-level LSDO block (variant={variant}: {why}), so no per-frame weights for "
            "Fig. 8; give a checkpoint of variant single, average or shared trained with model.use_frame_lsdo=true"
        )

    plt = pyplot()
    h, w = frames.shape[-2:]
    panel = 2.0
    fig = plt.figure(figsize=(panel * n, panel * h / w + 2.3))
    grid = fig.add_gridspec(2, n, height_ratios=[panel * h / w, 1.5], hspace=0.15, wspace=0.05)
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(frames[i].permute(1, 2, 0).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"frame {indices[i]}" if indices else f"sample {i}", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    values = weights.tolist()
    ax.bar(range(n), values, width=0.6, color="tab:blue")
    ax.axhline(1.0 / n, ls="--", lw=0.8, color="grey", label=f"uniform 1/{n}")
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3f}", (i, v), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize=7, bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})  # fmt: skip
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0, max(values) * 1.3)
    names = [f"frame {k}" for k in indices] if indices else [f"sample {i}" for i in range(n)]
    ax.set_xticks(range(n), names, fontsize=7)
    ax.set_ylabel("frame weight", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"Fig. 8: frame-level LSDO attention weights - {Path(video).name} ({run_label(cfg)})", fontsize=10, y=1.0
    )
    return save(fig, out)
