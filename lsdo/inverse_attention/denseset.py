"""Dense-Set: the crowded MS-COCO subset of the paper (§4 "MS-COCO Dense-Set").

"The dataset was created by selecting the top 10% crowded images in terms of objects present (based on the 81 object
classes of COCO). For each image, we choose the associated description to be one of the object classes in the image,
specifically, an object class that is present exactly once in the image."

``build_denseset(instances: dict, ...)`` -> dict with ``items`` (one per kept image)
(console script ``lsdo-build-denseset instances=... out=...``: :mod:`lsdo.cli.build_denseset`)

Where the paper is explicit we follow it: ``fraction = 0.1`` of the images, ranked by the number of objects present;
the description is a class present exactly once. Where it is silent (our choices, all overridable):

* crowdedness = number of object annotations of the image (``count=instances``; ``count=classes`` ranks by the number
  of distinct classes instead). ``iscrowd`` annotations count as one object each (as COCO stores them).
* the 10% is of every image listed in the file (images without annotations included), ``ceil(fraction * N)``
  images; ties at the cut are broken by ascending image id (ranking: objects descending, then image id).
* a class "present exactly once" has exactly one annotation and no ``iscrowd`` annotation (a crowd region stands for
  several instances). Selected images with no such class are dropped (reported as ``num_dropped``) - the paper
  selects first and then describes, so the subset can be smaller than 10%.
* several singleton classes: ``pick=random`` (default) draws one uniformly with ``random.Random(f"{seed}:{image_id}")``
  (reproducible and independent of the other images); ``first`` = lowest category id; ``smallest`` / ``largest`` =
  the singleton instance with the smallest / largest segmentation area.
* sentence: ``template="{name}"`` - the bare class name, since the paper says the description *is* the object class
  ("each description is not fully descriptive"); e.g. ``template="a photo of a {name}"`` for a prompt.
* "81 classes" is read as COCO's 80 object categories (+ background); the categories of the file are used.

The JSON written holds the parameters, counts and per item: image_id, file_name, width, height, num_objects,
category_id, category, caption, candidates (all singleton class names) and the singleton instance's bbox (x, y, w, h).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from lsdo.errors import LSDOUserError
from lsdo.options import option

PICKS = ("random", "first", "smallest", "largest")
COUNTS = ("instances", "classes")


def object_counts(instances: dict[str, Any], count_by: str = "instances") -> dict[int, int]:
    """Objects present per image id (every image of ``images``, 0 for images without annotations)."""
    if count_by not in COUNTS:
        raise LSDOUserError(f"count: must be one of {COUNTS}, got {count_by!r}")
    counts = {int(img["id"]): 0 for img in instances["images"]}
    anns = [a for a in instances["annotations"] if int(a["image_id"]) in counts]  # ignore orphan annotations
    if count_by == "instances":
        for ann in anns:
            counts[int(ann["image_id"])] += 1
    else:
        classes: dict[int, set[int]] = defaultdict(set)
        for ann in anns:
            classes[int(ann["image_id"])].add(int(ann["category_id"]))
        for image_id, cats in classes.items():
            counts[image_id] = len(cats)
    return counts


def select_crowded(counts: dict[int, int], fraction: float = 0.1) -> list[int]:
    """Image ids of the top ``ceil(fraction * N)`` images by count (ties: ascending image id), most crowded first."""
    if not 0.0 < fraction <= 1.0:
        raise LSDOUserError(f"fraction: must be in (0, 1], got {fraction}")
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    n = math.ceil(fraction * len(ranked) - 1e-9)
    return ranked[:n]


def singleton_annotations(annotations: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """category id -> its annotation, for the classes present exactly once (one non-crowd annotation)."""
    per_class = Counter(int(a["category_id"]) for a in annotations)
    crowd = {int(a["category_id"]) for a in annotations if a.get("iscrowd", 0)}
    return {
        int(a["category_id"]): a
        for a in annotations
        if per_class[int(a["category_id"])] == 1 and int(a["category_id"]) not in crowd
    }


def _choose(singles: dict[int, dict[str, Any]], pick: str, seed: int, image_id: int) -> int:
    cats = sorted(singles)
    if pick == "random":
        return random.Random(f"{seed}:{image_id}").choice(cats)
    if pick == "first":
        return cats[0]
    area = {c: float(singles[c].get("area", 0.0)) for c in cats}
    if pick == "smallest":
        return min(cats, key=lambda c: (area[c], c))
    if pick == "largest":
        return min(cats, key=lambda c: (-area[c], c))
    raise LSDOUserError(f"pick: must be one of {PICKS}, got {pick!r}")


@dataclass
class DensesetOptions:
    """What ``lsdo-build-denseset`` takes (its keys and their defaults: written here once)."""

    instances: str = option("COCO instances json (e.g. annotations/instances_val2017.json)")
    out: str = option("output json path")
    fraction: float = option("fraction of most crowded images kept (the paper's top 10%)", 0.1)
    count: str = option("crowdedness measure", "instances", choices=COUNTS)
    pick: str = option("which singleton class describes an image", "random", choices=PICKS)
    seed: int = option("seed of pick=random", 0)
    template: str = option("caption template with {name} ('{name}': the bare class name)", "{name}")


def build_denseset(
    instances: dict[str, Any],
    fraction: float = DensesetOptions.fraction,
    pick: str = DensesetOptions.pick,
    seed: int = DensesetOptions.seed,
    template: str = DensesetOptions.template,
    count_by: str = DensesetOptions.count,
) -> dict[str, Any]:
    """Dense-Set from a COCO instances dict (``images``, ``annotations``, ``categories``)."""
    if pick not in PICKS:
        raise LSDOUserError(f"pick: must be one of {PICKS}, got {pick!r}")
    if "{name}" not in template:
        raise LSDOUserError(f"template: must contain {{name}}, got {template!r}")
    for key in ("images", "annotations", "categories"):
        if key not in instances:
            raise LSDOUserError(f"instances: not a COCO instances file (no '{key}')")
    names = {int(c["id"]): str(c["name"]) for c in instances["categories"]}
    images = {int(img["id"]): img for img in instances["images"]}
    anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in instances["annotations"]:
        anns[int(ann["image_id"])].append(ann)
    counts = object_counts(instances, count_by)
    selected = select_crowded(counts, fraction)
    items, dropped = [], 0
    for image_id in selected:
        singles = singleton_annotations(anns[image_id])
        if not singles:
            dropped += 1
            continue
        cat = _choose(singles, pick, seed, image_id)
        img = images[image_id]
        items.append(
            {
                "image_id": image_id,
                "file_name": img.get("file_name"),
                "width": img.get("width"),
                "height": img.get("height"),
                "num_objects": counts[image_id],
                "category_id": cat,
                "category": names[cat],
                "caption": template.format(name=names[cat]),
                "candidates": [names[c] for c in sorted(singles)],
                "bbox": singles[cat].get("bbox"),
            }
        )
    return {
        "name": "Dense-Set",
        "params": {"fraction": fraction, "count": count_by, "pick": pick, "seed": seed, "template": template},
        "num_images_total": len(images),
        "num_selected": len(selected),
        "num_dropped": dropped,
        "num_items": len(items),
        "min_objects_selected": min((counts[i] for i in selected), default=0),
        "items": items,
    }
