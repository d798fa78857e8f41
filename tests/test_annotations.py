"""The annotation API (lsdo/data/annotations.py): real published files (../shared/data) and tiny written ones."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from lsdo.data import synthetic
from lsdo.data.annotations import (
    AnnotationError,
    NoSplitError,
    Record,
    group_by_video,
    load_annotations,
    msrvtt_train_video_ids,
)
from lsdo.errors import ConfigError, DataNotFoundError

# --------------------------------------------------------------------------------------------------
# Real files (skipped when ../shared/data is absent)
# --------------------------------------------------------------------------------------------------


def test_real_msrvtt_test_1k_a(shared_data: Path) -> None:
    recs = load_annotations("msrvtt", "test", shared_data / "msrvtt")
    ids, caps, files = group_by_video(recs)
    assert len(recs) == 1000 and len(ids) == 1000
    assert all(len(c) == 1 for c in caps)
    assert recs[0] == Record("video9770", "a person is connecting something to system", "video9770.mp4")
    assert all(f == f"{v}.mp4" for v, f in zip(ids, files, strict=True))


def test_real_msrvtt_train_lists(shared_data: Path) -> None:
    nine = msrvtt_train_video_ids(shared_data / "msrvtt", "9k")
    seven = msrvtt_train_video_ids(shared_data / "msrvtt", "7k")
    assert len(nine) == len(set(nine)) == 9000
    assert len(seven) == len(set(seven)) == 7010
    assert nine[:2] == ["video0", "video1"]
    test_ids = {r.video_id for r in load_annotations("msrvtt", "test", shared_data / "msrvtt")}
    assert not test_ids & set(nine) and not test_ids & set(seven)


def test_real_msrvtt_train_needs_data_json(shared_data: Path) -> None:
    # MSRVTT_data.json is not in shared/data: the loader names it.
    with pytest.raises(DataNotFoundError, match=r"MSR-VTT.*MSRVTT_data\.json"):
        load_annotations("msrvtt", "train", shared_data / "msrvtt")


def test_real_msrvtt_val_has_no_official_split(shared_data: Path) -> None:
    with pytest.raises(NoSplitError, match=r"no official val split.*val_videos"):
        load_annotations("msrvtt", "val", shared_data / "msrvtt")


@pytest.mark.parametrize(
    ("split", "n_videos", "n_captions"), [("train", 1200, 48774), ("val", 100, 4290), ("test", 670, 27763)]
)
def test_real_msvd(shared_data: Path, split: str, n_videos: int, n_captions: int) -> None:
    recs = load_annotations("msvd", split, shared_data / "msvd")
    ids, caps, files = group_by_video(recs)
    assert len(ids) == n_videos and len(recs) == n_captions
    assert sum(map(len, caps)) == n_captions
    assert all(f == f"{v}.avi" for v, f in zip(ids, files, strict=True))
    assert all(r.caption == r.caption.strip() and r.caption for r in recs)
    # Every caption of a video is its own record, duplicates included, in the json's order.
    raw = json.loads((shared_data / "msvd" / "captions_msvd.json").read_text())
    assert all(c == [s.strip() for s in raw[v]] for v, c in zip(ids, caps, strict=True))
    if split == "test":
        assert max(map(len, caps)) == 81


def test_real_lsmdc_test(shared_data: Path) -> None:
    recs = load_annotations("lsmdc", "test", shared_data / "lsmdc")
    assert len(recs) == 1000 and len({r.video_id for r in recs}) == 1000
    for r in recs:
        movie, _, stamp = r.video_id.rpartition("_")
        assert r.video_file == f"{movie}/{r.video_id}.avi" and movie and stamp
        assert r.caption and r.caption == r.caption.strip()
    assert recs[0].video_file == "3086_UGLY_TRUTH/3086_UGLY_TRUTH_00.23.23.000-00.23.28.886.avi"
    assert recs[0].caption == "SOMEONE stands below, hands on her hips."


@pytest.mark.parametrize(("split", "n_videos", "n_moments"), [("test", 1037, 4021), ("val", 1094, 4180)])
def test_real_didemo_paragraphs(shared_data: Path, split: str, n_videos: int, n_moments: int) -> None:
    recs = load_annotations("didemo", split, shared_data / "didemo")
    moments = json.loads((shared_data / "didemo" / f"{split}_data.json").read_text())
    assert len(moments) == n_moments
    # Brute force: for each video (first-appearance order), its descriptions in file order.
    order: list[str] = []
    for m in moments:
        if m["video"] not in order:
            order.append(m["video"])
    expected = [" ".join(m["description"].strip() for m in moments if m["video"] == v) for v in order]
    assert len(recs) == len(order) == n_videos
    assert [r.video_id for r in recs] == order
    assert [r.caption for r in recs] == expected
    assert all(r.video_file == r.video_id for r in recs)
    ids, caps, _ = group_by_video(recs)
    assert len(ids) == n_videos and all(len(c) == 1 for c in caps)


# --------------------------------------------------------------------------------------------------
# Tiny files written here, one of each format
# --------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _msrvtt_dir(tmp_path: Path, sentences: list[dict] | None = None) -> Path:
    d = tmp_path / "msrvtt"
    if sentences is None:
        sentences = [
            {"caption": "a man talks", "video_id": "video1", "sen_id": 0},
            {"caption": "a dog runs", "video_id": "video2", "sen_id": 1},
            {"caption": "  a man speaks  ", "video_id": "video1", "sen_id": 2},
            {"caption": "a cat sleeps", "video_id": "video9", "sen_id": 3},  # in no list: not in any split
        ]
    data = {"info": {}, "videos": [{"video_id": v, "split": "train"} for v in ("video1", "video2")]}
    _write(d / "MSRVTT_data.json", json.dumps({**data, "sentences": sentences}))
    _write(d / "MSRVTT_train.9k.csv", "video_id\nvideo2\nvideo1\n")
    _write(d / "MSRVTT_train.7k.csv", "video_id\nvideo1\n")
    _write(d / "MSRVTT_JSFUSION_test.csv", 'key,vid_key,video_id,sentence\nret0,msr7,video7,"a car, red"\n')
    return d


def test_msrvtt_tiny(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    train = load_annotations("msrvtt", "train", d)
    # Videos in csv order, each video's captions in json order, stripped.
    assert train == [
        Record("video2", "a dog runs", "video2.mp4"),
        Record("video1", "a man talks", "video1.mp4"),
        Record("video1", "a man speaks", "video1.mp4"),
    ]
    assert [r.video_id for r in load_annotations("msrvtt", "train", d, train_split="7k")] == ["video1", "video1"]
    assert load_annotations("msrvtt", "test", d) == [Record("video7", "a car, red", "video7.mp4")]
    assert msrvtt_train_video_ids(d, "9k") == ["video2", "video1"]
    ids, caps, files = group_by_video(train)
    assert ids == ["video2", "video1"] and caps == [["a dog runs"], ["a man talks", "a man speaks"]]
    assert files == ["video2.mp4", "video1.mp4"]


def test_msrvtt_val_csv_and_files_override(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    _write(d / "MSRVTT_val.csv", "video_id\nvideo9\n")
    assert load_annotations("msrvtt", "val", d) == [Record("video9", "a cat sleeps", "video9.mp4")]
    # Overrides: a relative name under ann_dir, an absolute path elsewhere.
    _write(d / "my_train.csv", "video_id\nvideo9\n")
    other = _write(tmp_path / "elsewhere" / "test.csv", "video_id,sentence\nvideo5,hello\n")
    files = {"train_csv": "my_train.csv", "test_csv": str(other)}
    assert [r.video_id for r in load_annotations("msrvtt", "train", d, files=files)] == ["video9"]
    assert load_annotations("msrvtt", "test", d, files=files) == [Record("video5", "hello", "video5.mp4")]
    # With absolute paths only, ann_dir may be None.
    assert len(load_annotations("msrvtt", "test", None, files={"test_csv": str(other)})) == 1
    # An explicitly named val csv that is missing is a missing file, not "no official val split".
    with pytest.raises(DataNotFoundError, match=r"MSR-VTT.*nope\.csv"):
        load_annotations("msrvtt", "val", d, files={"val_csv": "nope.csv"})


def test_msvd_tiny(tmp_path: Path) -> None:
    d = tmp_path / "msvd"
    _write(d / "captions_msvd.json", json.dumps({"a_1_2": ["x one", "x one", " x two"], "b_3_4": ["y"], "c": ["z"]}))
    _write(d / "train_list.txt", "a_1_2\nb_3_4\n\n")
    _write(d / "test_list.txt", "c\n")
    _write(d / "val_list.txt", "b_3_4\n")
    train = load_annotations("msvd", "train", d)
    assert [(r.video_id, r.caption, r.video_file) for r in train] == [
        ("a_1_2", "x one", "a_1_2.avi"),
        ("a_1_2", "x one", "a_1_2.avi"),
        ("a_1_2", "x two", "a_1_2.avi"),
        ("b_3_4", "y", "b_3_4.avi"),
    ]
    assert load_annotations("msvd", "test", d) == [Record("c", "z", "c.avi")]
    _write(tmp_path / "caps2.json", json.dumps({"b_3_4": ["w"]}))
    files = {"captions": str(tmp_path / "caps2.json"), "val_list": "val_list.txt"}
    assert load_annotations("msvd", "val", d, files=files) == [Record("b_3_4", "w", "b_3_4.avi")]


LSMDC_ROWS = (
    "1001_Movie_A_00.00.01.000-00.00.02.000\t00.00.01.000\t00.00.02.000\t00.00.01.000\t00.00.02.000\t"
    'SOMEONE says "hi" to SOMEONE.\n'
    "1002_Other_Movie_01.02.03.000-01.02.04.500\t01.02.03.000\t01.02.04.500\t01.02.03.000\t01.02.04.500\t"
    " He nods.\t(tab kept)\r\n"
)


def test_lsmdc_tiny(tmp_path: Path) -> None:
    d = tmp_path / "lsmdc"
    _write(d / "LSMDC16_annos_training.csv", LSMDC_ROWS)
    recs = load_annotations("lsmdc", "train", d)
    assert recs == [
        Record(
            "1001_Movie_A_00.00.01.000-00.00.02.000",
            'SOMEONE says "hi" to SOMEONE.',
            "1001_Movie_A/1001_Movie_A_00.00.01.000-00.00.02.000.avi",
        ),
        Record(
            "1002_Other_Movie_01.02.03.000-01.02.04.500",
            "He nods.\t(tab kept)",
            "1002_Other_Movie/1002_Other_Movie_01.02.03.000-01.02.04.500.avi",
        ),
    ]
    _write(d / "mine.tsv", LSMDC_ROWS.split("\n")[0] + "\n")
    assert len(load_annotations("lsmdc", "val", d, files={"val_csv": "mine.tsv"})) == 1


def _didemo_moments() -> list[dict]:
    def m(video: str, desc: str, aid: int) -> dict:
        return {"video": video, "description": desc, "times": [[0, 1]], "num_segments": 6, "annotation_id": aid}

    return [
        m("v1.mp4", "a man walks in.", 1),
        m("v2.", "the dog barks\n", 2),
        m("v1.mp4", " he sits down ", 3),
        m("v2.", "it stops.", 4),
    ]


def test_didemo_tiny(tmp_path: Path) -> None:
    d = tmp_path / "didemo"
    _write(d / "train_data.json", json.dumps(_didemo_moments()))
    recs = load_annotations("didemo", "train", d)
    assert recs == [
        Record("v1.mp4", "a man walks in. he sits down", "v1.mp4"),
        Record("v2.", "the dog barks it stops.", "v2."),
    ]
    _write(tmp_path / "t.json", json.dumps(_didemo_moments()[:1]))
    assert len(load_annotations("didemo", "test", d, files={"test_json": str(tmp_path / "t.json")})) == 1


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_synthetic_counts_equal_make_split(split: str) -> None:
    videos = synthetic.make_split(split, seed=0, val_combos=20, test_combos=60, train_videos_per_combo=6)
    recs = load_annotations("synthetic", split, None)
    assert len(recs) == sum(len(v.captions) for v in videos)
    ids, caps, files = group_by_video(recs)
    assert ids == [v.video_id for v in videos]
    assert caps == [list(v.captions) for v in videos]
    assert files == [f"{v.video_id}.mp4" for v in videos]
    small = load_annotations(
        "synthetic", split, "ignored", seed=3, val_combos=9, test_combos=18, train_videos_per_combo=1
    )
    assert len(small) == sum(len(v.captions) for v in synthetic.make_split(split, 3, 9, 18, 1))


# --------------------------------------------------------------------------------------------------
# Errors: each names the file and the field
# --------------------------------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    (d / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(DataNotFoundError, match=r"MSR-VTT annotation file not found: .*MSRVTT_JSFUSION_test\.csv"):
        load_annotations("msrvtt", "test", d)
    with pytest.raises(DataNotFoundError, match=r"MSVD annotation folder not found: .*nowhere"):
        load_annotations("msvd", "test", tmp_path / "nowhere")
    (tmp_path / "lsmdc").mkdir()
    with pytest.raises(DataNotFoundError, match=r"LSMDC.*LSMDC16_annos_training\.csv.*licence"):
        load_annotations("lsmdc", "train", tmp_path / "lsmdc")
    (tmp_path / "didemo").mkdir()
    with pytest.raises(DataNotFoundError, match=r"DiDeMo.*val_data\.json"):
        load_annotations("didemo", "val", tmp_path / "didemo")
    _write(tmp_path / "msvd" / "captions_msvd.json", "{}")
    with pytest.raises(DataNotFoundError, match=r"MSVD.*train_list\.txt"):
        load_annotations("msvd", "train", tmp_path / "msvd")


def test_malformed_json(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    _write(d / "MSRVTT_data.json", '{"sentences": [{"caption": "a", ')
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: malformed JSON at line 1"):
        load_annotations("msrvtt", "train", d)
    _write(tmp_path / "didemo" / "val_data.json", "[{]")
    with pytest.raises(AnnotationError, match=r"val_data\.json: malformed JSON"):
        load_annotations("didemo", "val", tmp_path / "didemo")
    _write(tmp_path / "didemo" / "val_data.json", '{"video": "x"}')
    with pytest.raises(AnnotationError, match=r"val_data\.json: expected a JSON list"):
        load_annotations("didemo", "val", tmp_path / "didemo")


def test_csv_missing_columns(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    _write(d / "MSRVTT_train.9k.csv", "vid\nvideo1\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_train\.9k\.csv: missing column\(s\) 'video_id'"):
        load_annotations("msrvtt", "train", d)
    with pytest.raises(AnnotationError, match=r"MSRVTT_train\.9k\.csv: missing column\(s\) 'video_id'"):
        msrvtt_train_video_ids(d, "9k")
    _write(d / "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,caption\nret0,msr1,video1,hello\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test\.csv: missing column\(s\) 'sentence'"):
        load_annotations("msrvtt", "test", d)
    _write(d / "MSRVTT_JSFUSION_test.csv", "video_id,sentence\nvideo1,hello\nvideo2\n")
    with pytest.raises(
        AnnotationError, match=r"MSRVTT_JSFUSION_test\.csv: line 3: missing value for column 'sentence'"
    ):
        load_annotations("msrvtt", "test", d)
    _write(d / "MSRVTT_JSFUSION_test.csv", "video_id,sentence\nvideo1,a, b\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test\.csv: line 2: 3 fields but the header has 2"):
        load_annotations("msrvtt", "test", d)


def test_lsmdc_missing_field(tmp_path: Path) -> None:
    d = tmp_path / "lsmdc"
    _write(d / "LSMDC16_annos_training.csv", LSMDC_ROWS + "1003_M_00.00.01.000-00.00.02.000\t00.00.01.000\n")
    with pytest.raises(AnnotationError, match=r"LSMDC16_annos_training\.csv: line 3: .*missing field 'end aligned'"):
        load_annotations("lsmdc", "train", d)
    _write(d / "LSMDC16_annos_training.csv", "noclipid\ta\tb\tc\td\tsentence\n")
    with pytest.raises(AnnotationError, match=r"line 1: field 'clip id' 'noclipid'"):
        load_annotations("lsmdc", "train", d)


def test_json_missing_keys_and_types(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path, [{"video_id": "video1", "sen_id": 0}])
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: sentences\[0\]: missing key 'caption'"):
        load_annotations("msrvtt", "train", d)
    d = _msrvtt_dir(tmp_path, [{"caption": 7, "video_id": "video1"}])
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: sentences\[0\]: field 'caption' must be a string"):
        load_annotations("msrvtt", "train", d)
    _write(d / "MSRVTT_data.json", json.dumps({"videos": []}))
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: missing key 'sentences'"):
        load_annotations("msrvtt", "train", d)
    moments = _didemo_moments()
    del moments[2]["description"]
    _write(tmp_path / "didemo" / "train_data.json", json.dumps(moments))
    with pytest.raises(AnnotationError, match=r"train_data\.json: \[2\]: missing key 'description'"):
        load_annotations("didemo", "train", tmp_path / "didemo")
    moments = _didemo_moments()
    moments[1]["video"] = None
    _write(tmp_path / "didemo" / "train_data.json", json.dumps(moments))
    with pytest.raises(AnnotationError, match=r"train_data\.json: \[1\]: field 'video' must be a string, got null"):
        load_annotations("didemo", "train", tmp_path / "didemo")
    m = tmp_path / "msvd"
    _write(m / "captions_msvd.json", json.dumps({"a": "not a list"}))
    _write(m / "test_list.txt", "a\n")
    with pytest.raises(AnnotationError, match=r"captions_msvd\.json: field 'a' must be a list"):
        load_annotations("msvd", "test", m)
    _write(m / "captions_msvd.json", json.dumps({"a": ["ok", 3]}))
    with pytest.raises(AnnotationError, match=r"captions_msvd\.json: a\[1\]: caption must be a string"):
        load_annotations("msvd", "test", m)


def test_empty_caption_error_and_skip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sentences = [
        {"caption": "a man talks", "video_id": "video1"},
        {"caption": "   ", "video_id": "video1"},
        {"caption": "", "video_id": "video2"},
        {"caption": "a dog runs", "video_id": "video2"},
    ]
    d = _msrvtt_dir(tmp_path, sentences)
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: sentences\[1\]: empty 'caption' for video 'video1'"):
        load_annotations("msrvtt", "train", d)
    with caplog.at_level(logging.WARNING, logger="lsdo.data.annotations"):
        recs = load_annotations("msrvtt", "train", d, on_empty_caption="skip")
    assert [r.caption for r in recs] == ["a dog runs", "a man talks"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 empty caption(s)" in warnings[0] and "MSRVTT_data.json" in warnings[0]

    # LSMDC: the line and the clip id; skip drops the clip.
    rows = LSMDC_ROWS + "1003_M_00.00.01.000-00.00.02.000\ta\tb\tc\td\t \n"
    _write(tmp_path / "lsmdc" / "LSMDC16_annos_val.csv", rows)
    with pytest.raises(AnnotationError, match=r"LSMDC16_annos_val\.csv: line 3: empty 'sentence' for video '1003_M_"):
        load_annotations("lsmdc", "val", tmp_path / "lsmdc")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lsdo.data.annotations"):
        assert len(load_annotations("lsmdc", "val", tmp_path / "lsmdc", on_empty_caption="skip")) == 2
    assert "skipped 1 empty caption(s)" in caplog.text and "LSMDC16_annos_val.csv" in caplog.text

    # DiDeMo: an empty description; a video left with none is dropped and counted.
    moments = _didemo_moments() + [{"video": "v3.avi", "description": " "}]
    moments[0]["description"] = "\n"
    _write(tmp_path / "didemo" / "test_data.json", json.dumps(moments))
    with pytest.raises(AnnotationError, match=r"test_data\.json: \[0\]: empty 'description' for video 'v1\.mp4'"):
        load_annotations("didemo", "test", tmp_path / "didemo")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lsdo.data.annotations"):
        recs = load_annotations("didemo", "test", tmp_path / "didemo", on_empty_caption="skip")
    assert [(r.video_id, r.caption) for r in recs] == [("v1.mp4", "he sits down"), ("v2.", "the dog barks it stops.")]
    assert "skipped 2 empty caption(s)" in caplog.text and "1 video(s) left without any caption" in caplog.text

    # MSR-VTT test csv: row number and video id.
    _write(d / "MSRVTT_JSFUSION_test.csv", "video_id,sentence\nvideo1,hi\nvideo2,  \n")
    with pytest.raises(
        AnnotationError, match=r"MSRVTT_JSFUSION_test\.csv: line 3: empty 'sentence' for video 'video2'"
    ):
        load_annotations("msrvtt", "test", d)


def test_train_video_without_captions(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    _write(d / "MSRVTT_train.9k.csv", "video_id\nvideo1\nvideo404\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: no caption for 1 video\(s\) .*'video404'"):
        load_annotations("msrvtt", "train", d)
    # All captions empty and skipped: still an error, saying why.
    d = _msrvtt_dir(tmp_path, [{"caption": "x", "video_id": "video1"}, {"caption": " ", "video_id": "video2"}])
    with pytest.raises(AnnotationError, match=r"'video2' \(all its captions were empty and skipped\)"):
        load_annotations("msrvtt", "train", d, on_empty_caption="skip")
    m = tmp_path / "msvd"
    _write(m / "captions_msvd.json", json.dumps({"a": ["x"], "b": []}))
    _write(m / "train_list.txt", "a\nb\nc\n")
    with pytest.raises(AnnotationError, match=r"captions_msvd\.json: no caption for 2 video\(s\) listed in train_list"):
        load_annotations("msvd", "train", m)


def test_duplicate_ids_in_a_split_list(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    _write(d / "MSRVTT_train.9k.csv", "video_id\nvideo1\nvideo2\nvideo1\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_train\.9k\.csv: line 4: video_id 'video1' repeats line 2"):
        msrvtt_train_video_ids(d)


def test_bad_arguments(tmp_path: Path) -> None:
    d = _msrvtt_dir(tmp_path)
    with pytest.raises(ConfigError, match="dataset name"):
        load_annotations("kinetics", "test", d)
    with pytest.raises(ConfigError, match="split"):
        load_annotations("msrvtt", "dev", d)
    with pytest.raises(ConfigError, match="train_split"):
        load_annotations("msrvtt", "train", d, train_split="8k")
    with pytest.raises(ConfigError, match=r"files\.test_json: not an annotation file of MSR-VTT"):
        load_annotations("msrvtt", "test", d, files={"test_json": "x.json"})
    with pytest.raises(ConfigError, match="on_empty_caption"):
        load_annotations("msrvtt", "test", d, on_empty_caption="drop")
    with pytest.raises(ConfigError, match="only apply to the synthetic"):
        load_annotations("msrvtt", "test", d, seed=1)
    with pytest.raises(ConfigError, match="no annotation folder"):
        load_annotations("msvd", "test", None)


def test_group_by_video_conflicting_files() -> None:
    with pytest.raises(AnnotationError, match="two video files"):
        group_by_video([Record("a", "x", "a.mp4"), Record("a", "y", "a.avi")])
    ids, caps, files = group_by_video([Record("b", "1", "b.mp4"), Record("a", "2", "a.mp4"), Record("b", "3", "b.mp4")])
    assert ids == ["b", "a"] and caps == [["1", "3"], ["2"]] and files == ["b.mp4", "a.mp4"]


# --------------------------------------------------------------------------------------------------
# data/fetch_annotations.sh, offline: --dry-run, and a run against file:// URLs
# --------------------------------------------------------------------------------------------------

FETCH = Path(__file__).resolve().parents[1] / "data" / "fetch_annotations.sh"


def _fetch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(FETCH), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_fetch_script_dry_run(tmp_path: Path) -> None:
    out = _fetch("--dry-run", "--dest", str(tmp_path / "d"))
    assert out.returncode == 0, out.stderr
    assert "releases/download/v0.0/msrvtt_data.zip" in out.stdout and "captions_msvd.json" in out.stdout
    assert "LocalizingMoments/HEAD/data/test_data.json" in out.stdout and "cannot be fetched" in out.stdout
    assert not (tmp_path / "d").exists()
    assert _fetch("--bogus").returncode == 2


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (file:// URLs)")
def test_fetch_script_offline_mirror(tmp_path: Path) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    with zipfile.ZipFile(src / "msrvtt_data.zip", "w") as z:
        for name in ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv"):
            z.writestr(f"msrvtt_data/{name}", name)
    with zipfile.ZipFile(src / "msvd_data.zip", "w") as z:
        for name in ("train_list.txt", "val_list.txt", "test_list.txt", "raw-captions.pkl"):
            z.writestr(f"msvd_data/{name}", name)
    _write(src / "captions_msvd.json", "{}")
    for s in ("train", "val", "test"):
        _write(src / f"{s}_data.json", "[]")
    env = {
        "CLIP4CLIP_RELEASE": src.as_uri(),
        "MSVD_CAPTIONS_URL": (src / "captions_msvd.json").as_uri(),
        "DIDEMO_RAW": src.as_uri(),
    }
    dest = tmp_path / "data"
    out = _fetch("--dest", str(dest), "msrvtt", "msvd", "didemo", env=env)
    assert out.returncode == 0, out.stderr
    assert (dest / "msrvtt" / "MSRVTT_train.7k.csv").read_text() == "MSRVTT_train.7k.csv"
    assert sorted(p.name for p in (dest / "msvd").iterdir()) == [
        "captions_msvd.json",
        "test_list.txt",
        "train_list.txt",
        "val_list.txt",
    ]
    assert sorted(p.name for p in (dest / "didemo").iterdir()) == ["test_data.json", "train_data.json", "val_data.json"]
    # Idempotent: existing files are skipped, even with the mirror gone.
    shutil.rmtree(src)
    again = _fetch("--dest", str(dest), "msrvtt", "msvd", "didemo", env=env)
    assert again.returncode == 0, again.stderr
    assert "  fetch " not in again.stdout and again.stdout.count("(exists)") == 11
    # A missing file is fetched again; a failing download says where the file is published.
    (dest / "didemo" / "val_data.json").unlink()
    failed = _fetch("--dest", str(dest), "didemo", env=env)
    assert failed.returncode == 1 and "LisaAnne/LocalizingMoments" in failed.stderr
    assert not list((dest / "didemo").glob("*.part"))
