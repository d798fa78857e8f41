"""One annotation API for every benchmark: ``load_annotations(name, split, ann_dir) -> list[Record]``.

A :class:`Record` is one text-to-video query pair: a video id, one caption (whitespace-stripped) and
the video's path relative to the dataset's videos folder. Records come in a deterministic order
(the order of the annotation files). :func:`group_by_video` turns them into per-video caption lists.

Datasets, their published file formats, conventions, and the ``files`` keys that override each
default file name (a relative name resolves against ``ann_dir``, an absolute path is used as is):

``msrvtt`` (MSR-VTT; video file ``<video_id>.mp4``)
    * ``data_json`` = ``MSRVTT_data.json``: ``{"sentences": [{"caption", "video_id", "sen_id"}, ...],
      "videos": [...]}`` (only ``sentences`` is read).
    * ``train_csv`` = ``MSRVTT_train.9k.csv`` or ``MSRVTT_train.7k.csv`` (by ``train_split``): one
      column ``video_id``. Train = every caption of these videos: videos in csv order, each video's
      captions in ``MSRVTT_data.json`` order.
    * ``val_csv`` = ``MSRVTT_val.csv`` (optional, same format as the train csvs). MSR-VTT has no
      official val split; without this file ``split="val"`` raises :class:`NoSplitError` (an
      :class:`AnnotationError`; the data module holds out ``dataset.val_videos`` training videos instead).
    * ``test_csv`` = ``MSRVTT_JSFUSION_test.csv``: ``key,vid_key,video_id,sentence``; the 1k-A test
      pairs, one caption per video (columns ``video_id`` and ``sentence`` are read).

``msvd`` (MSVD; video file ``<video_id>.avi``)
    * ``captions`` = ``captions_msvd.json``: ``{video_id: [caption, ...]}``.
    * ``train_list`` / ``val_list`` / ``test_list`` = ``{train,val,test}_list.txt``: one video id a
      line. Every caption of a listed video is its own record (list order, then caption order).

``lsmdc`` (LSMDC; video file ``<movie>/<clip_id>.avi``, movie = the clip id up to its last ``_``)
    * ``train_csv`` = ``LSMDC16_annos_training.csv``, ``val_csv`` = ``LSMDC16_annos_val.csv``,
      ``test_csv`` = ``LSMDC16_challenge_1000_publictect.csv``: tab-separated, no header, six fields
      (clip id, start aligned, end aligned, start extracted, end extracted, sentence). Quotes are
      ordinary characters; a tab inside the sentence stays in the sentence. One record per line.

``didemo`` (DiDeMo; video file = the json's ``video`` value, a file name with its extension)
    * ``train_json`` / ``val_json`` / ``test_json`` = ``{train,val,test}_data.json``: a list of
      moments ``{"video", "description", "times", ...}``. Paragraph-to-video retrieval: one record per
      video (first-appearance order), its caption the video's stripped descriptions in file order
      joined with single spaces; ``video_id`` is the ``video`` value.

``synthetic`` (the built-in benchmark; video file ``<video_id>.mp4``; ``ann_dir`` and ``files`` unused)
    * Records of :func:`lsdo.data.synthetic.make_split`, one per caption; keyword arguments ``seed``,
      ``val_combos``, ``test_combos``, ``train_videos_per_combo`` (defaults 0 / 20 / 60 / 6, those of
      ``configs/dataset/synthetic.yaml``).

Errors (all :class:`~lsdo.errors.LSDOUserError`, reported in one line by the entry points):
    * a missing annotation file or folder: :class:`~lsdo.errors.DataNotFoundError` naming the file and
      the dataset;
    * malformed json/csv, a missing column or key, a value of the wrong type, a listed video without
      any caption, duplicate ids in a split list: :class:`AnnotationError` naming the file and the field
      (and the line, row or index when known);
    * an empty or whitespace-only caption: :class:`AnnotationError` naming file, line/index and video
      id with ``on_empty_caption="error"`` (default); with ``"skip"`` such captions are dropped and one
      warning gives their count and the file;
    * an unknown dataset, split, ``train_split``, ``files`` key or option: :class:`~lsdo.errors.ConfigError`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsdo.errors import ConfigError, DataNotFoundError, LSDOUserError

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DEFAULT_FILES",
    "AnnotationError",
    "NoSplitError",
    "Record",
    "group_by_video",
    "load_annotations",
    "msrvtt_train_video_ids",
]


class AnnotationError(LSDOUserError):
    """A malformed annotation file; the message names the file and the field (and the row when known)."""


class NoSplitError(AnnotationError):
    """The benchmark has no official split of this name and no file defines one (MSR-VTT's val)."""


@dataclass(frozen=True)
class Record:
    """One text-to-video query pair.

    Attributes:
        video_id: the dataset's id of the video.
        caption: one caption (a DiDeMo paragraph), stripped of surrounding whitespace.
        video_file: the video's path relative to the dataset's videos folder.
    """

    video_id: str
    caption: str
    video_file: str


DATASETS = ("msrvtt", "msvd", "lsmdc", "didemo", "synthetic")
SPLITS = ("train", "val", "test")
PRETTY = {"msrvtt": "MSR-VTT", "msvd": "MSVD", "lsmdc": "LSMDC", "didemo": "DiDeMo", "synthetic": "synthetic"}
MSRVTT_TRAIN_CSV = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}
# Default file names per dataset and ``files`` key (MSR-VTT's train_csv depends on train_split).
DEFAULT_FILES: dict[str, dict[str, str]] = {
    "msrvtt": {
        "data_json": "MSRVTT_data.json",
        "train_csv": MSRVTT_TRAIN_CSV["9k"],
        "val_csv": "MSRVTT_val.csv",
        "test_csv": "MSRVTT_JSFUSION_test.csv",
    },
    "msvd": {
        "captions": "captions_msvd.json",
        "train_list": "train_list.txt",
        "val_list": "val_list.txt",
        "test_list": "test_list.txt",
    },
    "lsmdc": {
        "train_csv": "LSMDC16_annos_training.csv",
        "val_csv": "LSMDC16_annos_val.csv",
        "test_csv": "LSMDC16_challenge_1000_publictect.csv",
    },
    "didemo": {"train_json": "train_data.json", "val_json": "val_data.json", "test_json": "test_data.json"},
    "synthetic": {},
}
EMPTY_CAPTION_MODES = ("error", "skip")
LSMDC_FIELDS = ("clip id", "start aligned", "end aligned", "start extracted", "end extracted", "sentence")
_WHERE_TO_GET = {
    "msrvtt": "run data/fetch_annotations.sh or see data/README.md",
    "msvd": "run data/fetch_annotations.sh or see data/README.md",
    "didemo": "run data/fetch_annotations.sh or see data/README.md",
    "lsmdc": "LSMDC requires a signed licence from MPII: see data/README.md",
}


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_annotations(
    name: str,
    split: str,
    ann_dir: str | Path | None,
    *,
    train_split: str = "9k",
    files: Mapping[str, str | None] | None = None,
    on_empty_caption: str = "error",
    **synthetic: int,
) -> list[Record]:
    """The query pairs of one split of one benchmark, in file order.

    Args:
        name: ``msrvtt`` | ``msvd`` | ``lsmdc`` | ``didemo`` | ``synthetic``.
        split: ``train`` | ``val`` | ``test``.
        ann_dir: the folder holding the annotation files (ignored for ``synthetic``; may be ``None``
            when every file needed is given as an absolute path in ``files``).
        train_split: MSR-VTT's training list, ``9k`` or ``7k``.
        files: overrides of default file names, by key (see the module docstring); ``None`` values
            keep the default.
        on_empty_caption: ``error`` (raise) or ``skip`` (drop, with one warning giving the count).
        **synthetic: ``seed``, ``val_combos``, ``test_combos``, ``train_videos_per_combo`` for the
            synthetic benchmark.

    Returns:
        One :class:`Record` per (video, caption) query pair.

    Raises:
        DataNotFoundError: an annotation file (or ``ann_dir``) does not exist.
        AnnotationError: an annotation file is malformed (see the module docstring).
        ConfigError: an unknown dataset, split, ``train_split``, ``files`` key or option.
    """
    name = _check_choice("dataset name", name, DATASETS)
    split = _check_choice(f"{PRETTY[name]} split", split, SPLITS)
    _check_choice("dataset.on_empty_caption", on_empty_caption, EMPTY_CAPTION_MODES)
    if name == "synthetic":
        return _load_synthetic(split, **synthetic)
    if synthetic:
        raise ConfigError(
            f"load_annotations: {sorted(synthetic)} only apply to the synthetic benchmark, not {PRETTY[name]}"
        )
    resolver = _Resolver(name, ann_dir, files, train_split=train_split)
    empties = _EmptyCaptions(on_empty_caption)
    if name == "msrvtt":
        records = _load_msrvtt(split, resolver, empties)
    elif name == "msvd":
        records = _load_msvd(split, resolver, empties)
    elif name == "lsmdc":
        records = _load_lsmdc(split, resolver, empties)
    else:
        records = _load_didemo(split, resolver, empties)
    empties.report()
    return records


def msrvtt_train_video_ids(
    ann_dir: str | Path | None, train_split: str = "9k", files: Mapping[str, str | None] | None = None
) -> list[str]:
    """The video ids of MSR-VTT's 9k or 7k training list (``MSRVTT_train.{9k,7k}.csv``), in file order.

    Needs only the csv, not ``MSRVTT_data.json``.
    """
    resolver = _Resolver("msrvtt", ann_dir, files, train_split=train_split)
    return _read_id_csv(resolver.path("train_csv"), "msrvtt")


def group_by_video(records: Iterable[Record]) -> tuple[list[str], list[list[str]], list[str]]:
    """Group query pairs by video.

    Returns:
        The unique video ids in first-appearance order, each video's captions (in record order) and
        each video's ``video_file``.

    Raises:
        AnnotationError: one video id comes with two different video files.
    """
    index: dict[str, int] = {}
    ids: list[str] = []
    captions: list[list[str]] = []
    video_files: list[str] = []
    for rec in records:
        i = index.get(rec.video_id)
        if i is None:
            index[rec.video_id] = len(ids)
            ids.append(rec.video_id)
            captions.append([rec.caption])
            video_files.append(rec.video_file)
            continue
        if video_files[i] != rec.video_file:
            raise AnnotationError(
                f"video '{rec.video_id}' has two video files: '{video_files[i]}' and '{rec.video_file}'"
            )
        captions[i].append(rec.caption)
    return ids, captions, video_files


# --------------------------------------------------------------------------------------------------
# Helpers: arguments, paths, empty captions, file readers
# --------------------------------------------------------------------------------------------------


def _check_choice(what: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{what}: unknown value {value!r} (expected one of {', '.join(choices)})")
    return value


class _Resolver:
    """Resolves a dataset's ``files`` keys to paths: overrides first, then the defaults, under ``ann_dir``."""

    def __init__(
        self, name: str, ann_dir: str | Path | None, files: Mapping[str, str | None] | None, *, train_split: str
    ) -> None:
        self.name = name
        self.pretty = PRETTY[name]
        self.ann_dir = Path(ann_dir).expanduser() if ann_dir is not None else None
        self.defaults = dict(DEFAULT_FILES[name])
        if name == "msrvtt":
            _check_choice("dataset.train_split (MSR-VTT)", train_split, tuple(MSRVTT_TRAIN_CSV))
            self.defaults["train_csv"] = MSRVTT_TRAIN_CSV[train_split]
        self.overrides: dict[str, str] = {}
        for key, value in (files or {}).items():
            if key not in self.defaults:
                raise ConfigError(
                    f"dataset.files.{key}: not an annotation file of {self.pretty} "
                    f"(its keys: {', '.join(self.defaults)})"
                )
            if value is not None:
                if not isinstance(value, str | Path):
                    raise ConfigError(f"dataset.files.{key}: expected a file name or path, got {type(value).__name__}")
                self.overrides[key] = str(value)

    def is_overridden(self, key: str) -> bool:
        return key in self.overrides

    def path(self, key: str, *, must_exist: bool = True) -> Path:
        """The path of file ``key``; raises DataNotFoundError if ``must_exist`` and it is missing."""
        raw = Path(self.overrides.get(key, self.defaults[key])).expanduser()
        if raw.is_absolute():
            path = raw
        elif self.ann_dir is None:
            raise ConfigError(
                f"{self.pretty}: no annotation folder given (dataset.ann_dir / dataset.root) to find '{raw}' "
                f"(dataset.files.{key}); pass dataset.root=DIR or +dataset.files.{key}=/absolute/path"
            )
        else:
            if must_exist and not self.ann_dir.is_dir():
                raise DataNotFoundError(
                    f"{self.pretty} annotation folder not found: {self.ann_dir} (looking for {raw}); "
                    f"{_WHERE_TO_GET[self.name]}"
                )
            path = self.ann_dir / raw
        if must_exist and not path.is_file():
            raise DataNotFoundError(
                f"{self.pretty} annotation file not found: {path} (dataset.files.{key}); {_WHERE_TO_GET[self.name]}"
            )
        return path


class _EmptyCaptions:
    """Applies ``on_empty_caption`` and reports skipped captions once per call."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.skipped: dict[Path, int] = {}
        self.dropped_videos: dict[Path, int] = {}

    def clean(self, raw: str, *, path: Path, where: str, video_id: str, field: str) -> str | None:
        """``raw`` stripped; ``None`` for an empty caption being skipped (raises in ``error`` mode)."""
        text = raw.strip()
        if text:
            return text
        if self.mode == "error":
            raise AnnotationError(
                f"{path}: {where}: empty {field!r} for video '{video_id}' "
                "(pass dataset.on_empty_caption=skip to drop empty captions)"
            )
        self.skipped[path] = self.skipped.get(path, 0) + 1
        return None

    def report(self) -> None:
        for path, count in self.skipped.items():
            extra = ""
            if self.dropped_videos.get(path):
                extra = f"; {self.dropped_videos[path]} video(s) left without any caption were dropped"
            log.warning("skipped %d empty caption(s) in %s%s (dataset.on_empty_caption=skip)", count, path, extra)


def _read_text(path: Path, dataset: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not valid UTF-8 text ({PRETTY[dataset]} annotations): {e}") from e


def _read_json(path: Path, dataset: str) -> Any:
    try:
        return json.loads(_read_text(path, dataset))
    except json.JSONDecodeError as e:
        raise AnnotationError(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg} ({PRETTY[dataset]} annotations)"
        ) from e


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _get_str(item: Any, key: str, path: Path, where: str) -> str:
    """``item[key]`` as a string; AnnotationError naming file, position and field otherwise."""
    if not isinstance(item, dict):
        raise AnnotationError(f"{path}: {where}: expected an object with key {key!r}, got {_type_name(item)}")
    if key not in item:
        raise AnnotationError(f"{path}: {where}: missing key {key!r} (keys: {', '.join(map(str, item)) or 'none'})")
    value = item[key]
    if not isinstance(value, str):
        raise AnnotationError(f"{path}: {where}: field {key!r} must be a string, got {_type_name(value)}")
    return value


def _read_csv_rows(path: Path, dataset: str, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a comma-separated file with a header, as (line number, row); checks the required columns."""
    text = _read_text(path, dataset)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header = reader.fieldnames
        if header is None:
            raise AnnotationError(f"{path}: empty file: expected a header with column(s) {', '.join(required)}")
        missing = [c for c in required if c not in header]
        if missing:
            raise AnnotationError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} in the header "
                f"(found: {', '.join(repr(c) for c in header)})"
            )
        for row in reader:
            line = reader.line_num
            if None in row:
                raise AnnotationError(
                    f"{path}: line {line}: {len(header) + len(row[None])} fields but the header has "
                    f"{len(header)} (an unquoted comma?)"
                )
            absent = [c for c in required if row.get(c) is None]
            if absent:
                raise AnnotationError(f"{path}: line {line}: missing value for column {absent[0]!r}")
            rows.append((line, row))
    except csv.Error as e:
        raise AnnotationError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from e
    return rows


def _check_unique(ids: list[tuple[int, str]], path: Path, what: str) -> list[str]:
    seen: dict[str, int] = {}
    for line, vid in ids:
        if vid in seen:
            raise AnnotationError(f"{path}: line {line}: {what} '{vid}' repeats line {seen[vid]}")
        seen[vid] = line
    return [vid for _, vid in ids]


def _read_id_csv(path: Path, dataset: str) -> list[str]:
    """A one-column ``video_id`` csv (MSR-VTT's split lists), in file order; ids must be unique and non-empty."""
    ids: list[tuple[int, str]] = []
    for line, row in _read_csv_rows(path, dataset, ("video_id",)):
        vid = row["video_id"].strip()
        if not vid:
            raise AnnotationError(f"{path}: line {line}: empty 'video_id'")
        ids.append((line, vid))
    return _check_unique(ids, path, "video_id")


def _read_id_list(path: Path, dataset: str) -> list[str]:
    """A plain list of ids, one a line (blank lines ignored); ids must be unique."""
    ids = [(i, s.strip()) for i, s in enumerate(_read_text(path, dataset).split("\n"), start=1) if s.strip()]
    return _check_unique(ids, path, "video id")


def _missing_captions_error(path: Path, list_path: Path, missing: list[str], skipped: bool) -> AnnotationError:
    shown = ", ".join(f"'{v}'" for v in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    why = " (all its captions were empty and skipped)" if skipped else ""
    return AnnotationError(f"{path}: no caption for {len(missing)} video(s) listed in {list_path.name}: {shown}{why}")


# --------------------------------------------------------------------------------------------------
# Per-dataset loaders
# --------------------------------------------------------------------------------------------------


def _load_msrvtt(split: str, res: _Resolver, empties: _EmptyCaptions) -> list[Record]:
    if split == "test":
        path = res.path("test_csv")
        records = []
        for line, row in _read_csv_rows(path, "msrvtt", ("video_id", "sentence")):
            vid = row["video_id"].strip()
            if not vid:
                raise AnnotationError(f"{path}: line {line}: empty 'video_id'")
            cap = empties.clean(row["sentence"], path=path, where=f"line {line}", video_id=vid, field="sentence")
            if cap is not None:
                records.append(Record(vid, cap, f"{vid}.mp4"))
        return records

    key = f"{split}_csv"
    if split == "val" and not res.is_overridden(key) and not res.path(key, must_exist=False).is_file():
        raise NoSplitError(
            f"MSR-VTT has no official val split: {res.path(key, must_exist=False)} does not exist. "
            "The data module holds out dataset.val_videos training videos for validation instead; "
            "to use a fixed list, write MSRVTT_val.csv (one column 'video_id') or pass +dataset.files.val_csv=PATH"
        )
    list_path = res.path(key)
    ids = _read_id_csv(list_path, "msrvtt")
    data_path = res.path("data_json")
    data = _read_json(data_path, "msrvtt")
    if not isinstance(data, dict):
        raise AnnotationError(f"{data_path}: expected a JSON object with key 'sentences', got {_type_name(data)}")
    if "sentences" not in data:
        raise AnnotationError(f"{data_path}: missing key 'sentences'")
    sentences = data["sentences"]
    if not isinstance(sentences, list):
        raise AnnotationError(f"{data_path}: field 'sentences' must be a list, got {_type_name(sentences)}")

    wanted = set(ids)
    per_video: dict[str, list[str]] = {vid: [] for vid in ids}
    had_empty: set[str] = set()
    for i, item in enumerate(sentences):
        where = f"sentences[{i}]"
        vid = _get_str(item, "video_id", data_path, where)
        raw = _get_str(item, "caption", data_path, where)
        if vid not in wanted:
            continue
        cap = empties.clean(raw, path=data_path, where=where, video_id=vid, field="caption")
        if cap is None:
            had_empty.add(vid)
        else:
            per_video[vid].append(cap)
    missing = [vid for vid in ids if not per_video[vid]]
    if missing:
        raise _missing_captions_error(data_path, list_path, missing, all(v in had_empty for v in missing))
    return [Record(vid, cap, f"{vid}.mp4") for vid in ids for cap in per_video[vid]]


def _load_msvd(split: str, res: _Resolver, empties: _EmptyCaptions) -> list[Record]:
    list_path = res.path(f"{split}_list")
    ids = _read_id_list(list_path, "msvd")
    cap_path = res.path("captions")
    data = _read_json(cap_path, "msvd")
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{cap_path}: expected a JSON object {{video_id: [caption, ...]}}, got {_type_name(data)}"
        )
    records: list[Record] = []
    missing: list[str] = []
    had_empty: set[str] = set()
    for vid in ids:
        caps = data.get(vid, [])
        if not isinstance(caps, list):
            raise AnnotationError(f"{cap_path}: field {vid!r} must be a list of captions, got {_type_name(caps)}")
        kept = 0
        for j, raw in enumerate(caps):
            if not isinstance(raw, str):
                raise AnnotationError(f"{cap_path}: {vid}[{j}]: caption must be a string, got {_type_name(raw)}")
            cap = empties.clean(raw, path=cap_path, where=f"{vid}[{j}]", video_id=vid, field="caption")
            if cap is None:
                had_empty.add(vid)
            else:
                records.append(Record(vid, cap, f"{vid}.avi"))
                kept += 1
        if not kept:
            missing.append(vid)
    if missing:
        raise _missing_captions_error(cap_path, list_path, missing, all(v in had_empty for v in missing))
    return records


def _load_lsmdc(split: str, res: _Resolver, empties: _EmptyCaptions) -> list[Record]:
    path = res.path(f"{split}_csv")
    records: list[Record] = []
    for line_no, line in enumerate(_read_text(path, "lsmdc").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t", len(LSMDC_FIELDS) - 1)
        if len(fields) < len(LSMDC_FIELDS):
            raise AnnotationError(
                f"{path}: line {line_no}: {len(fields)} tab-separated field(s), expected {len(LSMDC_FIELDS)} "
                f"({', '.join(LSMDC_FIELDS)}); missing field {LSMDC_FIELDS[len(fields)]!r}"
            )
        clip = fields[0].strip()
        if "_" not in clip:
            raise AnnotationError(
                f"{path}: line {line_no}: field 'clip id' {clip!r} has no '_' to split off its movie "
                "(expected <movie>_<start>-<end>)"
            )
        cap = empties.clean(fields[5], path=path, where=f"line {line_no}", video_id=clip, field="sentence")
        if cap is not None:
            movie = clip.rsplit("_", 1)[0]
            records.append(Record(clip, cap, f"{movie}/{clip}.avi"))
    return records


def _load_didemo(split: str, res: _Resolver, empties: _EmptyCaptions) -> list[Record]:
    path = res.path(f"{split}_json")
    data = _read_json(path, "didemo")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of moments, got {_type_name(data)}")
    paragraphs: dict[str, list[str]] = {}
    for i, item in enumerate(data):
        where = f"[{i}]"
        video = _get_str(item, "video", path, where)
        raw = _get_str(item, "description", path, where)
        if not video.strip():
            raise AnnotationError(f"{path}: {where}: empty 'video'")
        descs = paragraphs.setdefault(video, [])
        desc = empties.clean(raw, path=path, where=where, video_id=video, field="description")
        if desc is not None:
            descs.append(desc)
    dropped = sum(1 for descs in paragraphs.values() if not descs)
    if dropped:
        empties.dropped_videos[path] = dropped
    return [Record(video, " ".join(descs), video) for video, descs in paragraphs.items() if descs]


def _load_synthetic(split: str, **kwargs: int) -> list[Record]:
    from lsdo.data.synthetic import SPLIT_OPTIONS, make_split

    unknown = sorted(set(kwargs) - set(SPLIT_OPTIONS))
    if unknown:
        raise ConfigError(f"synthetic annotations: unknown option(s) {unknown} (known: {', '.join(SPLIT_OPTIONS)})")
    videos = make_split(split, **kwargs)
    return [Record(v.video_id, c, f"{v.video_id}.mp4") for v in videos for c in v.captions]
