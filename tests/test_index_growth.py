"""An index that grows (issue 15, part 4): appended shards, stored re-ranking tensors, IVF-PQ, split builds.

* **Appends write new shards**: an index built in two halves (the second added to the loaded,
  memory-mapped first and saved in place) equals the index built at once: the same ids, the same
  stored frames (bitwise), the same means and re-ranking tensors and the same ranking (within the
  rounding of their float32 reductions: the halves are computed in other batches); the first shard's
  file is not touched; every shard is checked against its SHA-256; an index of the earlier single-file
  format (version 1) loads and grows.
* **Stored re-ranking tensors** (``rerank=True``): the scores read from them equal the scores
  computed from the frames (within the rounding of the float32 reductions, the ranking alike), in the
  prefilter re-ranking and the full protocol, for impl=paper and official, float32 and float16 storage,
  across shards.
* **IVF-PQ prefilter** from a size threshold: it finds the exact prefilter's candidates when every
  list is probed, is stored with the index and used again after a load and an append.
* **Split builds**: ``lsdo-index build world=2`` run as rank 0 then rank 1 (rank 1 interrupted and
  resumed) writes the index a one-process build writes; ``append=true`` adds new files as a shard.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import INDEX_TINY, random_xpool_model
from omegaconf import OmegaConf
from safetensors.torch import save_file
from tolerances import XPOOL_SCORE_TOL, assert_same_ranking, reduction_tol

from lsdo.cli.index import index_main
from lsdo.config import compose
from lsdo.errors import LSDOUserError
from lsdo.model import LSDOModel, TextFeatures
from lsdo.retrieval.index import (
    FEATURES_FILE,
    FORMAT,
    META_FILE,
    PREFILTER_FILE,
    ShardedRows,
    VideoIndex,
    faiss_available,
    rerank_bytes,
    shard_file,
    verify_index,
)
from lsdo.retrieval.index.prefilter import torch_prefilter

pytestmark = pytest.mark.timeout(300)

D = 512
V, N, T = 300, 6, 7
CUT = 130  # the first half: not a multiple of anything below

# Two searches of the same rows differ by the rounding of their float32 reductions wherever a product runs on
# another batch (an append, a re-ranking's candidates against the stored blocks) or on rows at another
# alignment (a memory-mapped load: MKL's sgemm picks its kernel by alignment): see XPOOL_SCORE_TOL.
SCORE_TOL = XPOOL_SCORE_TOL
# Means are unit vectors: a mean over N frames normalised over d.
MEAN_TOL = reduction_tol(torch.float32, D)
# Frame features from the tiny encoder (a split build encodes other batches): the ViT's two blocks of eight
# sequential reductions, its patch embedding, LayerNorms and projection, and the LSDO heads: at most 32
# reductions of at most 512 terms, relative to the features' magnitude; its scores take those stages too.
ENCODER_STAGES = 32


@pytest.fixture(scope="module")
def model() -> LSDOModel:
    return random_xpool_model(1)


@pytest.fixture(scope="module")
def official() -> LSDOModel:
    return random_xpool_model(2, "impl=official")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, TextFeatures, list[str]]:
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(V, N, D, generator=gen)
    query = torch.randn(T, D, generator=gen)
    target = torch.randn(T, D, generator=gen) + 0.5 * video[torch.arange(T) * 40].mean(dim=1)
    return video, TextFeatures(query, target, query), [f"clips/v{i:03d}" for i in range(V)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_search(
    a: VideoIndex, b: VideoIndex, model: LSDOModel, text: TextFeatures, tol: float = SCORE_TOL, **kwargs
) -> None:
    """The same ranking, scores within ``tol``: both indexes hold the same rows, but a grown or loaded one
    runs its products on other batches or at another alignment (see SCORE_TOL)."""
    for prefilter_k in (None, 25):
        x = a.search(model, text, topk=10, prefilter_k=prefilter_k, **kwargs)
        y = b.search(model, text, topk=10, prefilter_k=prefilter_k, **kwargs)
        assert_same_ranking(x, y, tol, msg=prefilter_k)


def _close_rerank(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    """Stored re-ranking tensors computed in other blocks of videos: the float32 LayerNorm of the frames over d,
    then a float32 projection over d (keys) or float64 products of it (frames_g, the Gram forms): two stages,
    relative to the tensor's magnitude."""
    tol = reduction_tol(torch.float32, D, scale=want.abs().max().item(), stages=2)
    torch.testing.assert_close(got, want, rtol=0, atol=tol, msg=lambda m: f"{name}: {m}")


def _all(store) -> torch.Tensor:
    return store[0 : store.shape[0]]


# ---------------------------------------------------------------------------------------------
# appends write new shards
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rerank", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_two_halves_appended_equal_one_build(model, data, tmp_path: Path, dtype: torch.dtype, rerank: bool) -> None:
    video, text, ids = data
    whole = VideoIndex.build(model, video, ids, dtype=dtype, rerank=rerank)
    root = VideoIndex.build(model, video[:CUT], ids[:CUT], dtype=dtype, rerank=rerank).save(tmp_path / "idx")
    first = root / FEATURES_FILE
    before = (_sha(first), first.stat().st_mtime_ns, first.stat().st_ino)

    grown = VideoIndex.load(root, mmap=True)
    mapped = grown.features.data_ptr()
    grown.add(model, video[CUT:], ids[CUT:])
    assert isinstance(grown.features, ShardedRows) and grown.num_shards == 2
    assert grown.features.parts[0].data_ptr() == mapped  # the mapped rows were not copied
    _same_search(grown, whole, model, text)  # before the save: the in-memory part is searched too
    grown.save(root)  # in place: an append

    assert sorted(p.name for p in root.iterdir()) == sorted([FEATURES_FILE, shard_file(1), META_FILE])
    assert (_sha(first), first.stat().st_mtime_ns, first.stat().st_ino) == before  # shard 0 untouched
    doc = json.loads((root / META_FILE).read_text())
    assert doc["version"] == 2 and doc["num_videos"] == V and doc["ids"] == ids
    assert doc["shards"] == [{"file": FEATURES_FILE, "num_videos": CUT}, {"file": shard_file(1), "num_videos": V - CUT}]
    assert set(doc["checksums"]) == {FEATURES_FILE, shard_file(1)}

    for mmap in (True, False):
        loaded = VideoIndex.load(root, mmap=mmap)
        assert loaded.ids == whole.ids and loaded.meta["num_videos"] == V
        assert loaded.num_shards == (2 if mmap else 1)
        assert torch.equal(_all(loaded.features), whole.features)  # the given frames, cast: a copy
        torch.testing.assert_close(_all(loaded.means), whole.means, rtol=0, atol=MEAN_TOL)  # computed per batch
        if rerank:
            for name, tensor in whole.rerank.items():
                _close_rerank(_all(loaded.rerank[name]), tensor, name)
        _same_search(loaded, whole, model, text)
        _same_search(loaded, whole, model, text, accum_dtype=torch.float32, video_chunk=64)
    check = verify_index(root)
    assert check.ok and [(name, status) for name, status, _ in check.files] == [
        (FEATURES_FILE, "ok"),
        (shard_file(1), "ok"),
    ]


def test_three_appends_with_regions_and_a_save_elsewhere(model, data, tmp_path: Path) -> None:
    video, text, ids = data
    gen = torch.Generator().manual_seed(3)
    regions = torch.nn.functional.normalize(torch.randn(V, N, 3, D, generator=gen), dim=-1)
    mask = torch.rand(V, N, 3, generator=gen) > 0.2
    whole = VideoIndex.build(model, video, ids, regions=regions, region_mask=mask, region_info={"method": "grid"})
    root = tmp_path / "idx"
    cuts = [0, 100, 180, 250, V]
    index = VideoIndex.build(model, video[:100], ids[:100], regions=regions[:100], region_mask=mask[:100],
                             region_info={"method": "grid"})  # fmt: skip
    index.save(root, remap=True)
    for a, b in zip(cuts[1:-1], cuts[2:], strict=True):
        index = VideoIndex.load(root, mmap=True)
        index.add(model, video[a:b], ids[a:b], regions[a:b], mask[a:b])
        index.save(root, remap=True)
        assert index._fixed_rows == len(index) == b  # the rows just written are mapped, not held in memory
    loaded = VideoIndex.load(root, mmap=True)
    assert loaded.num_shards == 4 and loaded.stored_files == [shard_file(i) for i in range(4)]
    # the given regions and mask, cast and stored: copies
    assert torch.equal(_all(loaded.regions), whole.regions) and torch.equal(_all(loaded.region_mask), whole.region_mask)
    for mode in ("both", "regions"):  # region scores are float32 dot products over d of unit vectors: one stage more
        a = loaded.search(model, text, topk=8, mode=mode)
        b = whole.search(model, text, topk=8, mode=mode)
        assert_same_ranking(a, b, SCORE_TOL + reduction_tol(torch.float32, D), msg=mode)
    # saved elsewhere: one shard with every row, equal again
    copy = loaded.save(tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == [FEATURES_FILE, META_FILE]
    single = VideoIndex.load(copy, mmap=True)
    assert isinstance(single.features, torch.Tensor) and torch.equal(single.features, whole.features)  # a copy
    _same_search(single, whole, model, text)
    # a full save over a grown index removes the shards it no longer lists
    loaded.save(tmp_path / "copy2")
    VideoIndex.load(tmp_path / "copy2").save(root)
    assert sorted(p.name for p in root.iterdir()) == [FEATURES_FILE, META_FILE]
    assert VideoIndex.load(root).ids == ids


def test_every_shard_is_checked(model, data, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video, _, ids = data
    root = VideoIndex.build(model, video[:CUT], ids[:CUT]).save(tmp_path / "idx")
    index = VideoIndex.load(root, mmap=True)
    index.add(model, video[CUT:], ids[CUT:])
    index.save(root)
    second = root / shard_file(1)
    data_bytes = bytearray(second.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    second.write_bytes(bytes(data_bytes))
    for mmap in (False, True):
        with pytest.raises(LSDOUserError) as info:
            VideoIndex.load(root, mmap=mmap)
        msg = str(info.value)
        assert str(second) in msg and "SHA-256" in msg and "\n" not in msg
    VideoIndex.load(root, verify=False)  # explicitly unchecked: loads
    check = verify_index(root)
    assert not check.ok and [s for _, s, _ in check.files] == ["ok", "FAILED"]
    assert index_main(["verify", f"index={root}"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok") and FEATURES_FILE in out[0]
    assert out[1].startswith("FAILED") and shard_file(1) in out[1]
    # a shard listed but gone is a one-line error naming it
    second.unlink()
    with pytest.raises(LSDOUserError, match=shard_file(1)):
        VideoIndex.load(root)


def test_a_version_1_index_loads_and_grows(model, data, tmp_path: Path) -> None:
    """The earlier single-file format: ``features.safetensors`` + an ``index.json`` without ``shards``."""
    video, text, ids = data
    built = VideoIndex.build(model, video[:CUT], ids[:CUT], info={"note": "v1"})
    root = tmp_path / "old"
    root.mkdir()
    save_file({"features": built.features, "means": built.means}, str(root / FEATURES_FILE),
              metadata={"format": FORMAT, "version": "1"})  # fmt: skip
    size, digest = (root / FEATURES_FILE).stat().st_size, _sha(root / FEATURES_FILE)
    doc = {
        "format": FORMAT,
        "version": 1,
        **built.meta,
        "checksums": {FEATURES_FILE: {"sha256": digest, "bytes": size}},
    }
    (root / META_FILE).write_text(json.dumps({**doc, "ids": ids[:CUT]}))

    old = VideoIndex.load(root, mmap=True)
    assert old.ids == ids[:CUT] and old.meta == built.meta and verify_index(root).ok
    _same_search(old, built, model, text)
    old.add(model, video[CUT:], ids[CUT:])
    old.save(root)  # an append: the version-1 file stays as it is, index.json becomes version 2
    assert _sha(root / FEATURES_FILE) == digest
    new = json.loads((root / META_FILE).read_text())
    assert new["version"] == 2 and [e["file"] for e in new["shards"]] == [FEATURES_FILE, shard_file(1)]
    _same_search(VideoIndex.load(root, mmap=True), VideoIndex.build(model, video, ids), model, text)


def test_an_append_refuses_a_directory_changed_meanwhile(model, data, tmp_path: Path) -> None:
    video, _, ids = data
    root = VideoIndex.build(model, video[:CUT], ids[:CUT]).save(tmp_path / "idx")
    a, b = VideoIndex.load(root, mmap=True), VideoIndex.load(root, mmap=True)
    a.add(model, video[CUT:200], ids[CUT:200])
    b.add(model, video[200:], ids[200:])
    a.save(root)
    with pytest.raises(LSDOUserError, match="changed since this index was loaded") as info:
        b.save(root)
    assert "\n" not in str(info.value)
    assert VideoIndex.load(root).ids == ids[:200]  # a's append stands, b wrote nothing
    assert not (root / shard_file(2)).exists()


# ---------------------------------------------------------------------------------------------
# stored re-ranking tensors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("impl", ["paper", "official"])
def test_stored_rerank_tensors_give_the_scores_computed_from_the_frames(
    model, official, data, tmp_path: Path, impl: str, dtype: torch.dtype
) -> None:
    video, text, ids = data
    net = model if impl == "paper" else official
    index = VideoIndex.build(net, video, ids, dtype=dtype, rerank=True)
    assert index.has_rerank and index.meta["rerank"]["num_mix"] == (2 * N + 1 if impl == "paper" else 3 * N + 3)
    # the scorer's own precision is stored (float32 keys and frames, float64 Gram forms): keys rounded to float16
    # would move the scores by ~2e-5, too little to tell from other kernels' rounding (SCORE_TOL) below
    dtypes = [index.rerank[name].dtype for name in ("rerank_keys", "rerank_frames", "rerank_mix")]
    assert dtypes == [torch.float32, torch.float32, torch.float64]
    for prefilter_k in (None, 5, 40, 299):
        for kwargs in ({}, {"video_chunk": 100}, {"chunk_size": 3}):
            stored = index.search(net, text, topk=10, prefilter_k=prefilter_k, **kwargs)
            computed = index.search(net, text, topk=10, prefilter_k=prefilter_k, use_stored=False, **kwargs)
            # the stored tensors come from blocks of >= 64 videos, the computed ones from the search's own
            # blocks: the same formulas on other batches, within SCORE_TOL
            assert_same_ranking(stored, computed, SCORE_TOL, msg=(prefilter_k, kwargs))
    # one text, one candidate: a block of one video against the stored blocks of >= 64
    for t in range(T):
        one = text[t : t + 1]
        a = index.search(net, one, topk=1, prefilter_k=1)
        b = index.search(net, one, topk=1, prefilter_k=1, use_stored=False)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=SCORE_TOL)
        assert torch.equal(a[1], b[1])  # the only candidate: the prefilter's, the same on both sides
    # float32 accumulation: the stored float64 forms rounded instead of computed in float32; the forms
    # (sums of at most N x N < d terms) add one float32 stage to SCORE_TOL's four
    f32 = index.search(net, text, topk=10, prefilter_k=40, accum_dtype=torch.float32)
    ref = index.search(net, text, topk=10, prefilter_k=40, use_stored=False)
    assert_same_ranking(f32, ref, reduction_tol(torch.float32, D, stages=5))
    # on disk: bytes_per_video each, and read back (mapped) the same
    plain = VideoIndex.build(net, video, ids, dtype=dtype).save(tmp_path / "plain")
    root = index.save(tmp_path / "rerank")
    per_video = rerank_bytes(N, D, index.meta["rerank"]["num_mix"])
    assert index.meta["rerank"]["bytes_per_video"] == per_video
    extra = (root / FEATURES_FILE).stat().st_size - (plain / FEATURES_FILE).stat().st_size
    assert 0 <= extra - V * per_video < 1024  # the header's three more entries
    loaded = VideoIndex.load(root, mmap=True)
    _same_search(loaded, index, net, text)


def test_an_index_without_rerank_tensors_is_unchanged(model, data, tmp_path: Path) -> None:
    video, text, ids = data
    root = VideoIndex.build(model, video[:20], ids[:20]).save(tmp_path / "plain")
    from safetensors import safe_open

    with safe_open(str(root / FEATURES_FILE), "pt") as fh:
        assert sorted(fh.keys()) == ["features", "means"]
    assert "rerank" not in json.loads((root / META_FILE).read_text())
    assert not VideoIndex.load(root).has_rerank


# ---------------------------------------------------------------------------------------------
# IVF-PQ prefilter
# ---------------------------------------------------------------------------------------------


def _clustered(num: int, frames: int, seed: int) -> torch.Tensor:
    """[num, frames, D] features around 64 cluster centres (as real embeddings cluster)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(64, D, generator=gen)
    which = torch.randint(0, 64, (num,), generator=gen)
    return centres[which][:, None] + 0.8 * torch.randn(num, frames, D, generator=gen)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed (pip install faiss-cpu)")
def test_ivfpq_prefilter_from_its_threshold_stored_and_grown(model, tmp_path: Path) -> None:
    num = 4000
    video = _clustered(num + 200, 2, seed=5)
    ids = [f"v{i:05d}" for i in range(num + 200)]
    index = VideoIndex.build(model, video[:num], ids[:num], faiss_threshold=1000, ivfpq_threshold=3000)
    plan = index.prefilter_plan()
    assert plan.kind == "ivfpq" and plan.pq == D // 8 and plan.nlist == 64  # sqrt(4000) ~ 63 -> 64
    gen = torch.Generator().manual_seed(6)
    query = torch.nn.functional.normalize(index.means[torch.randint(0, num, (20,), generator=gen)]
                                          + 0.05 * torch.randn(20, D, generator=gen), dim=-1)  # fmt: skip
    exact = torch_prefilter(index.means, query, 20, lambda s, v: None)

    def recall(found: torch.Tensor) -> float:
        return sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist(), strict=True)) / exact.numel()

    index.faiss_nprobe = plan.nlist  # every list probed: only the compression is approximate, refine fixes it
    assert recall(index.prefilter(query, 20)) >= 0.95
    assert type(index.faiss_index()).__name__ == "IndexIVFPQ"
    index.faiss_nprobe = 1
    assert 0 < recall(index.prefilter(query, 20)) < 1.0 + 1e-9
    index.faiss_nprobe = 8
    before = index.prefilter(query, 20)

    root = index.save(tmp_path / "idx")  # the trained prefilter is stored with the index
    doc = json.loads((root / META_FILE).read_text())
    assert doc["prefilter"]["kind"] == "ivfpq" and doc["prefilter"]["num_videos"] == num
    assert PREFILTER_FILE in doc["checksums"] and verify_index(root).files[-1][:2] == (PREFILTER_FILE, "ok")
    loaded = VideoIndex.load(root, mmap=True, faiss_nprobe=8)
    assert loaded.prefilter_plan() == plan  # read, not planned again (no thresholds given here)
    assert torch.equal(loaded.prefilter(query, 20), before)  # the same (serialised) FAISS index and query: same ops

    # grown without the prefilter in memory: the stored one covers the first rows, the rest are added on use
    grown = VideoIndex.load(root, mmap=True)
    grown.add(model, video[num:], ids[num:])
    grown.save(root)
    again = VideoIndex.load(root, mmap=True, faiss_nprobe=plan.nlist)
    assert json.loads((root / META_FILE).read_text())["prefilter"]["num_videos"] == num
    new_means = again.means[torch.arange(num, num + 200)]
    found = again.prefilter(new_means, 1)
    assert (found[:, 0] == torch.arange(num, num + 200)).float().mean() >= 0.95
    # and with the prefilter in memory when saved, the stored one is brought up to date
    again.save(root)
    assert json.loads((root / META_FILE).read_text())["prefilter"]["num_videos"] == num + 200
    # exact prefilter on request: FAISS flat over the same means
    flat = VideoIndex.load(root, mmap=True, faiss_threshold=0)
    flat.ignore_stored_prefilter = True
    assert flat.prefilter_plan().kind == "flat"


# ---------------------------------------------------------------------------------------------
# builds split over processes, appends from the command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """28 clips of a tiny export (two folders' worth) and a broken file, and a random checkpoint."""
    from lsdo.data.synth_export import export
    from lsdo.lightning_module import LSDOLitModule

    root = tmp_path_factory.mktemp("corpus")
    export(root / "synth", size=32, workers=1, val_combos=3, test_combos=6, train_videos_per_combo=1, clip_len=6)
    clips = sorted((root / "synth" / "videos").glob("*.mp4"))[:28]
    videos, early = root / "videos", root / "early"
    videos.mkdir()
    early.mkdir()
    for i, clip in enumerate(clips):
        shutil.copy(clip, videos / clip.name)
        if i < 20:
            shutil.copy(clip, early / clip.name)
    (videos / "zz_broken.mp4").write_bytes(b"")
    cfg = OmegaConf.to_container(compose(INDEX_TINY), resolve=True)
    torch.manual_seed(0)
    ckpt = root / "a.ckpt"
    torch.save({"state_dict": LSDOLitModule(cfg).state_dict(), "hyper_parameters": {"cfg": cfg}}, ckpt)
    return {"videos": videos, "early": early, "ckpt": ckpt}


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    original = LSDOModel.encode_video
    seen: list[int] = []

    def counting(self: LSDOModel, frames: torch.Tensor, *args, **kwargs):
        if len(seen) >= batches:
            raise KeyboardInterrupt
        seen.append(frames.shape[0])
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(LSDOModel, "encode_video", counting)


def _same_index(a: Path, b: Path, text: TextFeatures) -> None:
    from lsdo.checkpoint import load_model

    x, y = VideoIndex.load(a, mmap=True), VideoIndex.load(b, mmap=True)
    assert x.ids == y.ids and x.stored_files == y.stored_files
    # the two builds encode the clips in other batches (each rank its own files): the encoder's float32
    # reductions round differently, so the features agree to ENCODER_STAGES reductions of their magnitude
    features = _all(y.features)
    tol = reduction_tol(torch.float32, D, scale=features.abs().max().item(), stages=ENCODER_STAGES)
    torch.testing.assert_close(_all(x.features), features, rtol=0, atol=tol)
    # unit vectors from those features: the features' relative error plus the mean's own reduction
    torch.testing.assert_close(
        _all(x.means), _all(y.means), rtol=0, atol=reduction_tol(torch.float32, D, stages=1 + ENCODER_STAGES)
    )
    for name in x.rerank or {}:
        want = _all(y.rerank[name])
        tol = reduction_tol(torch.float32, D, scale=want.abs().max().item(), stages=2 + ENCODER_STAGES)
        torch.testing.assert_close(_all(x.rerank[name]), want, rtol=0, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
    net = load_model(str(json.loads((a / META_FILE).read_text())["created"]["ckpt"]))[0]
    _same_search(x, y, net, text, tol=reduction_tol(torch.float32, D, stages=4 + ENCODER_STAGES))


def test_a_build_split_over_two_ranks_equals_a_one_process_build(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    common = [f"ckpt={corpus['ckpt']}", f"videos={corpus['videos']}", "num_frames=3", "batch_size=2", "shard_size=4"]
    common += ["rerank=true", "index_shard=10"]
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(3, 512, generator=gen)
    text = TextFeatures(query, torch.randn(3, 512, generator=gen), query)

    one = tmp_path / "one"
    assert index_main(["build", *common, f"out={one}"]) == 0
    assert "indexed 28 videos, skipped 1" in capsys.readouterr().out
    assert VideoIndex.load(one).stored_files == [FEATURES_FILE, shard_file(1), shard_file(2)]  # 10 + 10 + 8

    two = tmp_path / "two"
    assert index_main(["build", *common, f"out={two}", "rank=0", "world=2"]) == 0
    out = capsys.readouterr().out
    assert "rank 0 of 2: its files are done; 13 of 29 files wait for the other ranks" in out
    assert not (two / META_FILE).exists() and (two / ".partial" / "rank0" / "shard_0000.json").exists()
    # rank 1 killed after its first batch, then resumed: it finishes last and writes the index
    _interrupt_after(monkeypatch, 1)
    assert index_main(["build", *common, f"out={two}", "rank=1", "world=2"]) == 130
    monkeypatch.undo()
    assert not (two / META_FILE).exists()
    assert index_main(["build", *common, f"out={two}", "rank=1", "world=2"]) == 0
    assert "indexed 28 videos, skipped 1" in capsys.readouterr().out
    assert not (two / ".partial").exists()
    assert (two / "skipped.txt").read_text() == (one / "skipped.txt").read_text()
    _same_index(one, two, text)
    assert index_main(["verify", f"index={two}"]) == 0
    assert index_main(["build", *common, f"out={two}", "rank=2", "world=2"]) == 2
    assert "rank: expected 0 <= rank < world=2" in capsys.readouterr().err


def test_append_from_the_command_line_adds_only_the_new_videos(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = [f"ckpt={corpus['ckpt']}", "num_frames=3", "batch_size=4", "shard_size=8", "index_shard=10"]
    one = tmp_path / "one"
    assert index_main(["build", *common, f"videos={corpus['videos']}", f"out={one}"]) == 0
    grown = tmp_path / "grown"
    assert index_main(["build", *common, f"videos={corpus['early']}", f"out={grown}"]) == 0
    first = _sha(grown / FEATURES_FILE), _sha(grown / shard_file(1))
    assert index_main(["build", *common, f"videos={corpus['videos']}", f"out={grown}"]) == 2
    assert "pass append=true" in capsys.readouterr().err
    encoded: list[int] = []
    original = LSDOModel.encode_video
    monkeypatch.setattr(
        LSDOModel, "encode_video", lambda self, f, *a, **k: encoded.append(f.shape[0]) or original(self, f, *a, **k)
    )
    assert index_main(["build", *common, f"videos={corpus['videos']}", f"out={grown}", "append=true"]) == 0
    assert sum(encoded) == 8  # only the 8 new clips
    assert "added 8 videos (28 in the index), skipped 1" in capsys.readouterr().out
    assert (_sha(grown / FEATURES_FILE), _sha(grown / shard_file(1))) == first  # not rewritten
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(3, 512, generator=gen)
    _same_index(one, grown, TextFeatures(query, torch.randn(3, 512, generator=gen), query))
    assert index_main(["build", *common, f"videos={corpus['videos']}", f"out={grown}", "append=true"]) == 0
    assert "added 0 videos (28 in the index), skipped 1" in capsys.readouterr().out  # the broken file, tried again
    assert index_main(["build", *common, f"videos={corpus['videos']}", f"out={grown}", "append=true", "fp16=true"]) == 2
    assert "append with the same settings" in capsys.readouterr().err


def test_shard_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        ShardedRows([])
    with pytest.raises(ValueError, match="share shape"):
        ShardedRows([torch.zeros(2, 3), torch.zeros(2, 4)])
    rows = ShardedRows([torch.arange(6.0).view(3, 2), torch.arange(6.0, 10.0).view(2, 2)])
    assert rows.shape == (5, 2) and torch.equal(rows[3], torch.tensor([6.0, 7.0])) and torch.equal(rows[-1], rows[4])
    assert torch.equal(rows[1:4], torch.arange(2.0, 8.0).view(3, 2))
    assert torch.equal(rows[torch.tensor([[4, 0], [2, 3]])][1, 1], torch.tensor([6.0, 7.0]))
    assert torch.equal(rows[::2], torch.stack([rows[0], rows[2], rows[4]]))
    assert np.array_equal(rows[2:2].numpy(), np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(IndexError):
        rows[5]
