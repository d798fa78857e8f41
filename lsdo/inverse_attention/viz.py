"""Visual results of the Inverse-Attention Encoder, one column of the paper's Table 2 as one PNG.

``lsdo-viz inverse-attention image=PATH query="..." [out=PNG] [ckpt=PATH | model=ARCH[/TAG | /FILE] | model=tiny]``

Rows (paper §5 "Visual Results"): the input frame; the LARD stage (heatmap over the global view, LARD candidate
boxes thin, LARC regions thick and numbered); the LACE image crops with their cosine similarity to the query; the
retrieval similarity of the global embedding (the plain encoder) vs ours (max over {global} U {regions}).

``render_figure(frame [3, H, W] uint8, query, model, tokenizer, out, ...)`` -> dict of similarities
(console script ``lsdo-viz inverse-attention``: :mod:`lsdo.cli.viz`; its keys: :class:`VizOptions`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.encoder import RegionEncoder
from lsdo.inverse_attention.heatmap import HEATMAP_METHODS
from lsdo.inverse_attention.larc import DEFAULT_K
from lsdo.inverse_attention.lard import LARDConfig
from lsdo.options import option

DEFAULT_MODEL = "ViT-B-16-SigLIP/webli"  # the paper's "ours" runs on SigLIP
# The ways to give lsdo-viz its CLIP weights (its errors about weights end with them).
WEIGHT_OPTIONS = (
    "model=ARCH/TAG with an open_clip pretrained tag (e.g. model=ViT-B-32/openai; needs internet or a warm "
    "open_clip cache), model=ARCH/FILE with a local weights file: OpenAI's ViT-B-32.pt or an open_clip state dict "
    "(e.g. model=ViT-B-32/weights/ViT-B-32.pt, or model=ViT-B-32//abs/path/ViT-B-32.pt), ckpt=PATH (an LSDO "
    "training checkpoint), or model=tiny (random init, offline)"
)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def load_image(path: str) -> torch.Tensor:
    """RGB image file -> uint8 [3, H, W]."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if p.is_dir():
        images = sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
        example = p / (images[0] if images else "frame.png")
        held = f"; it holds {len(images)} image file(s)" if images else ""
        raise LSDOUserError(
            f"image={path}: is a folder, not an image file{held}: pass one image (any format PIL reads: "
            f"{', '.join(IMAGE_EXTS[:3])}, ...), e.g. image={example}"
        )
    if not p.is_file():
        raise LSDOUserError(f"image={path}: file not found: pass an image file (any format PIL reads)")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise LSDOUserError(f"image={path}: cannot read it as an image ({type(exc).__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_model(model: str | None = None, ckpt: str | None = None) -> tuple[nn.Module, Any, str]:
    """(open_clip model, tokenizer, label) from an LSDO checkpoint, ``tiny``, or ``ARCH[/PRETRAINED]``."""
    from omegaconf import OmegaConf

    from lsdo.model.encoder import WeightKeys, create_clip

    if ckpt:
        from lsdo.checkpoint import load_clip

        clip, tokenizer, _ = load_clip(ckpt)  # the fine-tuned CLIP towers of the checkpoint
        return clip, tokenizer, f"ckpt {Path(ckpt).name}"
    spec = model or DEFAULT_MODEL
    if spec == "tiny":
        from lsdo.config import CONFIG_DIR

        clip, tokenizer = create_clip(OmegaConf.load(Path(CONFIG_DIR) / "model" / "tiny.yaml"))
        return clip, tokenizer, "tiny (random init)"
    arch, _, tag = spec.partition("/")
    if not tag:
        print(f"warning: model={spec} has no /TAG or /FILE: random initialisation", file=sys.stderr)
    # Messages about the weights name lsdo-viz's own argument (model=ARCH/...), not train.py's model.* keys.
    keys = WeightKeys(
        pretrained=f"model={spec}",
        arch_key=f"model={spec}",
        arch_fmt=f"model={{arch}}/{tag}" if tag else "model={arch}",
        keep_gelu_fmt=None,
        options=WEIGHT_OPTIONS,
    )
    try:
        # base_arch (not arch): create_clip then picks the -quickgelu variant for QuickGELU weights (openai, ...)
        cfg = OmegaConf.create({"base_arch": arch, "arch": None, "pretrained": tag or None})
        clip, tokenizer = create_clip(cfg, keys=keys)
    except LSDOUserError:
        raise
    except Exception as exc:  # e.g. an HF tokenizer that cannot be fetched offline
        raise LSDOUserError(
            f"model={spec}: cannot build it ({type(exc).__name__}: {str(exc)[:200]}). Options: {WEIGHT_OPTIONS}"
        ) from None
    return clip, tokenizer, spec


def render_figure(
    frame: torch.Tensor,
    query: str,
    model: nn.Module,
    tokenizer: Any,
    out: str | Path,
    *,
    k: int = DEFAULT_K,
    heatmap: str = "attention",
    lard: LARDConfig | None = None,
    seed: int = 0,
    title: str = "",
) -> dict[str, Any]:
    """Write the four-row figure for one frame and query; returns the similarities and boxes."""
    from matplotlib.patches import Rectangle

    from lsdo.inverse_attention.heatmap import upsample
    from lsdo.inverse_attention.lace import crop_regions
    from lsdo.plots import pyplot

    plt = pyplot()

    enc = RegionEncoder(model, "inverse_attention", k=k, heatmap=heatmap, lard=lard, seed=seed, tokenizer=tokenizer)
    res = enc.encode_detailed(frame[None])
    text = enc.encode_text([query])  # [1, d]
    cos = (text @ res.embeddings[0].T)[0].cpu()  # [1+K]
    valid = res.mask[0].cpu()
    sim_global = float(cos[0])
    sim_ours = float(cos[valid].max())
    regions, cands = res.boxes[0], res.candidates[0]
    crops = crop_regions(frame, regions, enc.image_size, enc.interpolation)
    img = frame.permute(1, 2, 0).numpy()

    n_cols = max(len(regions), 1)
    fig = plt.figure(figsize=(max(6.0, 2.2 * n_cols), 13))
    gs = fig.add_gridspec(4, n_cols, height_ratios=[3, 3, 1.6, 1.6], hspace=0.35)
    colors = plt.get_cmap("tab10")

    ax = fig.add_subplot(gs[0, :])
    ax.imshow(img)
    vx0, vy0, vx1, vy1 = res.views[0]
    if (vx1 - vx0, vy1 - vy0) != (img.shape[1], img.shape[0]):
        ax.add_patch(Rectangle((vx0, vy0), vx1 - vx0, vy1 - vy0, fill=False, ls="--", lw=1, ec="white"))
    ax.set_title(f"Input frame{' - ' + title if title else ''}  (dashed: the encoder's global view)", fontsize=9)
    ax.axis("off")

    ax = fig.add_subplot(gs[1, :])
    ax.imshow(img)
    assert res.heatmaps is not None
    heat = upsample(res.heatmaps[0].cpu(), (vy1 - vy0, vx1 - vx0)).numpy()
    ax.imshow(heat, cmap="jet", alpha=0.45, extent=(vx0, vx1, vy1, vy0))
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    for x0, y0, x1, y1 in cands.tolist():
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.5, ec="white", alpha=0.6))
    for i, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2.5, ec=colors(i % 10)))
        ax.text(x0 + 2, y0 + 2, str(i + 1), color="white", va="top", fontsize=9, backgroundcolor=colors(i % 10))
    ax.set_title(
        f"LARD: {heatmap} heatmap, {len(cands)} low-attention candidates (thin); LARC: {len(regions)} regions",
        fontsize=9,
    )
    ax.axis("off")

    for i in range(n_cols):
        ax = fig.add_subplot(gs[2, i])
        ax.axis("off")
        if i < len(regions):
            ax.imshow(crops[i].permute(1, 2, 0).numpy())
            ax.set_title(f"crop {i + 1}: cos {float(cos[1 + i]):.3f}", fontsize=8, color=colors(i % 10))
        elif i == 0:
            ax.text(0.5, 0.5, "no low-attention region\n(global embedding only)", ha="center", va="center")
    ax = fig.add_subplot(gs[3, :])
    labels = ["global"] + [f"crop {i + 1}" for i in range(len(regions))] + ["ours (max)"]
    values = [sim_global] + [float(cos[1 + i]) for i in range(len(regions))] + [sim_ours]
    bar_colors = ["grey"] + [colors(i % 10) for i in range(len(regions))] + ["black"]
    ax.bar(range(len(values)), values, color=bar_colors)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("cosine similarity")
    ax.set_title(f'Retrieval similarity to "{query}": global {sim_global:.3f} vs ours {sim_ours:.3f}', fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return {
        "global": sim_global,
        "ours": sim_ours,
        "regions": [float(cos[1 + i]) for i in range(len(regions))],
        "boxes": regions.tolist(),
        "num_candidates": len(cands),
        "out": str(out),
    }


@dataclass
class VizOptions:
    """What ``lsdo-viz inverse-attention`` takes (its keys and their defaults: written here once)."""

    image: str = option("input frame (any image file PIL reads)")
    query: str = option("text query")
    out: str = option("output PNG", "inverse_attention.png")
    ckpt: str | None = option("an LSDO training checkpoint (its CLIP towers are used)", None)
    model: str | None = option(f"open_clip ARCH[/TAG or /FILE] (null: {DEFAULT_MODEL}) or 'tiny' (random init)", None)
    k: int = option("LARC regions", DEFAULT_K, minimum=1)
    heatmap: str = option("heatmap method", "attention", choices=HEATMAP_METHODS)
    kernel: int = option("LARD kernel in patches", LARDConfig.kernel, minimum=1)
    stride: int = option("LARD stride in patches", LARDConfig.stride, minimum=1)
    mask_threshold: float = option("LARD mask threshold on the [0,1] heatmap", LARDConfig.mask_threshold)
    window_threshold: float = option("LARD max window mean of the mask", LARDConfig.window_threshold)
    seed: int = option("LARC k-means seed", 0)
