"""Plain user mistakes in the data tools: one ``error:`` line naming the option or key and a fix that works as typed.

lsdo-synth's numeric options and ``--out``; the empty-caption, truncated-video and MSR-VTT val hints of the
real-dataset loaders (each hint's key must compose with Hydra exactly as printed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, run_module

from lsdo.cli.synth import synth_main as main
from lsdo.config import compose
from lsdo.data.annotations import AnnotationError, load_annotations
from lsdo.data.video import VideoDecodeError, probe_video, write_video
from lsdo.data.video_datamodule import preflight
from lsdo.errors import ConfigError

HELD_OUT = 153  # val + test combinations the synthetic split can hold: 9 large kinds x 17 free small kinds


def _one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line of stderr (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# ------------------------------------------------------------------ lsdo-synth
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--size", "0"],
            "error: --size must be between 16 and 1024 (frame side in pixels), got 0: pass e.g. --size 64",
        ),
        (
            ["--test-combos", "-1"],
            f"error: --test-combos must be between 1 and {HELD_OUT - 1} (test combinations, one video "
            "each), got -1: pass e.g. --test-combos 60",
        ),
    ],
)
def test_synth_bad_number_is_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    """Subprocess: exit code 2, no traceback, the option, the value given and its range (was: 'got 19')."""
    out = tmp_path / "synth"
    res = run_module("lsdo.cli.synth", "--out", str(out), *args, timeout=120)
    assert res.returncode == 2, res.stderr
    assert _one_error_line(res.stderr) == expected
    assert not out.exists()  # nothing written before the check


def test_synth_out_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("not a folder\n")
    res = run_module("lsdo.cli.synth", "--out", str(target), timeout=120)
    assert res.returncode == 2, res.stderr
    line = _one_error_line(res.stderr)
    assert line == (
        f"error: --out {target} is an existing file, not a folder: pass a folder (created if missing), "
        f"e.g. --out {tmp_path / 'notes_synth'}"
    )
    assert target.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--size", "5000"], "--size"),
        (["--size", "-3"], "--size"),
        (["--fps", "0"], "--fps"),
        (["--fps", "nan"], "--fps"),
        (["--crf", "52"], "--crf"),
        (["--crf", "-1"], "--crf"),
        (["--workers", "0"], "--workers"),
        (["--seed", "-1"], "--seed"),
        (["--clip-len", "0"], "--clip-len"),
        (["--train-videos-per-combo", "0"], "--train-videos-per-combo"),
        (["--val-combos", "0"], "--val-combos"),
        (["--val-combos", "-5"], "--val-combos"),
        (["--test-combos", "0"], "--test-combos"),
        (["--test-combos", "1000"], "--test-combos"),
        (["--distractors", "-1"], "--distractors"),
        (["--small-visible-frac", "0"], "--small-visible-frac"),
        (["--small-visible-frac", "1.5"], "--small-visible-frac"),
        (["--small-radius", "0"], "--small-radius"),
        (["--small-radius", "0.9"], "--small-radius"),
    ],
)
def test_synth_every_numeric_option_is_checked(tmp_path: Path, capsys, args: list[str], option: str) -> None:
    out = tmp_path / "synth"
    assert main(["--out", str(out), *args]) == 2
    line = _one_error_line(capsys.readouterr().err)
    value = args[1]
    assert line.startswith(f"error: {option} must be between ") and f"got {value}: pass e.g. {option} " in line
    assert not out.exists()


def test_synth_held_out_sum_and_size(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synth"
    assert main(["--out", str(out), "--val-combos", "20", "--test-combos", "140"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --val-combos + --test-combos must be at most {HELD_OUT} (the combinations not needed "
        "for training), got 20 + 140 = 160: lower --test-combos or --val-combos"
    )
    assert main(["--out", str(out), "--size", "1024", "--clip-len", "64"]) == 2
    assert "lower --clip-len or --size" in _one_error_line(capsys.readouterr().err)
    parent = tmp_path / "file"
    parent.write_text("x")
    assert main(["--out", str(parent / "synth")]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith(f"error: --out {parent / 'synth'}: cannot create ")
    assert not out.exists()


def test_synth_limits_match_the_splitter() -> None:
    """lsdo-synth's limit is exactly what synthetic.split_combinations accepts."""
    from lsdo.data import synthetic
    from lsdo.data.synth_export import MAX_HELD_OUT_COMBOS

    assert MAX_HELD_OUT_COMBOS == HELD_OUT
    synthetic.split_combinations(0, 1, HELD_OUT - 1)
    with pytest.raises(ValueError):
        synthetic.split_combinations(0, 1, HELD_OUT)


# ------------------------------------------------------------------ hints of the real-dataset loaders
def _msrvtt_with_empty_test_caption(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nv1\n")
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": [{"caption": "a cat", "video_id": "v1"}]}))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr0,v1,   \n")
    return root


def test_empty_caption_hint_names_the_dataset_key(tmp_path: Path) -> None:
    root = _msrvtt_with_empty_test_caption(tmp_path / "msr")
    with pytest.raises(AnnotationError) as exc:
        load_annotations("msrvtt", "test", root)
    assert str(exc.value).endswith("(pass dataset.on_empty_caption=skip to drop empty captions)")
    compose(["dataset=msrvtt", "dataset.on_empty_caption=skip"])  # the hint composes as typed
    assert load_annotations("msrvtt", "test", root, on_empty_caption="skip") == []
    with pytest.raises(ConfigError, match=r"^dataset\.on_empty_caption: unknown value 'drop'"):
        load_annotations("msrvtt", "test", root, on_empty_caption="drop")


def test_empty_caption_through_train_py(tmp_path: Path) -> None:
    """The user's path: train.py exits 2 with one error line ending in the full key."""
    root = _msrvtt_with_empty_test_caption(tmp_path / "msr")
    res = run_cli(
        "train.py",
        "experiment=demo",
        "model=tiny",
        "logger=none",
        "dataset=msrvtt",
        f"dataset.root={root}",
        "dataset.num_workers=0",
        f"paths.log_dir={tmp_path / 'logs'}",
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    line = _one_error_line(res.stderr)
    assert line == (
        f"error: {root / 'MSRVTT_JSFUSION_test.csv'}: line 2: empty 'sentence' for video 'v1' "
        "(pass dataset.on_empty_caption=skip to drop empty captions)"
    )


def test_annotation_file_keys_are_the_dataset_keys(tmp_path: Path) -> None:
    root = _msrvtt_with_empty_test_caption(tmp_path / "msr")
    with pytest.raises(ConfigError, match=r"^dataset\.files\.nope: not an annotation file of MSR-VTT"):
        load_annotations("msrvtt", "test", root, files={"nope": "x.csv"})
    with pytest.raises(AnnotationError, match=re.escape("or pass +dataset.files.val_csv=PATH")):
        load_annotations("msrvtt", "val", root)
    with pytest.raises(Exception, match=r"dataset\.files\.test_csv"):
        load_annotations("msrvtt", "test", root, files={"test_csv": "missing.csv"})
    compose(["dataset=msrvtt", "+dataset.files.val_csv=/x/val.csv"])  # the hint composes as typed


def _truncated(path: Path) -> Path:
    """A faststart mp4 cut in half: the index lists 24 frames, about 12 survive."""
    noise = np.random.default_rng(0).integers(0, 256, (24, 32, 48, 3), dtype=np.uint8)
    write_video(path, noise, faststart=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_truncated_video_hint_works_on_that_file(tmp_path: Path) -> None:
    """The hint no longer sends users to `lsdo-prepare compress`, which cannot decode such a file."""
    from lsdo.data.annotations import Record
    from lsdo.data.compress import compress_video

    videos = tmp_path / "videos"
    videos.mkdir()
    bad = _truncated(videos / "v1.mp4")
    with pytest.raises(VideoDecodeError) as exc:
        probe_video(bad)
    assert "truncated" in str(exc.value) and "lsdo-prepare" not in str(exc.value)
    assert "download or copy it again" in str(exc.value)
    with pytest.raises(VideoDecodeError):  # why the old hint was wrong
        compress_video(bad, tmp_path / "out" / "v1.mp4")

    write_video(videos / "v2.mp4", np.zeros((8, 32, 48, 3), np.uint8))
    records = [Record("v1", "a", "v1.mp4"), Record("v2", "b", "v2.mp4")]
    with pytest.raises(VideoDecodeError) as exc:
        preflight("msrvtt", "test", records, videos)
    msg = str(exc.value)
    assert msg.endswith("; pass dataset.on_corrupt=skip to drop them") and "lsdo-prepare" not in msg
    assert msg.count(str(bad)) == 1  # the file is named once, not "path: path: ..."
    kept = preflight("msrvtt", "test", records, videos, on_corrupt="skip")  # the hint, as typed, works
    assert kept.video_ids == ["v2"]
    compose(["dataset=msrvtt", "dataset.on_corrupt=skip"])
