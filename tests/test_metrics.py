"""Retrieval metrics (lsdo.retrieval.metrics) against a brute-force reference written with plain loops.

The reference ranks follow the documented contract: 1-based, pessimistic on ties (a target tied
with k other candidates gets the worst of the tied positions); v2t ranks a video by its
best-ranked caption among all texts.
"""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from lsdo.retrieval.metrics import t2v_metrics, t2v_ranks, v2t_metrics, v2t_ranks

KEYS = {"R1", "R5", "R10", "R50", "MdR", "MnR"}


# ----------------------------------------------------------------------------- reference
def _rank_among(scores: list[float], target_pos: int) -> int:
    """Pessimistic 1-based rank of scores[target_pos]: 1 + #better + #tied others."""
    target = scores[target_pos]
    better = sum(1 for s in scores if s > target)
    tied_others = sum(1 for j, s in enumerate(scores) if j != target_pos and s == target)
    return 1 + better + tied_others


def ref_t2v_ranks(sims: list[list[float]], t2v: list[int]) -> list[int]:
    return [_rank_among(sims[t], t2v[t]) for t in range(len(sims))]


def ref_v2t_ranks(sims: list[list[float]], t2v: list[int]) -> list[int]:
    num_texts, num_videos = len(sims), len(sims[0])
    ranks = []
    for v in range(num_videos):
        column = [sims[t][v] for t in range(num_texts)]
        own = [t for t in range(num_texts) if t2v[t] == v]
        ranks.append(min(_rank_among(column, c) for c in own))
    return ranks


def ref_summary(ranks: list[int]) -> dict[str, float]:
    n = len(ranks)
    out = {f"R{k}": 100.0 * sum(1 for r in ranks if r <= k) / n for k in (1, 5, 10, 50)}
    out["MdR"] = float(statistics.median(ranks))  # mean of the two middle ones for an even count
    out["MnR"] = sum(ranks) / n
    return out


def assert_metrics_equal(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == KEYS
    for key in KEYS:
        assert isinstance(got[key], float), key
        assert got[key] == pytest.approx(want[key], abs=1e-9), (key, got, want)


def multi_caption_mapping(num_videos: int, rng: random.Random) -> list[int]:
    """Each video gets 1..5 captions (as MSVD), texts shuffled so a video's captions are not contiguous."""
    t2v = [v for v in range(num_videos) for _ in range(rng.randint(1, 5))]
    rng.shuffle(t2v)
    return t2v


# ----------------------------------------------------------------------------- random sims
@pytest.mark.parametrize("seed", range(5))
def test_one_caption_per_video_matches_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 37
    sims = torch.randn(n, n, generator=gen)
    perm = torch.randperm(n, generator=gen)  # text t belongs to video perm[t]
    ref_list, t2v_list = sims.tolist(), perm.tolist()

    assert t2v_ranks(sims, perm).tolist() == ref_t2v_ranks(ref_list, t2v_list)
    assert v2t_ranks(sims, perm).tolist() == ref_v2t_ranks(ref_list, t2v_list)
    assert_metrics_equal(t2v_metrics(sims, perm), ref_summary(ref_t2v_ranks(ref_list, t2v_list)))
    assert_metrics_equal(v2t_metrics(sims, perm), ref_summary(ref_v2t_ranks(ref_list, t2v_list)))


@pytest.mark.parametrize("seed", range(6))
def test_multi_caption_matches_reference(seed: int) -> None:
    rng = random.Random(seed)
    num_videos = 23
    t2v_list = multi_caption_mapping(num_videos, rng)
    sims_list = [[rng.gauss(0, 1) for _ in range(num_videos)] for _ in t2v_list]
    sims, t2v = torch.tensor(sims_list, dtype=torch.float64), torch.tensor(t2v_list, dtype=torch.long)
    sims_list = sims.tolist()

    want_t2v, want_v2t = ref_t2v_ranks(sims_list, t2v_list), ref_v2t_ranks(sims_list, t2v_list)
    assert t2v_ranks(sims, t2v).tolist() == want_t2v
    assert v2t_ranks(sims, t2v).tolist() == want_v2t
    assert t2v_ranks(sims, t2v).shape == (len(t2v_list),)
    assert v2t_ranks(sims, t2v).shape == (num_videos,)
    assert_metrics_equal(t2v_metrics(sims, t2v), ref_summary(want_t2v))
    assert_metrics_equal(v2t_metrics(sims, t2v), ref_summary(want_v2t))


@pytest.mark.parametrize("seed", range(4))
def test_heavily_tied_integer_sims_match_reference(seed: int) -> None:
    """Scores drawn from {0, 1, 2}: ties everywhere, including among a video's own captions."""
    rng = random.Random(100 + seed)
    num_videos = 15
    t2v_list = multi_caption_mapping(num_videos, rng)
    sims_list = [[float(rng.randint(0, 2)) for _ in range(num_videos)] for _ in t2v_list]
    sims, t2v = torch.tensor(sims_list), torch.tensor(t2v_list)

    assert t2v_ranks(sims, t2v).tolist() == ref_t2v_ranks(sims_list, t2v_list)
    assert v2t_ranks(sims, t2v).tolist() == ref_v2t_ranks(sims_list, t2v_list)
    assert_metrics_equal(v2t_metrics(sims, t2v), ref_summary(ref_v2t_ranks(sims_list, t2v_list)))


def test_v2t_takes_the_best_ranked_caption() -> None:
    # Video 0 has captions 0 and 1; video 1 has caption 2. Column 0 ranks caption 1 first.
    sims = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.7]])
    t2v = torch.tensor([0, 0, 1])
    # Video 0's column: [0.1, 0.8, 0.5] -> caption 1 ranks 1st.  Video 1's column: [0.9, 0.2, 0.7] -> caption 2 is 2nd.
    assert v2t_ranks(sims, t2v).tolist() == [1, 2]
    assert t2v_ranks(sims, t2v).tolist() == [2, 1, 1]


# ----------------------------------------------------------------------------- ties
@pytest.mark.parametrize(("num_texts", "num_videos"), [(5, 5), (12, 4), (7, 7)])
def test_all_equal_sims_give_worst_rank(num_texts: int, num_videos: int) -> None:
    t2v = torch.arange(num_texts) % num_videos
    sims = torch.full((num_texts, num_videos), 0.3)
    assert t2v_ranks(sims, t2v).tolist() == [num_videos] * num_texts
    assert v2t_ranks(sims, t2v).tolist() == [num_texts] * num_videos
    m = t2v_metrics(sims, t2v)
    assert m["R1"] == 0.0
    assert m["MdR"] == m["MnR"] == float(num_videos)
    assert v2t_metrics(sims, t2v)["R1"] == 0.0
    assert v2t_metrics(sims, t2v)["MnR"] == float(num_texts)


def test_all_equal_single_candidate_is_rank_one() -> None:
    sims = torch.full((1, 1), 0.5)
    t2v = torch.zeros(1, dtype=torch.long)
    assert t2v_metrics(sims, t2v)["R1"] == 100.0
    assert v2t_metrics(sims, t2v)["R1"] == 100.0
    # Several captions of the only video: t2v has a single candidate, so every text ranks 1st.
    sims = torch.full((3, 1), 0.5)
    t2v = torch.zeros(3, dtype=torch.long)
    assert t2v_metrics(sims, t2v) == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "R50": 100.0, "MdR": 1.0, "MnR": 1.0}


@pytest.mark.parametrize("target", [0, 1])
def test_tie_between_target_and_one_other_gives_the_worse_rank(target: int) -> None:
    sims = torch.tensor([[0.5, 0.5, 0.1, 0.4]])
    assert t2v_ranks(sims, torch.tensor([target])).tolist() == [2]
    assert t2v_metrics(sims, torch.tensor([target]))["R1"] == 0.0
    # v2t: two texts tie for video 0; only one of them is its caption.
    sims_v = torch.tensor([[0.5, 0.0], [0.5, 0.9], [0.2, 0.1]])
    t2v_v = torch.tensor([0, 1, 0]) if target == 0 else torch.tensor([1, 0, 0])
    # Video 0's own best caption is tied with the other text at 0.5 -> rank 2.
    assert v2t_ranks(sims_v, t2v_v)[0].item() == 2


def test_tie_below_the_target_does_not_matter() -> None:
    sims = torch.tensor([[0.9, 0.5, 0.5, 0.5]])
    assert t2v_ranks(sims, torch.tensor([0])).tolist() == [1]


# ----------------------------------------------------------------------------- summary statistics
@pytest.mark.parametrize("n", [1, 4, 9, 64])
def test_perfect_diagonal(n: int) -> None:
    sims = torch.eye(n) + 0.01 * torch.rand(n, n) * (1 - torch.eye(n))
    t2v = torch.arange(n)
    for m in (t2v_metrics(sims, t2v), v2t_metrics(sims, t2v)):
        assert m == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "R50": 100.0, "MdR": 1.0, "MnR": 1.0}


def test_median_rank_of_even_count_is_mean_of_middle_two() -> None:
    # Construct texts with known ranks 1, 2, 5, 8 over 10 videos (target is video 0).
    ranks_wanted = [1, 2, 5, 8]
    rows = []
    for r in ranks_wanted:
        row = [0.0] * 10
        row[0] = 0.5
        for j in range(1, r):
            row[j] = 1.0  # r - 1 videos strictly better
        rows.append(row)
    sims = torch.tensor(rows)
    t2v = torch.zeros(4, dtype=torch.long)
    assert t2v_ranks(sims, t2v).tolist() == ranks_wanted
    m = t2v_metrics(sims, t2v)
    assert m["MdR"] == 3.5  # (2 + 5) / 2, not the lower middle (2) torch.median would give
    assert m["MnR"] == 4.0
    assert m["R1"] == 25.0 and m["R5"] == 75.0 and m["R10"] == 100.0


def test_median_rank_of_odd_count() -> None:
    rows = []
    for r in (3, 1, 7):
        row = [0.0] * 10
        row[0] = 0.5
        for j in range(1, r):
            row[j] = 1.0
        rows.append(row)
    m = t2v_metrics(torch.tensor(rows), torch.zeros(3, dtype=torch.long))
    assert m["MdR"] == 3.0
    assert m["MnR"] == pytest.approx(11 / 3)


def test_recalls_are_percent_and_r50_needs_many_candidates() -> None:
    n = 120
    gen = torch.Generator().manual_seed(7)
    sims = torch.rand(n, n, generator=gen)
    t2v = torch.arange(n)
    m = t2v_metrics(sims, t2v)
    ranks = t2v_ranks(sims, t2v)
    assert m["R50"] == pytest.approx(100.0 * (ranks <= 50).double().mean().item())
    assert 0 < m["R50"] < 100  # a random model over 120 candidates
    assert m["R1"] <= m["R5"] <= m["R10"] <= m["R50"]


# ----------------------------------------------------------------------------- errors and chunking
@pytest.mark.parametrize(
    ("sims_shape", "t2v_shape"),
    [((4,), (4,)), ((4, 4, 1), (4,)), ((4, 3), (3,)), ((4, 3), (4, 1)), ((4, 3), (5,))],
)
@pytest.mark.parametrize("fn", [t2v_metrics, v2t_metrics, t2v_ranks, v2t_ranks])
def test_shape_errors_raise_value_error(fn, sims_shape, t2v_shape) -> None:
    sims = torch.rand(*sims_shape)
    t2v = torch.zeros(*t2v_shape, dtype=torch.long)
    with pytest.raises(ValueError, match="sims must be"):
        fn(sims, t2v)


def test_v2t_video_without_caption_raises() -> None:
    sims = torch.rand(3, 4)
    with pytest.raises(ValueError, match="caption"):
        v2t_metrics(sims, torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("seed", range(3))
def test_v2t_chunked_equals_default(chunk: int, seed: int) -> None:
    rng = random.Random(seed)
    num_videos = 19
    t2v = torch.tensor(multi_caption_mapping(num_videos, rng))
    gen = torch.Generator().manual_seed(seed)
    sims = torch.randn(len(t2v), num_videos, generator=gen)
    sims[::3] = sims[::3].round()  # some ties too
    assert torch.equal(v2t_ranks(sims, t2v, chunk=chunk), v2t_ranks(sims, t2v))
    assert v2t_ranks(sims, t2v, chunk=chunk).tolist() == ref_v2t_ranks(sims.tolist(), t2v.tolist())


def test_inputs_are_not_modified_and_results_are_on_cpu() -> None:
    sims = torch.randn(6, 6)
    t2v = torch.arange(6)
    before = sims.clone()
    t2v_metrics(sims, t2v)
    v2t_metrics(sims, t2v)
    assert torch.equal(sims, before)
    assert t2v_ranks(sims, t2v).device.type == "cpu"
    assert t2v_ranks(sims, t2v).dtype == torch.long
