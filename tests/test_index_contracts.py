"""VideoIndex contracts the other index tests cannot see (issue 12): wiring of ids, means and dtypes.

* **Ids stay paired with their videos** through build / add / save / load (mmap and not). The ids
  here are shuffled on purpose (random strings, numbers that sort differently as strings, unicode,
  a lone surrogate, the empty string), so an index that sorts, reverses or misaligns them cannot
  pass: every id's stored features and mean are compared with its own video's, a query built to
  match one video (its mean as the text target, ``prefilter_k=1``) must return that video's id,
  and every id's exact score must equal an independent reference (``similarity_matrix`` with
  ``method="naive"``, i.e. ``model.similarity``, on the original tensor in the original order).
* **float16 storage**: the stored (prefilter) means are the L2-normalised mean of the *stored*
  float16 frames, computed here in float64 from the loaded frames; the frames are built so that
  float16 rounding moves that mean far from the float32 frames' mean (large values that cancel).
* **dtypes at search**: a float16 index returns float32 scores equal to those of a float32 index
  built from the float16-rounded frames (exactly: the upcast is exact and both then run the same
  float32 code), and scores are float32 whatever the storage dtype or the query form.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import random_xpool_model
from tolerances import XPOOL_NAIVE_TOL, XPOOL_SCORE_TOL, assert_same_ranking, reduction_tol

from lsdo.model import LSDOModel, TextFeatures
from lsdo.retrieval import similarity_matrix
from lsdo.retrieval.index import META_FILE, VideoIndex

pytestmark = pytest.mark.timeout(120)

D, N = 512, 4
# Score tolerance against the naive reference: both sides are float32 X-Pool cosines computed in a different
# order (model.similarity vs the index's XPoolScorer); they differ by ~1e-7 here. Scores rounded to float16
# are told apart by their grid (test_fp16_index_scores_equal_fp32_index_of_the_rounded_frames).
SCORE_ATOL = XPOOL_NAIVE_TOL
# A stored mean is a unit vector, a float32 mean of N frames normalised over d (one reduction of scale 1); the
# mean itself rounds little: for the cancelling frames below exactly not at all (their float16 values are
# multiples of 0.5 under 2^11: float32 sums them exactly). A mean of the wrong frames is off by O(1).
MEAN_ATOL = reduction_tol(torch.float32, D)

SPECIAL_IDS = [
    "10",
    "9",
    "100",
    "2",
    "007",
    "7",  # numbers: "10" < "2" < "9" as strings
    "Z",
    "a",
    "A",
    "_",
    "caf\u00e9",
    "cafe\u0301",  # NFC and NFD: distinct strings, must stay distinct
    "\u65e5\u672c\u8a9e/\u30af\u30ea\u30c3\u30d7",
    "\U0001f600 emoji",
    "\u03a9mega",
    "clip 01/part (2).mp4",
    "two\\nlines",
    "tab\there",
    "sep\u2028x",
    "\udcff raw byte",  # a lone surrogate (an undecodable file name byte): index.json is then ASCII-escaped
    "",
]


def _shuffled_ids(count: int, seed: int) -> list[str]:
    """``count`` unique ids in an order that is neither sorted nor reversed in any usual sense."""
    rng = random.Random(seed)
    ids = list(SPECIAL_IDS)
    alphabet = "abcXYZ019-_./ \u00e4\u00df\u4e2d"
    while len(ids) < count:
        cand = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        if cand not in ids:
            ids.append(cand)
    ids = ids[:count]
    rng.shuffle(ids)
    for key in (None, lambda s: s.encode("utf-8", "surrogatepass"), lambda s: (len(s), s)):
        assert ids != sorted(ids, key=key) and ids != sorted(ids, key=key, reverse=True)
    return ids


V = 24
IDS = _shuffled_ids(V, seed=12)


@pytest.fixture(scope="module")
def model() -> LSDOModel:
    return random_xpool_model(5)


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    """f_m [V, N, D]: random frames (distinct videos; each video's mean is far from the others')."""
    return torch.randn(V, N, D, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def text() -> TextFeatures:
    gen = torch.Generator().manual_seed(4)
    query, target = torch.randn(5, D, generator=gen), torch.randn(5, D, generator=gen)
    return TextFeatures(query, target, query.clone())


def _cancelling_video(seed: int) -> torch.Tensor:
    """[V, N, D]: frames = signal +- 1000 / +- 1500 with offsets that cancel over the N=4 frames.

    The mean over frames is the small signal; float16 (spacing 0.5 at 1000, 1 at 1500) rounds the
    signal away in each frame, so the mean of the stored frames differs from the float32 frames'
    mean by O(1) relative: a mean taken from the wrong frames cannot pass a tolerance of 1e-6.
    """
    gen = torch.Generator().manual_seed(seed)
    signal = 0.5 * torch.randn(V, 1, D, generator=gen)
    sign = torch.randint(0, 2, (V, 1, D), generator=gen).float() * 2 - 1
    offsets = torch.tensor([1000.0, -1000.0, 1500.0, -1500.0]).view(1, N, 1) * sign
    return signal + offsets


def _reference_means(frames: torch.Tensor) -> torch.Tensor:
    """Normalised mean over frames, in float64 from the given frames: [V, n, d] -> [V, d]."""
    mean = frames.to(torch.float64).mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


def _round_trip(index: VideoIndex, root: Path, mmap: bool) -> VideoIndex:
    index.save(root)
    return VideoIndex.load(root, mmap=mmap)


def _check_pairing(
    index: VideoIndex, model: LSDOModel, by_id: dict[str, torch.Tensor], order: list[str], text: TextFeatures
) -> None:
    """``index`` holds exactly the videos ``by_id`` (id -> frames [n, d] as stored), in ``order``."""
    assert index.ids == order
    assert len(index) == len(order) == index.features.shape[0] == index.means.shape[0]
    for i, vid in enumerate(index.ids):
        assert torch.equal(index.features[i], by_id[vid].to(index.dtype)), f"features of {vid!r}"  # a cast copy
        torch.testing.assert_close(
            index.means[i].double(), _reference_means(by_id[vid].to(index.dtype)[None])[0], rtol=0, atol=MEAN_ATOL
        )
    # a query matching one video (its mean as the prefilter target) finds that video's id, for each id
    rng = random.Random(len(order))
    wanted = rng.sample(order, len(order))  # the queries in another order than the index
    target = torch.stack([by_id[vid].float().mean(dim=0) for vid in wanted])
    match = TextFeatures(target, target, target)
    _, found = index.search(model, match, topk=1, prefilter_k=1)
    assert [index.ids[j] for j in found[:, 0].tolist()] == wanted
    # every id's exact score equals the reference score of its own video
    frames = torch.stack([by_id[vid].to(index.dtype).float() for vid in wanted])
    ref = similarity_matrix(model, text, frames, method="naive")  # [T, V] in the order of `wanted`
    for prefilter_k in (None, len(order) // 2):
        scores, found = index.search(model, text, topk=len(order), prefilter_k=prefilter_k)
        assert scores.dtype == torch.float32
        for t in range(len(text)):
            got = {index.ids[j]: s for j, s in zip(found[t].tolist(), scores[t].tolist(), strict=True)}
            assert len(got) == scores.shape[1]
            for vid, score in got.items():
                assert abs(score - ref[t, wanted.index(vid)].item()) <= SCORE_ATOL, (prefilter_k, t, vid)


# ---------------------------------------------------------------------------------------------
# ids <-> videos
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mmap", [False, True])
def test_shuffled_ids_stay_paired_through_save_and_load(
    model: LSDOModel, video: torch.Tensor, text: TextFeatures, tmp_path: Path, mmap: bool, dtype: torch.dtype
) -> None:
    by_id = dict(zip(IDS, video, strict=True))
    index = VideoIndex.build(model, video, IDS, dtype=dtype)
    _check_pairing(index, model, by_id, IDS, text)
    loaded = _round_trip(index, tmp_path / "idx", mmap)
    assert json.loads((tmp_path / "idx" / META_FILE).read_text(encoding="utf-8"))["ids"] == IDS
    _check_pairing(loaded, model, by_id, IDS, text)
    assert torch.equal(loaded.means, index.means)  # the stored bytes read back


@pytest.mark.parametrize("mmap", [False, True])
def test_add_in_two_halves_keeps_ids_paired(
    model: LSDOModel, video: torch.Tensor, text: TextFeatures, tmp_path: Path, mmap: bool
) -> None:
    """Build half, save, load, add the other half (shuffled ids), save, load: the same as one build."""
    by_id = dict(zip(IDS, video, strict=True))
    cut = 11  # uneven halves
    first = _round_trip(VideoIndex.build(model, video[:cut], IDS[:cut]), tmp_path / "a", mmap)
    first.add(model, video[cut:], IDS[cut:])
    _check_pairing(first, model, by_id, IDS, text)
    grown = _round_trip(first, tmp_path / "b", mmap)
    _check_pairing(grown, model, by_id, IDS, text)
    whole = VideoIndex.build(model, video, IDS)
    assert grown.ids == whole.ids and torch.equal(grown.features, whole.features)  # the given frames: copies
    torch.testing.assert_close(grown.means, whole.means, rtol=0, atol=MEAN_ATOL)  # computed per added batch
    assert grown.meta["num_videos"] == V


# ---------------------------------------------------------------------------------------------
# float16 storage: the means are those of the stored frames
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [False, True])
def test_fp16_means_are_the_mean_of_the_stored_fp16_frames(model: LSDOModel, tmp_path: Path, mmap: bool) -> None:
    video = _cancelling_video(seed=7)
    stored = video.half()
    assert torch.isfinite(stored).all()
    from_stored, from_fp32 = _reference_means(stored), _reference_means(video)
    assert (from_stored - from_fp32).norm(dim=-1).min() > 0.2  # the two candidate means really differ

    cut = 9
    built = VideoIndex.build(model, video, IDS, dtype=torch.float16)
    grown = VideoIndex.build(model, video[:cut], IDS[:cut], dtype=torch.float16)
    grown.add(model, video[cut:], IDS[cut:])  # the added half's means too
    for name, index in (("built", built), ("grown", grown)):
        loaded = _round_trip(index, tmp_path / name, mmap)
        assert loaded.dtype == torch.float16 and loaded.means.dtype == torch.float32
        assert torch.equal(loaded.features, stored)
        # independent reference: from the loaded frames, cast up, averaged and normalised in float64
        torch.testing.assert_close(loaded.means.double(), _reference_means(loaded.features), rtol=0, atol=MEAN_ATOL)
        torch.testing.assert_close(index.means.double(), from_stored, rtol=0, atol=MEAN_ATOL)
        # and the prefilter uses them: each stored mean as a query finds its own video first
        cand = loaded.prefilter(from_stored.float(), 1)
        assert cand[:, 0].tolist() == list(range(V))


# ---------------------------------------------------------------------------------------------
# dtypes at search
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [False, True])
def test_fp16_index_scores_equal_fp32_index_of_the_rounded_frames(
    model: LSDOModel, video: torch.Tensor, text: TextFeatures, tmp_path: Path, mmap: bool
) -> None:
    """float16 -> float32 is exact, then both indexes run the same float32 code on the same values.

    Bitwise for the full protocol (both score float32 frames in fresh or aligned memory); with the prefilter,
    the loaded index's means sit at the file's offset, where MKL may round the prefilter's products
    otherwise: the same ranking, scores within XPOOL_SCORE_TOL.
    """
    rounded = video.half().float()
    half = _round_trip(VideoIndex.build(model, video, IDS, dtype=torch.float16), tmp_path / "half", mmap)
    full = VideoIndex.build(model, rounded, IDS)
    assert half.dtype == torch.float16 and full.dtype == torch.float32
    assert torch.equal(half.means, full.means)  # bitwise: mean_pool upcasts the same values, the same ops
    ref = similarity_matrix(model, text, rounded, method="naive")  # [T, V]
    for prefilter_k in (None, 8):
        for kwargs in ({}, {"accum_dtype": torch.float32}, {"video_chunk": 5}):
            h, f = half.search(model, text, topk=6, prefilter_k=prefilter_k, **kwargs)
            r = full.search(model, text, topk=6, prefilter_k=prefilter_k, **kwargs)
            assert h.dtype == r[0].dtype == torch.float32 and f.dtype == torch.long
            if prefilter_k is None:
                assert torch.equal(h, r[0]) and torch.equal(f, r[1]), kwargs
            else:
                assert_same_ranking((h, f), r, XPOOL_SCORE_TOL, msg=(prefilter_k, kwargs))
            torch.testing.assert_close(h, ref.gather(1, f).float(), rtol=0, atol=SCORE_ATOL)
            assert not torch.equal(h, h.half().float())  # float32 scores, not rounded to float16's grid
    # queries given as strings (encoded by the model here): scores float32 too, the same on both indexes
    queries = ["a red circle moves left", "a small blue square"]
    for prefilter_k in (None, 8):
        h = half.search(model, queries, topk=4, prefilter_k=prefilter_k)
        r = full.search(model, queries, topk=4, prefilter_k=prefilter_k)
        assert h[0].dtype == r[0].dtype == torch.float32
        if prefilter_k is None:
            assert torch.equal(h[0], r[0]) and torch.equal(h[1], r[1])
        else:
            assert_same_ranking(h, r, XPOOL_SCORE_TOL, msg=prefilter_k)
