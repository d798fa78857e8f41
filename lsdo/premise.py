"""The paper's premise, measured: does an encoder see the small object, and how weakly?

    lsdo-premise ckpt=logs/premise/stage1.ckpt [renders=4] [out=premise.json]

LSDO's claim concerns a pretrained encoder that looks at large, salient objects and under-uses
small discriminative ones that are still *present* in its features. For a checkpoint trained on
the synthetic benchmark (:mod:`lsdo.data.synthetic`; typically stage 1 of the two-stage benchmark,
``experiment=premise_stage1``), this measures, on the frames where the small object is visible
(at least half of its pixels shown):

* **linear probes** of the encoder's frame embeddings (the 512-d CLIP image features, L2-normalised,
  then standardised): multinomial logistic regression trained on ``renders`` renderings of each of
  the 9 x 20 combinations, accuracy on half as many other renderings, for the large object's kind
  (9 classes) and the small object's kind (20 classes), against chance (the most frequent class of
  the probe's test set). Every small kind appears with every large kind, so the small probe cannot
  answer through the large object. The premise holds when the small probe is clearly above chance
  (>= 2x) and far below the large probe (<= 0.75x);
* the same probes on an encoder of the same architecture at **random initialisation** (what the
  pixels alone give a linear readout through untrained features: the floor that training moves);
* **where the attention heatmap peaks** (the attention-pooling head's attention over the patch grid,
  :func:`lsdo.inverse_attention.heatmap.visual_forward_with_heatmap`): the share of frames whose
  maximum cell holds small-object pixels, or large-object pixels, against the share of cells that
  hold them (the rate of a peak placed at random).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsdo.checkpoint import build_from_config, load_clip
from lsdo.data import synthetic
from lsdo.data.sampling import segment_indices
from lsdo.data.transforms import normalize
from lsdo.errors import LSDOUserError
from lsdo.inverse_attention.heatmap import visual_forward_with_heatmap

log = logging.getLogger(__name__)

VISIBLE = 0.5  # the small object counts as visible in a frame when at least this share of its pixels shows


def probe_frames(
    dcfg: dict[str, Any], part: str, size: int, renders: int = 1
) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Frames of every (large, small) combination where the small object is visible.

    All 9 x 20 combinations, ``renders`` new renderings of each (``part`` = ``train`` or ``test``
    draws disjoint rendering seeds: new motion, corners, backgrounds). Every small kind appears with
    every large kind equally often, so a probe cannot read the small object off the large one (a probe
    trained on the training split's combinations and tested on the held-out ones would learn exactly
    that shortcut, and score *below* chance).

    Returns uint8 frames [N, 3, size, size] and per-frame arrays: ``big``, ``small`` (kind indices) and
    the two objects' pixel masks ``small_pixels`` / ``big_pixels`` [N, size, size]; the frames are the
    ``num_frames`` segment middles of each rendering.
    """
    salt = {"train": 11, "test": 13}[part]
    videos = [
        synthetic.SyntheticVideo(
            f"probe_{part}_{b}_{s}_{j}",
            b,
            s,
            int(np.random.SeedSequence([int(dcfg["seed"]), salt, b, s, j]).generate_state(1)[0]),
            (),
        )
        for b in range(len(synthetic.BIG_KINDS))
        for s in range(len(synthetic.SMALL_KINDS))
        for j in range(max(1, renders))
    ]
    kw = synthetic.render_settings(dcfg, size)
    idx = segment_indices(kw["num_frames"], int(dcfg["num_frames"]), "uniform")
    frames, big, small, small_px, big_px = [], [], [], [], []
    for v in videos:
        clip, info = synthetic.render(v, details=True, **kw)
        drawn = info["small_drawn"][idx].reshape(len(idx), -1).sum(1)
        shown = info["small_pixels"][idx].reshape(len(idx), -1).sum(1)
        keep = (drawn > 0) & (shown >= VISIBLE * np.maximum(drawn, 1))
        frames.append(clip[idx][keep])
        big += [v.big] * int(keep.sum())
        small += [v.small] * int(keep.sum())
        small_px.append(info["small_pixels"][idx][keep])
        big_px.append(info["big_pixels"][idx][keep])
    return torch.from_numpy(np.concatenate(frames)), {
        "big": np.asarray(big),
        "small": np.asarray(small),
        "small_pixels": np.concatenate(small_px),
        "big_pixels": np.concatenate(big_px),
    }


@torch.no_grad()
def encode_frames(visual: torch.nn.Module, frames: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised image embeddings [N, d], attention heatmaps [N, gh, gw]) of uint8 frames [N, 3, S, S]."""
    feats, heats = [], []
    for s in range(0, frames.shape[0], batch):
        f, h = visual_forward_with_heatmap(visual, normalize(frames[s : s + batch]), "attention")
        feats.append(torch.nn.functional.normalize(f.float(), dim=-1))
        heats.append(h.float())
    return torch.cat(feats), torch.cat(heats)


def linear_probe(
    x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, y_test: np.ndarray, classes: int, steps: int = 200
) -> float:
    """Test accuracy (%) of a multinomial logistic regression (L-BFGS, L2 1e-3) on standardised features."""
    torch.manual_seed(0)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    ytr = torch.from_numpy(y_train).long()
    lin = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr), ytr) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = lin(xte).argmax(1).numpy()
    return 100.0 * float((pred == y_test).mean())


def majority_rate(y: np.ndarray) -> float:
    """Accuracy (%) of always answering the most frequent class."""
    return 100.0 * float(np.bincount(y).max() / len(y))


def heatmap_peaks(heat: torch.Tensor, small_pixels: np.ndarray, big_pixels: np.ndarray) -> dict[str, float]:
    """Where heatmaps [N, gh, gw] peak, against pixel masks [N, H, W] of the two objects (percentages).

    ``peak_on_small`` / ``peak_on_large``: frames whose maximum cell holds pixels of that object;
    ``small_cells`` / ``large_cells``: mean share of cells holding them (a random peak's rate).
    ``flat``: frames whose heatmap is uniform (no peak: e.g. a random-init attention-pooling head);
    the peak rates count the other frames (NaN when every heatmap is flat).
    """
    n, gh, gw = heat.shape
    h, w = small_pixels.shape[1:]
    ph, pw = h // gh, w // gw

    def cells(mask: np.ndarray) -> np.ndarray:  # [N, H, W] -> [N, gh * gw]: the cell holds some pixel
        return mask[:, : gh * ph, : gw * pw].reshape(n, gh, ph, gw, pw).any(axis=(2, 4)).reshape(n, -1)

    flat_heat = heat.reshape(n, -1)
    flat = (flat_heat.max(1).values - flat_heat.min(1).values <= 1e-6 * flat_heat.max(1).values.abs()).numpy()
    peak = flat_heat.argmax(1).numpy()
    small, big = cells(small_pixels), cells(big_pixels)
    rows = np.arange(n)[~flat]

    def rate(hit: np.ndarray) -> float:
        return 100.0 * float(hit.mean()) if len(hit) else float("nan")

    return {
        "peak_on_small": rate(small[rows, peak[rows]]),
        "small_cells": 100.0 * float(small.mean()),
        "peak_on_large": rate(big[rows, peak[rows]]),
        "large_cells": 100.0 * float(big.mean()),
        "flat": 100.0 * float(flat.mean()),
        "grid": f"{gh}x{gw}",
    }


def measure_encoder(visual: torch.nn.Module, train: tuple, test: tuple) -> dict[str, Any]:
    """Probe accuracies and heatmap peaks of one image tower on (frames, labels) of train / test renders."""
    (f_tr, lab_tr), (f_te, lab_te) = train, test
    x_tr, _ = encode_frames(visual, f_tr)
    x_te, heat = encode_frames(visual, f_te)
    out: dict[str, Any] = {}
    for name, classes in (("large", len(synthetic.BIG_KINDS)), ("small", len(synthetic.SMALL_KINDS))):
        key = "big" if name == "large" else "small"
        out[f"probe_{name}"] = linear_probe(x_tr, lab_tr[key], x_te, lab_te[key], classes)
        out[f"chance_{name}"] = majority_rate(lab_te[key])
    out.update(heatmap_peaks(heat, lab_te["small_pixels"], lab_te["big_pixels"]))
    return out


def measure_premise(ckpt: str | Path, renders: int = 4) -> dict[str, Any]:
    """The premise of a synthetic-benchmark checkpoint's encoder, with the random-init reference."""
    clip, _, saved = load_clip(ckpt)
    dcfg = saved["dataset"]
    if str(dcfg.get("name")) != "synthetic":
        raise LSDOUserError(f"ckpt: {ckpt} was trained on {dcfg.get('name')}, not the synthetic benchmark")
    visual = clip.visual
    side = visual.image_size
    size = int(side[0] if isinstance(side, tuple | list) else side)  # the encoder's input: as trained
    train = probe_frames(dcfg, "train", size, renders)
    test = probe_frames(dcfg, "test", size, max(1, renders // 2))
    torch.manual_seed(0)
    random_visual = build_from_config(saved).encoder.clip.visual.eval()
    return {
        "ckpt": str(ckpt),
        "small_caption_prob": float(dcfg["small_caption_prob"]),
        "frames": {"train": int(train[0].shape[0]), "test": int(test[0].shape[0])},
        "encoder": measure_encoder(visual, train, test),
        "random_init": measure_encoder(random_visual, train, test),
    }


def format_premise(r: dict[str, Any]) -> str:
    """The measurement as a Markdown table with a one-line verdict."""
    lines = [
        f"premise of {r['ckpt']} (training captions named the small object with probability "
        f"{r['small_caption_prob']:g}); linear probes trained on {r['frames']['train']} frames, tested on "
        f"{r['frames']['test']} frames of other renderings (all 180 combinations; small object visible)",
        "",
        "| encoder | large-object probe % | small-object probe % | heatmap peak on small % (cells %) "
        "| peak on large % (cells %) |",
        "|---|---|---|---|---|",
    ]
    for label, key in (("this checkpoint", "encoder"), ("random init (same architecture)", "random_init")):
        e = r[key]

        def peak(k: str, cells: str, e: dict = e) -> str:
            if e[k] != e[k]:  # NaN: every heatmap flat
                return f"no peak: flat heatmaps ({e[cells]:.1f})"
            return f"{e[k]:.1f} ({e[cells]:.1f})"

        lines.append(
            f"| {label} | {e['probe_large']:.1f} (chance {e['chance_large']:.1f}) | {e['probe_small']:.1f} "
            f"(chance {e['chance_small']:.1f}) | {peak('peak_on_small', 'small_cells')} | "
            f"{peak('peak_on_large', 'large_cells')} |"
        )
    e = r["encoder"]
    present = e["probe_small"] >= 2 * e["chance_small"]
    weak = e["probe_small"] <= 0.75 * e["probe_large"]
    verdict = (
        "premise holds: the small object is present (probe >= 2x chance) but weak (<= 0.75x the large probe)"
        if present and weak
        else "premise does NOT hold: "
        + ("the small object is not clearly present in the features" if not present else "it is not weak")
    )
    lines += ["", f"{verdict}; heatmap grid {e['grid']}"]
    return "\n".join(lines)
