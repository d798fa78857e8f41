"""Index integrity (issue 11, points 5 and 10): file names of any bytes, checksums, non-finite values, empty queries.

A tiny folder of 32-pixel clips (one with a name that is not valid UTF-8, one with a newline, a
broken one with a tab and a newline) is indexed with a random-init checkpoint; the API checks use
random features as in ``test_index.py``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import INDEX_TINY, random_xpool_model
from omegaconf import OmegaConf

from lsdo.cli.index import index_main
from lsdo.cli.search import search_main
from lsdo.config import compose
from lsdo.errors import LSDOUserError
from lsdo.model import LSDOModel, TextFeatures
from lsdo.retrieval.index import (
    FEATURES_FILE,
    META_FILE,
    NonFiniteFeaturesError,
    VideoIndex,
    escape_name,
    printable,
    unescape_name,
    verify_index,
)

pytestmark = pytest.mark.timeout(120)

D, N = 512, 4


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> LSDOModel:
    return random_xpool_model(1)


@pytest.fixture(scope="module")
def feats() -> tuple[torch.Tensor, TextFeatures, list[str]]:
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(20, N, D, generator=gen)
    query = torch.randn(3, D, generator=gen)
    return video, TextFeatures(query, query.clone(), query.clone()), [f"v{i:02d}" for i in range(20)]


def _checkpoint(path: Path, seed: int) -> Path:
    from lsdo.lightning_module import LSDOLitModule

    cfg = OmegaConf.to_container(compose(INDEX_TINY), resolve=True)
    torch.manual_seed(seed)
    lit = LSDOLitModule(cfg)
    torch.save({"state_dict": lit.state_dict(), "hyper_parameters": {"cfg": cfg}}, path)
    return path


BAD_UTF8 = b"caf\xe9 \xff"  # Latin-1 bytes: not valid UTF-8
NEWLINE = "two\nlines"
BROKEN = "bro\tken\nfile"  # not a video, with a tab and a newline in its name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """5 decodable clips (one non-UTF-8 name, one with a newline) + 1 broken file, and a checkpoint."""
    from lsdo.data.video import write_video

    root = tmp_path_factory.mktemp("odd")
    videos = root / "videos"
    for i, name in enumerate(["a", "b", "c"]):
        clip = np.stack([np.full((32, 32, 3), (60 * i + 9 * j) % 256, np.uint8) for j in range(6)])
        clip[:, : 8 * (i + 1)] = 255 - clip[:, : 8 * (i + 1)]  # a little structure: different videos
        write_video(videos / f"{name}.mp4", clip, fps=6)
    os.link(videos / "a.mp4", os.fsdecode(os.fsencode(videos) + b"/" + BAD_UTF8 + b".mp4"))
    os.link(videos / "b.mp4", videos / f"{NEWLINE}.mp4")
    (videos / f"{BROKEN}.mp4").write_text("not a video\n")
    return {"videos": videos, "ckpt": _checkpoint(root / "a.ckpt", 0)}


def _build(corpus: dict[str, Path], out: Path, *extra: str) -> int:
    args = [f"ckpt={corpus['ckpt']}", f"videos={corpus['videos']}", f"out={out}", "num_frames=2", "batch_size=2"]
    return index_main(["build", *args, *extra])


def _one_error_line(err: str) -> str:
    """The single ``error:`` line of stderr (a build's progress bar and skip reports aside)."""
    lines = [line for line in err.strip().splitlines() if line and not line.startswith(("encoding:", "skipped "))]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in err
    return lines[0]


def _flip(path: Path, nbytes: int = 4096) -> None:
    """Invert ``nbytes`` bytes in the data part of a file (past the safetensors header)."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    assert start + nbytes <= len(data) and start > 2048
    data[start : start + nbytes] = bytes(b ^ 0xFF for b in data[start : start + nbytes])
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# point 5: file names of any bytes
# ---------------------------------------------------------------------------------------------


def test_escape_name_is_printable_one_line_and_reversible() -> None:
    names = [
        "plain/clip 01",
        "caf\u00e9/\u5c71 \U0001f600",  # ordinary non-ASCII: unchanged
        os.fsdecode(BAD_UTF8),
        NEWLINE,
        BROKEN,
        "back\\slash\\n",  # a literal backslash-n, not a newline
        "c1\x85 ctl\x7f\x01 sep\u2028x",
        "\udc80\udcff",
    ]
    for name in names:
        escaped = escape_name(name)
        assert escaped.isprintable(), escaped
        assert len(escaped.splitlines()) <= 1 and "\t" not in escaped
        assert unescape_name(escaped) == name
        assert printable(escaped) == escaped  # an escaped id is displayed as it is
    assert escape_name("plain/clip 01") == "plain/clip 01"
    assert escape_name("caf\u00e9/\u5c71") == "caf\u00e9/\u5c71"
    assert escape_name(os.fsdecode(BAD_UTF8)) == "caf\\xe9 \\xff"
    assert escape_name(NEWLINE) == "two\\nlines" and escape_name("back\\slash") == "back\\\\slash"
    assert os.fsencode(unescape_name("caf\\xe9 \\xff")) == BAD_UTF8
    with pytest.raises(ValueError, match="malformed escape"):
        unescape_name("bad\\q")


def test_build_indexes_names_of_any_bytes_and_lists_them_on_one_line(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "idx"
    # the leftovers of a build that crashed on such a name (a 0-byte temporary shard) do not block a rerun
    (out / ".partial").mkdir(parents=True)
    (out / ".partial" / "shard_0000.json.tmp").write_bytes(b"")
    (out / ".partial" / "shard_0000.safetensors").write_bytes(b"")
    assert _build(corpus, out, "shard_size=2") == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"indexed 5 videos, skipped 1 (unreadable; listed in {out / 'skipped.txt'})" in captured.out
    assert "skipped bro\\tken\\nfile.mp4: " in captured.err

    index = VideoIndex.load(out)
    bad = escape_name(os.fsdecode(BAD_UTF8))
    assert sorted(index.ids) == sorted(["a", "b", "c", bad, "two\\nlines"])
    assert {os.fsencode(unescape_name(i)) for i in index.ids} >= {BAD_UTF8, NEWLINE.encode()}
    raw = (out / META_FILE).read_bytes()
    raw.decode("utf-8")  # valid UTF-8 JSON
    assert json.loads(raw)["ids"] == index.ids
    # the same features as the file's hard-linked twin: the odd names were really decoded. Bitwise: with shards
    # of 2 files ([a, b], [broken, c], [caf.., two..]) each twin is encoded at the same place of a batch of 2
    assert torch.equal(index.features[index.ids.index(bad)], index.features[index.ids.index("a")])
    assert torch.equal(index.features[index.ids.index("two\\nlines")], index.features[index.ids.index("b")])

    skipped = (out / "skipped.txt").read_text(encoding="utf-8").splitlines()
    assert len(skipped) == 1 and skipped[0].split("\t")[0] == "bro\\tken\\nfile.mp4"
    assert len(skipped[0].split("\t")) == 2
    assert not (out / ".partial").exists()
    assert all(p.stat().st_size > 0 for p in out.iterdir()) and not list(out.glob("*.tmp"))

    # an interrupted build over such names resumes and gives the same index
    part = tmp_path / "part"
    original, calls = LSDOModel.encode_video, []

    def dying(self: LSDOModel, frames: torch.Tensor, *args, **kwargs):
        if len(calls) >= 1:
            raise KeyboardInterrupt
        calls.append(frames.shape[0])
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(LSDOModel, "encode_video", dying)
    assert _build(corpus, part, "shard_size=2") == 130
    shard = json.loads((part / ".partial" / "shard_0000.json").read_text(encoding="utf-8"))
    assert shard["ids"] == sorted(index.ids)[:2] and len(shard["sha256"]) == 64
    monkeypatch.undo()
    assert _build(corpus, part, "shard_size=2") == 0
    assert "resuming: 2 of 6 videos" in capsys.readouterr().err
    resumed = VideoIndex.load(part)
    # bitwise: the resumed build encodes the same shards in the same batches
    assert resumed.ids == index.ids and torch.equal(resumed.features, index.features)

    # search prints every id on its own line, escaped; a query with a newline stays on one line
    argv = [f"index={out}", f"ckpt={corpus['ckpt']}", "a red\ncircle", "topk=5"]
    assert search_main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("query: a red\\ncircle  (")
    assert sorted(line.split(None, 2)[2] for line in lines[1:]) == sorted(index.ids)


def test_resume_ignores_a_shard_that_fails_its_checksum(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    part = tmp_path / "part"
    original, seen = LSDOModel.encode_video, []

    def counting(self: LSDOModel, frames: torch.Tensor, *args, **kwargs):
        if kill and len(seen) >= 1:
            raise KeyboardInterrupt
        seen.append(frames.shape[0])
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(LSDOModel, "encode_video", counting)
    kill = True
    assert _build(corpus, part, "shard_size=2") == 130
    shard = part / ".partial" / "shard_0000.safetensors"
    _flip(shard, 1024)
    kill, seen[:] = False, []
    assert _build(corpus, part, "shard_size=2") == 0
    assert sum(seen) == 5  # the damaged shard's 2 videos were encoded again
    assert "resuming" not in capsys.readouterr().err
    assert len(VideoIndex.load(part)) == 5


# ---------------------------------------------------------------------------------------------
# point 10: checksums, `lsdo-index verify`, non-finite features, empty queries
# ---------------------------------------------------------------------------------------------


def test_checksum_recorded_and_flipped_bytes_refused_on_load_and_by_verify(
    model: LSDOModel, feats, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    video, text, ids = feats
    root = VideoIndex.build(model, video, ids).save(tmp_path / "idx")
    doc = json.loads((root / META_FILE).read_text())
    assert doc["checksums"][FEATURES_FILE]["bytes"] == (root / FEATURES_FILE).stat().st_size
    assert "checksums" not in VideoIndex.load(root).meta  # metadata unchanged
    assert verify_index(root).ok
    assert index_main(["verify", f"index={root}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok") and FEATURES_FILE in out[0] and out[-1].startswith(f"OK: {root}, 20 videos")
    before = VideoIndex.load(root).search(model, text, topk=5)

    _flip(root / FEATURES_FILE)
    for mmap in (False, True):
        with pytest.raises(LSDOUserError) as info:
            VideoIndex.load(root, mmap=mmap)
        msg = str(info.value)
        assert "\n" not in msg and str(root / FEATURES_FILE) in msg and "SHA-256" in msg
        assert f"lsdo-index verify index={root}" in msg
    damaged = VideoIndex.load(root, verify=False)  # explicitly unchecked: loads (and ranks differently)
    assert not torch.equal(damaged.features, VideoIndex.build(model, video, ids).features)
    assert not verify_index(root).ok

    assert index_main(["verify", f"index={root}"]) == 2
    captured = capsys.readouterr()
    assert any(line.startswith("FAILED") and FEATURES_FILE in line for line in captured.out.splitlines())
    err = _one_error_line(captured.err)
    assert str(root / FEATURES_FILE) in err and "does not match its SHA-256" in err
    assert before[1].shape == (3, 5)

    # a truncated file is caught by its size before anything is hashed
    data = (root / FEATURES_FILE).read_bytes()
    (root / FEATURES_FILE).write_bytes(data[:-4])
    with pytest.raises(LSDOUserError, match=FEATURES_FILE):
        VideoIndex.load(root, verify=False)


def test_index_without_checksums_loads_with_a_warning(
    model: LSDOModel, feats, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    video, text, ids = feats
    root = VideoIndex.build(model, video, ids).save(tmp_path / "old")
    doc = json.loads((root / META_FILE).read_text())
    del doc["checksums"]  # as written by an older lsdo
    (root / META_FILE).write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="lsdo.retrieval.index"):
        index = VideoIndex.load(root)
    assert "no checksums" in caplog.text and index.checksums is None
    index.search(model, text, topk=3)
    assert index_main(["verify", f"index={root}"]) == 0
    out = capsys.readouterr().out
    assert "unverified" in out and "no checksum recorded" in out
    doc["checksums"] = {FEATURES_FILE: "nonsense"}
    (root / META_FILE).write_text(json.dumps(doc))
    with pytest.raises(LSDOUserError, match="malformed 'checksums'"):
        VideoIndex.load(root)


def test_non_finite_features_are_refused_at_build(model: LSDOModel, feats) -> None:
    video, _, ids = feats
    nan = video.clone()
    nan[7, 2, 5] = float("nan")
    with pytest.raises(NonFiniteFeaturesError, match="video 'v07' has non-finite features") as info:
        VideoIndex.build(model, nan, ids)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LSDOUserError)
    assert "\n" not in str(info.value)
    nan[9, 0, 0] = float("-inf")
    with pytest.raises(NonFiniteFeaturesError, match=r"video 'v07' \(and 1 more\)"):
        VideoIndex.build(model, nan, ids)
    big = video.clone()
    big[3] *= 1e6  # finite in float32, inf in float16
    VideoIndex.build(model, big, ids)
    with pytest.raises(NonFiniteFeaturesError, match="float16"):
        VideoIndex.build(model, big, ids, dtype=torch.float16)
    index = VideoIndex.build(model, video[:10], ids[:10])
    more = video[10:].clone()
    more[7, 3, 1] = float("inf")
    with pytest.raises(NonFiniteFeaturesError, match="'v17'"):
        index.add(model, more, ids[10:])
    assert len(index) == 10  # nothing added
    regions = torch.nn.functional.normalize(torch.randn(20, N, 3, D), dim=-1)
    regions[4, 1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteFeaturesError, match="video 'v04' has non-finite regions"):
        VideoIndex.build(model, video, ids, regions=regions, region_mask=torch.ones(20, N, 3, dtype=torch.bool))


def test_nan_in_a_stored_index_is_an_error_in_every_search_and_in_verify(
    model: LSDOModel, feats, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An index holding NaN (written without the build checks, e.g. by an older lsdo) never ranks it."""
    video, text, ids = feats
    clean = VideoIndex.build(model, video, ids)
    features = clean.features.clone()
    features[11, 1] = float("nan")
    means = clean.means.clone()
    means[11] = float("nan")
    root = VideoIndex(features, means, ids, dict(clean.meta)).save(tmp_path / "nan")
    index = VideoIndex.load(root)  # the checksum matches: the file is as written
    for prefilter_k in (None, 5):
        with pytest.raises(LSDOUserError, match="video 'v11' has non-finite stored values") as info:
            index.search(model, text, topk=5, prefilter_k=prefilter_k)
        assert "lsdo-index verify" in str(info.value) and "\n" not in str(info.value)
    index.faiss_threshold = 0  # the FAISS prefilter checks the means it is given
    pytest.importorskip("faiss")
    with pytest.raises(LSDOUserError, match="'v11'"):
        index.search(model, text, topk=5, prefilter_k=5)

    check = verify_index(root)
    assert not check.ok and check.nonfinite == ["v11"]
    assert index_main(["verify", f"index={root}"]) == 2
    captured = capsys.readouterr()
    assert "FAILED      values  1 video holds NaN / inf, e.g. 'v11'" in captured.out
    assert "'v11'" in _one_error_line(captured.err)


def test_empty_query_is_refused(model: LSDOModel, feats, corpus: dict[str, Path], tmp_path: Path, capsys) -> None:
    video, _, ids = feats
    index = VideoIndex.build(model, video, ids)
    for queries in ("", "   ", ["a man sings", " \t\n"]):
        with pytest.raises(ValueError, match="empty or only whitespace"):
            index.search(model, queries)
    out = tmp_path / "idx"
    assert _build(corpus, out) == 0
    capsys.readouterr()
    assert search_main([f"index={out}", f"ckpt={corpus['ckpt']}", "a red circle", "  "]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "query 2 of 2 is empty" in err
    assert search_main([f"index={out}", f"ckpt={corpus['ckpt']}", ""]) == 2
    assert "query 1 of 1 is empty" in _one_error_line(capsys.readouterr().err)

    # lsdo-search checks the checksum too (verify=false skips it)
    _flip(out / FEATURES_FILE, 2048)
    assert search_main([f"index={out}", f"ckpt={corpus['ckpt']}", "a red circle"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert str(out / FEATURES_FILE) in err and "lsdo-index verify" in err


def test_cli_build_refuses_non_finite_features(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    original = LSDOModel.encode_video

    def poisoned(self: LSDOModel, frames: torch.Tensor, *args, **kwargs):
        out = original(self, frames, *args, **kwargs)
        out[1] = float("nan")  # the second video of every batch
        return out

    monkeypatch.setattr(LSDOModel, "encode_video", poisoned)
    out = tmp_path / "idx"
    assert _build(corpus, out) == 2
    err = _one_error_line(capsys.readouterr().err)
    first_two = sorted(["a", "b", "c", escape_name(os.fsdecode(BAD_UTF8)), "two\\nlines"])[:2]
    assert f"encoding {first_two[1]}.mp4 gave non-finite features" in err and "NaN" in err
    assert not (out / META_FILE).exists()
