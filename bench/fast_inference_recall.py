"""What fast inference (paper IV-B.3) costs in recall, on a trained checkpoint's test split.

    python bench/fast_inference_recall.py ckpt=logs/demo/runs/<run>/checkpoints/best-epoch19.ckpt
    python bench/fast_inference_recall.py ckpt=... ks=5,10,20,50 dataset.root=...   # any dataset override

Encodes the test split once, then scores it with the full X-Pool protocol and with the mean-pool
prefilter + exact re-ranking for each k, side by side, and prints R@1/R@5/R@10/MnR (t2v and v2t)
with the share of queries whose ground truth survived the prefilter. The paper says the
prefilter costs nothing; this measures it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

from lsdo.errors import LSDOUserError
from lsdo.options import option


@dataclass
class RecallArgs:
    ckpt: str = option("a training checkpoint (its test split is scored)")
    ks: list[int] = option("prefilter k values to compare with the full protocol", [5, 10, 20, 50, 100])


def with_overrides(saved: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The checkpoint's config with the command line's ``key=value`` overrides (keys it has; the model's unchanged)."""
    from lsdo.evaluate import check_compatible

    base = OmegaConf.create(saved)
    OmegaConf.set_struct(base, True)
    for token in overrides:
        key = token.split("=", 1)[0]
        if isinstance(OmegaConf.select(base, key), DictConfig):
            raise LSDOUserError(f"{key}: give its keys ({key}.KEY=VALUE), not a preset name, after ckpt=")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    except ConfigKeyError as exc:
        raise LSDOUserError(
            f"unknown argument {exc.full_key!r}: neither ckpt, ks nor a key of the checkpoint's config"
        ) from None
    OmegaConf.set_struct(cfg, False)
    check_compatible(base, cfg, {t.split("=", 1)[0] for t in overrides})
    return cfg


def recall(opts: RecallArgs, overrides: list[str]) -> int:
    from lsdo.checkpoint import load_model
    from lsdo.data import build_datamodule
    from lsdo.model import TextFeatures
    from lsdo.model.encoder import image_size_of
    from lsdo.retrieval import fast_similarity, prefilter_scores, similarity_matrix
    from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics

    model, saved = load_model(opts.ckpt)
    cfg = with_overrides(saved, overrides)
    dm = build_datamodule(cfg, image_size_of(cfg.model))
    dm.setup("test")
    texts, videos, t2v, offset = [], [], [], 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            texts.append(model.encode_text(model.tokenize(batch["captions"])))
            videos.append(model.encode_video(batch["frames"]))
            t2v.append(batch["text_to_video"] + offset)
            offset += batch["frames"].shape[0]
    text, video, t2v_idx = TextFeatures.cat(texts), torch.cat(videos), torch.cat(t2v)
    num_videos = video.shape[0]
    ks = opts.ks
    rows = []
    t0 = time.perf_counter()
    full = similarity_matrix(model, text, video)
    rows.append(("full", time.perf_counter() - t0, 100.0, full))
    for k in ks:
        t0 = time.perf_counter()
        sims = fast_similarity(model, text, video, prefilter_k=k)
        dt = time.perf_counter() - t0
        cand = prefilter_scores(text, video, k).candidates
        kept = (cand == t2v_idx[:, None]).any(dim=1).double().mean().item() * 100
        rows.append((f"k={k}" + (" (>= V: full)" if k >= num_videos else ""), dt, kept, sims))
    print(f"{cfg.dataset.name} test: {len(text)} texts, {num_videos} videos; checkpoint {opts.ckpt}")
    print(
        "| protocol | t2v R@1 | t2v R@5 | t2v R@10 | t2v MnR | v2t R@1 | v2t R@5 | GT kept by prefilter (%) "
        "| time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, dt, kept, sims in rows:
        a, b = t2v_metrics(sims, t2v_idx), v2t_metrics(sims, t2v_idx)
        print(
            f"| {name} | {a['R1']:.1f} | {a['R5']:.1f} | {a['R10']:.1f} | {a['MnR']:.1f} | {b['R1']:.1f} | "
            f"{b['R5']:.1f} | {kept:.1f} | {dt:.3f} |"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import Help, parse, usage
    from lsdo.errors import run_plain

    args = list(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        try:
            opts, overrides = parse(RecallArgs, args, passthrough=True)
        except Help:
            about = (__doc__ or "").split("\n\n")[0]
            print(
                usage("python bench/fast_inference_recall.py", RecallArgs, about) + "\n  ... and any key of the "
                "checkpoint's data config (dataset.root=...)"
            )
            return 0
        return recall(opts, overrides)

    return run_plain(run)


if __name__ == "__main__":
    sys.exit(main())
