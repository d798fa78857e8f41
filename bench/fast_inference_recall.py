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

import torch
from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> int:
    from lsdo.checkpoint import load_checkpoint
    from lsdo.cli import run_plain
    from lsdo.data import build_datamodule
    from lsdo.evaluate import rebuild
    from lsdo.model import TextFeatures
    from lsdo.model.encoder import image_size_of
    from lsdo.retrieval import fast_similarity, prefilter_scores, similarity_matrix
    from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics

    args = list(sys.argv[1:] if argv is None else argv)
    opts = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in ("ckpt", "ks"))
    overrides = [a for a in args if a.split("=", 1)[0] not in ("ckpt", "ks")]

    def run() -> int:
        saved, state = load_checkpoint(opts["ckpt"])
        cfg = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(overrides))
        lit = rebuild(OmegaConf.to_container(cfg, resolve=True), state).eval()
        model = lit.model
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
        ks = [int(k) for k in opts.get("ks", "5,10,20,50,100").split(",")]
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
        print(f"{cfg.dataset.name} test: {len(text)} texts, {num_videos} videos; checkpoint {opts['ckpt']}")
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

    return run_plain(run)


if __name__ == "__main__":
    sys.exit(main())
