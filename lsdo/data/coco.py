"""MS-COCO text-image retrieval data (``dataset=coco``) for the zero-shot evaluator (``zeroshot.py``).

``load_coco(dcfg, report_dir=None)`` -> :class:`ImageTextSplit` (image ids, image paths, captions per image)
``ImageTextSplit.items()`` -> lazy sequence of uint8 [3, H, W] images; ``.pairs()`` -> (captions [T], text_to_item [T])

Layout under ``dataset.root`` (default ``data/coco``; every name can be overridden)::

    <root>/dataset_coco.json                         Karpathy split file        (dataset.karpathy_json)
    <root>/annotations/captions_val2014.json         COCO captions, optional    (dataset.captions_json)
    <root>/images/val2014/COCO_val2014_000000391895.jpg ...                     (dataset.image_dir = <root>/images)

Sources of images and captions, in order:

* **Karpathy split** (``karpathy_json``, the widely used ``dataset_coco.json``): ``{"images": [{"filepath",
  "filename", "split", "sentences": [{"raw"}], "cocoid"}]}``. The images whose ``split`` is ``dataset.split``
  (``test``: the 5k test images; ``val``, ``train``, ``restval``, or ``all``), in file order, with their ``raw``
  sentences. Image file: ``<image_dir>/<filepath>/<filename>``, else ``<image_dir>/<filename>``.
* **Karpathy split + COCO captions** (both files given): the split's images (by ``cocoid``), captions taken from the
  captions file(s) instead, in file order.
* **COCO captions only** (``captions_json`` given, no Karpathy file): every image of the captions file(s), format of
  ``captions_train2014.json``: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``
  (e.g. ``annotations/captions_val2017.json``: the 5k val2017 images). Image file: ``<image_dir>/<file_name>``,
  else ``<image_dir>/<folder>/<file_name>`` with the folder read off the name (``COCO_val2014_...`` -> ``val2014``)
  or off the captions file's name (``captions_val2017.json`` -> ``val2017``).
* **Dense-Set** (``dataset.denseset=PATH``, the JSON of ``lsdo-build-denseset``; a relative path resolves against
  ``root``): its items, one description each (``caption``), image ``file_name`` found as above (folder also read off
  the instances file recorded under ``source``). Overrides the split and the caption files.

``captions_per_image`` (default 5) keeps the first N captions of an image: the 5k-test protocol's 25,000 queries
(a few Karpathy images have 6 or 7). ``max_images`` keeps the first N images (smoke runs).

Errors (one line, :class:`~lsdo.errors.LSDOUserError`): a missing file names it and the ``dataset.*`` key; a
malformed file names the file and field (and the index); images listed but absent are counted and named (first
five; all in ``<run dir>/missing_images_<split>.txt``): ``dataset.on_missing=error`` (default) stops,
``skip`` drops those images with their captions and logs the count. An empty caption is an error unless
``dataset.on_empty_caption=skip``. An unreadable image file raises :class:`ImageDecodeError` naming it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsdo.data.annotations import AnnotationError
from lsdo.data.reports import write_report
from lsdo.errors import ConfigError, DataNotFoundError, LSDOUserError

log = logging.getLogger(__name__)

KARPATHY_SPLITS = ("test", "val", "train", "restval", "all")
_FOLDER_IN_NAME = re.compile(r"^COCO_([A-Za-z]+\d{4})_")
_FOLDER_IN_FILE = re.compile(r"(train|val|test)(\d{4})")


class ImageDecodeError(LSDOUserError):
    """An image file that cannot be read; the message names it."""


@dataclass
class ImageTextSplit:
    """Images (paths) and their captions: one text-image retrieval test set."""

    name: str
    image_ids: list[str]
    paths: list[Path]
    captions: list[list[str]]
    num_missing: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def pairs(self) -> tuple[list[str], torch.Tensor]:
        """(every caption [T], text_to_item [T] int64): captions grouped by image, in image order."""
        texts, t2i = [], []
        for i, caps in enumerate(self.captions):
            texts.extend(caps)
            t2i.extend([i] * len(caps))
        return texts, torch.tensor(t2i, dtype=torch.long)

    def items(self) -> ImageItems:
        """The images as a lazy sequence of uint8 [3, H, W] tensors."""
        return ImageItems(self.paths)


class ImageItems(Sequence):
    """Lazily decoded images: ``items[i]`` -> uint8 [3, H, W] (RGB) of ``paths[i]``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return load_image_file(self.paths[i])


def load_image_file(path: str | Path) -> torch.Tensor:
    """An image file -> uint8 [3, H, W] RGB (PIL; greyscale / palette / alpha images are converted)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot read image {p} ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------- file readers
def _read_json(path: Path, key: str) -> Any:
    if not path.is_file():
        raise DataNotFoundError(f"dataset.{key}: file not found: {path} (COCO layout: lsdo/data/coco.py)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not UTF-8 text (dataset.{key})") from None


def _field(obj: Any, name: str, path: Path, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise AnnotationError(f"{path}: {where} has no '{name}' field")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise AnnotationError(f"{path}: {where}.{name} must be {names}, got {type(value).__name__}")
    return value


def _list_field(data: Any, name: str, path: Path) -> list[Any]:
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with '{name}', got {type(data).__name__}")
    return _field(data, name, path, "the file", list)


def _caption(text: str, path: Path, where: str, on_empty: str, dropped: list[str]) -> str | None:
    text = text.strip()
    if text:
        return text
    if on_empty == "error":
        raise AnnotationError(f"{path}: {where} is an empty caption; pass dataset.on_empty_caption=skip to drop it")
    dropped.append(where)
    return None


@dataclass
class _Image:
    image_id: str
    candidates: list[Path]  # relative paths tried in order under image_dir
    captions: list[str]


def read_karpathy(path: Path, split: str, on_empty: str = "error") -> list[_Image]:
    """Images of Karpathy ``split`` (or ``all``) from a ``dataset_coco.json`` file, in file order."""
    if split not in KARPATHY_SPLITS:
        raise ConfigError(f"dataset.split: expected one of {', '.join(KARPATHY_SPLITS)}, got '{split}'")
    images = _list_field(_read_json(path, "karpathy_json"), "images", path)
    out, dropped = [], []
    for i, img in enumerate(images):
        where = f"images[{i}]"
        if _field(img, "split", path, where, str) != split and split != "all":
            continue
        filename = _field(img, "filename", path, where, str)
        filepath = img.get("filepath") or ""
        if not isinstance(filepath, str):
            raise AnnotationError(f"{path}: {where}.filepath must be str, got {type(filepath).__name__}")
        image_id = img.get("cocoid", img.get("imgid", filename))
        caps = []
        for j, sent in enumerate(_field(img, "sentences", path, where, list)):
            at = f"{where}.sentences[{j}]"
            c = _caption(_field(sent, "raw", path, at, str), path, at, on_empty, dropped)
            if c is not None:
                caps.append(c)
        cands = [Path(filepath) / filename, Path(filename)] if filepath else [Path(filename)]
        out.append(_Image(str(image_id), cands, caps))
    if dropped:
        log.warning("%s: %d empty captions dropped (dataset.on_empty_caption=skip)", path, len(dropped))
    return out


def _folders(file_name: str, source: str | None) -> list[Path]:
    """Sub-folders an image may sit in: read off the name (COCO_val2014_...) or off the annotation file's name."""
    out = []
    m = _FOLDER_IN_NAME.match(Path(file_name).name)
    if m:
        out.append(Path(m.group(1)))
    if source:
        m2 = _FOLDER_IN_FILE.search(Path(source).name)
        if m2 and Path(m2.group(0)) not in out:
            out.append(Path(m2.group(0)))
    return out


def read_coco_captions(path: Path, on_empty: str = "error") -> dict[str, _Image]:
    """image id -> image (file name, captions in file order) of a COCO captions file (captions_*.json)."""
    data = _read_json(path, "captions_json")
    images = _list_field(data, "images", path)
    anns = _list_field(data, "annotations", path)
    out: dict[str, _Image] = {}
    for i, img in enumerate(images):
        image_id = _field(img, "id", path, f"images[{i}]", (int, str))
        name = _field(img, "file_name", path, f"images[{i}]", str)
        out[str(image_id)] = _Image(str(image_id), [Path(name)] + [f / name for f in _folders(name, path.name)], [])
    dropped: list[str] = []
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        image_id = str(_field(ann, "image_id", path, where, (int, str)))
        if image_id not in out:
            raise AnnotationError(f"{path}: {where}.image_id {image_id} is not in 'images'")
        c = _caption(_field(ann, "caption", path, where, str), path, where, on_empty, dropped)
        if c is not None:
            out[image_id].captions.append(c)
    if dropped:
        log.warning("%s: %d empty captions dropped (dataset.on_empty_caption=skip)", path, len(dropped))
    return out


def read_denseset(path: Path) -> list[_Image]:
    """Dense-Set items (``lsdo-build-denseset`` JSON): one image and one description each, in file order."""
    data = _read_json(path, "denseset")
    items = _list_field(data, "items", path)
    source = data.get("source") if isinstance(data.get("source"), str) else None
    out = []
    for i, it in enumerate(items):
        where = f"items[{i}]"
        name = _field(it, "file_name", path, where, str)
        cap = _field(it, "caption", path, where, str).strip()
        if not cap:
            raise AnnotationError(f"{path}: {where}.caption is empty")
        image_id = it.get("image_id", name)
        out.append(_Image(str(image_id), [Path(name)] + [f / name for f in _folders(name, source)], [cap]))
    return out


# ---------------------------------------------------------------------- the split
def _resolve(root: Path, value: Any) -> Path | None:
    if value is None or str(value) == "":
        return None
    p = Path(str(value))
    return p if p.is_absolute() else root / p


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return list(value)


def load_coco(dcfg: Any, report_dir: str | Path | None = None) -> ImageTextSplit:
    """The images and captions selected by ``dataset.*`` (see the module docstring), files resolved and checked."""
    root = Path(str(dcfg.get("root") or "."))
    on_missing = str(dcfg["on_missing"])
    on_empty = str(dcfg["on_empty_caption"])
    for key, value in (("on_missing", on_missing), ("on_empty_caption", on_empty)):
        if value not in ("error", "skip"):
            raise ConfigError(f"dataset.{key}: expected error | skip, got '{value}'")
    image_dir = _resolve(root, dcfg.get("image_dir")) or root / "images"
    denseset = _resolve(root, dcfg.get("denseset"))
    split = str(dcfg["split"])
    if denseset is not None:
        images, name, label = read_denseset(denseset), "denseset", f"Dense-Set {denseset.name}"
    else:
        karpathy = _resolve(root, dcfg.get("karpathy_json"))
        caption_files = [_resolve(root, c) for c in _as_list(dcfg.get("captions_json"))]
        if karpathy is not None and not karpathy.is_file() and caption_files:
            log.info("coco: %s not found; using every image of %s", karpathy, ", ".join(map(str, caption_files)))
            karpathy = None
        if karpathy is None and not caption_files:
            raise DataNotFoundError(
                "dataset.karpathy_json and dataset.captions_json are both unset; give the Karpathy split file "
                "(dataset_coco.json) or a COCO captions file (layout: lsdo/data/coco.py)"
            )
        by_id: dict[str, _Image] = {}
        for f in caption_files:
            assert f is not None
            by_id.update(read_coco_captions(f, on_empty))
        if karpathy is not None:
            images = read_karpathy(karpathy, split, on_empty)
            if caption_files:
                absent = [im.image_id for im in images if im.image_id not in by_id]
                if absent:
                    raise AnnotationError(
                        f"{caption_files[0]}: {len(absent)} Karpathy {split} images (cocoid {', '.join(absent[:5])}"
                        f"{' ...' if len(absent) > 5 else ''}) are not in dataset.captions_json"
                    )
                images = [_Image(im.image_id, im.candidates, by_id[im.image_id].captions) for im in images]
            name, label = split, f"COCO Karpathy {split}"
        else:
            images, name, label = list(by_id.values()), "captions", "COCO " + ", ".join(f.name for f in caption_files)
    per_image = dcfg.get("captions_per_image")
    if per_image is not None:
        if int(per_image) < 1:
            raise ConfigError(f"dataset.captions_per_image: expected >= 1 or null, got {per_image}")
        images = [_Image(im.image_id, im.candidates, im.captions[: int(per_image)]) for im in images]
    no_caption = [im.image_id for im in images if not im.captions]
    if no_caption:
        raise AnnotationError(
            f"{label}: {len(no_caption)} images have no caption (id {', '.join(no_caption[:5])}"
            f"{' ...' if len(no_caption) > 5 else ''})"
        )
    max_images = dcfg.get("max_images")
    if max_images is not None:
        images = images[: int(max_images)]
    if not images:
        raise DataNotFoundError(f"{label}: no images selected (dataset.split={split})")
    if not image_dir.is_dir():
        raise DataNotFoundError(f"dataset.image_dir: {image_dir} does not exist (COCO layout: lsdo/data/coco.py)")

    paths: list[Path | None] = []
    for im in images:
        paths.append(next((image_dir / c for c in im.candidates if (image_dir / c).is_file()), None))
    missing = [i for i, p in enumerate(paths) if p is None]
    if missing:
        listed = [f"{images[i].image_id}\t{image_dir / images[i].candidates[0]}" for i in missing]
        where = write_report(Path(report_dir) if report_dir else None, f"missing_images_{name}.txt", listed)
        head = ", ".join(str(images[i].candidates[0]) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        msg = f"{label}: {len(missing)} of {len(images)} images are missing under {image_dir} ({head}){where}"
        if on_missing == "error":
            raise DataNotFoundError(msg + "; pass dataset.on_missing=skip to drop them")
        log.warning("%s; dropped with their captions (dataset.on_missing=skip)", msg)
    keep = [i for i, p in enumerate(paths) if p is not None]
    if not keep:
        raise DataNotFoundError(f"{label}: none of the {len(images)} images is under {image_dir}")
    out = ImageTextSplit(
        name=name,
        image_ids=[images[i].image_id for i in keep],
        paths=[paths[i] for i in keep],  # type: ignore[misc]
        captions=[images[i].captions for i in keep],
        num_missing=len(missing),
        info={"label": label, "image_dir": str(image_dir)},
    )
    log.info("%s: %d images, %d captions", label, len(out), sum(len(c) for c in out.captions))
    return out
