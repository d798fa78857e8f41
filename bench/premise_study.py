"""The LSDO study on the two-stage benchmark with the paper's premise (docs/premise.md). Resumable.

    python bench/premise_study.py                      # = make study; about 75 min on a 2-core CPU
    python bench/premise_study.py dir=logs/study seeds=3 epochs=10

1. **Stage 1** (``experiment=premise_stage1``): the tiny CLIP pretrained from scratch on captions that
   name the large object and, with probability 0.1, the small one. Written once to
   ``<dir>/premise/stage1.ckpt`` and reused.
2. **The premise** (:mod:`lsdo.premise`): linear probes of the stage-1 frame features for both
   objects and where the attention heatmap peaks, printed and saved to ``<dir>/premise.json``.
3. **Stage 2** (``experiment=premise``, one recipe for every variant): ``baseline`` and ``shared`` /
   ``average`` / ``single`` with ``variant.frame_attention`` = ``bounded`` (this project's form) and
   ``rescaled`` (the earlier form), each with ``seeds`` training seeds, fine-tuned from the stage-1
   encoder on captions naming both objects. Each run's test metrics and per-query ranks are kept in
   ``<dir>/stage2/<tag>/result.json``.
4. **Inverse attention** on the stage-1 encoder (``bench/inverse_attention_synthetic.py``; global only vs
   grid crops vs inverse-attention crops), at 64 px (as trained) and 192 px (``scale=3``: the object
   shrunk in the global view), 3 renderings of the test combinations.
5. **The report**: mean +- std over seeds of t2v / v2t R@1 and R@5; each variant's paired difference
   from the baseline (same seeds, same queries) with a 95% bootstrap interval over seeds and queries;
   the effect of the attention fix (bounded - rescaled, paired likewise). ``<dir>/study.md``,
   ``<dir>/study.json`` and ``<dir>/study.png``.

Killed at any point, the same command continues: finished steps are skipped (their result files
exist) and an interrupted training run resumes from its ``last.ckpt`` (``ckpt_path=last``).
"""

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from study_runs import ROOT, command

from lsdo.errors import LSDOUserError
from lsdo.options import option
from lsdo.stats import hits, paired_bootstrap

VARIANTS = ("baseline", "shared", "average", "single")
ATTENTIONS = ("bounded", "rescaled")
METRICS = ("t2v/R1", "t2v/R5", "v2t/R1", "v2t/R5")


@dataclass
class StudyArgs:
    dir: str = option("study directory; everything the study writes lives there", "logs/study")
    seeds: int = option("training seeds per configuration (3: seeds 0, 1, 2)", 3, minimum=1)
    epochs: int | None = option(
        "stage-2 epochs per run (null: experiment=premise's trainer.max_epochs)", None, minimum=1
    )
    variants: list[str] = option(f"subset of {','.join(VARIANTS)}", list(VARIANTS))
    attentions: list[str] = option(f"subset of {','.join(ATTENTIONS)}", list(ATTENTIONS))
    boot: int = option("bootstrap resamples for the intervals", 10_000, minimum=1)
    skip_ia: bool = option("leave out the inverse-attention rows", False)


def configs(variants: list[str], attentions: list[str]) -> list[tuple[str, str]]:
    """(variant, frame_attention) pairs of the study; the baseline has no frame attention (one row)."""
    out = [("baseline", "bounded")] if "baseline" in variants else []
    out += [(v, a) for v in variants if v != "baseline" for a in attentions]
    return out


def tag_of(variant: str, attention: str, seed: int) -> str:
    return f"{variant}-s{seed}" if variant == "baseline" else f"{variant}-{attention}-s{seed}"


def label_of(variant: str, attention: str) -> str:
    return variant if variant == "baseline" else f"{variant} ({attention})"


def has_last(log_dir: Path, task: str) -> bool:
    return any((log_dir / task / "runs").glob("*/checkpoints/last.ckpt"))


def stage1(study: Path) -> Path:
    ckpt = study / "premise" / "stage1.ckpt"
    if ckpt.is_file():
        print(f"stage 1: reusing {ckpt}")
        return ckpt
    print("stage 1: pretraining the tiny CLIP on salient captions (experiment=premise_stage1)", flush=True)
    resume = ["ckpt_path=last"] if has_last(study, "premise_stage1") else []
    command(
        [sys.executable, "train.py", "experiment=premise_stage1", f"paths.log_dir={study}", *resume],
        study / "stage1.log",
    )
    if not ckpt.is_file():
        raise LSDOUserError(f"stage 1 finished without writing {ckpt}; see {study / 'stage1.log'}")
    return ckpt


def premise(study: Path, ckpt: Path) -> dict[str, Any]:
    from lsdo.premise import format_premise, measure_premise

    path = study / "premise.json"
    if path.is_file():
        r = json.loads(path.read_text())
    else:
        r = measure_premise(ckpt, renders=4)
        path.write_text(json.dumps(r, indent=1))
    print(format_premise(r), flush=True)
    return r


def stage2_run(study: Path, stage1_ckpt: Path, variant: str, attention: str, seed: int, epochs: int | None) -> dict:
    tag = tag_of(variant, attention, seed)
    run_dir = study / "stage2" / tag
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = [
        "experiment=premise",
        f"variant={variant}",
        f"variant.frame_attention={attention}",
        f"seed={seed}",
        f"paths.log_dir={run_dir}",
        f"model.init_from={stage1_ckpt}",
        "logger=csv",
    ]
    if epochs:
        overrides.append(f"trainer.max_epochs={epochs}")
    if has_last(run_dir, "premise"):
        overrides.append("ckpt_path=last")
    start = time.time()
    print(f"stage 2: {tag}", flush=True)
    command([sys.executable, "train.py", *overrides], run_dir / "train.log")
    runs = sorted((run_dir / "premise" / "runs").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise LSDOUserError(f"{tag}: no metrics.json; see {run_dir / 'train.log'}")
    metrics = json.loads(runs[-1].read_text())
    ranks = json.loads((runs[-1].parent / "test_ranks.json").read_text())
    result = {
        "variant": variant,
        "attention": attention,
        "seed": seed,
        "test": metrics["test"],
        "ranks": ranks,
        "run_dir": str(runs[-1].parent),
        "seconds": time.time() - start,
    }
    done.write_text(json.dumps(result))
    t = metrics["test"]
    print(f"  t2v R@1 {t['t2v/R1']:.1f}  R@5 {t['t2v/R5']:.1f}  v2t R@1 {t['v2t/R1']:.1f}  ({result['seconds']:.0f} s)")
    return result


def inverse_attention(study: Path, ckpt: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scale in (1, 3):
        path = study / f"inverse_attention_x{scale}.json"
        if not path.is_file():
            cmd = [sys.executable, str(ROOT / "bench" / "inverse_attention_synthetic.py"), f"ckpt={ckpt}", "kernel=1"]
            cmd += ["ks=2", "renders=3", f"scale={scale}", f"out={path}"]
            command(cmd, study / "inverse_attention.log")
        out[f"x{scale}"] = json.loads(path.read_text())["results"]
    return out


# ---------------------------------------------------------------------- statistics


def summarise(results: list[dict], rows: list[tuple[str, str]], boot: int) -> dict[str, Any]:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by.setdefault((r["variant"], r["attention"]), []).append(r)
    table: dict[str, Any] = {}
    for key in rows:
        runs = sorted(by.get(key, []), key=lambda r: r["seed"])
        if not runs:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for m in METRICS:
            vals = np.array([r["test"][m] for r in runs])
            entry[m] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
        entry["per_seed"] = {m: [r["test"][m] for r in runs] for m in METRICS}
        table[label_of(*key)] = entry

    def per_query(key: tuple[str, str], direction: str, k: int, seeds: list[int]) -> np.ndarray:
        runs = {r["seed"]: r for r in by[key]}
        return np.stack([hits(runs[s]["ranks"][direction], k) for s in seeds])  # [S, Q]

    def compare(a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any] | None:
        if a not in by or b not in by:
            return None
        seeds = sorted({r["seed"] for r in by[a]} & {r["seed"] for r in by[b]})
        if not seeds:
            return None
        out: dict[str, Any] = {"seeds": seeds}
        for m in METRICS:
            direction, k = m.split("/R")
            mean, lo, hi = paired_bootstrap(
                per_query(a, direction, int(k), seeds), per_query(b, direction, int(k), seeds), boot
            )
            out[m] = {"diff": mean, "lo": lo, "hi": hi}
        return out

    vs_baseline = {
        label_of(*key): c for key in rows if key[0] != "baseline" and (c := compare(key, ("baseline", "bounded")))
    }
    fix = {v: c for v in VARIANTS if v != "baseline" and (c := compare((v, "bounded"), (v, "rescaled")))}
    return {"table": table, "vs_baseline": vs_baseline, "bounded_minus_rescaled": fix}


def format_report(s: dict[str, Any], premise_r: dict[str, Any], ia: dict[str, Any] | None, meta: dict) -> str:
    from lsdo.premise import format_premise

    def ms(e: dict) -> str:
        return f"{e['mean']:.1f} ± {e['std']:.1f}"

    def ci(e: dict) -> str:
        return f"{e['diff']:+.1f} [{e['lo']:+.1f}, {e['hi']:+.1f}]"

    lines = [
        f"# LSDO premise study ({meta['date']}, {meta['machine']})",
        "",
        f"Stage 2: `experiment=premise`, {meta['epochs']} epochs, seeds {meta['seeds']}, 60 test queries "
        "per direction per seed (the 60 unseen test combinations). Mean ± std over seeds.",
        "",
        "| variant (frame attention) | seeds | t2v R@1 | t2v R@5 | v2t R@1 | v2t R@5 |",
        "|---|---|---|---|---|---|",
    ]
    for label, e in s["table"].items():
        lines.append(f"| {label} | {len(e['seeds'])} | " + " | ".join(ms(e[m]) for m in METRICS) + " |")
    comparisons = (
        ("Paired difference from the baseline (same seeds, same queries), points, with a 95% bootstrap interval "
         "over seeds and queries:", "variant (frame attention)", s["vs_baseline"], " - baseline"),
        ("The effect of the attention fix (bounded - rescaled, paired likewise):", "variant",
         s["bounded_minus_rescaled"], ""),
    )  # fmt: skip
    for title, first, diffs, suffix in comparisons:
        if diffs:
            lines += ["", title, "", f"| {first} | " + " | ".join(METRICS) + " |", "|---" * 5 + "|"]
            lines += [f"| {k}{suffix} | " + " | ".join(ci(c[m]) for m in METRICS) + " |" for k, c in diffs.items()]
    lines += ["", "## The premise (stage-1 encoder)", "", format_premise(premise_r)]
    if ia:
        lines += [
            "",
            "## Inverse attention on the stage-1 encoder (zero-shot: plain cosine, max over frames x views)",
            "",
            "| frames | setting | crops/frame | hit % | random-box hit % | t2v R@1 | t2v R@5 | v2t R@1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for scale, rows in ia.items():
            for r in rows:
                st = r["setting"]
                if st["method"] == "inverse_attention" and st["kernel"] != 1:
                    continue
                name = st["label"] + (f" k={st['k']}" if st["method"] == "inverse_attention" else "")
                hit = "-" if st["method"] == "none" else f"{r['hit']:.1f}"
                rnd = "-" if st["method"] == "none" else f"{r['random_hit']:.1f}"
                px = "64 px" if scale == "x1" else "192 px (scale=3)"
                lines.append(
                    f"| {px} | {name} | {r['crops_per_frame']:.2f} | {hit} | {rnd} | {r['t2v/R1']:.1f} | "
                    f"{r['t2v/R5']:.1f} | {r['v2t/R1']:.1f} |"
                )
    return "\n".join(lines) + "\n"


def plot(s: dict[str, Any], path: Path) -> None:
    from lsdo.plots import pyplot

    plt = pyplot()

    labels = list(s["table"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, m in zip(axes, ("t2v/R1", "v2t/R1"), strict=True):
        means = [s["table"][lab][m]["mean"] for lab in labels]
        stds = [s["table"][lab][m]["std"] for lab in labels]
        colours = [
            "grey" if lab == "baseline" else ("tab:blue" if "bounded" in lab else "tab:orange") for lab in labels
        ]
        ax.bar(range(len(labels)), means, yerr=stds, color=colours, alpha=0.7, capsize=4)
        for i, lab in enumerate(labels):  # each seed's run as a dot
            vals = s["table"][lab]["per_seed"][m]
            ax.scatter([i] * len(vals), vals, color="black", s=10, zorder=3)
        ax.axhline(15.0, color="red", ls="--", lw=1, label="blind to the small object: 9/60 = 15%")
        ax.axhline(100 / 60, color="black", ls=":", lw=1, label="chance: 1/60")
        ax.set_ylim(0, 1.4 * max(20.0, *(m + sd for m, sd in zip(means, stds, strict=True))))
        ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(labels)), [lab.replace(" (", "\n(") for lab in labels], fontsize=8)
        ax.set_ylabel(f"{m.replace('/', ' ')} (%)")
        ax.set_title(f"{m}: mean ± std over seeds")
    fig.suptitle("Premise benchmark, stage 2 (blue: bounded frame attention, orange: rescaled)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: StudyArgs) -> int:
    import platform

    study = Path(args.dir).resolve()
    seeds = list(range(args.seeds))
    epochs = args.epochs
    variants, attentions = args.variants, args.attentions
    for key, given, known in (("variants", variants, VARIANTS), ("attentions", attentions, ATTENTIONS)):
        bad = [v for v in given if v not in known]
        if bad:
            raise LSDOUserError(f"{key}: unknown {bad[0]!r}; expected a subset of {','.join(known)}")
    study.mkdir(parents=True, exist_ok=True)
    rows = configs(variants, attentions)
    start = time.time()

    ckpt = stage1(study)
    premise_r = premise(study, ckpt)
    results = []
    for seed in seeds:  # seed-major: a partial study is balanced across configurations
        for variant, attention in rows:
            results.append(stage2_run(study, ckpt, variant, attention, seed, epochs))
    ia = None if args.skip_ia else inverse_attention(study, ckpt)

    s = summarise(results, rows, args.boot)
    from lsdo.config import compose

    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
        "seeds": seeds,
        "epochs": epochs or int(compose(["experiment=premise"]).trainer.max_epochs),
        "wall_minutes_this_call": (time.time() - start) / 60,
        "run_seconds": {tag_of(r["variant"], r["attention"], r["seed"]): r["seconds"] for r in results},
    }
    report = format_report(s, premise_r, ia, meta)
    (study / "study.md").write_text(report)
    (study / "study.json").write_text(json.dumps({"meta": meta, **s}, indent=1))
    plot(s, study / "study.png")
    print("\n" + report)
    print(f"written: {study / 'study.md'}, {study / 'study.json'}, {study / 'study.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/premise_study.py", StudyArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
