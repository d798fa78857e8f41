"""Issue 13 points 3-4: the shared bank's m distinct videos, and the frame ``single`` takes (6th of 12, 32nd of 64)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES

from lsdo.config import compose
from lsdo.data import build_datamodule, synthetic
from lsdo.data.bank import pick_bank_videos, spread_picks
from lsdo.data.datamodule import SyntheticDataModule
from lsdo.errors import ConfigError
from lsdo.model.video_lsdo import SingleLSDO


# ----------------------------------------------------------------------------- point 3: synthetic bank
def _train(seed: int = 0, val: int = 20, test: int = 60, per: int = 6) -> list[synthetic.SyntheticVideo]:
    return synthetic.make_split("train", seed, val, test, per)  # configs/dataset/synthetic.yaml's defaults


def _picks(videos: list[synthetic.SyntheticVideo], m: int) -> list[int]:
    return spread_picks([v.category for v in videos], [v.small for v in videos], m)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_bank_of_20_has_20_distinct_combinations_and_every_small_kind(seed: int) -> None:
    videos = _train(seed)
    picks = _picks(videos, 20)
    pairs = [(videos[i].big, videos[i].small) for i in picks]
    assert len(set(pairs)) == 20, pairs  # m DISTINCT (large, small) combinations
    assert {s for _, s in pairs} == set(range(len(synthetic.SMALL_KINDS)))  # all 20 small kinds
    per_large = Counter(b for b, _ in pairs)
    assert set(per_large) == set(range(len(synthetic.BIG_KINDS)))  # all 9 large kinds ...
    assert max(per_large.values()) - min(per_large.values()) <= 1  # ... evenly (2 or 3 each)


def test_bank_picks_are_deterministic_and_round_robin() -> None:
    videos = _train(0)
    assert _picks(videos, 20) == _picks(_train(0), 20)
    picks = _picks(videos, 20)
    assert [videos[i].big for i in picks[:9]] == list(range(9))  # one per large kind, in order
    assert len({videos[i].small for i in picks[:9]}) == 9


def test_bank_larger_than_the_combinations_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    videos = _train(0, val=9, test=18, per=2)  # 153 combinations x 2 videos
    combos = {(v.big, v.small) for v in videos}
    m = len(combos) + 10
    picks = _picks(videos, m)
    assert len(set(picks)) == m  # distinct videos: a combination twice only once all are in
    assert {(videos[i].big, videos[i].small) for i in picks[: len(combos)]} == combos
    with caplog.at_level(logging.WARNING, logger="lsdo.data.bank"):
        over = _picks(videos[:5], 8)  # more than the videos: repeats, logged
    assert sorted(over[:5]) == list(range(5)) and over[5:] == over[:3] and "repeats videos" in caplog.text


def test_synthetic_datamodule_bank_videos(tmp_path: Path) -> None:
    cfg = compose([*TINY_OVERRIDES, "dataset.num_frames=3", "dataset.image_size=32", f"paths.log_dir={tmp_path}"])
    dm = build_datamodule(cfg, 32)
    assert isinstance(dm, SyntheticDataModule)
    videos, clips = dm._split("train")
    ids = dm.bank_video_ids(20)
    by_id = {v.video_id: v for v in videos}
    pairs = {(by_id[i].big, by_id[i].small) for i in ids}
    assert len(set(ids)) == len(pairs) == 20 and len({s for _, s in pairs}) == 20
    assert build_datamodule(cfg, 32).bank_video_ids(20) == ids  # deterministic
    bank = dm.bank_videos(20)
    assert bank.shape == (20, 3, 3, 32, 32)
    index = {v.video_id: j for j, v in enumerate(videos)}
    assert torch.equal(bank[0], dm.bank_videos(1)[0])  # bitwise: the same frames, elementwise normalisation
    assert not torch.equal(bank[0], bank[1])
    assert [index[i] for i in ids] == dm._bank_picks(20)


# ----------------------------------------------------------------------------- point 3: real-video path
def _msrvtt_json(root: Path, cats: dict[str, int]) -> None:
    videos = [{"video_id": v, "category": c} for v, c in cats.items()]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos}))


def test_real_bank_never_repeats_a_video_of_a_small_category(tmp_path: Path) -> None:
    cats = {"a0": 0, "b0": 1, "b1": 1, "b2": 1, "c0": 2, "c1": 2}  # category 0 has a single video
    _msrvtt_json(tmp_path, cats)
    cand = list(cats)
    assert pick_bank_videos("msrvtt", tmp_path, cand, 3) == ["a0", "b0", "c0"]  # first video of each category
    six = pick_bank_videos("msrvtt", tmp_path, cand, 6)
    assert sorted(six) == sorted(cand)  # before: category 0 gave "a0" twice
    assert six == pick_bank_videos("msrvtt", tmp_path, cand, 6)
    assert sorted(pick_bank_videos("msrvtt", tmp_path, [*cand, "b1", "a0"], 6)) == sorted(cand)  # ids listed twice


def test_real_bank_without_categories_and_beyond_the_candidates(tmp_path: Path, caplog) -> None:
    cand = [f"v{i}" for i in range(7)]
    picks = pick_bank_videos("msvd", tmp_path, cand, 7)
    assert sorted(picks) == cand
    with caplog.at_level(logging.WARNING, logger="lsdo.data.bank"):
        more = pick_bank_videos("msvd", tmp_path, cand, 9)
    assert more[:7] == picks and "repeats videos" in caplog.text
    with pytest.raises(ConfigError, match=r"variant\.m"):
        pick_bank_videos("msvd", tmp_path, cand, 0)


# ----------------------------------------------------------------------------- point 4: single's frame
@pytest.mark.parametrize(
    ("n", "index"),
    [(12, 5), (64, 31), (8, 3), (4, 1), (1, 0), (2, 0), (32, 15)],
)
def test_single_frame_index_follows_the_paper(n: int, index: int) -> None:
    """6th of 12 segments (MSR-VTT, MSVD, LSMDC), 32nd of 64 (DiDeMo): 0-based indices 5 and 31."""
    assert SingleLSDO(512, select_frame=6, num_segments=12).frame_index(n) == index


def test_single_frame_index_from_the_configs() -> None:
    v = compose(["variant=single", "dataset=didemo"]).variant
    vl = SingleLSDO(512, select_frame=int(v.select_frame), num_segments=int(v.num_segments))
    assert vl.frame_index(int(compose(["dataset=didemo"]).dataset.num_frames)) == 31  # DiDeMo's 64 -> the 32nd
    assert vl.frame_index(int(compose(["dataset=msrvtt"]).dataset.num_frames)) == 5  # 12 -> the 6th
    assert SingleLSDO(512, select_frame=1, num_segments=12).frame_index(64) == 5  # the 6th of 64 (= 1/12)
    assert SingleLSDO(512, select_frame=12, num_segments=12).frame_index(64) == 63
