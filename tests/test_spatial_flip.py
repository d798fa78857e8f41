"""The caption-aware flip and the crop that keeps the periphery (issue 17).

* lsdo.data.spatial: the word swap on real caption forms (DiDeMo, MSVD, LSMDC sentences copied here),
  words that never change, doubtful uses refused (None);
* the flip decision and the caption together, on the dataset's item path (in-worker and deferred),
  and ``plain`` bitwise the authors' transform (a frozen copy below);
* the real counts (265 of 1,037 DiDeMo test paragraphs say left or right);
* ``dataset.crop_max_cut`` / ``crop_scale`` / ``crop_ratio`` and their one-line errors;
* ``lsdo-prepare spatial`` on the real DiDeMo test file and on a tiny hand-made MSR-VTT folder.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from conftest import TINY_OVERRIDES, bench_module

import lsdo.data.video_datamodule as vdm
from lsdo.cli.prepare import prepare_main
from lsdo.config import compose
from lsdo.data import build_datamodule
from lsdo.data.annotations import load_annotations
from lsdo.data.spatial import NEVER, count_spatial, mentions_left_right, spatial_kind, swap_spatial
from lsdo.data.transforms import BILINEAR, VideoTransform, apply_params, build_transform, decide_flip, normalize
from lsdo.data.video_datamodule import VideoSplit, VideoTrainDataset
from lsdo.errors import ConfigError

# ----------------------------------------------------------------------------- the word swap

SWAPS = [
    # DiDeMo (test_data.json / val_data.json)
    (
        "the gentleman puts his left arm underneath his right arm.",
        "the gentleman puts his right arm underneath his left arm.",
    ),
    (
        "red hoodie exits frame left the camera zooms away from the large crowd.",
        "red hoodie exits frame right the camera zooms away from the large crowd.",
    ),
    ("some type of sign is seen in the bottom left.", "some type of sign is seen in the bottom right."),
    ("bald man moves his head to left then right", "bald man moves his head to right then left"),
    (
        "camera stops panning right the bush on the right waves in the wind.",
        "camera stops panning left the bush on the left waves in the wind.",
    ),
    ("bug starts to turn to the left, counter clockwise", "bug starts to turn to the right, clockwise"),
    (
        "person moves their thumb in a counter clockwise direction for the second time.",
        "person moves their thumb in a clockwise direction for the second time.",
    ),
    ("Fast Skier Passes Slow Skier on the Left", "Fast Skier Passes Slow Skier on the Right"),
    ("baby looks to our right baby places hands to face", "baby looks to our left baby places hands to face"),
    # MSVD (captions_msvd.json)
    ("a cat licks his left paw", "a cat licks his right paw"),
    ("the car made a lefthand turn", "the car made a righthand turn"),
    (
        "a woman paints black makeup around a man s left eye",
        "a woman paints black makeup around a man s right eye",
    ),
    # LSMDC (LSMDC16_challenge_1000_publictect.csv)
    ("He uncuffs SOMEONE's right arm from the chair.", "He uncuffs SOMEONE's left arm from the chair."),
    (
        "The Mercedes drifts through a hard right turn past a road work site.",
        "The Mercedes drifts through a hard left turn past a road work site.",
    ),
    # the common forms
    ("the leftmost car moves rightwards", "the rightmost car moves leftwards"),
    ("a left-hand turn to the right of the house", "a right-hand turn to the left of the house"),
    ("a right-handed pitcher on the left side", "a left-handed pitcher on the right side"),
    ("LEFT HAND UP, Right hand down", "RIGHT HAND UP, Left hand down"),
    ("the wheel spins clockwise then anticlockwise", "the wheel spins counterclockwise then clockwise"),
    ("walks from left to right", "walks from right to left"),
]

DOUBTFUL = [
    # real captions
    "we pan right into the bright setting sun",  # DiDeMo
    "the video goes from horizontal to vertical camera turns the right way",  # DiDeMo
    "passes the pole with balloons for the first time car drives right by camera",  # DiDeMo
    "the elephants left the river",  # MSVD
    "a hamster is eating food left on a floor",  # MSVD
    "nelly furtado say it right",  # MSVD
    "Left alone, SOMEONE lifts away a top panel of the box and climbs in.",  # LSMDC
    "SOMEONE emerges from a door right beside him.",  # LSMDC
    # the ambiguous uses
    "he is going to leave right now",
    "the dog comes back right away",
    "right after the jump he falls",
    "the ball is right there",
    "all right, the man nods",
    "he left the room",
    "there is nothing left on the plate",
    "the food was left behind",
    "she gives the right answer",
    "that's right, he says",
    # a swappable word does not save a caption with a doubtful one
    "the man on the left leaves right after",
]

NEVER_CHANGE = [
    "a bright light shines on the righteous man",
    "the copyright notice on the screen",
    "the Wright brothers fly a plane",
    "everything is alright",
    "the leftover pizza and the leftovers",
    "a speech about human rights",
    "the frightened cat sits upright",
    "a playwright talks about a downright outright forthright birthright",
]


@pytest.mark.parametrize(("caption", "want"), SWAPS)
def test_swap_real_caption_forms(caption: str, want: str) -> None:
    assert spatial_kind(caption) == "swappable"
    assert swap_spatial(caption) == want
    assert swap_spatial(swap_spatial(want)) == want  # its own inverse (up to the spelling of counter-clockwise)


@pytest.mark.parametrize("caption", DOUBTFUL)
def test_doubtful_uses_are_not_flipped(caption: str) -> None:
    assert spatial_kind(caption) == "ambiguous"
    assert swap_spatial(caption) is None


@pytest.mark.parametrize("caption", NEVER_CHANGE)
def test_other_words_never_change(caption: str) -> None:
    assert spatial_kind(caption) == "none"
    assert swap_spatial(caption) == caption
    assert not mentions_left_right(caption)


def test_never_table_and_plain_rule() -> None:
    for word in NEVER:
        assert swap_spatial(f"a {word} thing") == f"a {word} thing"
    assert mentions_left_right("Left-hand side") and mentions_left_right("turn RIGHT")
    assert not mentions_left_right("leftmost, rightward, bright")  # the plain rule: whole words left / right only
    assert swap_spatial("a cat sleeps") == "a cat sleeps"
    counts = count_spatial([SWAPS[0][0], DOUBTFUL[0], NEVER_CHANGE[0], "the leftmost car"])
    assert counts == {"captions": 4, "left_right": 2, "spatial": 3, "swappable": 2, "ambiguous": 1, "none": 1}


# ----------------------------------------------------------------------------- the flip decision


def test_decide_flip_modes() -> None:
    cap = "a red square on the left"
    assert decide_flip("plain", 0.2, 0.5, cap) == (True, cap)
    assert decide_flip("plain", 0.7, 0.5, cap) == (False, cap)
    assert decide_flip("none", 0.2, 0.5, cap) == (False, cap)
    assert decide_flip("caption_aware", 0.2, 0.5, cap) == (True, "a red square on the right")
    assert decide_flip("caption_aware", 0.7, 0.5, cap) == (False, cap)
    assert decide_flip("caption_aware", 0.2, 0.5, "he left right now") == (False, "he left right now")
    assert decide_flip("caption_aware", 0.2, 0.5, "a cat") == (True, "a cat")
    assert decide_flip("caption_aware", 0.2, 0.5, None) == (True, None)


def red_blue_clip(n: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    """uint8 [n, 3, h, w]: the left half red, the right half blue."""
    clip = torch.zeros(n, 3, h, w, dtype=torch.uint8)
    clip[:, 0, :, : w // 2] = 255
    clip[:, 2, :, w // 2 :] = 255
    return clip


def red_on_left(frames: torch.Tensor) -> bool:
    """Every frame: red in the first column and blue in the last, or the mirror (asserted one or the other)."""
    red_left = frames[:, 0, :, 0].mean(-1) > frames[:, 2, :, 0].mean(-1)
    red_right = frames[:, 0, :, -1].mean(-1) > frames[:, 2, :, -1].mean(-1)
    assert bool((red_left != red_right).all())  # each frame: red on one side, blue on the other
    assert bool((red_left == red_left[0]).all())  # the same flip for every frame of the clip
    return bool(red_left[0])


def dataset(monkeypatch: pytest.MonkeyPatch, caption: str, flip: str, deferred: bool = False) -> VideoTrainDataset:
    clip = red_blue_clip()
    monkeypatch.setattr(vdm, "load_clip", lambda *a, **k: clip.clone())
    monkeypatch.setattr(vdm, "sample_entry_encoded", lambda *a, **k: ([b"jpeg"] * 3, 32, 32))
    split = VideoSplit(["v0"], [[caption]], [Path("v0.mp4")])
    return VideoTrainDataset(split, 3, build_transform(16, train=True, flip=flip), deferred=deferred)


def items(ds: VideoTrainDataset, seeds: range) -> list[tuple[torch.Tensor, str]]:
    """(frames, caption) of the item at each seed; the deferred path's draws applied as on the device."""
    out = []
    for seed in seeds:
        it = ds[(0, seed)]
        frames = apply_params(red_blue_clip(), 16, it["params"]) if ds.deferred else it["frames"]
        out.append((frames, it["caption"]))
    return out


@pytest.mark.parametrize("deferred", [False, True])
def test_caption_aware_flips_frames_and_caption_together(monkeypatch: pytest.MonkeyPatch, deferred: bool) -> None:
    seeds = range(40)
    aware = items(dataset(monkeypatch, "a red square on the left", "caption_aware", deferred), seeds)
    flipped = 0
    for frames, caption in aware:
        left = red_on_left(frames)
        assert caption == ("a red square on the left" if left else "a red square on the right")
        flipped += not left
    assert 5 < flipped < 35  # both happen
    # plain: the same frames (the same draws and decisions), the caption untouched
    plain = items(dataset(monkeypatch, "a red square on the left", "plain", deferred), seeds)
    assert [red_on_left(f) for f, _ in plain] == [red_on_left(f) for f, _ in aware]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, aware, strict=True))
    assert {c for _, c in plain} == {"a red square on the left"}
    # none: never flipped
    never = items(dataset(monkeypatch, "a red square on the left", "none", deferred), seeds)
    assert all(red_on_left(f) for f, _ in never)
    # an ambiguous caption: never flipped, never changed
    doubtful = "a red square on the left right now"
    for frames, caption in items(dataset(monkeypatch, doubtful, "caption_aware", deferred), seeds):
        assert red_on_left(frames) and caption == doubtful


def test_deferred_and_in_worker_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = range(12)
    worker = items(dataset(monkeypatch, "a red square on the left", "caption_aware"), seeds)
    deferred = items(dataset(monkeypatch, "a red square on the left", "caption_aware", deferred=True), seeds)
    for (a, ca), (b, cb) in zip(worker, deferred, strict=True):
        assert torch.equal(a, b) and ca == cb


def authors_transform(frames: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A frozen copy of the transform before issue 17 (torchvision's RandomResizedCrop, scale 0.5-1,
    ratio 3/4-4/3, then a flip with probability 0.5): what ``flip=plain`` must reproduce bit for bit."""
    height, width = frames.shape[-2:]
    area, log_lo, log_hi = height * width, math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        target = area * (0.5 + 0.5 * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            break
    else:
        top, left, h, w = 0, 0, height, width
    out = TF.resized_crop(frames, top, left, h, w, [size, size], interpolation=BILINEAR, antialias=True)
    if float(torch.rand(1, generator=generator)) < 0.5:
        out = out.flip(-1)
    return normalize(out)


def test_plain_is_bitwise_the_authors_transform_and_every_mode_draws_the_same() -> None:
    frames = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    from_yaml = compose(["dataset=msrvtt"]).dataset  # the configured defaults
    assert list(from_yaml.crop_scale) == [0.5, 1.0] and list(from_yaml.crop_ratio) == [3 / 4, 4 / 3]
    assert from_yaml.flip == "plain" and from_yaml.crop_max_cut is None
    configured = build_transform(
        32,
        train=True,
        flip=from_yaml.flip,
        crop_scale=from_yaml.crop_scale,
        crop_ratio=from_yaml.crop_ratio,
        crop_max_cut=from_yaml.crop_max_cut,
    )
    for seed in range(16):
        want = authors_transform(frames, 32, torch.Generator().manual_seed(seed))
        assert torch.equal(VideoTransform(32, train=True)(frames, torch.Generator().manual_seed(seed)), want)
        assert torch.equal(configured(frames, torch.Generator().manual_seed(seed)), want)
        # every mode: the same crop, the flip's random number drawn, the generator left in the same state
        states, crops = [], []
        for mode in ("none", "plain", "caption_aware"):
            gen = torch.Generator().manual_seed(seed)
            params, _ = build_transform(32, train=True, flip=mode).draw(40, 56, gen, "on the left he left")
            states.append(gen.get_state())
            crops.append(params[:4])
        assert all(torch.equal(s, states[0]) for s in states) and crops.count(crops[0]) == 3


# ----------------------------------------------------------------------------- the real counts


def test_real_counts(shared_data: Path) -> None:
    didemo = {s: [r.caption for r in load_annotations("didemo", s, shared_data / "didemo")] for s in ("test", "val")}
    assert (len(didemo["test"]), sum(map(mentions_left_right, didemo["test"]))) == (1037, 265)  # 25.6%
    assert (len(didemo["val"]), sum(map(mentions_left_right, didemo["val"]))) == (1094, 333)  # 30.4%
    test = count_spatial(didemo["test"])
    assert test["left_right"] == 265 and test["swappable"] + test["ambiguous"] == test["spatial"] >= 265
    assert test["swappable"] > 10 * test["ambiguous"]  # the caption-aware flip keeps most of them flipping
    lsmdc = [r.caption for r in load_annotations("lsmdc", "test", shared_data / "lsmdc")]
    assert sum(map(mentions_left_right, lsmdc)) == 4  # 0.4%
    msrvtt = [r.caption for r in load_annotations("msrvtt", "test", shared_data / "msrvtt")]
    assert sum(map(mentions_left_right, msrvtt)) == 0


# ----------------------------------------------------------------------------- the crop


@pytest.mark.parametrize("f", [0.0, 0.1, 0.25, 0.4])
def test_crop_max_cut_never_cuts_more_than_f(f: float) -> None:
    t = build_transform(32, train=True, crop_max_cut=f)
    gen = torch.Generator().manual_seed(1)
    for height, width in ((90, 160), (240, 320), (57, 31)):
        for _ in range(300):
            top, left, h, w = t.crop_params(height, width, gen)
            bottom, right = height - top - h, width - left - w
            assert min(top, left, bottom, right) >= 0
            assert max(top, bottom) <= f * height + 1e-9 and max(left, right) <= f * width + 1e-9
    full = t.crop_params(90, 160, torch.Generator().manual_seed(0))
    assert f > 0 or full == (0, 0, 90, 160)


def test_crop_scale_and_ratio_keys_are_honoured() -> None:
    t = build_transform(32, train=True, crop_scale=[0.81, 0.81], crop_ratio=[1.0, 1.0])
    gen = torch.Generator().manual_seed(2)
    for _ in range(100):
        _, _, h, w = t.crop_params(100, 100, gen)
        assert (h, w) == (90, 90)
    wide = build_transform(32, train=True, crop_scale=[0.2, 0.3], crop_ratio=[2.0, 2.5])
    for _ in range(100):
        _, _, h, w = wide.crop_params(200, 200, gen)
        assert 0.19 <= h * w / 200**2 <= 0.31 and 1.9 <= w / h <= 2.6


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("flip", "mirror"),
        ("crop_scale", [0.0, 1.0]),
        ("crop_scale", [0.8, 0.5]),
        ("crop_scale", [0.5]),
        ("crop_scale", 0.5),
        ("crop_ratio", [2.0, 1.0]),
        ("crop_ratio", [0.0, 1.0]),
        ("crop_max_cut", 0.5),
        ("crop_max_cut", -0.1),
        ("crop_max_cut", "x"),
        ("crop_max_cut", True),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^dataset\.{key}: ") as info:
        build_transform(32, train=True, **{key: value})
    assert "\n" not in str(info.value)


def test_data_module_checks_the_keys_before_any_work(tmp_path: Path) -> None:
    cfg = compose(["dataset=msrvtt", f"dataset.root={tmp_path}", "dataset.crop_max_cut=0.5"])
    with pytest.raises(ConfigError, match=r"dataset\.crop_max_cut: expected null or a number in \[0, 0\.5\)"):
        build_datamodule(cfg, 32)
    keys = ["dataset.flip=caption_aware", "dataset.crop_max_cut=0.1"]
    cfg = compose(["dataset=msrvtt", f"dataset.root={tmp_path}", *keys])
    t = build_datamodule(cfg, 32).train_transform
    assert (t.flip, t.max_cut, t.scale, t.ratio) == ("caption_aware", 0.1, (0.5, 1.0), (0.75, 4 / 3))


# ----------------------------------------------------------------------------- lsdo-prepare spatial


def test_prepare_spatial_on_the_real_didemo_test_file(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert prepare_main(["spatial", "dataset=didemo", f"root={shared_data / 'didemo'}", "split=test"]) == 0
    out = capsys.readouterr().out
    assert "didemo test: 1,037 paragraphs; left/right (plain rule): 265 (25.55%)" in out
    assert "swapped:" in out and "not flipped:" in out


def test_prepare_spatial_on_a_tiny_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [
        ("0", "video0", "video0", "a man turns left at the corner"),
        ("1", "video1", "video1", "a woman is right there"),
        ("2", "video2", "video2", "a cat sleeps in the bright sun"),
        ("3", "video3", "video3", "the camera pans right to show a crowd"),
    ]
    with open(tmp_path / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerows(rows)
    assert prepare_main(["spatial", "dataset=msrvtt", f"root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "msrvtt train: skipped" in out and "msrvtt val: skipped" in out
    assert (
        "msrvtt test: 4 captions; left/right (plain rule): 3 (75.00%); any spatial word: 3; "
        "flip=caption_aware: 2 swapped, 1 not flipped (ambiguous)" in out
    )
    assert "'a man turns left at the corner'" in out and "'a man turns right at the corner'" in out
    assert "not flipped: 'a woman is right there'" in out
    # a split asked for by name must be there; so must the folder; keys are checked
    assert prepare_main(["spatial", "dataset=msrvtt", f"root={tmp_path}", "split=train"]) == 2
    assert prepare_main(["spatial", "dataset=msrvtt", f"root={tmp_path / 'absent'}"]) == 2
    assert prepare_main(["spatial", "dataset=youtube", f"root={tmp_path}"]) == 2
    assert "dataset" in capsys.readouterr().err


# ---------------------------------------------------------------------- the flip study's side accuracy
def test_flip_study_side_table_against_hand_computed_values() -> None:
    """bench/flip_study.py's side-accuracy table: per-seed means, sample std, and the paired difference to plain
    with the bootstrap interval of lsdo.stats.paired_bootstrap on the same (seed, caption) pairs."""
    import numpy as np

    from lsdo.stats import paired_bootstrap

    study = bench_module("flip_study")
    wins = {
        ("none", 0): [100, 100, 100, 0], ("none", 1): [100, 0, 100, 0],  # 75, 50
        ("plain", 0): [0, 100, 0, 100], ("plain", 1): [100, 0, 0, 0],  # 50, 25
    }  # fmt: skip
    lines = study.side_table(wins, ["none", "plain"], [0, 1], boot=2000)
    assert lines[0] == "| dataset.flip | seed 0 | seed 1 | mean ± std | Δ vs plain [95% CI] | Δ vs none [95% CI] |"
    a, b = (np.array([wins[(m, 0)], wins[(m, 1)]], float) for m in ("none", "plain"))
    d, lo, hi = paired_bootstrap(a, b, 2000)
    assert d == pytest.approx(25.0) and lo <= 25.0 <= hi
    d2, lo2, hi2 = paired_bootstrap(b, a, 2000)
    assert d2 == pytest.approx(-25.0) and lo2 <= -25.0 <= hi2
    assert lines[2] == f"| none | 75.0 | 50.0 | 62.5 ± 17.7 | +25.0 [{lo:+.1f}, {hi:+.1f}] | - |"
    assert lines[3] == f"| plain | 50.0 | 25.0 | 37.5 ± 17.7 | - | -25.0 [{lo2:+.1f}, {hi2:+.1f}] |"
    # With neither reference in the study there is no difference column.
    only = {("caption_aware", s): v for (m, s), v in wins.items() if m == "none"}
    assert study.side_table(only, ["caption_aware"], [0, 1])[0] == "| dataset.flip | seed 0 | seed 1 | mean ± std |"


@pytest.mark.slow
def test_flip_study_runs_end_to_end_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``bench/flip_study.py`` at toy size: export, 2 modes x 2 seeds of the tiny ViT, lsdo-report's table, the
    side accuracy (one value per test caption and run: 120), the figure; run again, it trains nothing."""
    study = bench_module("flip_study")
    tiny = [o for o in TINY_OVERRIDES if o.startswith("model")] + ["dataset.num_frames=4", "dataset.batch_size=16"]
    args = [f"dir={tmp_path}", "seeds=2", "epochs=1", "modes=plain,caption_aware", "train_videos_per_combo=1"]
    assert study.main([*args, "extra=" + ",".join(tiny)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| dataset.flip=caption_aware | 2 |" in report and "| dataset.flip=plain **ref** | 2 |" in report
    assert (
        "## Side accuracy" in report
        and "| caption_aware | " in report
        and "## Against no flip" not in report
        and "![R@1 and side accuracy" in report
    )
    assert (tmp_path / "flip_study.png").stat().st_size > 10_000
    metrics = sorted((tmp_path / "runs").glob("*/metrics.json"))
    assert len(metrics) == 4
    for path in metrics:
        wins = json.loads((path.parent / "side_accuracy.json").read_text())["wins"]
        assert len(wins) == 120 and set(wins) <= {0.0, 100.0}
    stamps = [p.stat().st_mtime_ns for p in metrics]
    capsys.readouterr()
    assert study.main([*args, "extra=" + ",".join(tiny)]) == 0
    assert "$ " + sys.executable + " train.py" not in capsys.readouterr().out  # nothing trained again
    assert [p.stat().st_mtime_ns for p in metrics] == stamps


def test_crop_keep_bench_measures_the_max_cut_guarantee() -> None:
    """bench/crop_keep.py: an object 2-3 px from the corner of a 20 px frame is always whole under
    crop_max_cut=0.1 (at most 2 px cut from any side) and often cut by the authors' crop; augment=false keeps
    the whole frame."""
    import numpy as np

    bench = bench_module("crop_keep")
    mask = np.zeros((2, 20, 20), dtype=bool)
    mask[:, 2:4, 2:4] = True  # [T, H, W]
    assert bench.kept_fraction(mask, (0, 0, 20, 20)) == 1.0
    assert bench.kept_fraction(mask, (3, 3, 17, 17)) == 0.25  # one pixel of four per frame
    assert bench.kept_fraction(mask, (10, 10, 10, 10)) == 0.0
    settings = [("authors", {}), ("cut", {"crop_max_cut": 0.1}), ("off", {"augment": False})]
    r = bench.measure([mask] * 4, settings, draws=50, seed=0)
    assert r["cut"]["kept"] == 100.0 and r["cut"]["cut_out"] == 0.0
    assert r["authors"]["kept"] < 90.0 and r["authors"]["cut_out"] > 10.0
    assert r["off"] == {"kept": 100.0, "cut_out": 0.0, "area": 100.0, "whole": 100.0}
    lines = bench.table(r)
    assert lines[2].startswith("| authors | ") and "| 1.00x |" in lines[2] and "| 0.00x |" in lines[3]
