"""``lsdo-search index=INDEX ckpt=PATH "a query" ["another query" ...]``: search an index with text.

::

    lsdo-search index=INDEX ckpt=PATH "a man sings into a microphone" ["another query" ...]
                [--topk 10 | topk=10] [prefilter_k=K] [region_mode=xpool|regions|both] [verify=true]
                [nprobe=32] [refine=16] [exact_prefilter=false]

``lsdo-search`` needs the checkpoint the index was built with (text encoder and X-Pool); another
one is a one-line error. Without ``prefilter_k`` every video is scored exactly (the full
protocol); with it the mean-pool prefilter keeps K videos per query for exact re-ranking.
``region_mode=regions`` scores each video by its best frame and region instead (max cosine of
the query's CLIP text embedding over frames x {global} U {regions}; every video, no prefilter);
``region_mode=both`` ranks by X-Pool score + region score (with or without the prefilter). Both
need an index built with a region encoder (a one-line error otherwise). The index's SHA-256 is
checked on every load (about 1 s per GB; ``verify=false`` skips it); empty queries are refused.
From 1M videos (or with a stored ``prefilter.faiss``) the prefilter is a FAISS IVF-PQ index,
approximate: ``nprobe`` lists are searched per query and the ``refine`` x K best by the compressed
codes re-scored exactly (recall against both: docs/search.md);
``exact_prefilter=true`` uses the exact mean-pool scores instead (FAISS flat, or torch).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lsdo.checkpoint import load_model
from lsdo.cli.common import option, run_tool
from lsdo.errors import LSDOUserError
from lsdo.retrieval.index import DEFAULT_NPROBE, DEFAULT_REFINE, SEARCH_MODES, VideoIndex, printable
from lsdo.runtime import resolve_device


@dataclass
class SearchArgs:
    index: str = option("index directory written by lsdo-index build")
    ckpt: str = option("the checkpoint the index was built with")
    queries: list[str] = option("the texts to search for", [], positional=True)
    topk: int = option("results per query", 10, minimum=1)
    prefilter_k: int | None = option(
        "mean-pool prefilter: re-rank only K videos per query (null: score every video)", None, minimum=1
    )
    region_mode: str = option("X-Pool, best frame x region (LAFM), or their sum", "xpool", choices=SEARCH_MODES)
    device: str = option("auto | cpu | cuda", "cpu")
    verify: bool = option("check every shard against its SHA-256 first (about 1 s per GB)", True)
    nprobe: int = option("IVF prefilter (from 1M videos): lists searched per query", DEFAULT_NPROBE, minimum=1)
    refine: int = option("IVF-PQ prefilter: refine x K candidates re-scored exactly", DEFAULT_REFINE, minimum=1)
    exact_prefilter: bool = option("prefilter with the exact mean-pool scores even where IVF-PQ is the default", False)


def search(opts: SearchArgs) -> int:
    queries = opts.queries
    if not queries:
        raise LSDOUserError('give at least one query, e.g. lsdo-search index=... ckpt=... "a man sings"')
    empty = [i for i, q in enumerate(queries, start=1) if not q.strip()]
    if empty:
        raise LSDOUserError(
            f"query {empty[0]} of {len(queries)} is empty or only whitespace: "
            'describe the video to find, e.g. "a man sings"'
        )
    topk, prefilter_k, mode = opts.topk, opts.prefilter_k, opts.region_mode
    if mode == "regions" and prefilter_k is not None:
        raise LSDOUserError("prefilter_k applies to region_mode=xpool or both; region_mode=regions scores every video")
    index = VideoIndex.load(
        opts.index, mmap=True, verify=opts.verify, faiss_nprobe=opts.nprobe, faiss_refine=opts.refine
    )
    if opts.exact_prefilter:
        index.ivfpq_threshold = len(index) + 1  # FAISS flat (or torch below faiss_threshold)
        index.ignore_stored_prefilter = True
    if mode != "xpool":
        index.require_regions()
    model, _ = load_model(opts.ckpt, resolve_device(opts.device))
    index.check_model(model, name=f"checkpoint {opts.ckpt}")
    scores, found = index.search(model, queries, topk=topk, prefilter_k=prefilter_k, check_model=False, mode=mode)
    scoring = {
        "xpool": "exact X-Pool",
        "regions": f"best frame x region ({index.meta.get('regions', {}).get('method')})",
        "both": "X-Pool + best frame x region",
    }[mode]
    if prefilter_k is None or prefilter_k >= len(index):
        protocol = f"{scoring} over all {len(index)} videos"
    else:
        plan = index.prefilter_plan()
        engine = {"torch": "", "flat": ", FAISS flat", "ivf": ", FAISS IVF", "ivfpq": ", FAISS IVF-PQ"}[plan.kind]
        engine += f" nprobe={opts.nprobe}" if plan.kind in ("ivf", "ivfpq") else ""
        engine += f" refine={opts.refine}" if plan.kind == "ivfpq" else ""
        protocol = f"prefilter k={prefilter_k}{engine} of {len(index)} videos, {scoring} re-ranking"
    blocks = []
    for query, row_s, row_i in zip(queries, scores.tolist(), found.tolist(), strict=True):
        lines = [f"query: {printable(query)}  ({protocol})"]  # ids and queries: one printable line each
        lines += [
            f"{rank:>4}  {s:.4f}  {printable(index.ids[i])}"
            for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), start=1)
        ]
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def search_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-search``."""
    return run_tool("lsdo-search", SearchArgs, search, argv, about=(__doc__ or "").split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(search_main())
