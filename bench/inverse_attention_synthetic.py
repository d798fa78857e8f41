"""Does inverse attention find the small, low-salient object? The paper's claim checked on the synthetic benchmark.

    python bench/inverse_attention_synthetic.py ckpt=/tmp/ia_demo/checkpoints/best-epoch17.ckpt [kernel=2] [ks=2,4,8]

The synthetic benchmark (lsdo/data/synthetic.py) identifies each video by a small object (~13 px across at 64 px,
under two 8-px patches) in a corner, next to a large salient object. Using only the CLIP encoder of a (demo)
checkpoint, on the test split (60 videos x 8 uniformly sampled frames at the model's 64 px):

(a) **crop hit rate**: over the sampled frames where the small object is visible (at least half of its pixels shown,
    i.e. not covered by the large object), the percentage of frames in which some crop covers at least 50% of the
    small object's shown pixels. The object's pixels are exact (:func:`small_object_track` gets them from the renderer
    itself). Compared with the same rate for ``k`` **random boxes of the same sizes** (uniform positions inside
    the frame; the chance level of crops that large, averaged over ``draws`` draws) and for the g x g grid tiles.
    Also shown: crops per frame and their mean area (% of the frame): large crops hit by size alone.
(b) **retrieval**: text-to-video (and video-to-text) R@1 / R@5 of the 60 test captions, scored zero-shot: plain cosine
    of the checkpoint's CLIP embeddings, max over each video's {frames} x ({global} U {regions}) (no X-Pool, no LSDO
    heads), for region_encoder none / grid / inverse_attention.
(c) the same with the attention-rollout heatmap (``heatmap=rollout``).

LARD on the tiny model's 8x8 patch grid (LARDConfig; our choice, fixed before looking at results): ``kernel=2``
patches (16 px = 1/4 of the frame side, close to the default 3-patch window's 3/14 of a 224-px ViT-B/16 view; a
3-patch window is 3/8 of this grid, bigger than the object's corner margin), ``stride=1``, ``mask_threshold=0.5``,
``window_threshold=0.1`` (a window qualifies only if none of its 4 cells is salient). The default LARD (kernel 3) is
reported as an extra row. LARC seed 0.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsdo.checkpoint import load_clip
from lsdo.data import synthetic
from lsdo.data.synthetic import SMALL_COLOURS, SMALL_KINDS, SyntheticVideo
from lsdo.errors import LSDOUserError
from lsdo.options import option

# ---------------------------------------------------------------------- the small object's exact pixels


@dataclass
class SmallObjectTrack:
    """The small object of a rendered video, per frame (t = 0 .. num_frames - 1 of :func:`synthetic.render`)."""

    shape: str
    colour: tuple[int, int, int]
    radius: float  # pixels
    shown: np.ndarray  # [T] bool: drawn in frame t (the renderer's visibility draw)
    centres: np.ndarray  # [T, 2] float (cy, cx) incl. the per-frame jitter; nan where not drawn
    drawn: np.ndarray  # [T, H, W] bool: the object's shape pixels (before the large object is drawn over it)
    pixels: np.ndarray  # [T, H, W] bool: the object's pixels showing in the final frame (drawn and not covered)

    @property
    def boxes(self) -> np.ndarray:
        """[T, 4] int64 (x0, y0, x1, y1) half-open bounding boxes of ``pixels``; zeros where none shows."""
        out = np.zeros((len(self.shown), 4), dtype=np.int64)
        for t, m in enumerate(self.pixels):
            ys, xs = np.nonzero(m)
            if len(ys):
                out[t] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return out

    def visible_fraction(self) -> np.ndarray:
        """[T] fraction of the drawn shape's pixels still showing (0 where not drawn)."""
        drawn = self.drawn.reshape(len(self.shown), -1).sum(1)
        return np.where(drawn > 0, self.pixels.reshape(len(self.shown), -1).sum(1) / np.maximum(drawn, 1), 0.0)


def small_object_track(
    video: SyntheticVideo,
    num_frames: int,
    size: int,
    small_visible_frac: float,
    distractors: int,
    small_radius: float,
) -> SmallObjectTrack:
    """The small object of ``synthetic.render(video, ...)`` (same arguments), pixel-exact.

    Taken from the renderer itself (``render(..., details=True)``), so the positions are the rendered ones, not
    estimates. The large object is drawn after the small one: the pixels it covers are not in ``pixels``.
    """
    _, info = synthetic.render(video, num_frames, size, small_visible_frac, distractors, small_radius, details=True)
    sc, ss = SMALL_KINDS[video.small]
    small_r, shown = float(info["small_radius"]), info["small_shown"]
    centres, drawn, pixels = info["small_centres"], info["small_drawn"], info["small_pixels"]
    return SmallObjectTrack(ss, SMALL_COLOURS[sc], float(small_r), shown, centres, drawn, pixels)


# ---------------------------------------------------------------------- coverage of the object by boxes


def coverage(pixels: np.ndarray, boxes: np.ndarray) -> float:
    """Largest fraction of the ``pixels`` [H, W] bool covered by one box of ``boxes`` [k, 4] (x0, y0, x1, y1)."""
    total = int(pixels.sum())
    if total == 0 or len(boxes) == 0:
        return 0.0
    cum = np.pad(pixels.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # integral image
    h, w = pixels.shape
    x0, y0 = np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h)
    x1, y1 = np.clip(boxes[:, 2], 0, w), np.clip(boxes[:, 3], 0, h)
    inside = cum[y1, x1] - cum[y0, x1] - cum[y1, x0] + cum[y0, x0]
    return float(inside.max()) / total


def random_boxes_like(boxes: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boxes of the same widths and heights as ``boxes`` [k, 4], at uniform positions inside an (H, W) frame."""
    h, w = size
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x0 = rng.integers(0, w - bw + 1)
    y0 = rng.integers(0, h - bh + 1)
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)


def heatmap_on_object(heat: torch.Tensor, tracks: list[SmallObjectTrack], size: tuple[int, int]) -> dict[str, float]:
    """Where the heatmap [V, n, gh, gw] looks, over the frames where the small object is visible (>= 50% shown).

    ``peak_on_object``: % of frames whose heatmap maximum lies on a patch holding small-object pixels;
    ``mass_on_object``: mean share of the heatmap on those patches; ``object_patches``: their mean share of the patches
    (the mass a uniform heatmap would put there).
    """
    gh, gw = heat.shape[-2:]
    ph, pw = size[0] // gh, size[1] // gw
    peak, mass, area, count = 0, 0.0, 0.0, 0
    for i, tr in enumerate(tracks):
        frac = tr.visible_fraction()
        for f in range(heat.shape[1]):
            if frac[f] < 0.5:
                continue
            cells = torch.from_numpy(tr.pixels[f][: gh * ph, : gw * pw].reshape(gh, ph, gw, pw).any(axis=(1, 3)))
            h = heat[i, f] / heat[i, f].sum()
            peak += bool(cells.flatten()[h.argmax()])
            mass += float(h[cells].sum())
            area += float(cells.float().mean())
            count += 1
    count = max(count, 1)
    return {
        "peak_on_object": 100.0 * peak / count,
        "mass_on_object": 100.0 * mass / count,
        "object_patches": 100.0 * area / count,
    }


# ---------------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class Setting:
    label: str
    method: str  # none | grid | inverse_attention
    k: int = 4
    grid: int = 2
    heatmap: str = "attention"
    kernel: int = 2


def test_split(
    dcfg: dict[str, Any], size: int, small_radius: float | None = None, rendering: int = 0
) -> tuple[list[SyntheticVideo], torch.Tensor, list[SmallObjectTrack]]:
    """The test videos, their sampled frames uint8 [V, n, 3, size, size] and the small object on those frames.

    ``size`` may exceed the encoder's input (high-resolution frames: the global view downsamples them, the crops are
    taken from the full-resolution frame). ``small_radius`` (fraction of the frame side) defaults to the dataset's.
    ``rendering`` > 0: another rendering of the same test combinations (new motion, corners, backgrounds; the
    combinations, captions and split are unchanged); 0 is the benchmark's own test split.
    """
    from lsdo.data.sampling import segment_indices

    videos = synthetic.make_split(
        "test",
        int(dcfg["seed"]),
        int(dcfg["val_combos"]),
        int(dcfg["test_combos"]),
        int(dcfg["train_videos_per_combo"]),
    )
    if rendering:
        videos = [
            replace(v, seed=int(np.random.SeedSequence([v.seed, rendering]).generate_state(1)[0])) for v in videos
        ]
    args = synthetic.render_settings(dcfg, size)
    if small_radius is not None:
        args["small_radius"] = float(small_radius)
    idx = segment_indices(args["num_frames"], int(dcfg["num_frames"]), "uniform")
    clips = np.stack([synthetic.render(v, **args)[idx] for v in videos])
    tracks = []
    for v in videos:
        tr = small_object_track(v, **args)
        tracks.append(
            replace(tr, shown=tr.shown[idx], centres=tr.centres[idx], drawn=tr.drawn[idx], pixels=tr.pixels[idx])
        )
    return videos, torch.from_numpy(clips), tracks


def run_setting(
    model: torch.nn.Module,
    tokenizer: Any,
    setting: Setting,
    clips: torch.Tensor,
    captions: list[str],
    tracks: list[SmallObjectTrack],
    draws: int,
    batch: int = 64,
) -> dict[str, float]:
    """Hit rates (a) and zero-shot retrieval (b, c) of one region-encoder setting."""
    from lsdo.inverse_attention.encoder import RegionEncoder
    from lsdo.inverse_attention.lard import LARDConfig
    from lsdo.inverse_attention.zero_shot import encode_texts, score
    from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics

    enc = RegionEncoder(
        model,
        setting.method,
        k=setting.k,
        grid=setting.grid,
        heatmap=setting.heatmap,  # type: ignore[arg-type]
        lard=LARDConfig(kernel=setting.kernel),
        tokenizer=tokenizer,
    )
    v, n = clips.shape[:2]
    frames = clips.flatten(0, 1)  # [V n, 3, S, S]
    embs, masks, boxes, heat = [], [], [], []
    start = time.perf_counter()
    for s in range(0, frames.shape[0], batch):
        d = enc.encode_detailed(frames[s : s + batch])
        embs.append(d.embeddings)
        masks.append(d.mask)
        boxes.extend(d.boxes)
        if d.heatmaps is not None:
            heat.append(d.heatmaps.cpu())
    seconds = time.perf_counter() - start
    slots = 1 + enc.num_regions
    sets = torch.cat(embs).reshape(v, n * slots, -1)
    mask = torch.cat(masks).reshape(v, n * slots)
    sims = score(encode_texts(enc, captions), sets, mask)
    t2v = torch.arange(v)
    out = {f"t2v/{k}": val for k, val in t2v_metrics(sims, t2v).items()}
    out.update({f"v2t/{k}": val for k, val in v2t_metrics(sims, t2v).items()})

    size = tuple(frames.shape[-2:])
    if heat:
        out.update(heatmap_on_object(torch.cat(heat).reshape(v, n, *heat[0].shape[-2:]), tracks, size))
    rng = np.random.default_rng(0)
    hits, chance, n_eval, n_crops, area = 0, 0.0, 0, [], []
    for i, tr in enumerate(tracks):
        frac = tr.visible_fraction()
        for f in range(n):
            bx = boxes[i * n + f].cpu().numpy()
            n_crops.append(len(bx))
            area.extend(((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]) / (size[0] * size[1])).tolist())
            if frac[f] < 0.5:  # the object is (mostly) hidden in this frame
                continue
            n_eval += 1
            hits += coverage(tr.pixels[f], bx) >= 0.5
            if len(bx):
                chance += np.mean(
                    [coverage(tr.pixels[f], random_boxes_like(bx, size, rng)) >= 0.5 for _ in range(draws)]
                )
    out.update(
        {
            "frames_evaluated": n_eval,
            "hit": 100.0 * hits / max(n_eval, 1),
            "random_hit": 100.0 * chance / max(n_eval, 1),
            "crops_per_frame": float(np.mean(n_crops)),
            "crop_area": 100.0 * float(np.mean(area)) if area else 0.0,
            "frames_per_s": frames.shape[0] / seconds,
        }
    )
    return out


@dataclass
class SyntheticBenchArgs:
    ckpt: str = option("an LSDO demo checkpoint (synthetic dataset)")
    kernel: int = option(
        "LARD kernel in heatmap cells for the main rows (8x8 grid of the 64-px tiny ViT; the demo's ResNet tower has "
        "a 2x2 grid: use kernel=1)",
        2,
        minimum=1,
    )
    ks: list[int] = option("k of LARC", [2, 4, 8])
    draws: int = option("random-box draws per frame for the chance level", 50, minimum=1)
    scale: int = option(
        "frame side / the encoder's input side (e.g. 3 ~ a 640-px COCO image seen by a 224-px CLIP)", 1, minimum=1
    )
    small_radius: float | None = option(
        "small object's radius / frame side (null: the training value / scale, i.e. the small object keeps its "
        "training pixel size in the full frame and the global view shrinks it scale times)",
        None,
    )
    renders: int = option(
        "renderings of the test combinations to average over (1: the test split itself; more renderings = more "
        "queries, a tighter estimate)",
        1,
        minimum=1,
    )
    out: str | None = option("a JSON file for the results", None)


def run(args: SyntheticBenchArgs) -> int:
    kernel, draws, ks, scale, renders = args.kernel, args.draws, args.ks, args.scale, args.renders
    torch.set_grad_enabled(False)
    model, tokenizer, saved = load_clip(args.ckpt)
    size = int(
        model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list)) else model.visual.image_size
    )
    dcfg = saved["dataset"]
    if str(dcfg.get("name")) != "synthetic":
        raise LSDOUserError(f"ckpt: {args.ckpt} was trained on {dcfg.get('name')}, not the synthetic benchmark")
    small_radius = args.small_radius if args.small_radius is not None else float(dcfg.get("small_radius", 0.07)) / scale
    splits = [test_split(dcfg, size * scale, small_radius, r) for r in range(renders)]
    videos, clips, tracks = splits[0]
    captions = [v.captions[0] for v in videos]
    settings = [
        Setting("global only", "none"),
        Setting("grid 2x2", "grid", grid=2),
        Setting("grid 3x3", "grid", grid=3),
    ]
    from lsdo.inverse_attention.heatmap import attention_heatmap

    heatmaps = ["attention"]
    try:  # rollout needs a transformer trunk (a CLIP ResNet tower has one attention layer: its attnpool head)
        attention_heatmap(model.visual.eval(), torch.zeros(1, 3, size, size), "rollout")
        heatmaps.append("rollout")
    except ValueError as exc:
        print(f"note: no rollout rows: {exc}")
    for heat in heatmaps:
        settings += [
            Setting(f"inverse attention ({heat})", "inverse_attention", k=k, heatmap=heat, kernel=kernel) for k in ks
        ]
    settings.append(Setting("inverse attention, default LARD kernel 3", "inverse_attention", k=4, kernel=3))
    print(
        f"checkpoint {args.ckpt}: open_clip CLIP encoder only (plain cosine, max over frames x regions), "
        f"{len(videos)} test videos x {clips.shape[1]} frames of {size * scale} px, {renders} rendering(s) (encoder "
        f"input {size} px; small "
        f"object radius {small_radius:.3f} of the side = {small_radius * size * scale:.1f} px); LARD kernel {kernel} "
        "patches"
    )
    visible = sum(int((tr.visible_fraction() >= 0.5).sum()) for _, _, trs in splits for tr in trs)
    print(
        f"frames with the small object visible (>= 50% of its pixels shown): {visible} of "
        f"{renders * clips.shape[0] * clips.shape[1]}"
        + (
            f"; every figure is the mean over the {renders} renderings (each a {len(videos)}-video retrieval)"
            if renders > 1
            else ""
        )
    )
    header = (
        "| setting | k / tiles | kernel | crops/frame | crop area % | hit % | random boxes hit % | t2v R@1 | t2v R@5 "
        "| v2t R@1 | v2t R@5 | frames/s |"
    )
    print()
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    results = []
    for st in settings:
        per = [run_setting(model, tokenizer, st, c, captions, trs, draws) for _, c, trs in splits]
        r = {key: float(np.mean([p[key] for p in per])) for key in per[0]}
        results.append({"setting": st.__dict__, **r, "per_rendering": per})
        k_col = {"none": "-", "grid": f"{st.grid * st.grid}", "inverse_attention": f"k={st.k}"}[st.method]
        hit = "-" if st.method == "none" else f"{r['hit']:.1f}"
        rnd = "-" if st.method == "none" else f"{r['random_hit']:.1f}"
        kern = str(st.kernel) if st.method == "inverse_attention" else "-"
        print(
            f"| {st.label} | {k_col} | {kern} | {r['crops_per_frame']:.2f} | {r['crop_area']:.1f} | {hit} | {rnd} "
            f"| {r['t2v/R1']:.1f} | {r['t2v/R5']:.1f} | {r['v2t/R1']:.1f} | {r['v2t/R5']:.1f} "
            f"| {r['frames_per_s']:.0f} |",
            flush=True,
        )
    print("\nwhere the heatmap looks (frames with the small object visible):")
    for heat in ("attention", "rollout"):
        r = next((x for x in results if x["setting"]["heatmap"] == heat and "peak_on_object" in x), None)
        if r is not None:
            print(
                f"  {heat}: maximum on the small object's patches in {r['peak_on_object']:.1f}% of frames; "
                f"{r['mass_on_object']:.1f}% of the heatmap mass on them (they are {r['object_patches']:.1f}% of "
                "the patches)"
            )
    chance = synthetic.chance_r1(len(videos))
    bound = synthetic.large_only_r1_bound(len(videos))
    print(f"\nchance t2v R@1 {chance:.1f}%; a model seeing only the large object: at most {bound:.1f}% expected R@1")
    if args.out:
        Path(args.out).write_text(json.dumps({"ckpt": args.ckpt, "results": results}, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/inverse_attention_synthetic.py", SyntheticBenchArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
