"""The real-dataset pipeline end to end on files the project writes itself (lsdo-synth).

Annotation parsing is tested in test_annotations.py and decoding in test_video.py; here: the
MSR-VTT-format export, the data module's pre-flight checks (missing / corrupt videos, error or
skip with counts), batches, the shared bank builder, and train.py / eval.py on the files.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, run_cli, run_console_script
from omegaconf import open_dict

from lsdo.config import compose
from lsdo.data import build_datamodule
from lsdo.data.annotations import load_annotations
from lsdo.data.synth_export import export
from lsdo.data.synthetic import make_split
from lsdo.errors import DataNotFoundError
from lsdo.model.video_lsdo import read_bank_file

pytestmark = pytest.mark.timeout(300)

# A small export: 9 x 20 combinations minus 3 val and 6 test, one training video each.
SYNTH = {"val_combos": 3, "test_combos": 6, "train_videos_per_combo": 1, "clip_len": 6}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "msrvtt_synth"
    export(out, size=32, workers=1, **SYNTH)
    return out


@pytest.fixture
def synth_copy(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


# conftest's tiny model/trainer settings, with the MSR-VTT data module instead of the synthetic one.
TINY_MSRVTT = [
    *(o for o in TINY_OVERRIDES if not o.startswith("dataset.")),
    "dataset=msrvtt",
    "dataset.num_frames=4",
    "dataset.batch_size=8",
    "dataset.num_workers=0",
]


def _cfg(root: Path, *extra: str):
    return compose([*TINY_MSRVTT, f"dataset.root={root}", *extra])


def test_export_writes_msrvtt_layout(synth_dir: Path) -> None:
    expected = {s: make_split(s, 0, SYNTH["val_combos"], SYNTH["test_combos"], 1) for s in ("train", "val", "test")}
    for vs in expected.values():
        for v in vs:
            assert (synth_dir / "videos" / f"{v.video_id}.mp4").stat().st_size > 0
    with open(synth_dir / "MSRVTT_JSFUSION_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["video_id"] for r in rows] == [v.video_id for v in expected["test"]]
    assert [r["sentence"] for r in rows] == [v.captions[0] for v in expected["test"]]
    data = json.loads((synth_dir / "MSRVTT_data.json").read_text())
    assert {v["video_id"]: v["category"] for v in data["videos"]} == {
        v.video_id: v.category for vs in expected.values() for v in vs
    }
    train = load_annotations("msrvtt", "train", synth_dir)
    assert [(r.video_id, r.caption) for r in train] == [(v.video_id, c) for v in expected["train"] for c in v.captions]
    assert len(load_annotations("msrvtt", "val", synth_dir)) == SYNTH["val_combos"]


def test_export_is_resumable(synth_copy: Path) -> None:
    victim = next((synth_copy / "videos").glob("*.mp4"))
    victim.unlink()
    counts = export(synth_copy, size=32, workers=1, **SYNTH)
    assert counts["written"] == 1 and counts["kept"] == counts["train"] + counts["val"] + counts["test"] - 1
    assert victim.stat().st_size > 0


def test_datamodule_batches_from_mp4(synth_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_dir)
    dm = build_datamodule(cfg, 32, report_dir=tmp_path)
    dm.setup("fit")
    n_train = len(make_split("train", 0, SYNTH["val_combos"], SYNTH["test_combos"], 1))
    assert len(dm.splits["train"].paths) == n_train and len(dm.splits["val"].paths) == SYNTH["val_combos"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (8, 4, 3, 32, 32) and batch["frames"].dtype == torch.float32
    assert len(batch["captions"]) == 8
    test = next(iter(dm.test_dataloader()))
    assert test["frames"].shape == (6, 4, 3, 32, 32)
    assert test["text_to_video"].tolist() == list(range(6))


def test_training_items_are_reproducible(synth_dir: Path, tmp_path: Path) -> None:
    dm = build_datamodule(_cfg(synth_dir), 32, report_dir=tmp_path)
    dm.setup("fit")
    ds = dm.train_dataloader().dataset
    a, b, c = ds[(3, 1234)], ds[(3, 1234)], ds[(3, 99)]
    assert torch.equal(a["frames"], b["frames"]) and a["caption"] == b["caption"]
    assert not torch.equal(a["frames"], c["frames"])


def test_missing_video_error_names_ids_and_count(synth_copy: Path, tmp_path: Path) -> None:
    test_ids = [v.video_id for v in make_split("test", 0, SYNTH["val_combos"], SYNTH["test_combos"], 1)]
    for vid in test_ids[:2]:
        (synth_copy / "videos" / f"{vid}.mp4").unlink()
    dm = build_datamodule(_cfg(synth_copy), 32, report_dir=tmp_path)
    with pytest.raises(DataNotFoundError) as exc:
        dm.setup("test")
    msg = str(exc.value)
    assert "2 of 6" in msg and test_ids[0] in msg and "dataset.on_missing=skip" in msg
    listed = (tmp_path / "missing_videos_test.txt").read_text().split("\n")
    assert {line.split("\t")[0] for line in listed if line} == set(test_ids[:2])


def test_missing_video_skip_drops_and_counts(synth_copy: Path, tmp_path: Path, caplog) -> None:
    test_ids = [v.video_id for v in make_split("test", 0, SYNTH["val_combos"], SYNTH["test_combos"], 1)]
    (synth_copy / "videos" / f"{test_ids[1]}.mp4").unlink()
    dm = build_datamodule(_cfg(synth_copy, "dataset.on_missing=skip"), 32, report_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert dm.splits["test"].video_ids == test_ids[:1] + test_ids[2:]
    assert any("1 of 6" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", ["zero_byte", "not_a_video", "truncated"])
def test_corrupt_video_error_names_file(synth_copy: Path, tmp_path: Path, damage: str) -> None:
    test_ids = [v.video_id for v in make_split("test", 0, SYNTH["val_combos"], SYNTH["test_combos"], 1)]
    victim = synth_copy / "videos" / f"{test_ids[3]}.mp4"
    if damage == "zero_byte":
        victim.write_bytes(b"")
    elif damage == "not_a_video":
        victim.write_text("this is a caption file, not a video\n" * 20)
    else:
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 3])
    dm = build_datamodule(_cfg(synth_copy), 32, report_dir=tmp_path)
    with pytest.raises(Exception) as exc:  # VideoDecodeError, an LSDOUserError
        dm.setup("test")
    assert "LSDOUserError" in [c.__name__ for c in type(exc.value).__mro__]
    assert str(victim) in str(exc.value) and "1 of 6" in str(exc.value)

    dm = build_datamodule(_cfg(synth_copy, "dataset.on_corrupt=skip"), 32, report_dir=tmp_path)
    dm.setup("test")
    assert test_ids[3] not in dm.splits["test"].video_ids and len(dm.splits["test"].video_ids) == 5
    assert str(victim) in (tmp_path / "corrupt_videos_test.txt").read_text()


def test_training_time_decode_failure_skip_and_error(synth_copy: Path, tmp_path: Path, caplog) -> None:
    """A file that breaks after the pre-flight (probe off here) is skipped in its batch or raises."""
    dm = build_datamodule(_cfg(synth_copy, "dataset.probe_videos=false", "dataset.on_corrupt=skip"), 32)
    dm.setup("fit")
    dm.splits["train"].paths[0].write_bytes(b"")
    loader = dm.train_dataloader()
    with caplog.at_level(logging.WARNING):
        sizes = [len(b["captions"]) for b in loader]
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert skipped and all(str(dm.splits["train"].paths[0]) in r.getMessage() for r in skipped)
    assert sum(sizes) + len(skipped) == len(loader) * 8  # every skip is one item fewer, and logged

    dm = build_datamodule(_cfg(synth_copy, "dataset.probe_videos=false"), 32)
    dm.setup("fit")
    with pytest.raises(Exception, match=str(dm.splits["train"].paths[0].name)):
        ds = dm.train_dataloader().dataset
        for i in range(len(ds)):
            ds[(i, 0)]


def test_videos_found_under_another_extension(synth_copy: Path, tmp_path: Path) -> None:
    """MSVD's annotations say .avi; compressed copies are .mp4 - either is found."""
    from lsdo.data.video_datamodule import resolve_video_path

    p = resolve_video_path(synth_copy / "videos", "synth_test_000_0.avi")
    assert p == synth_copy / "videos" / "synth_test_000_0.mp4"
    assert resolve_video_path(synth_copy / "videos", "nope.avi") is None


def test_build_bank_one_video_per_category(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bank.json"
    r = run_console_script(
        "lsdo.cli:build_bank_main",
        *TINY_MSRVTT,
        f"dataset.root={synth_dir}",
        f"out={out}",
        "m=9",
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    videos, feats = read_bank_file(out)
    cats = {v["video_id"]: v["category"] for v in json.loads((synth_dir / "MSRVTT_data.json").read_text())["videos"]}
    assert len(videos) == 9 and sorted(cats[v] for v in videos) == list(range(9))
    assert feats.shape == (9, 512) and torch.isfinite(feats).all()


def test_train_and_eval_cli_on_exported_files(synth_dir: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    r = run_cli(
        "train.py",
        *TINY_MSRVTT,
        f"dataset.root={synth_dir}",
        "dataset.train_unit=video",  # 21 steps instead of 106: the pipeline, not the schedule, is under test
        f"paths.log_dir={logs}",
        "hydra.run.dir=" + str(tmp_path / "run"),
        timeout=280,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"t2v/R1", "v2t/R1"}
    ckpt = next((tmp_path / "run" / "checkpoints").glob("last*.ckpt"))
    r = run_cli("eval.py", f"ckpt={ckpt}", "trainer.accelerator=cpu", "hydra.run.dir=" + str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"]["num_videos"] == SYNTH["test_combos"]
    # Another dataset on the command line replaces the checkpoint's: here the in-memory synthetic one.
    r = run_cli(
        "eval.py",
        f"ckpt={ckpt}",
        "trainer.accelerator=cpu",
        "dataset=synthetic",
        "dataset.test_combos=12",
        "dataset.clip_len=6",
        "dataset.num_frames=4",
        "hydra.run.dir=" + str(tmp_path / "ev2"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert report["dataset"] == "synthetic" and report["test"]["num_videos"] == 12


def test_bad_dataset_input_is_one_line_error(synth_copy: Path, tmp_path: Path) -> None:
    (synth_copy / "videos" / "synth_test_002_0.mp4").unlink()
    r = run_cli(
        "train.py",
        *TINY_MSRVTT,
        f"dataset.root={synth_copy}",
        "hydra.run.dir=" + str(tmp_path / "run"),
        timeout=120,
    )
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "synth_test_002_0" in err and "Traceback" not in r.stderr


def test_msrvtt_holdout_when_no_val_list(synth_copy: Path, tmp_path: Path) -> None:
    (synth_copy / "MSRVTT_val.csv").unlink()
    cfg = _cfg(synth_copy, "dataset.val_videos=5")
    dm = build_datamodule(cfg, 32, report_dir=tmp_path)
    dm.setup("fit")
    train_ids, val_ids = set(dm.splits["train"].video_ids), set(dm.splits["val"].video_ids)
    assert len(val_ids) == 5 and not train_ids & val_ids
    with open_dict(cfg):
        cfg.dataset.val_videos = 0
    with pytest.raises(Exception, match="dataset.val_videos"):
        build_datamodule(cfg, 32).setup("fit")


def test_flip_study_preset_runs_one_step(synth_dir: Path, tmp_path: Path) -> None:
    """``experiment=flip_study`` (the flip benchmark's recipe through the video pipeline) on an export, with the
    caption-aware flip: one step of train / val / test, the preset's dataset and flip kept."""
    from lsdo.config import validate
    from lsdo.train import run

    tiny = [o for o in TINY_OVERRIDES if o.startswith("model")]
    cfg = compose(["experiment=flip_study", f"dataset.root={synth_dir}", "dataset.flip=caption_aware", *tiny,
                   "dataset.num_frames=4", "dataset.batch_size=8", "logger=none", "debug=fast_dev_run",
                   f"paths.log_dir={tmp_path}"])  # fmt: skip
    validate(cfg)
    assert (cfg.dataset.name, cfg.dataset.flip, cfg.dataset.train_unit) == ("msrvtt", "caption_aware", "video")
    results = run(cfg)
    assert 0.0 <= results["test"]["t2v/R1"] <= 100.0


def test_worker_processes_after_the_preflight_decode(tmp_path: Path, synth_dir: Path) -> None:
    """lsdo-synth's pool and the loaders' workers, after this process decoded (the pre-flight opens every
    video and decodes its last frame): the workers are not forks of it (lsdo.processes), so nothing the
    decoders left here is waited on there; the dataset, transforms and collate functions pickle."""
    root = tmp_path / "synth"
    export(root, size=32, workers=2, **SYNTH)
    made = sorted(p.name for p in (root / "videos").iterdir())
    assert made == sorted(p.name for p in (synth_dir / "videos").iterdir())
    dm = build_datamodule(_cfg(root, "dataset.num_workers=2", "dataset.probe_videos=true"), 32)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.num_workers == 2 and train.multiprocessing_context.get_start_method() != "fork"
    batch = next(iter(train))
    assert batch["frames"].shape[:2] == (8, 4) and len(batch["captions"]) == 8
    assert sum(len(b["captions"]) for b in val) == SYNTH["val_combos"]
