"""The synthetic LSDO benchmark: procedurally rendered videos whose identity hides in a small object.

Every video shows

* a **large, salient object** (3 shapes x 3 colours = 9 kinds, radius ~ a quarter of the frame)
  moving and bouncing across a noisy background. It is shared by many videos;
* a **small, low-salient object** (4 shapes x 5 colours = 20 kinds, ``small_radius`` = 0.1 of
  the frame side by default: under two ViT patches across at 64 px) near a random corner,
  visible only in a fraction of the frames (``small_visible_frac``, default 0.8) and hidden when
  the large object passes over it;
* ``distractors`` grey specks of a similar size that wander around and mean nothing.

A caption names both objects ("a red circle with a small cyan ring in the corner"). A video's
*combination* (large kind, small kind) is what identifies it.

Web captions name what is salient. ``small_caption_prob`` < 1 (``dataset.small_caption_prob``)
makes each training caption name the small object with that probability only, and otherwise
the large object alone (``SALIENT_TEMPLATES``, "a red circle moving around"): the first stage
of the two-stage benchmark (``experiment=premise_stage1``, docs/premise.md), whose encoder then
sees the small object but is rarely asked to tell it apart. Validation and test captions always
name both.

Why retrieval needs the small object (the guarantee): the test split holds one video for each of
``test_combos`` combinations, spread evenly over the 9 large kinds, so every large kind appears in
about test_combos / 9 test videos with *different* small objects. A model that ignores the small
object can at best pick uniformly among those, so its expected text-to-video R@1 is at most
9 / test_combos (15% for 60 combinations) — below the 10x-chance bar (10 / test_combos, 16.7%).
Exceeding it requires recognising the small object. The test combinations are never seen in
training (compositional generalisation): the splits partition the 9 x 20 = 180 combinations,
and training covers every large and every small kind.

Everything is a pure function of the seed, so the benchmark is deterministic; any frame count
and resolution can be rendered.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

BIG_SHAPES = ("circle", "square", "triangle")
BIG_COLOURS = {"red": (215, 45, 45), "green": (45, 190, 70), "blue": (55, 85, 225)}
SMALL_SHAPES = ("square", "cross", "ring", "bar")
SMALL_COLOURS = {
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 225),
    "magenta": (220, 50, 220),
    "orange": (250, 140, 30),
    "white": (245, 245, 245),
}
BIG_KINDS = [(c, s) for s in BIG_SHAPES for c in BIG_COLOURS]
SMALL_KINDS = [(c, s) for s in SMALL_SHAPES for c in SMALL_COLOURS]

TRAIN_TEMPLATES = (
    "a {bc} {bs} with a small {sc} {ss} in the corner",
    "a {bc} {bs} moving around and a tiny {sc} {ss}",
    "a small {sc} {ss} in a corner while a {bc} {bs} moves",
    "{bc} {bs} and a little {sc} {ss}",
    "a video of a {bc} {bs} with a {sc} {ss} nearby",
)
TEST_TEMPLATE = TRAIN_TEMPLATES[0]
SALIENT_TEMPLATES = (  # captions that name the large object alone
    "a {bc} {bs} moving around",
    "a video of a {bc} {bs}",
    "a {bc} {bs} bouncing across the frame",
    "{bc} {bs}",
    "a {bc} {bs} in motion",
)


@dataclass(frozen=True)
class SyntheticVideo:
    """One video of the benchmark: its combination, rendering seed and captions."""

    video_id: str
    big: int  # index into BIG_KINDS
    small: int  # index into SMALL_KINDS
    seed: int
    captions: tuple[str, ...]
    salient_captions: tuple[str, ...] = ()  # training videos: captions naming the large object alone
    side: int | None = None  # spatial captions: the large object keeps to the left (0) or right (1) half

    @property
    def category(self) -> int:
        """The large object's kind: the "scene category" (used to pick shared-bank videos)."""
        return self.big


SIDES = ("left", "right")


def caption(big: int, small: int, template: str = TEST_TEMPLATE, side: int | None = None) -> str:
    """The caption of a combination; with ``side`` the large object is placed: "a red circle on the left ..."."""
    bc, bs = BIG_KINDS[big]
    sc, ss = SMALL_KINDS[small]
    if side is not None:
        bs = f"{bs} on the {SIDES[side]}"
    return template.format(bc=bc, bs=bs, sc=sc, ss=ss)


@dataclass(frozen=True)
class CaptionDraw:
    """A training caption drawn per item: one naming both objects with probability ``small_caption_prob``,
    else one naming the large object alone (a random template of each kind)."""

    both: tuple[str, ...]
    salient: tuple[str, ...]
    small_caption_prob: float

    def __call__(self, rng: np.random.Generator) -> str:
        names_small = rng.random() < self.small_caption_prob
        pool = self.both if names_small else self.salient
        return pool[int(rng.integers(len(pool)))]


def training_captions(video: SyntheticVideo, small_caption_prob: float = 1.0) -> tuple[str, ...] | CaptionDraw:
    """What a training item draws its caption from: the video's captions, or a :class:`CaptionDraw` when
    ``small_caption_prob`` < 1 (1.0 keeps the plain tuple, so the random stream of earlier runs is unchanged)."""
    if not 0.0 <= small_caption_prob <= 1.0:
        raise ValueError(f"small_caption_prob must be in [0, 1], got {small_caption_prob}")
    if small_caption_prob >= 1.0:
        return video.captions
    return CaptionDraw(video.captions, video.salient_captions, small_caption_prob)


def split_combinations(seed: int, val_combos: int, test_combos: int) -> dict[str, list[tuple[int, int]]]:
    """Partition the 9 x 20 combinations into train/val/test.

    Training coverage holds by construction: one combination per small kind (spread over all
    large kinds) is reserved for training first. Test and val combinations are then drawn evenly
    over the large kinds (counts differ by at most one), from what is left.
    """
    n_big, n_small = len(BIG_KINDS), len(SMALL_KINDS)
    rng = np.random.default_rng(seed)
    big_order = [int(b) for b in rng.permutation(n_big)]
    reserved = {(big_order[s % n_big], int(s)) for s in rng.permutation(n_small)}
    free = {b: [int(s) for s in rng.permutation(n_small) if (b, int(s)) not in reserved] for b in range(n_big)}
    capacity = n_big * min(len(v) for v in free.values())
    if val_combos < 0 or test_combos < 0 or val_combos + test_combos > capacity:
        raise ValueError(f"val_combos + test_combos must be between 0 and {capacity}, got {val_combos + test_combos}")
    held: dict[str, list[tuple[int, int]]] = {"test": [], "val": []}
    k = 0
    for split, count in (("test", test_combos), ("val", val_combos)):
        for _ in range(count):
            b = big_order[k % n_big]
            held[split].append((b, free[b][k // n_big]))
            k += 1
    taken = set(held["test"]) | set(held["val"])
    train = [(b, s) for b in range(n_big) for s in range(n_small) if (b, s) not in taken]
    return {"train": train, "val": held["val"], "test": held["test"]}


def make_split(
    split: str,
    seed: int = 0,
    val_combos: int = 20,
    test_combos: int = 60,
    train_videos_per_combo: int = 6,
    spatial_captions: bool = False,
) -> list[SyntheticVideo]:
    """The videos of one split (deterministic in ``seed``); the defaults are configs/dataset/synthetic.yaml's.

    ``spatial_captions`` (``dataset.spatial_captions``, the flip benchmark of docs/datasets.md): every video's
    large object keeps to the left or the right half of the frame and its captions say which ("a red circle
    on the left with ..."). Training videos draw their side from their seed; each validation and test
    combination appears twice, once on each side (ids ``..._0`` left, ``..._1`` right), so a text-to-video
    query is answered only by a model that tells left from right: one blind to it gets at most half of
    the R@1 it would otherwise get. A horizontal flip that leaves the caption as it is trains it to be blind.
    """
    combos = split_combinations(seed, val_combos, test_combos)[split]
    train = split == "train"
    per = train_videos_per_combo if train else (2 if spatial_captions else 1)
    videos = []
    base = {"train": 1_000_003, "val": 2_000_003, "test": 3_000_017}[split]
    for i, (b, s) in enumerate(combos):
        for j in range(per):
            vseed = int(np.random.SeedSequence([seed, base, i, j]).generate_state(1)[0])
            side = (vseed % 2 if train else j) if spatial_captions else None
            caps = tuple(caption(b, s, t, side) for t in TRAIN_TEMPLATES) if train else (caption(b, s, side=side),)
            salient = tuple(caption(b, s, t, side) for t in SALIENT_TEMPLATES) if train else ()
            videos.append(SyntheticVideo(f"synth_{split}_{i:03d}_{j}", b, s, vseed, caps, salient, side))
    return videos


SPLIT_OPTIONS = tuple(inspect.signature(make_split).parameters)[1:]  # seed, val_combos, ...: what sets a split


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "cross":
        w = max(r * 0.35, 0.75)
        return ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (r * 0.5) ** 2)
    if shape == "bar":
        return (np.abs(dy) <= max(r * 0.35, 0.75)) & (np.abs(dx) <= r)
    raise ValueError(shape)


def render(
    video: SyntheticVideo,
    num_frames: int,
    size: int,
    small_visible_frac: float,
    distractors: int,
    small_radius: float,
    details: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render a video as uint8 frames [num_frames, 3, size, size].

    Every rendering setting is given (no defaults here: the benchmark's values are
    configs/dataset/synthetic.yaml, turned into these arguments by :func:`render_settings`).

    ``small_radius``: the small object's radius as a fraction of the frame side (+-15% per video);
    the large object's radius is 0.20-0.26 of the side.

    ``details=True`` also returns where the small object is, pixel-exact: ``small_shown`` [T] (drawn
    in frame t), ``small_centres`` [T, 2] (y, x; NaN where not drawn), ``small_drawn`` [T, H, W]
    (its shape's pixels) and ``small_pixels`` [T, H, W] (those not covered by the large object,
    which is drawn after it), ``small_radius`` (pixels), ``big_pixels`` [T, H, W] (the large object).
    """
    rng = np.random.default_rng(video.seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = rng.uniform(20, 90, size=3)
    noise = rng.normal(0, 10, size=(num_frames, size, size, 3))
    frames = np.broadcast_to(bg, (num_frames, size, size, 3)) + noise

    # Large object: bouncing motion (with a side: its centre stays in that half, at least 2% of the side away
    # from the middle, bouncing off the middle as off a wall).
    bc, bs = BIG_KINDS[video.big]
    big_r = size * rng.uniform(0.2, 0.26)
    pos = rng.uniform(big_r, size - big_r, size=2)
    vel = rng.uniform(-1, 1, size=2)
    vel = vel / (np.linalg.norm(vel) + 1e-6) * size * rng.uniform(0.03, 0.06)
    lo, hi = np.array([big_r, big_r]), np.array([size - big_r, size - big_r])  # bounds of the centre (y, x)
    if video.side is not None:
        half = (big_r, size * 0.48) if video.side == 0 else (size * 0.52, size - big_r)
        pos[1] = half[0] + (pos[1] - big_r) / max(size - 2 * big_r, 1e-6) * (half[1] - half[0])
        lo[1], hi[1] = half

    # Small object: near a corner, visible in a random subset of frames.
    sc, ss = SMALL_KINDS[video.small]
    small_r = size * small_radius * rng.uniform(0.85, 1.15)
    corner = rng.integers(0, 4)
    margin = small_r + size * rng.uniform(0.02, 0.1, size=2)
    cy = margin[0] if corner in (0, 1) else size - margin[0]
    cx = margin[1] if corner in (0, 2) else size - margin[1]
    n_vis = max(1, int(round(small_visible_frac * num_frames)))
    visible = np.zeros(num_frames, bool)
    visible[rng.choice(num_frames, n_vis, replace=False)] = True

    specks = rng.uniform(0, size, size=(distractors, 2))
    speck_vel = rng.normal(0, size * 0.02, size=(distractors, 2))
    speck_grey = rng.uniform(110, 200, size=distractors)
    speck_r = size * rng.uniform(0.04, 0.07, size=distractors)

    centres = np.full((num_frames, 2), np.nan)
    drawn = np.zeros((num_frames, size, size), bool)
    pixels = np.zeros((num_frames, size, size), bool)
    big_pixels = np.zeros((num_frames, size, size), bool)
    for t in range(num_frames):
        f = frames[t]
        for k in range(distractors):
            sy, sx = (specks[k] + t * speck_vel[k]) % size
            f[_shape_mask("square", yy, xx, sy, sx, speck_r[k])] = speck_grey[k]
        if visible[t]:
            jy, jx = rng.normal(0, 0.5, size=2)
            centres[t] = (cy + jy, cx + jx)
            drawn[t] = _shape_mask(ss, yy, xx, cy + jy, cx + jx, small_r)
            f[drawn[t]] = SMALL_COLOURS[sc]
        big = _shape_mask(bs, yy, xx, pos[0], pos[1], big_r)
        pixels[t] = drawn[t] & ~big
        big_pixels[t] = big
        f[big] = BIG_COLOURS[bc]
        pos = pos + vel
        for a in range(2):
            if pos[a] < lo[a] or pos[a] > hi[a]:
                vel[a] = -vel[a]
                pos[a] = np.clip(pos[a], lo[a], hi[a])
    out = np.ascontiguousarray(np.clip(frames, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))  # [T,H,W,3]->[T,3,H,W]
    if not details:
        return out
    info = {
        "small_shown": visible,
        "small_centres": centres,
        "small_drawn": drawn,
        "small_pixels": pixels,
        "small_radius": np.float64(small_r),
        "big_pixels": big_pixels,
    }
    return out, info


def render_settings(dcfg: Any, size: int) -> dict[str, Any]:
    """Keyword arguments of :func:`render` from a synthetic dataset config (``configs/dataset/synthetic.yaml``)
    at frame side ``size``: the one translation from config keys to rendering arguments."""
    return {
        "num_frames": int(dcfg["clip_len"]),
        "size": int(size),
        "small_visible_frac": float(dcfg["small_visible_frac"]),
        "distractors": int(dcfg["distractors"]),
        "small_radius": float(dcfg["small_radius"]),
    }


def chance_r1(test_combos: int) -> float:
    """Chance-level text-to-video R@1 (percent) on the synthetic test split."""
    return 100.0 / test_combos


def large_only_r1_bound(test_combos: int) -> float:
    """Best expected R@1 (percent) of a model that sees only the large object."""
    return 100.0 * len(BIG_KINDS) / test_combos
