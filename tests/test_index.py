"""Persistent video index (lsdo.retrieval.index) and its command-line tools (lsdo.cli.index, lsdo.cli.search).

Search results are checked against the brute-force :func:`similarity_matrix` / :func:`prefilter_scores`
on random frame features; the X-Pool parameters are randomised so that an identity init cannot
hide a wrong map. The CLI runs in-process on a tiny synthetic export with a random-init checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import random_checkpoint, random_xpool_model
from safetensors.torch import load_file
from tolerances import XPOOL_SCORE_TOL, assert_same_ranking, reduction_tol

from lsdo.cli.index import index_main
from lsdo.cli.search import search_main
from lsdo.errors import LSDOUserError
from lsdo.model import LSDOModel, TextFeatures
from lsdo.retrieval import fast_similarity, prefilter_scores, similarity_matrix
from lsdo.retrieval.index import FEATURES_FILE, META_FILE, VideoIndex, faiss_available, model_fingerprint

pytestmark = pytest.mark.timeout(120)

D = 512
V, N, T = 300, 6, 7  # 300 videos: not a multiple of the chunk sizes used below
# The index scores its videos in other blocks than similarity_matrix (chunks, a prefilter's candidates) and,
# once loaded, on rows at another alignment: X-Pool scores agree to XPOOL_SCORE_TOL, the ranking alike.
# Float32 accumulation of the Gram forms (sums of at most N x N < d terms) is one float32 stage more.
F32_ACCUM_TOL = reduction_tol(torch.float32, D, stages=5)
# Region scores: cosines of unit vectors, a normalisation and a dot product over d.
REGION_TOL = reduction_tol(torch.float32, D, stages=2)


@pytest.fixture(scope="module", params=["paper", "official"])
def any_model(request: pytest.FixtureRequest) -> LSDOModel:
    extra = ["impl=official"] if request.param == "official" else []
    return random_xpool_model(1, *extra)


@pytest.fixture(scope="module")
def model() -> LSDOModel:
    return random_xpool_model(1)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, TextFeatures, list[str]]:
    """video f_m [V, N, D], T texts (target correlated with a few videos), ids."""
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(V, N, D, generator=gen)
    query = torch.randn(T, D, generator=gen)
    target = torch.randn(T, D, generator=gen) + 0.5 * video[torch.arange(T) * 10].mean(dim=1)
    return video, TextFeatures(query, target, query), [f"clips/v{i:03d}" for i in range(V)]


def _brute_topk(model: LSDOModel, text: TextFeatures, video: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    sims = similarity_matrix(model, text, video)  # [T, V]
    order = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return sims.gather(1, order), order


# ---------------------------------------------------------------------------------------------
# search semantics
# ---------------------------------------------------------------------------------------------


def test_full_search_equals_brute_force(any_model: LSDOModel, data) -> None:
    video, text, ids = data
    index = VideoIndex.build(any_model, video, ids)
    scores, found = index.search(any_model, text, topk=10, video_chunk=128)  # 3 chunks, the last partial
    ref_s, ref_i = _brute_topk(any_model, text, video, 10)
    assert scores.shape == found.shape == (T, 10) and found.dtype == torch.long
    assert_same_ranking((scores, found), (ref_s, ref_i), XPOOL_SCORE_TOL)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_prefilter_k_at_least_v_is_the_full_protocol(model: LSDOModel, data) -> None:
    video, text, ids = data
    index = VideoIndex.build(model, video, ids)
    full = index.search(model, text, topk=10)
    for k in (V, V + 50):
        got = index.search(model, text, topk=10, prefilter_k=k)
        # bitwise: prefilter_k >= V takes the full protocol's code path, the same ops
        assert torch.equal(got[0], full[0]) and torch.equal(got[1], full[1])


def test_small_prefilter_reranks_the_mean_pool_top_k(any_model: LSDOModel, data) -> None:
    video, text, ids = data
    index = VideoIndex.build(any_model, video, ids)
    scores, found = index.search(any_model, text, topk=5, prefilter_k=20)
    coarse = prefilter_scores(text, video, 20).candidates  # [T, 20]
    for row, cand in zip(found.tolist(), coarse.tolist(), strict=True):
        assert set(row) <= set(cand)
    # exact X-Pool scores at those videos, and the same top-k as fast_similarity
    sims = similarity_matrix(any_model, text, video)
    torch.testing.assert_close(scores, sims.gather(1, found), rtol=0, atol=XPOOL_SCORE_TOL)
    fast = fast_similarity(any_model, text, video, prefilter_k=20)
    best = fast.sort(dim=1, descending=True, stable=True)
    assert_same_ranking((scores, found), (best.values[:, :5], best.indices[:, :5]), XPOOL_SCORE_TOL)
    # float32 accumulation: the same ranking, scores within float32 rounding
    f32 = index.search(any_model, text, topk=5, prefilter_k=20, accum_dtype=torch.float32)
    assert_same_ranking(f32, (scores, found), F32_ACCUM_TOL)


def test_topk_is_clipped_and_strings_are_encoded(model: LSDOModel, data) -> None:
    video, text, ids = data
    index = VideoIndex.build(model, video[:12], ids[:12])
    assert index.search(model, text, topk=50)[1].shape == (T, 12)
    assert index.search(model, text, topk=50, prefilter_k=4)[1].shape == (T, 4)
    scores, found = index.search(model, ["a man sings", "a dog runs"], topk=3)
    assert scores.shape == found.shape == (2, 3)
    with pytest.raises(ValueError, match="topk"):
        index.search(model, text, topk=0)
    with pytest.raises(ValueError, match="prefilter_k"):
        index.search(model, text, prefilter_k=0)


def test_build_validates_inputs(model: LSDOModel, data) -> None:
    video, _, ids = data
    with pytest.raises(ValueError, match="unique"):
        VideoIndex.build(model, video[:3], ["a", "b", "a"])
    with pytest.raises(ValueError, match="3 videos but 2 ids"):
        VideoIndex.build(model, video[:3], ["a", "b"])
    with pytest.raises(ValueError, match=r"\[V, n, d\]"):
        VideoIndex.build(model, video[0], ["a"])
    with pytest.raises(ValueError, match="embedding size"):
        VideoIndex.build(model, video[:2, :, :64], ["a", "b"])
    with pytest.raises(TypeError, match="strings"):
        VideoIndex.build(model, video[:2], ["a", 3])


def test_add_equals_building_at_once(model: LSDOModel, data) -> None:
    video, text, ids = data
    whole = VideoIndex.build(model, video, ids)
    grown = VideoIndex.build(model, video[:100], ids[:100])
    grown.add(model, video[100:], ids[100:])
    # the means are computed per added batch: unit vectors, a mean over N frames normalised over d
    assert grown.ids == whole.ids
    torch.testing.assert_close(grown.means, whole.means, rtol=0, atol=reduction_tol(torch.float32, D))
    got, ref = grown.search(model, text, prefilter_k=30), whole.search(model, text, prefilter_k=30)
    assert_same_ranking(got, ref, XPOOL_SCORE_TOL)
    with pytest.raises(ValueError, match="already in the index"):
        grown.add(model, video[:1], ids[:1])


# ---------------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip_fp32(model: LSDOModel, data, tmp_path: Path, mmap: bool) -> None:
    video, text, ids = data
    index = VideoIndex.build(model, video, ids, info={"note": "test"})
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [FEATURES_FILE, META_FILE]
    loaded = VideoIndex.load(tmp_path / "idx", mmap=mmap)
    assert loaded.ids == ids and loaded.meta == index.meta and loaded.dtype == torch.float32
    assert loaded.meta["created"]["note"] == "test"
    for k in (None, 25):
        a, b = index.search(model, text, topk=10, prefilter_k=k), loaded.search(model, text, topk=10, prefilter_k=k)
        # the same rows and ops, but the loaded rows sit at the file's offset: MKL takes other kernels
        assert_same_ranking(a, b, XPOOL_SCORE_TOL, msg=k)


def test_fp16_storage(model: LSDOModel, data, tmp_path: Path) -> None:
    video, text, ids = data
    full = VideoIndex.build(model, video, ids)
    half = VideoIndex.build(model, video, ids, dtype=torch.float16)
    half.save(tmp_path / "half")
    full.save(tmp_path / "full")
    size = {n: (tmp_path / n / FEATURES_FILE).stat().st_size for n in ("half", "full")}
    assert size["half"] < 0.6 * size["full"]
    loaded = VideoIndex.load(tmp_path / "half")
    assert loaded.dtype == torch.float16 and loaded.meta["dtype"] == "float16"
    for k in (None, 25):
        h, r = half.search(model, text, prefilter_k=k), loaded.search(model, text, prefilter_k=k)
        assert_same_ranking(h, r, XPOOL_SCORE_TOL)  # the same rows, loaded at another alignment
        f = full.search(model, text, prefilter_k=k)
        # float16 rounding of the features: each moves by at most eps16 / 2 relative, on the key and on the
        # frame side of a cosine (scale 1): eps16 in all, far above the float32 reductions' rounding
        torch.testing.assert_close(h[0], f[0], rtol=0, atol=torch.finfo(torch.float16).eps)
        assert (h[1] == f[1]).float().mean() >= 0.9


def _corrupt(root: Path, how: str) -> str:
    """Damage a saved index; returns the file name the error must mention."""
    meta, feats = root / META_FILE, root / FEATURES_FILE
    if how == "missing_meta":
        meta.unlink()
        return META_FILE
    if how == "missing_features":
        feats.unlink()
        return FEATURES_FILE
    if how == "bad_json":
        meta.write_text(meta.read_text()[:50])
        return META_FILE
    if how == "version":
        doc = json.loads(meta.read_text())
        meta.write_text(json.dumps({**doc, "version": 99}))
        return META_FILE
    if how == "ids_mismatch":  # a consistent index.json for one video fewer than the features hold
        doc = json.loads(meta.read_text())
        meta.write_text(json.dumps({**doc, "ids": doc["ids"][:-1], "num_videos": doc["num_videos"] - 1}))
        return FEATURES_FILE
    if how == "count_mismatch":
        doc = json.loads(meta.read_text())
        meta.write_text(json.dumps({**doc, "num_videos": 5}))
        return META_FILE
    if how == "truncated":
        data = feats.read_bytes()
        feats.write_bytes(data[: len(data) // 2])
        return FEATURES_FILE
    if how == "garbage":
        feats.write_bytes(b"\x00" * 100)
        return FEATURES_FILE
    raise AssertionError(how)


DAMAGE = ["missing_meta", "missing_features", "bad_json", "version", "ids_mismatch", "count_mismatch", "truncated"]


@pytest.mark.parametrize("how", [*DAMAGE, "garbage"])
@pytest.mark.parametrize("mmap", [False, True])
def test_damaged_index_is_a_one_line_error(model: LSDOModel, data, tmp_path: Path, how: str, mmap: bool) -> None:
    video, _, ids = data
    root = VideoIndex.build(model, video[:20], ids[:20]).save(tmp_path / "idx")
    name = _corrupt(root, how)
    with pytest.raises(LSDOUserError) as info:
        VideoIndex.load(root, mmap=mmap)
    msg = str(info.value)
    assert name in msg and "\n" not in msg


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LSDOUserError, match="does not exist"):
        VideoIndex.load(tmp_path / "nope")


def test_fingerprint_mismatch_is_a_one_line_error(model: LSDOModel, data) -> None:
    video, text, ids = data
    index = VideoIndex.build(model, video[:20], ids[:20])
    assert index.fingerprint == model_fingerprint(model)
    other = random_xpool_model(2)
    assert model_fingerprint(other) != index.fingerprint
    with pytest.raises(LSDOUserError, match="another model") as info:
        index.search(other, text)
    assert "\n" not in str(info.value)
    index.search(other, text, check_model=False)  # explicitly skipped


# ---------------------------------------------------------------------------------------------
# FAISS prefilter
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed (pip install faiss-cpu)")
def test_faiss_prefilter_matches_torch(model: LSDOModel, data) -> None:
    video, text, ids = data
    index = VideoIndex.build(model, video, ids)
    torch_cand = index.prefilter(text, 20)
    ref = index.search(model, text, topk=5, prefilter_k=20)
    index.faiss_threshold = 0  # force FAISS (IndexFlatIP)
    faiss_cand = index.prefilter(text, 20)
    assert type(index.faiss_index()).__name__ == "IndexFlatIP"
    for a, b in zip(torch_cand.tolist(), faiss_cand.tolist(), strict=True):
        assert set(a) == set(b)
    got = index.search(model, text, topk=5, prefilter_k=20)
    # bitwise: the same candidate sets (checked above), re-ranked in ascending video order: the same ops
    assert torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    # IVF probing every list is exhaustive: the same candidates
    ivf = VideoIndex.build(model, video, ids, faiss_nlist=8, faiss_nprobe=8)
    for a, b in zip(torch_cand.tolist(), ivf.prefilter(text, 20).tolist(), strict=True):
        assert set(a) == set(b)
    # one probed list of ~V/64 videos cannot fill k=100: those texts fall back to the exact prefilter
    sparse = VideoIndex.build(model, video, ids, faiss_nlist=64, faiss_nprobe=1)
    cand = sparse.prefilter(text, 100)
    assert cand.shape == (T, 100) and (cand >= 0).all()


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _checkpoint(path: Path, seed: int) -> Path:
    return random_checkpoint(path, seed)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny export's videos/ (180 clips) plus a zero-byte and a text file, and two random checkpoints."""
    from lsdo.data.synth_export import export

    root = tmp_path_factory.mktemp("corpus")
    export(root / "synth", size=32, workers=1, val_combos=3, test_combos=6, train_videos_per_combo=1, clip_len=6)
    videos = root / "synth" / "videos"
    (videos / "broken").mkdir()
    (videos / "broken" / "empty.mp4").write_bytes(b"")
    (videos / "notes.avi").write_text("not a video\n")
    (videos / "README.txt").write_text("ignored: not a video extension\n")
    return {"videos": videos, "ckpt": _checkpoint(root / "a.ckpt", 0), "other": _checkpoint(root / "b.ckpt", 1)}


def _count_encoded(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[int]:
    """Count the videos passed to LSDOModel.encode_video; optionally simulate a kill after some batches."""
    seen: list[int] = []
    original = LSDOModel.encode_video

    def counting(self: LSDOModel, frames: torch.Tensor, *args, **kwargs):
        if fail_after is not None and len(seen) >= fail_after:
            raise KeyboardInterrupt
        seen.append(frames.shape[0])
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(LSDOModel, "encode_video", counting)
    return seen


def test_cli_build_resume_and_search(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    common = [f"ckpt={corpus['ckpt']}", f"videos={corpus['videos']}", "num_frames=4", "batch_size=8", "shard_size=32"]
    num_files = 182  # 180 clips + empty.mp4 + notes.avi (README.txt is not a video extension)

    # uninterrupted reference build
    ref = tmp_path / "ref"
    seen = _count_encoded(monkeypatch)
    assert index_main(["build", *common, f"out={ref}"]) == 0
    out = capsys.readouterr()
    assert f"indexed 180 videos, skipped 2 (unreadable; listed in {ref / 'skipped.txt'})" in out.out
    assert "skipped broken/empty.mp4: zero-byte" in out.err and "skipped notes.avi" in out.err
    assert sum(seen) == 180
    skipped = (ref / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == ["broken/empty.mp4", "notes.avi"]
    assert not (ref / ".partial").exists()
    index = VideoIndex.load(ref)
    assert len(index) == 180 and index.ids == sorted(index.ids) and "synth_test_000_0" in index.ids
    assert index.num_frames == 4 and index.meta["created"]["ckpt"] == str(corpus["ckpt"])

    # a kill after 5 batches: shard 0 (32 files) is on disk, no index yet
    part = tmp_path / "part"
    monkeypatch.undo()
    _count_encoded(monkeypatch, fail_after=5)
    assert index_main(["build", *common, f"out={part}"]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    shard = json.loads((part / ".partial" / "shard_0000.json").read_text())
    assert not (part / META_FILE).exists() and not (part / ".partial" / "shard_0001.json").exists()
    done = len(shard["ids"]) + len(shard["skipped"])
    assert done == 32

    # the rerun encodes only the rest and gives the same index
    monkeypatch.undo()
    seen = _count_encoded(monkeypatch)
    assert index_main(["build", *common, f"out={part}"]) == 0
    assert sum(seen) == 180 - len(shard["ids"])
    assert "resuming: 32 of 182 videos already processed" in capsys.readouterr().err
    resumed = VideoIndex.load(part)
    # bitwise: shards of 32 files are whole batches of 8, so the resumed build encodes the same batches
    assert resumed.ids == index.ids and torch.equal(resumed.features, index.features)
    assert not (part / ".partial").exists() and num_files == 182

    # a complete index is not overwritten by accident
    assert index_main(["build", *common, f"out={part}"]) == 2
    assert "already holds an index" in capsys.readouterr().err

    # search: one block per query, topk lines each, both option forms
    monkeypatch.undo()
    args = [f"index={ref}", f"ckpt={corpus['ckpt']}", "a red circle", "a blue square moves", "--topk", "3"]
    assert search_main(args) == 0
    blocks = capsys.readouterr().out.strip().split("\n\n")
    assert len(blocks) == 2 and blocks[0].startswith("query: a red circle")
    for block in blocks:
        lines = block.splitlines()[1:]
        assert len(lines) == 3
        ranks, scores, found = zip(*(line.split() for line in lines), strict=True)
        assert ranks == ("1", "2", "3") and all(f in index.ids for f in found)
        assert list(map(float, scores)) == sorted(map(float, scores), reverse=True)
    assert search_main([f"index={ref}", f"ckpt={corpus['ckpt']}", "topk=2", "prefilter_k=10", "a red circle"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3

    # another checkpoint: a one-line error, exit code 2
    assert search_main([f"index={ref}", f"ckpt={corpus['other']}", "a red circle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: index") and "another model" in err[0]


def test_cli_user_errors(corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (index_main, ["build", f"videos={corpus['videos']}", f"out={tmp_path / 'i'}"], "ckpt=..."),
        (index_main, ["build", f"ckpt={corpus['ckpt']}", f"videos={tmp_path}/none", f"out={tmp_path}/i"], "videos:"),
        (index_main, ["frobnicate"], "unknown command"),
        (search_main, [f"index={tmp_path}/none", f"ckpt={corpus['ckpt']}", "q"], "does not exist"),
        (search_main, [f"index={tmp_path}", f"ckpt={corpus['ckpt']}"], "at least one query"),
        (search_main, [f"index={tmp_path}", f"ckpt={corpus['ckpt']}", "--topk", "zero", "q"], "topk: expected"),
    ]
    for fn, argv, expected in cases:
        assert fn(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (argv, err)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_as_subprocess(corpus: dict[str, Path], tmp_path: Path) -> None:
    """``python -m lsdo.cli.index`` / ``lsdo.cli.search``: the real entry points, exit codes and output streams."""
    import subprocess
    import sys

    def run(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", f"lsdo.cli.{argv[0]}", *argv[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240)

    out = tmp_path / "idx"
    done = run("index", "build", f"ckpt={corpus['ckpt']}", f"videos={corpus['videos']}", f"out={out}", "num_frames=2")
    assert done.returncode == 0, done.stderr
    assert "indexed 180 videos, skipped 2" in done.stdout
    found = run("search", f"index={out}", f"ckpt={corpus['ckpt']}", "a red circle", "--topk", "4")
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.strip().splitlines()) == 5
    bad = run("search", f"index={out}", f"ckpt={corpus['other']}", "a red circle")
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: index")


# ---------------------------------------------------------------------------------------------
# region embeddings (training-free LAFM search over stored frame x region sets)
# ---------------------------------------------------------------------------------------------

SLOTS = 5  # 1 global + K=4 regions per frame


@pytest.fixture(scope="module")
def region_data(data) -> tuple[torch.Tensor, torch.Tensor]:
    """regions [V, N, SLOTS, D] L2-normalised (a few close to the texts' f_t) and mask [V, N, SLOTS] (global valid)."""
    _, text, _ = data
    gen = torch.Generator().manual_seed(3)
    regions = torch.randn(V, N, SLOTS, D, generator=gen)
    regions[torch.arange(T) * 7, 1, 2] += 3 * text.eos  # a planted region per text
    mask = torch.rand(V, N, SLOTS, generator=gen) > 0.3
    mask[..., 0] = True
    mask[torch.arange(T) * 7, 1, 2] = True
    return torch.nn.functional.normalize(regions, dim=-1), mask


def _brute_regions(text_emb: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[T, V]: max over frames x valid slots of cos(text, member), written out directly."""
    t = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    v = torch.nn.functional.normalize(regions.float(), dim=-1)
    cos = torch.einsum("td,vnsd->tvns", t, v).masked_fill(~mask[None], float("-inf"))
    return cos.flatten(2).max(dim=2).values


def test_region_search_equals_brute_force(model: LSDOModel, data, region_data) -> None:
    video, text, ids = data
    regions, mask = region_data
    index = VideoIndex.build(model, video, ids, regions=regions, region_mask=mask, region_info={"method": "grid"})
    assert index.has_regions and index.meta["regions"] == {"method": "grid", "num_regions": SLOTS - 1}
    sims = _brute_regions(text.eos, regions, mask)  # [T, V]
    ref_s, ref_i = sims.sort(dim=1, descending=True, stable=True)
    scores, found = index.search_regions(text.eos, topk=8, video_chunk=64)  # 5 chunks, the last partial
    assert_same_ranking((scores, found), (ref_s[:, :8], ref_i[:, :8]), REGION_TOL)
    assert (found[:, 0] == torch.arange(T) * 7).all()
    via_search = index.search(model, text, topk=8, mode="regions")  # text.eos = f_t
    # bitwise: mode="regions" calls search_regions with the same text and chunk: the same ops
    assert torch.equal(via_search[1], found) and torch.equal(via_search[0], scores)
    # both = X-Pool + regions, exhaustive and with the prefilter (re-ranking the mean-pool candidates)
    both = similarity_matrix(model, text, video) + sims
    b_s, b_i = index.search(model, text, topk=5, mode="both", video_chunk=128)
    ref = both.sort(dim=1, descending=True, stable=True)
    assert_same_ranking((b_s, b_i), (ref.values[:, :5], ref.indices[:, :5]), XPOOL_SCORE_TOL + REGION_TOL)
    p_s, p_i = index.search(model, text, topk=5, prefilter_k=20, mode="both")
    torch.testing.assert_close(p_s, both.gather(1, p_i), rtol=0, atol=XPOOL_SCORE_TOL + REGION_TOL)
    with pytest.raises(ValueError, match="prefilter_k"):
        index.search(model, text, prefilter_k=20, mode="regions")
    with pytest.raises(ValueError, match="mode"):
        index.search(model, text, mode="frames")


@pytest.mark.parametrize("mmap", [False, True])
def test_region_index_round_trip(model: LSDOModel, data, region_data, tmp_path: Path, mmap: bool) -> None:
    video, text, ids = data
    regions, mask = region_data
    for dtype in (torch.float32, torch.float16):
        index = VideoIndex.build(model, video, ids, dtype=dtype, regions=regions, region_mask=mask)
        assert index.regions.dtype == dtype and index.region_mask.dtype == torch.bool
        root = index.save(tmp_path / str(dtype))
        loaded = VideoIndex.load(root, mmap=mmap)
        assert loaded.meta == index.meta and loaded.regions.shape == (V, N, SLOTS, D)
        assert torch.equal(loaded.regions, index.regions) and torch.equal(loaded.region_mask, mask)  # stored bytes
        a, b = index.search_regions(text.eos, 10), loaded.search_regions(text.eos, 10)
        assert_same_ranking(a, b, REGION_TOL)  # the same rows, loaded at another alignment
    # add keeps the sets in step with the videos
    grown = VideoIndex.build(model, video[:100], ids[:100], regions=regions[:100], region_mask=mask[:100])
    grown.add(model, video[100:], ids[100:], regions[100:], mask[100:])
    # the given regions, cast and stored: copies
    assert torch.equal(grown.regions, VideoIndex.build(model, video, ids, regions=regions, region_mask=mask).regions)
    with pytest.raises(ValueError, match="region"):
        grown.add(model, video[:1], ["new"])


def test_index_without_regions_refuses_region_search(model: LSDOModel, data, tmp_path: Path) -> None:
    video, text, ids = data
    root = VideoIndex.build(model, video[:20], ids[:20]).save(tmp_path / "plain")
    doc = json.loads((root / META_FILE).read_text())
    assert "regions" not in doc  # the original format, unchanged
    from safetensors import safe_open

    with safe_open(str(root / FEATURES_FILE), "pt") as fh:
        assert sorted(fh.keys()) == ["features", "means"]
    index = VideoIndex.load(root)
    assert not index.has_regions
    for call in (lambda: index.search_regions(text.eos), lambda: index.search(model, text, mode="both")):
        with pytest.raises(LSDOUserError, match="no region embeddings") as info:
            call()
        assert "\n" not in str(info.value)


def test_cli_region_index_build_resume_and_search(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    common = [f"ckpt={corpus['ckpt']}", f"videos={corpus['videos']}", "num_frames=2", "batch_size=8", "shard_size=64"]
    common += ["region_encoder=grid", "grid=2", "fp16=true"]
    ref = tmp_path / "ref"
    assert index_main(["build", *common, f"out={ref}"]) == 0
    capsys.readouterr()
    index = VideoIndex.load(ref)
    assert index.regions.shape == (180, 2, SLOTS, index.dim) and index.regions.dtype == torch.float16
    assert index.region_mask.all() and index.meta["regions"]["method"] == "grid"
    assert index.meta["regions"]["num_regions"] == 4 and index.meta["regions"]["grid"] == 2
    norms = index.regions.float().norm(dim=-1)
    # float16 storage: each element of a unit vector rounds by at most eps16 / 2 relative, so does its norm;
    # times the safety factor of tests/tolerances.py (4)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=4 * torch.finfo(torch.float16).eps / 2)

    # interrupted after shard 0, then resumed: the same index, regions included
    part = tmp_path / "part"
    _count_encoded(monkeypatch, fail_after=8)
    assert index_main(["build", *common, f"out={part}"]) == 130
    shard = load_file(str(part / ".partial" / "shard_0000.safetensors"))
    assert sorted(shard) == ["features", "region_mask", "regions"]
    monkeypatch.undo()
    seen = _count_encoded(monkeypatch)
    assert index_main(["build", *common, f"out={part}"]) == 0
    assert sum(seen) < 180 and "resuming: 64 of 182" in capsys.readouterr().err
    resumed = VideoIndex.load(part)
    # bitwise: shards of 64 files are whole batches of 8, so the resumed build encodes the same batches
    assert resumed.ids == index.ids and torch.equal(resumed.features, index.features)
    assert torch.equal(resumed.regions, index.regions) and torch.equal(resumed.region_mask, index.region_mask)
    monkeypatch.undo()

    # region_mode=regions / both print ranked results; an index without regions is a one-line error
    for mode in ("regions", "both"):
        assert search_main([f"index={ref}", f"ckpt={corpus['ckpt']}", f"region_mode={mode}", "topk=3", "a red"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 4 and "best frame x region" in lines[0]
    plain = tmp_path / "plain"
    VideoIndex.build(index_model(corpus), index.features[:5].float(), index.ids[:5]).save(plain)
    assert search_main([f"index={plain}", f"ckpt={corpus['ckpt']}", "region_mode=regions", "a red circle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no region embeddings" in err[0]
    assert index_main(["build", *common[:-3], "region_encoder=boxes", f"out={tmp_path / 'x'}"]) == 2
    assert "region_encoder: expected one of" in capsys.readouterr().err


def index_model(corpus: dict[str, Path]) -> LSDOModel:
    from lsdo.checkpoint import load_model

    return load_model(str(corpus["ckpt"]))[0]
