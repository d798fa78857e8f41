"""The synthetic LSDO benchmark (lsdo.data.synthetic): determinism, splits, rendering, captions, guarantee."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from lsdo.data import synthetic as S
from lsdo.retrieval.metrics import t2v_metrics

# the renderer's settings these tests were written with (render() has no defaults: the benchmark's are in the YAML)
LOOK = {"small_visible_frac": 0.6, "distractors": 3, "small_radius": 0.07}

N_BIG, N_SMALL = len(S.BIG_KINDS), len(S.SMALL_KINDS)
ALL_COMBOS = {(b, s) for b in range(N_BIG) for s in range(N_SMALL)}
SPLIT_SIZES = [(20, 60), (9, 18), (0, 9), (5, 7), (30, 100), (40, 100)]


def _has_colour(frames: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """[T] bool: whether each frame [T, 3, H, W] holds at least one pixel of exactly ``colour``."""
    col = np.asarray(colour, dtype=np.uint8).reshape(1, 3, 1, 1)
    return (frames == col).all(axis=1).any(axis=(1, 2))


# ----------------------------------------------------------------------------- constants
def test_kind_tables() -> None:
    assert N_BIG == 9 and N_SMALL == 20
    assert len(set(S.BIG_KINDS)) == 9 and len(set(S.SMALL_KINDS)) == 20
    # Colours are all distinct, so "a pixel of exactly this colour" identifies an object.
    colours = list(S.BIG_COLOURS.values()) + list(S.SMALL_COLOURS.values())
    assert len(set(colours)) == len(colours)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_is_identical() -> None:
    for split in ("train", "val", "test"):
        a = S.make_split(split, seed=3, val_combos=9, test_combos=18, train_videos_per_combo=2)
        b = S.make_split(split, seed=3, val_combos=9, test_combos=18, train_videos_per_combo=2)
        assert a == b
    assert S.split_combinations(5, 20, 60) == S.split_combinations(5, 20, 60)
    v = S.make_split("test", seed=3, val_combos=9, test_combos=18)[4]
    f1, f2 = S.render(v, 8, 48, **LOOK), S.render(v, 8, 48, **LOOK)
    assert f1.dtype == np.uint8
    assert np.array_equal(f1, f2)


def test_make_split_defaults_are_the_dataset_config_defaults() -> None:
    """A library call ``make_split(split)`` builds the split ``dataset=synthetic`` trains on, and the annotation
    loader accepts exactly make_split's options (an unknown one is an error naming it)."""
    import inspect

    import yaml

    from lsdo.config import CONFIG_DIR
    from lsdo.data.annotations import load_annotations
    from lsdo.errors import ConfigError

    yaml_cfg = yaml.safe_load((CONFIG_DIR / "dataset" / "synthetic.yaml").read_text())
    params = inspect.signature(S.make_split).parameters
    assert S.SPLIT_OPTIONS == ("seed", "val_combos", "test_combos", "train_videos_per_combo", "spatial_captions")
    assert {k: params[k].default for k in S.SPLIT_OPTIONS} == {k: yaml_cfg[k] for k in S.SPLIT_OPTIONS}
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['combos'\]"):
        load_annotations("synthetic", "test", None, combos=3)


def test_different_seed_differs() -> None:
    assert S.split_combinations(0, 20, 60)["test"] != S.split_combinations(1, 20, 60)["test"]
    a = S.make_split("test", seed=0)
    b = S.make_split("test", seed=1)
    assert [(v.big, v.small) for v in a] != [(v.big, v.small) for v in b]
    assert {v.seed for v in a}.isdisjoint({v.seed for v in b})
    # Same combination, different seed -> different pixels.
    va, vb = a[0], S.SyntheticVideo("x", a[0].big, a[0].small, a[0].seed + 1, a[0].captions)
    assert not np.array_equal(S.render(va, 4, 32, **LOOK), S.render(vb, 4, 32, **LOOK))


def test_video_seeds_and_ids_are_unique() -> None:
    videos = [v for split in ("train", "val", "test") for v in S.make_split(split, seed=0, train_videos_per_combo=2)]
    assert len({v.video_id for v in videos}) == len(videos)
    assert len({v.seed for v in videos}) == len(videos)


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize(("val_combos", "test_combos"), SPLIT_SIZES)
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_combinations_partition(seed: int, val_combos: int, test_combos: int) -> None:
    sp = S.split_combinations(seed, val_combos, test_combos)
    train, val, test = sp["train"], sp["val"], sp["test"]
    assert len(test) == test_combos and len(val) == val_combos
    assert len(set(train)) == len(train) and len(set(val)) == len(val) and len(set(test)) == len(test)
    assert set(test).isdisjoint(val)
    assert set(test).isdisjoint(train) and set(val).isdisjoint(train)  # never seen in training
    assert set(train) | set(val) | set(test) == ALL_COMBOS
    assert len(train) == 180 - val_combos - test_combos
    for combo in train + val + test:
        assert 0 <= combo[0] < N_BIG and 0 <= combo[1] < N_SMALL
    # Training keeps every large and every small kind.
    assert {b for b, _ in train} == set(range(N_BIG))
    assert {s for _, s in train} == set(range(N_SMALL))
    # Held-out combinations spread evenly over the large kinds.
    for held, count in ((test, test_combos), (val, val_combos)):
        per_big = Counter(b for b, _ in held)
        counts = [per_big.get(b, 0) for b in range(N_BIG)]
        assert max(counts) - min(counts) <= 1, counts
        assert sum(counts) == count


def test_split_too_large_raises() -> None:
    with pytest.raises(ValueError):
        S.split_combinations(0, 100, 100)
    with pytest.raises(ValueError):
        S.split_combinations(0, 0, 161)


# The guard's limit: 20 combinations (one per small kind, spread over the 9 large kinds: three of
# them get 3, six get 2) are reserved for training, so every large kind keeps at least 20 - 3 = 17
# free small kinds; held-out combinations spread evenly, hence at most 9 * 17 = 153, for any seed.
SPLIT_CAPACITY = N_BIG * (N_SMALL - math.ceil(N_SMALL / N_BIG))


@pytest.mark.parametrize(("val_combos", "test_combos"), [(0, 153), (60, 93), (53, 100), (76, 77), (50, 100)])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_sizes_up_to_the_capacity_can_be_split(seed: int, val_combos: int, test_combos: int) -> None:
    """Sizes the guard admits (val + test <= 153) split, keeping every small and large kind in training.

    (Before the reserved-coverage construction, ~150 held-out combinations and more failed after
    1000 rejection-sampling tries with a RuntimeError rather than the user-facing ValueError.)
    """
    assert SPLIT_CAPACITY == 153
    sp = S.split_combinations(seed, val_combos, test_combos)
    assert len(sp["val"]) == val_combos and len(sp["test"]) == test_combos
    assert len(sp["train"]) == 180 - val_combos - test_combos
    assert {s for _, s in sp["train"]} == set(range(N_SMALL))
    assert {b for b, _ in sp["train"]} == set(range(N_BIG))


@pytest.mark.parametrize(("val_combos", "test_combos"), [(60, 100), (0, 156), (0, 160), (0, 154), (77, 77)])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_sizes_past_the_capacity_are_a_value_error(seed: int, val_combos: int, test_combos: int) -> None:
    """Past 153 held-out combinations: the guard's ValueError naming the limit (never a RuntimeError)."""
    total = val_combos + test_combos
    with pytest.raises(ValueError, match=rf"^val_combos \+ test_combos must be between 0 and 153, got {total}$"):
        S.split_combinations(seed, val_combos, test_combos)


def test_make_split_contents() -> None:
    combos = S.split_combinations(0, 9, 18)
    train = S.make_split("train", 0, 9, 18, train_videos_per_combo=3)
    test = S.make_split("test", 0, 9, 18, train_videos_per_combo=3)
    val = S.make_split("val", 0, 9, 18, train_videos_per_combo=3)
    assert len(train) == 3 * len(combos["train"])
    assert len(test) == 18 and len(val) == 9  # one video per held-out combination
    assert [(v.big, v.small) for v in test] == combos["test"]
    assert [(v.big, v.small) for v in val] == combos["val"]
    assert Counter((v.big, v.small) for v in train) == {c: 3 for c in combos["train"]}
    for v in train:
        assert len(v.captions) == len(S.TRAIN_TEMPLATES) and len(set(v.captions)) == len(v.captions)
        assert v.category == v.big
    for v in test + val:
        assert v.captions == (S.caption(v.big, v.small),)


# ----------------------------------------------------------------------------- captions
@pytest.mark.parametrize("template", S.TRAIN_TEMPLATES)
def test_captions_name_both_objects(template: str) -> None:
    for b, (bc, bs) in enumerate(S.BIG_KINDS):
        for s, (sc, ss) in enumerate(S.SMALL_KINDS):
            words = S.caption(b, s, template).split()
            assert bc in words and bs in words and sc in words and ss in words, (b, s, words)
    # Distinct combinations get distinct captions.
    assert len({S.caption(b, s, template) for b, s in ALL_COMBOS}) == 180


def test_default_caption_is_test_template() -> None:
    assert S.caption(0, 0) == S.TEST_TEMPLATE.format(
        bc=S.BIG_KINDS[0][0], bs=S.BIG_KINDS[0][1], sc=S.SMALL_KINDS[0][0], ss=S.SMALL_KINDS[0][1]
    )


# ----------------------------------------------------------------------------- rendering
@pytest.fixture(scope="module")
def test_videos() -> list[S.SyntheticVideo]:
    return S.make_split("test", seed=0)


@pytest.mark.parametrize("num_frames", [1, 5, 16])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_render_shape_and_dtype(test_videos, num_frames: int, size: int) -> None:
    frames = S.render(test_videos[0], num_frames, size, **LOOK)
    assert frames.shape == (num_frames, 3, size, size)
    assert frames.dtype == np.uint8
    assert frames.flags["C_CONTIGUOUS"]
    assert frames.std() > 5  # not blank


@pytest.mark.parametrize("num_frames", [1, 5, 16])
@pytest.mark.parametrize("size", [32, 64])
def test_large_object_colour_in_every_frame(test_videos, num_frames: int, size: int) -> None:
    for v in test_videos[:12]:
        frames = S.render(v, num_frames, size, **LOOK)
        big_colour = S.BIG_COLOURS[S.BIG_KINDS[v.big][0]]
        assert _has_colour(frames, big_colour).all(), v
        # The other large colours never appear.
        for name, colour in S.BIG_COLOURS.items():
            if name != S.BIG_KINDS[v.big][0]:
                assert not _has_colour(frames, colour).any()


@pytest.mark.parametrize("frac", [0.25, 0.6, 1.0])
@pytest.mark.parametrize("size", [32, 64])
def test_small_object_visible_in_about_frac_of_frames(test_videos, frac: float, size: int) -> None:
    num_frames = 20
    n_vis = max(1, round(frac * num_frames))
    counts = []
    for v in test_videos[:30]:
        frames = S.render(v, num_frames, size, **{**LOOK, "small_visible_frac": frac})
        colour = S.SMALL_COLOURS[S.SMALL_KINDS[v.small][0]]
        shown = int(_has_colour(frames, colour).sum())
        # Shown only in the frames it is visible in (occlusion by the large object can hide it further).
        assert shown <= n_vis, (v, shown, n_vis)
        counts.append(shown)
        # No other small colour ever appears.
        for name, other in S.SMALL_COLOURS.items():
            if name != S.SMALL_KINDS[v.small][0]:
                assert not _has_colour(frames, other).any()
    assert np.mean(counts) >= 0.85 * n_vis, counts  # occlusion is the exception
    assert sum(c > 0 for c in counts) >= 0.9 * len(counts)


def test_small_object_at_least_one_frame_even_for_tiny_frac(test_videos) -> None:
    counts = []
    for v in test_videos[:20]:
        frames = S.render(v, 10, 64, **{**LOOK, "small_visible_frac": 0.01})
        counts.append(int(_has_colour(frames, S.SMALL_COLOURS[S.SMALL_KINDS[v.small][0]]).sum()))
    assert max(counts) == 1  # n_vis = max(1, round(0.1)) = 1
    assert sum(counts) >= 15


def test_small_object_is_small(test_videos) -> None:
    """About one ViT patch: far fewer pixels than the large object."""
    for v in test_videos[:10]:
        frames = S.render(v, 8, 64, **{**LOOK, "small_visible_frac": 1.0})
        small = frames == np.asarray(S.SMALL_COLOURS[S.SMALL_KINDS[v.small][0]], np.uint8).reshape(1, 3, 1, 1)
        big = frames == np.asarray(S.BIG_COLOURS[S.BIG_KINDS[v.big][0]], np.uint8).reshape(1, 3, 1, 1)
        small_px = small.all(axis=1).sum(axis=(1, 2)).max()
        big_px = big.all(axis=1).sum(axis=(1, 2)).min()
        assert 0 < small_px < big_px / 3
        assert small_px <= 0.02 * 64 * 64


# ----------------------------------------------------------------------------- the guarantee
def test_bounds() -> None:
    assert S.large_only_r1_bound(60) == pytest.approx(15.0)
    assert S.chance_r1(60) == pytest.approx(100 / 60)
    for n in (18, 36, 60, 90, 120):
        assert S.large_only_r1_bound(n) < 10 * S.chance_r1(n)
        assert S.large_only_r1_bound(n) == pytest.approx(9 * S.chance_r1(n))


@pytest.mark.parametrize(("seed", "test_combos"), [(0, 60), (1, 60), (42, 60), (0, 36)])
def test_large_only_oracle_stays_below_ten_times_chance(seed: int, test_combos: int) -> None:
    videos = S.make_split("test", seed=seed, val_combos=20, test_combos=test_combos)
    big = torch.tensor([v.big for v in videos])
    t2v = torch.arange(len(videos))  # one caption per test video
    same_big = (big[:, None] == big[None, :]).double()  # knows only the large object

    # Expected R@1 of this oracle: every text picks uniformly among its large kind's videos.
    per_big = Counter(big.tolist())
    expected = 100.0 * sum(1.0 / per_big[b] for b in big.tolist()) / len(videos)
    assert expected <= S.large_only_r1_bound(test_combos) + 1e-9

    gen = torch.Generator().manual_seed(seed)
    r1 = []
    for _ in range(400):
        sims = same_big + 0.5 * torch.rand(len(videos), len(videos), generator=gen, dtype=torch.float64)
        r1.append(t2v_metrics(sims, t2v)["R1"])
    mean_r1 = float(np.mean(r1))
    # 400 trials: standard error ~0.25 percentage points.
    assert mean_r1 == pytest.approx(expected, abs=1.5)
    assert mean_r1 <= S.large_only_r1_bound(test_combos) + 1.5
    assert mean_r1 < 10 * S.chance_r1(test_combos)
    # And the oracle is far above chance: the large object does carry information.
    assert mean_r1 > 5 * S.chance_r1(test_combos)


def _synthetic(values: dict):
    """configs/dataset/synthetic.yaml with ``values`` set (every other key as the YAML says)."""
    from omegaconf import OmegaConf

    from lsdo.config import compose

    return OmegaConf.merge(compose(["dataset=synthetic"]).dataset, values)


def test_fresh_renders_are_new_videos_of_the_same_combination() -> None:

    from lsdo.data.datamodule import ClipTrainDataset, FreshRenderTrainDataset, SyntheticDataModule

    dcfg = _synthetic(
        {
            "seed": 0,
            "val_combos": 2,
            "test_combos": 9,
            "train_videos_per_combo": 1,
            "clip_len": 6,
            "num_frames": 3,
            "small_visible_frac": 0.8,
            "distractors": 1,
            "small_radius": 0.1,
            "batch_size": 4,
            "num_workers": 0,
            "image_size": 32,
            "fresh_renders": True,
        }
    )
    dm = SyntheticDataModule(dcfg, image_size=32)
    fresh = dm.train_dataloader().dataset
    assert isinstance(fresh, FreshRenderTrainDataset)
    videos, clips = dm._split("train")
    fixed = ClipTrainDataset(clips, [v.captions for v in videos], 3)
    a, b, c = fresh[(5, 123)], fresh[(5, 123)], fresh[(5, 124)]
    assert torch.equal(a["frames"], b["frames"]) and a["caption"] == b["caption"]  # deterministic in the item seed
    assert not torch.equal(a["frames"], c["frames"])  # another seed (epoch) -> another video
    assert a["frames"].shape == fixed[(5, 123)]["frames"].shape == (3, 3, 32, 32)
    assert not torch.equal(a["frames"], fixed[(5, 123)]["frames"])  # not the stored rendering
    assert a["caption"] in videos[5].captions  # captions of the same combination


def test_hard_negative_batches_share_the_large_object() -> None:

    from lsdo.data.datamodule import SyntheticDataModule

    base = {
        "seed": 0,
        "val_combos": 2,
        "test_combos": 9,
        "train_videos_per_combo": 2,
        "clip_len": 4,
        "num_frames": 2,
        "small_visible_frac": 0.8,
        "distractors": 0,
        "small_radius": 0.1,
        "batch_size": 8,
        "num_workers": 0,
        "image_size": 16,
        "fresh_renders": True,
    }
    dm = SyntheticDataModule(_synthetic({**base, "hard_negative_group": 4}), image_size=16)
    loader = dm.train_dataloader()
    videos = dm._split("train")[0]
    order = [i for i, _ in loader.sampler]
    # runs of 4 consecutive items: one large kind, four different combinations; a kind's last run can be short
    # (38 items per kind here: 9 full runs + 2) and the short runs come last, so the first 9 * 9 windows are full
    runs = [order[j : j + 4] for j in range(0, 4 * 81, 4)]
    assert all(len({videos[i].big for i in r}) == 1 and len({videos[i].small for i in r}) == 4 for r in runs), runs
    plain = [i for i, _ in SyntheticDataModule(_synthetic(base), image_size=16).train_dataloader().sampler]
    same_big = lambda o: sum(videos[a].big == videos[b].big for a, b in zip(o[:-1], o[1:], strict=True))  # noqa: E731
    assert same_big(order) > 2 * same_big(plain)
    assert sorted(order) == sorted(plain) == list(range(len(videos)))


def test_synthetic_only_keys_are_reported_on_file_datasets(caplog) -> None:
    from omegaconf import OmegaConf

    from lsdo.data.video_datamodule import VideoDataModule

    dm = VideoDataModule.__new__(VideoDataModule)
    dm.dcfg = OmegaConf.create({"name": "msrvtt", "batch_size": 2, "num_workers": 0, "hard_negative_group": 4})
    dm.seed = 0
    with caplog.at_level("WARNING"):
        loader = dm._loader(torch.utils.data.TensorDataset(torch.zeros(4)), True)
    assert "dataset.hard_negative_group: only the in-memory synthetic benchmark" in caplog.text
    assert "ignored for dataset=msrvtt" in caplog.text
    assert loader.sampler.group_size == 0  # plain shuffling


# ---------------------------------------------------------------- spatial captions (the flip benchmark, issue 17)


def test_spatial_captions_place_the_large_object_and_say_where() -> None:
    kw = {"num_frames": 16, "size": 64, "small_visible_frac": 0.8, "distractors": 2, "small_radius": 0.1}
    test = S.make_split("test", 0, 20, 60, 1, spatial_captions=True)
    plain = S.make_split("test", 0, 20, 60, 1)
    assert len(test) == 2 * len(plain)  # every test combination twice, once on each side
    for i, v in enumerate(plain):
        left, right = test[2 * i], test[2 * i + 1]
        assert (left.big, left.small, left.side) == (v.big, v.small, 0) and (right.big, right.small, right.side) == (
            v.big,
            v.small,
            1,
        )
        assert left.captions == (v.captions[0].replace(" with ", " on the left with ", 1),)
        assert right.captions[0].split(" with ")[0].endswith("on the right")
    for v in test[:12]:
        _, info = S.render(v, details=True, **kw)
        centres = [np.nonzero(mask)[1].mean() for mask in info["big_pixels"]]  # the large object's x per frame
        assert all(c < 32 for c in centres) if v.side == 0 else all(c > 32 for c in centres)
    train = S.make_split("train", 0, 20, 60, 4, spatial_captions=True)
    sides = [v.side for v in train]
    assert 0.4 < np.mean(sides) < 0.6  # both sides in training, drawn per video
    assert all(f"on the {S.SIDES[v.side]}" in c for v in train for c in (*v.captions, *v.salient_captions))


def test_spatial_captions_off_leaves_the_benchmark_as_it_was() -> None:
    kw = {"num_frames": 8, "size": 32, "small_visible_frac": 0.8, "distractors": 2, "small_radius": 0.1}
    v = S.make_split("test", 0, 20, 60, 1)[0]
    assert v.side is None and "left" not in v.captions[0] and "right" not in v.captions[0]
    spatial = S.make_split("test", 0, 20, 60, 1, spatial_captions=True)[0]
    assert spatial.seed == v.seed  # same draws; only the large object's horizontal range differs
    assert not np.array_equal(S.render(spatial, **kw), S.render(v, **kw))
