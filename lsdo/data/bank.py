"""The ``shared`` variant's bank (paper IV-B): one training video per MSR-VTT category.

``lsdo-build-bank`` encodes those videos with the model's image encoder, averages each
video's frame features (raw CLIP embeddings, not normalised, as the authors' file) and writes
the bank JSON ``{"videos": [m ids], "features": [m x d]}`` read by ``variant.init=file``::

    lsdo-build-bank dataset=msrvtt dataset.root=/data/msrvtt out=bank.json            # pretrained CLIP
    lsdo-build-bank ckpt=path/to/model.ckpt dataset.root=/data/msrvtt out=bank.json   # a trained encoder
    lsdo-build-bank experiment=demo out=bank.json                                     # synthetic benchmark
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lsdo.data.annotations import DEFAULT_FILES
from lsdo.errors import ConfigError, LSDOUserError

log = logging.getLogger(__name__)


def msrvtt_categories(ann_dir: str | Path, files: Mapping[str, str] | None = None) -> dict[str, int]:
    """``{video_id: category}`` from the ``videos`` list of ``MSRVTT_data.json`` (empty if it has none)."""
    name = (files or {}).get("data_json") or DEFAULT_FILES["msrvtt"]["data_json"]
    path = Path(name) if Path(name).is_absolute() else Path(ann_dir) / name
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LSDOUserError(f"{path}: not valid JSON ({exc})") from None
    out = {}
    for i, v in enumerate(data.get("videos", []) if isinstance(data, dict) else []):
        if not isinstance(v, dict) or "video_id" not in v or "category" not in v:
            raise LSDOUserError(f"{path}: videos[{i}] lacks 'video_id' or 'category'")
        out[str(v["video_id"])] = int(v["category"])
    return out


def spread_picks(groups: Sequence[Hashable], kinds: Sequence[Hashable] | None, m: int) -> list[int]:
    """m item indices spread over the groups (round-robin) and the kinds; deterministic.

    ``groups[i]`` is item i's group (the synthetic benchmark's large object, MSR-VTT's category),
    ``kinds[i]`` its second attribute (the synthetic small object; None: every item is its own
    kind). Pick j goes to the next group in round-robin order (sorted groups) that has an unpicked
    item of the best tier, searched in this order:

    1. a kind not yet in the bank (the scarcest such kind: the one the fewest groups still offer);
    2. a (group, kind) combination not yet in the bank (the least used kind);
    3. any unpicked item (a combination twice, never the same item twice).

    Groups with nothing left are skipped, so the m picks are m distinct items whenever there are m
    items, and m distinct combinations whenever there are m combinations. Beyond the number of
    items the picks repeat in the same order (logged).
    """
    if m < 1 or not groups:
        raise ConfigError(f"variant.m: need m >= 1 and training videos, got m={m}, {len(groups)} videos")
    kind_of = list(range(len(groups))) if kinds is None else list(kinds)
    keys = sorted(set(groups))
    members = {g: [i for i, gi in enumerate(groups) if gi == g] for g in keys}
    offered_by: dict[Hashable, dict[Hashable, int]] = {}  # kind -> {group: unpicked items of that kind}
    for i, g in enumerate(groups):
        offered_by.setdefault(kind_of[i], {}).setdefault(g, 0)
        offered_by[kind_of[i]][g] += 1
    picked: list[int] = []
    taken: set[int] = set()
    kind_uses: dict[Hashable, int] = {}
    pairs: set[tuple[Hashable, Hashable]] = set()
    tiers = (
        (lambda i: kind_of[i] not in kind_uses, lambda i: (len(offered_by[kind_of[i]]), i)),  # scarcest kind
        (lambda i: (groups[i], kind_of[i]) not in pairs, lambda i: (kind_uses[kind_of[i]], i)),  # least used
        (lambda i: True, lambda i: i),
    )
    turn = 0  # index in ``keys`` of the group whose turn it is
    for _ in range(min(m, len(groups))):
        choice = None
        for ok, rank in tiers:
            for step in range(len(keys)):
                g = keys[(turn + step) % len(keys)]
                cands = [i for i in members[g] if i not in taken and ok(i)]
                if cands:
                    choice, turn = min(cands, key=rank), (turn + step + 1) % len(keys)
                    break
            if choice is not None:
                break
        assert choice is not None  # fewer than len(groups) items are taken
        picked.append(choice)
        taken.add(choice)
        k, g = kind_of[choice], groups[choice]
        kind_uses[k] = kind_uses.get(k, 0) + 1
        pairs.add((g, k))
        offered_by[k][g] -= 1
        if not offered_by[k][g]:
            del offered_by[k][g]
    if m > len(picked):
        log.warning("variant.m=%d > %d candidate videos: the bank repeats videos", m, len(picked))
        picked += [picked[j % len(picked)] for j in range(len(picked), m)]
    return picked


def pick_bank_videos(
    name: str, ann_dir: str | Path, candidates: list[str], m: int, files: Mapping[str, str] | None = None
) -> list[str]:
    """m distinct ids among ``candidates``: the categories in turn (paper IV-B), see :func:`spread_picks`.

    With MSR-VTT's 20 categories and m = 20: the first candidate of each category. A category
    with no videos left is skipped, so no video is picked twice while the categorised candidates
    last. Without categories (datasets other than MSR-VTT) m videos of a fixed random permutation.
    Ids repeat only when m exceeds the candidates (logged).
    """
    candidates = list(dict.fromkeys(candidates))  # one entry per video
    if m < 1 or not candidates:
        raise ConfigError(f"variant.m: need m >= 1 and training videos, got m={m}, {len(candidates)} videos")
    cats = msrvtt_categories(ann_dir, files) if name == "msrvtt" else {}
    with_cat = [v for v in candidates if v in cats]
    if not with_cat:
        log.info("%s: no video categories; the bank uses %d videos of a fixed random permutation", name, m)
        order = np.random.default_rng(0).permutation(len(candidates))
        if m > len(candidates):
            log.warning("variant.m=%d > %d candidate videos: the bank repeats videos", m, len(candidates))
        return [candidates[int(order[j % len(order)])] for j in range(m)]
    n_cats = len({cats[v] for v in with_cat})
    if m > n_cats:
        log.info("variant.m=%d > %d categories: categories are used more than once", m, n_cats)
    return [with_cat[i] for i in spread_picks([cats[v] for v in with_cat], None, m)]
