"""Frame sampling (lsdo.data.sampling) and the data pipeline (lsdo.data.datamodule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES

from lsdo.config import compose
from lsdo.data import build_datamodule
from lsdo.data.datamodule import (
    ClipEvalDataset,
    ClipTrainDataset,
    EpochSampler,
    SyntheticDataModule,
    collate_eval,
    collate_train,
)
from lsdo.data.sampling import segment_indices
from lsdo.data.transforms import CLIP_MEAN, CLIP_STD, normalize
from lsdo.errors import DataNotFoundError, LSDOUserError

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


# ----------------------------------------------------------------------------- exact reference
def ref_uniform(total: int, n: int) -> list[int]:
    """Middle of segment i, [i*total/n, (i+1)*total/n), floored - in exact integer arithmetic."""
    return [min((2 * i + 1) * total // (2 * n), total - 1) for i in range(n)]


def ref_bounds(total: int, n: int) -> list[tuple[int, int]]:
    """Inclusive range of the frames overlapping segment i (frame k covers [k, k + 1))."""
    out = []
    for i in range(n):
        lo = i * total // n
        hi = max(-(-(i + 1) * total // n) - 1, lo)  # ceil((i + 1) * total / n) - 1
        out.append((lo, min(hi, total - 1)))
    return out


class _ExtremeRng:
    """A stand-in Generator whose integers(low, high) picks the lowest or the highest allowed value."""

    def __init__(self, pick: str) -> None:
        self.pick = pick

    def integers(self, low, high):
        return np.asarray(low) if self.pick == "low" else np.asarray(high) - 1


# ----------------------------------------------------------------------------- segment_indices
def test_uniform_hand_formula_16_8() -> None:
    # 8 segments of 2 frames: [0,2), [2,4), ... -> middle (floored) 1, 3, 5, ...
    assert segment_indices(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(16, 8, "uniform").tolist() == [int((i + 0.5) * 2) for i in range(8)]


def test_uniform_hand_formula_100_12() -> None:
    # Segments of 100/12 = 8.33 frames; middles (i + 0.5) * 8.33 = 4.17, 12.5, 20.83, ...
    want = [int(np.floor((i + 0.5) * 100 / 12)) for i in range(12)]
    assert want == [4, 12, 20, 29, 37, 45, 54, 62, 70, 79, 87, 95]
    got = segment_indices(100, 12)
    assert got.tolist() == want
    assert got.dtype == np.int64


def test_uniform_is_deterministic_and_ignores_rng() -> None:
    a = segment_indices(37, 8, "uniform", np.random.default_rng(0))
    b = segment_indices(37, 8, "uniform", np.random.default_rng(1))
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("total", "n"), [(16, 8), (100, 12), (37, 8), (16, 16), (300, 12), (9, 4), (5, 3)])
def test_rand_inside_segment_many_seeds(total: int, n: int) -> None:
    bounds = ref_bounds(total, n)
    seen = [set() for _ in range(n)]
    for seed in range(300):
        idx = segment_indices(total, n, "rand", np.random.default_rng(seed))
        assert idx.shape == (n,) and idx.dtype == np.int64
        assert np.all(np.diff(idx) >= 0)
        for i, (lo, hi) in enumerate(bounds):
            assert lo <= idx[i] <= hi, (i, idx[i], lo, hi)
            seen[i].add(int(idx[i]))
    # Random: each segment's whole range gets used over 300 draws.
    for i, (lo, hi) in enumerate(bounds):
        assert seen[i] == set(range(lo, hi + 1)), (i, seen[i], lo, hi)


def test_rand_default_rng_is_valid() -> None:
    idx = segment_indices(50, 8, "rand")
    assert all(lo <= x <= hi for x, (lo, hi) in zip(idx.tolist(), ref_bounds(50, 8), strict=True))


@pytest.mark.parametrize(("total", "n"), [(3, 8), (1, 8), (5, 12), (7, 8), (2, 3)])
def test_total_smaller_than_n(total: int, n: int) -> None:
    u = segment_indices(total, n, "uniform")
    assert u.shape == (n,)
    assert u.min() >= 0 and u.max() <= total - 1
    assert np.all(np.diff(u) >= 0)
    assert set(u.tolist()) == set(range(total))  # every frame used when frames repeat
    for seed in range(50):
        r = segment_indices(total, n, "rand", np.random.default_rng(seed))
        assert r.shape == (n,)
        assert r.min() >= 0 and r.max() <= total - 1
        assert np.all(np.diff(r) >= 0)


@pytest.mark.parametrize("n", [1, 4, 8, 12, 16])
def test_total_equals_n_gives_arange(n: int) -> None:
    assert segment_indices(n, n, "uniform").tolist() == list(range(n))
    for seed in range(20):
        assert segment_indices(n, n, "rand", np.random.default_rng(seed)).tolist() == list(range(n))


@pytest.mark.parametrize("n", [1, 3, 12])
def test_total_one(n: int) -> None:
    assert segment_indices(1, n).tolist() == [0] * n
    assert segment_indices(1, n, "rand", np.random.default_rng(0)).tolist() == [0] * n


@pytest.mark.parametrize(
    ("total", "n", "mode"),
    [(0, 8, "uniform"), (0, 8, "rand"), (-3, 8, "uniform"), (8, 0, "uniform"), (16, 8, "middle"), (16, 8, "")],
)
def test_errors(total: int, n: int, mode: str) -> None:
    with pytest.raises(ValueError):
        segment_indices(total, n, mode)


def test_uniform_exact_midpoint_sweep() -> None:
    """Uniform indices equal the exactly-computed floored midpoints for every (total, n).

    Exposes a float-rounding bug: np.linspace edges make an exactly-integer midpoint land just
    below the integer, e.g. total=14, n=5 -> middle of [5.6, 8.4) is 7.0 but index 6 is returned;
    also total=280, n=12 (frame 244 instead of 245).
    """
    bad = [(t, n) for t in range(1, 300) for n in range(1, 25) if segment_indices(t, n).tolist() != ref_uniform(t, n)]
    assert bad == [], f"{len(bad)} (total, n) pairs differ, e.g. {bad[:8]}"


def test_rand_range_exact_sweep() -> None:
    """The lowest and highest frame rand can pick stay inside the segment, for every (total, n).

    Exposes a float-rounding bug: with np.linspace edges, a segment boundary that is exactly an
    integer can come out just below it - total=30, n=22: the edge 11 * 30 / 22 = 15 is computed as
    14.999999999999998, so floor() lets segment 11 = [15, 16.36) pick frame 14 of segment 10.
    """
    bad = []
    for total in range(1, 130):
        for n in range(1, 50):
            want = ref_bounds(total, n)
            low = segment_indices(total, n, "rand", _ExtremeRng("low")).tolist()
            high = segment_indices(total, n, "rand", _ExtremeRng("high")).tolist()
            if low != [lo for lo, _ in want] or high != [hi for _, hi in want]:
                bad.append((total, n))
    assert bad == [], f"{len(bad)} (total, n) pairs differ, e.g. {bad[:8]}"


# ----------------------------------------------------------------------------- EpochSampler
def test_epoch_sampler_order() -> None:
    s = EpochSampler(50, seed=7)
    s.set_epoch(3)
    a = list(s)
    b = list(s)
    assert a == b  # same epoch -> same order and item seeds
    s2 = EpochSampler(50, seed=7)
    s2.set_epoch(3)
    assert list(s2) == a  # a fresh sampler (a resumed run) replays it
    s.set_epoch(4)
    c = list(s)
    assert [i for i, _ in c] != [i for i, _ in a]
    assert list(EpochSampler(50, seed=8)) != list(EpochSampler(50, seed=7))
    assert len(s) == 50


def test_epoch_sampler_yields_index_seed_pairs_covering_all() -> None:
    s = EpochSampler(40, seed=1)
    items = list(s)
    assert all(isinstance(i, int) and isinstance(seed, int) for i, seed in items)
    assert sorted(i for i, _ in items) == list(range(40))
    assert [i for i, _ in items] != list(range(40))  # shuffled
    assert len({seed for _, seed in items}) == 40
    assert all(0 <= seed < 2**62 for _, seed in items)
    # Unshuffled: identity order.
    assert [i for i, _ in EpochSampler(10, seed=1, shuffle=False)] == list(range(10))


def test_epoch_sampler_item_seeds_change_with_epoch() -> None:
    s = EpochSampler(20, seed=0)
    s.set_epoch(0)
    e0 = dict(s)
    s.set_epoch(1)
    e1 = dict(s)
    assert any(e0[i] != e1[i] for i in range(20))


# ----------------------------------------------------------------------------- datasets and collate
def _indexed_clips(num_videos: int, clip_len: int, size: int = 8) -> torch.Tensor:
    """uint8 [V, T, 3, H, W] where frame t of video v is filled with 10 * t + v (decodable)."""
    clips = torch.zeros(num_videos, clip_len, 3, size, size, dtype=torch.uint8)
    for v in range(num_videos):
        for t in range(clip_len):
            clips[v, t] = 10 * t + v
    return clips


def _decode(frames: torch.Tensor) -> list[int]:
    """Inverse of normalize for the constant frames of _indexed_clips -> 10 * t + v per frame."""
    raw = ((frames * STD + MEAN) * 255).round()
    assert torch.all(raw == raw[..., :1, :1, :1])  # constant over channels and pixels
    return raw[:, 0, 0, 0].long().tolist()


def test_normalize_of_all_255() -> None:
    x = normalize(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8))
    assert x.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(x[:, c], torch.tensor((1 - CLIP_MEAN[c]) / CLIP_STD[c]))
    z = normalize(torch.zeros(3, 2, 2, dtype=torch.uint8))
    for c in range(3):
        assert torch.allclose(z[c], torch.tensor(-CLIP_MEAN[c] / CLIP_STD[c]))


def test_clip_train_dataset_item() -> None:
    clips = _indexed_clips(4, 12)
    caps = [(f"v{v} a", f"v{v} b", f"v{v} c") for v in range(4)]
    ds = ClipTrainDataset(clips, caps, num_frames=4)
    assert len(ds) == 4
    for seed in range(30):
        item = ds[(2, seed)]
        assert item["frames"].shape == (4, 3, 8, 8)
        assert item["frames"].dtype == torch.float32
        assert item["caption"] in caps[2]
        values = _decode(item["frames"])
        assert all(v % 10 == 2 for v in values)  # frames of video 2 only
        frames = [v // 10 for v in values]
        for t, (lo, hi) in zip(frames, ref_bounds(12, 4), strict=True):
            assert lo <= t <= hi
    # Deterministic in (index, item_seed).
    a, b = ds[(1, 123)], ds[(1, 123)]
    assert torch.equal(a["frames"], b["frames"]) and a["caption"] == b["caption"]
    # Different item seeds vary the frames and captions.
    draws = {(tuple(_decode(ds[(1, s)]["frames"])), ds[(1, s)]["caption"]) for s in range(30)}
    assert len(draws) > 5
    assert {ds[(1, s)]["caption"] for s in range(30)} == set(caps[1])  # any of the video's captions


def test_clip_train_dataset_all_255() -> None:
    clips = torch.full((2, 5, 3, 6, 6), 255, dtype=torch.uint8)
    item = ClipTrainDataset(clips, [("a",), ("b",)], num_frames=3)[(1, 0)]
    assert item["frames"].shape == (3, 3, 6, 6) and item["frames"].dtype == torch.float32
    want = ((1 - MEAN) / STD).expand(3, 3, 6, 6)
    assert torch.allclose(item["frames"], want)
    assert item["caption"] == "b"


def test_clip_eval_dataset_item() -> None:
    clips = _indexed_clips(3, 16)
    caps = [("x",), ("y1", "y2"), ("z1", "z2", "z3")]
    ds = ClipEvalDataset(clips, caps, num_frames=8)
    assert len(ds) == 3
    item = ds[2]
    assert item["frames"].shape == (8, 3, 8, 8) and item["frames"].dtype == torch.float32
    assert item["captions"] == ["z1", "z2", "z3"]
    assert _decode(item["frames"]) == [10 * t + 2 for t in [1, 3, 5, 7, 9, 11, 13, 15]]
    full = ClipEvalDataset(torch.full((1, 4, 3, 2, 2), 255, dtype=torch.uint8), [("a",)], 4)[0]["frames"]
    assert torch.allclose(full, ((1 - MEAN) / STD).expand(4, 3, 2, 2))


def test_collate_train() -> None:
    items = [{"frames": torch.full((2, 3, 4, 4), float(i)), "caption": f"c{i}"} for i in range(3)]
    batch = collate_train(items)
    assert batch["frames"].shape == (3, 2, 3, 4, 4)
    assert batch["captions"] == ["c0", "c1", "c2"]
    assert batch["frames"][1].eq(1).all()


def test_collate_eval_multi_caption() -> None:
    counts = [2, 1, 3, 1]
    items = [
        {"frames": torch.full((2, 3, 4, 4), float(v)), "captions": [f"v{v}c{k}" for k in range(c)]}
        for v, c in enumerate(counts)
    ]
    batch = collate_eval(items)
    assert batch["frames"].shape == (4, 2, 3, 4, 4)
    assert batch["captions"] == ["v0c0", "v0c1", "v1c0", "v2c0", "v2c1", "v2c2", "v3c0"]
    assert batch["text_to_video"].dtype == torch.long
    assert batch["text_to_video"].tolist() == [0, 0, 1, 2, 2, 2, 3]
    for cap, v in zip(batch["captions"], batch["text_to_video"].tolist(), strict=True):
        assert cap.startswith(f"v{v}c")
        assert batch["frames"][v].eq(v).all()


# ----------------------------------------------------------------------------- SyntheticDataModule
# The shared tiny config (conftest), with 3 frames rendered at 32 px.
SMALL_CFG = [*TINY_OVERRIDES, "dataset.num_frames=3", "dataset.image_size=32"]


@pytest.fixture(scope="module")
def small_dm() -> SyntheticDataModule:
    cfg = compose(SMALL_CFG)
    dm = build_datamodule(cfg, 32)
    assert isinstance(dm, SyntheticDataModule)
    dm.setup("fit")
    return dm


def test_datamodule_train_batch(small_dm: SyntheticDataModule) -> None:
    bs = int(small_dm.dcfg.batch_size)
    loader = small_dm.train_dataloader()
    batch = next(iter(loader))
    assert batch["frames"].shape == (bs, 3, 3, 32, 32)
    assert batch["frames"].dtype == torch.float32
    assert len(batch["captions"]) == bs and all(isinstance(c, str) for c in batch["captions"])
    n_train = 9 * 20 - 9 - 18
    assert len(loader) == n_train // bs  # drop_last
    # Training order is a function of the seed: a second loader replays the same batch.
    again = next(iter(small_dm.train_dataloader()))
    assert torch.equal(again["frames"], batch["frames"]) and again["captions"] == batch["captions"]


def test_datamodule_eval_batches(small_dm: SyntheticDataModule) -> None:
    val = list(small_dm.val_dataloader())
    test = list(small_dm.test_dataloader())
    assert sum(b["frames"].shape[0] for b in val) == 9
    assert sum(b["frames"].shape[0] for b in test) == 18
    b = test[0]
    assert b["frames"].shape[1:] == (3, 3, 32, 32)
    assert b["text_to_video"].tolist() == list(range(b["frames"].shape[0]))  # one caption per test video
    videos, clips = small_dm.splits["test"]
    assert clips.shape == (18, 6, 3, 32, 32) and clips.dtype == torch.uint8
    assert b["captions"][0] == videos[0].captions[0]


def test_bank_videos_cycle_over_categories(small_dm: SyntheticDataModule) -> None:
    bank = small_dm.bank_videos(20)
    assert bank.shape == (20, 3, 3, 32, 32)
    assert bank.dtype == torch.float32
    videos, clips = small_dm.splits["train"]
    frame_idx = torch.from_numpy(segment_indices(6, 3, "uniform"))
    candidates = normalize(clips[:, frame_idx])  # [V, 3, 3, 32, 32]
    picked = []
    for j in range(20):
        # bitwise: the same pixels through the same elementwise normalisation (per element, whatever the batch)
        matches = [i for i in range(len(videos)) if torch.equal(candidates[i], bank[j])]
        assert len(matches) == 1, (j, matches)
        picked.append(matches[0])
    cats = [videos[i].category for i in picked]
    assert cats == [j % 9 for j in range(20)]
    assert len(set(picked)) == 20  # j and j + 9 take different videos of the same category


def test_build_datamodule_missing_real_data(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "msrvtt"
    cfg = compose(["dataset=msrvtt", f"dataset.root={missing}"])
    with pytest.raises(DataNotFoundError) as err:
        build_datamodule(cfg, 32)
    msg = str(err.value)
    assert str(missing) in msg
    assert "data/README.md" in msg
    assert isinstance(err.value, LSDOUserError)
    assert "\n" not in msg  # a one-line user error


def test_epoch_sampler_hard_negative_runs() -> None:
    """3 groups x 4 keys x 3 items, runs of 4: every aligned run of 4 is one group with 4 distinct keys."""
    groups = [i // 12 for i in range(36)]
    keys = [(i // 12, (i // 3) % 4) for i in range(36)]
    s = EpochSampler(36, seed=5, groups=groups, keys=keys, group_size=4)
    s.set_epoch(2)
    order = [i for i, _ in s]
    assert sorted(order) == list(range(36))  # each item once per epoch
    for j in range(0, 36, 4):
        run = order[j : j + 4]
        assert len({groups[i] for i in run}) == 1, run
        assert len({keys[i] for i in run}) == 4, run  # no combination twice: no false negatives
    assert [groups[i] for i in order[::4]] != sorted(groups[i] for i in order[::4])  # runs in random order
    assert list(s) == list(s) and order != [i for i, _ in EpochSampler(36, 5, groups=groups, keys=keys, group_size=4)]
    # uneven groups: runs shorter than group_size where a round runs out, still every item once
    groups2 = [0] * 7 + [1] * 5
    s2 = EpochSampler(12, seed=0, groups=groups2, keys=list(range(12)), group_size=4)
    assert sorted(i for i, _ in s2) == list(range(12))
    with pytest.raises(ValueError, match="one group"):
        EpochSampler(12, seed=0, groups=[0] * 5, group_size=4)
    with pytest.raises(ValueError, match=">= 0"):
        EpochSampler(12, seed=0, groups=groups2, group_size=-1)


def test_epoch_sampler_hard_negative_runs_stay_whole_across_ranks(monkeypatch) -> None:
    groups = [i // 8 for i in range(32)]
    per_rank = []
    for rank in range(2):
        s = EpochSampler(32, seed=1, groups=groups, keys=list(range(32)), group_size=4)
        monkeypatch.setattr(s, "_rank", lambda rank=rank: (rank, 2))
        per_rank.append([i for i, _ in s])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(32))  # the ranks partition the epoch
    for mine in per_rank:
        assert all(len({groups[i] for i in mine[j : j + 4]}) == 1 for j in range(0, 16, 4))
