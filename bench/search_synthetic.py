"""Search a folder of ``lsdo-synth`` videos with free text: how often is the captioned video rank 1?

    lsdo-synth --out /tmp/synth
    python bench/search_synthetic.py ckpt=logs/demo/runs/<run>/checkpoints/best-epoch19.ckpt synth=/tmp/synth

Builds an index of every video in ``<synth>/videos`` (train, val and test: 680 videos by default)
with ``lsdo-index build``, then searches it with each test caption of ``MSRVTT_JSFUSION_test.csv``
(``lsdo-search``'s code path, ``VideoIndex.search``) and reports the share of queries whose video
comes first, top 5 and top 10, for the full protocol and the prefilter. The test combinations are
never seen in training, so each test caption describes exactly one video of the folder.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from lsdo.evaluate import load_checkpoint, rebuild
    from lsdo.retrieval.index import VideoIndex
    from lsdo.retrieval.search_cli import index_main

    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    synth = Path(args["synth"])
    out = Path(args.get("index", str(synth / "index")))
    num_frames = args.get("num_frames", "8")
    if not (out / "index.json").exists():
        t0 = time.perf_counter()
        rc = index_main(
            ["build", f"ckpt={args['ckpt']}", f"videos={synth / 'videos'}", f"out={out}", f"num_frames={num_frames}"]
        )
        if rc:
            return rc
        print(f"index built in {time.perf_counter() - t0:.1f} s")
    saved, state = load_checkpoint(args["ckpt"])
    model = rebuild(saved, state).model.eval()
    index = VideoIndex.load(out)
    with open(synth / "MSRVTT_JSFUSION_test.csv") as f:
        rows = list(csv.DictReader(f))
    captions, targets = [r["sentence"] for r in rows], [r["video_id"] for r in rows]
    ids = index.ids
    print(f"{len(ids)} videos indexed, {len(captions)} test captions as queries")
    print("| protocol | rank 1 | top 5 | top 10 | ms/query |")
    print("|---|---|---|---|---|")
    for label, k in (("full", None), ("prefilter k=50", 50), ("prefilter k=10", 10)):
        t0 = time.perf_counter()
        with torch.no_grad():
            _, idx = index.search(model, captions, topk=10, prefilter_k=k)
        ms = (time.perf_counter() - t0) * 1000 / len(captions)
        found = [[ids[j] for j in row] for row in idx.tolist()]
        r = {n: sum(t in f[:n] for t, f in zip(targets, found, strict=True)) * 100 / len(targets) for n in (1, 5, 10)}
        print(f"| {label} | {r[1]:.1f}% | {r[5]:.1f}% | {r[10]:.1f}% | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
