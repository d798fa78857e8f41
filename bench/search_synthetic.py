"""Search a folder of ``lsdo-synth`` videos with free text: how often is the captioned video rank 1?

    lsdo-synth out=/tmp/synth
    python bench/search_synthetic.py ckpt=logs/demo/runs/<run>/checkpoints/best-epoch<N>.ckpt synth=/tmp/synth

Builds an index of every video in ``<synth>/videos`` (train, val and test: 680 videos by default)
with ``lsdo-index build``, then searches it with each test caption of ``MSRVTT_JSFUSION_test.csv``
(``lsdo-search``'s code path, ``VideoIndex.search``) and reports the share of queries whose video
comes first, top 5 and top 10, for the full protocol and the prefilter. Two query sets:

* the 60 test captions: their combinations are never seen in training, so each describes exactly
  one video of the folder (compositional generalisation, the hard case);
* one caption per training combination (its first template, as at test time): a hit is any video
  of the folder that carries this caption in ``MSRVTT_data.json`` (the combination's training
  videos), i.e. finding videos like the ones the model was trained on;
* every indexed video's own caption (its first template; 680 queries: 600 training videos, whose
  six renderings per combination share it, 20 validation and 60 test videos), hit as above: the
  folder searched for each of its videos.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lsdo.errors import LSDOUserError
from lsdo.options import option

ANNOTATIONS = ("MSRVTT_JSFUSION_test.csv", "MSRVTT_data.json", "MSRVTT_train.9k.csv")


@dataclass
class SearchSyntheticArgs:
    ckpt: str = option("a training checkpoint of the synthetic benchmark")
    synth: str = option("an lsdo-synth output folder (its videos/ and MSR-VTT-style annotation files)")
    index: str | None = option("the index folder, built there unless it exists (null: <synth>/index)", None)
    num_frames: int = option("frames per video when building the index", 8, minimum=1)


def run(args: SearchSyntheticArgs) -> int:
    from lsdo.checkpoint import load_model
    from lsdo.cli.index import index_main
    from lsdo.retrieval.index import VideoIndex

    synth = Path(args.synth)
    missing = [n for n in ("videos", *ANNOTATIONS) if not (synth / n).exists()]
    if missing:
        raise LSDOUserError(f"synth: {synth} has no {missing[0]}; give a folder written by lsdo-synth out=DIR")
    out = Path(args.index) if args.index is not None else synth / "index"
    if not (out / "index.json").exists():
        t0 = time.perf_counter()
        rc = index_main(
            ["build", f"ckpt={args.ckpt}", f"videos={synth / 'videos'}", f"out={out}", f"num_frames={args.num_frames}"]
        )
        if rc:
            return rc
        print(f"index built in {time.perf_counter() - t0:.1f} s")
    model, _ = load_model(args.ckpt)
    index = VideoIndex.load(out)
    with open(synth / "MSRVTT_JSFUSION_test.csv") as f:
        rows = list(csv.DictReader(f))
    carriers: dict[str, set[str]] = {}
    for s in json.loads((synth / "MSRVTT_data.json").read_text())["sentences"]:
        carriers.setdefault(s["caption"], set()).add(s["video_id"])
    with open(synth / "MSRVTT_train.9k.csv") as f:
        train_ids = {r["video_id"] for r in csv.DictReader(f)}
    test_caps = [r["sentence"] for r in rows]
    templ = sorted({c for c, vs in carriers.items() if vs <= train_ids and c.endswith("in the corner")})
    ids = index.ids
    first: dict[str, str] = {}  # each indexed video's first caption (the test-time template)
    for c, vs in carriers.items():
        for v in vs:
            if c.endswith("in the corner"):
                first[v] = c
    every = [first[v] for v in ids if v in first]
    print(
        f"{len(ids)} videos indexed; queries: {len(test_caps)} test captions, {len(templ)} training combinations, "
        f"{len(every)} videos' own captions"
    )
    print("| queries | protocol | rank 1 | top 5 | top 10 | ms/query |")
    print("|---|---|---|---|---|---|")
    query_sets = (
        ("test (unseen combinations)", test_caps),
        ("training combinations", templ),
        ("every video's caption", every),
    )
    for qname, captions in query_sets:
        for label, k in (("full", None), ("prefilter k=50", 50), ("prefilter k=10", 10)):
            t0 = time.perf_counter()
            with torch.no_grad():
                _, idx = index.search(model, captions, topk=10, prefilter_k=k)
            ms = (time.perf_counter() - t0) * 1000 / len(captions)
            found = [[ids[j] for j in row] for row in idx.tolist()]
            hit = {
                n: sum(bool(carriers[c] & set(f[:n])) for c, f in zip(captions, found, strict=True))
                * 100
                / len(captions)
                for n in (1, 5, 10)
            }
            print(f"| {qname} | {label} | {hit[1]:.1f}% | {hit[5]:.1f}% | {hit[10]:.1f}% | {ms:.1f} |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/search_synthetic.py", SearchSyntheticArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
