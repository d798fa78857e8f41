"""The flip study (issue 17): plain vs caption-aware vs no flip on the flip benchmark. Resumable.

    python bench/flip_study.py                          # = make flip-study
    python bench/flip_study.py dir=logs/flip_study seeds=8 epochs=20  # seeds 0-7; runs already done are kept

1. **Data**: the synthetic benchmark with spatial captions (``lsdo-synth spatial_captions=true``: the large
   object keeps to the left or the right half and every caption says which; each test combination appears
   on both sides) as mp4 files in the MSR-VTT layout, written once to ``<dir>/data``.
2. **Runs**: ``experiment=flip_study`` (the tiny CLIP from scratch through the real video pipeline, random
   resized crop as the authors) with ``dataset.flip`` = ``none``, ``plain`` (the authors': the clip is
   mirrored, the caption is not) and ``caption_aware`` (left and right swapped with the mirror, doubtful
   captions not flipped), ``seeds`` seeds each, in ``<dir>/runs/<mode>_seed<k>``.
3. **Report**: ``lsdo-report`` of the runs (reference: ``dataset.flip=plain``, the authors'; again against
   ``none``), then the side accuracy (own video vs its mirror twin; 50% = blind to left and right) per run with
   its paired differences to ``plain`` and ``none``, written to ``<dir>/report.md`` / ``.csv`` and
   ``<dir>/flip_study.png`` and printed (``docs=docs/flip_study`` also copies them to docs/flip_study.md /
   .csv and docs/figures/flip_study.png).

Killed at any point, the same command continues (finished runs skipped, an interrupted one resumed).
"""

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from study_runs import ROOT, command, train_once, write_manifest

from lsdo.errors import LSDOUserError
from lsdo.options import option

MODES = ("none", "plain", "caption_aware")


@dataclass
class FlipStudyArgs:
    dir: str = option("where the data, runs and report live", "logs/flip_study")
    seeds: int = option("training seeds per flip mode (5: seeds 0-4)", 5, minimum=1)
    epochs: int | None = option("epochs per run (null: experiment=flip_study's trainer.max_epochs)", None, minimum=1)
    modes: list[str] = option(f"subset of {','.join(MODES)}", list(MODES))
    train_videos_per_combo: int = option("training videos per combination in the export", 2, minimum=1)
    docs: str | None = option("also copy the report to DOCS.md / DOCS.csv (e.g. docs/flip_study)", None)
    extra: list[str] = option("further train.py overrides for every run (tests: a tiny model)", [])


def export(data: Path, per_combo: int) -> None:
    if (data / "MSRVTT_data.json").is_file():
        return
    print(f"data: exporting the flip benchmark to {data}", flush=True)
    args = [sys.executable, "-m", "lsdo.cli.synth", f"out={data}", "spatial_captions=true"]
    command([*args, f"train_videos_per_combo={per_combo}"], data.parent / "export.log")


def side_wins(run_dir: Path, data: Path) -> list[float]:
    """Per test caption, 100 if it scores its own video above the same video on the other side (its mirror twin,
    ``synth_test_<i>_0`` left vs ``_1`` right), else 0: the mean is the side accuracy, 50 for a model blind to
    left and right. Cached in ``<run_dir>/side_accuracy.json``."""
    cache = run_dir / "side_accuracy.json"
    if cache.is_file():
        return json.loads(cache.read_text())["wins"]
    import torch

    from lsdo.checkpoint import load_model
    from lsdo.data.annotations import load_annotations
    from lsdo.data.transforms import build_transform
    from lsdo.data.video import sample_frames

    ckpt = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))[-1]
    model, cfg = load_model(ckpt)
    records = load_annotations("msrvtt", "test", data)
    ids = sorted({r.video_id for r in records})
    transform = build_transform(int(cfg["dataset"].get("image_size") or model.image_size), train=False)
    n = int(cfg["dataset"]["num_frames"])
    with torch.no_grad():
        frames = torch.stack(
            [transform(sample_frames(data / "videos" / f"{v}.mp4", n)) for v in ids]
        )  # [V, n, 3, H, W]
        sims = model.similarity(
            model.encode_text(model.tokenize([r.caption for r in records])), model.encode_video(frames)
        )  # [T, V]
    column = {v: i for i, v in enumerate(ids)}
    wins = []
    for t, r in enumerate(records):
        twin = r.video_id[:-1] + ("1" if r.video_id.endswith("0") else "0")
        wins.append(100.0 * float(sims[t, column[r.video_id]] > sims[t, column[twin]]))
    cache.write_text(json.dumps({"checkpoint": ckpt.name, "wins": wins}))
    return wins


def side_table(
    wins: dict[tuple[str, int], list[float]], modes: list[str], seeds: list[int], boot: int = 10_000
) -> list[str]:
    """The side-accuracy table (Markdown lines): per seed, mean ± sample std over seeds, and each mode minus
    ``plain`` and minus ``none`` (those in the study), paired by seed and caption, with a 95% bootstrap
    interval (seeds, then captions, resampled)."""
    import numpy as np

    from lsdo.stats import paired_bootstrap

    refs = [m for m in ("plain", "none") if m in modes]
    lines = [
        "| dataset.flip | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |"
        + "".join(f" Δ vs {r} [95% CI] |" for r in refs),
        "|---|" + "---|" * (len(seeds) + 1 + len(refs)),
    ]  # fmt: skip
    per_seed = {m: np.array([wins[(m, s)] for s in seeds], dtype=float) for m in modes}  # [S, Q] each
    for m in modes:
        vals = per_seed[m].mean(axis=1)  # [S]
        std = f"{vals.std(ddof=1):.1f}" if len(vals) > 1 else "-"
        row = f"| {m} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {vals.mean():.1f} ± {std} |"
        for r in refs:
            d, lo, hi = paired_bootstrap(per_seed[m], per_seed[r], boot) if r != m else (0.0, 0.0, 0.0)
            row += " - |" if r == m else f" {d:+.1f} [{lo:+.1f}, {hi:+.1f}] |"
        lines.append(row)
    return lines


def plot(
    results: dict[tuple[str, int], dict[str, float]], modes: list[str], seeds: list[int], epochs: int, out: Path
) -> Path:
    """Two panels, one dot per seed and the mean as a bar: test t2v R@1 and side accuracy per flip mode."""
    from lsdo.plots import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    panels = [("t2v/R1", "test t2v R@1 (%)", 100 / 120, "chance (1/120)"), ("side", "side accuracy (%)", 50, "blind")]
    for ax, (key, title, line, line_label) in zip(axes, panels, strict=True):
        for i, m in enumerate(modes):
            vals = [results[(m, s)][key] for s in seeds]
            ax.bar(i, sum(vals) / len(vals), color=("tab:grey", "tab:orange", "tab:blue")[i % 3], alpha=0.5)
            ax.scatter([i] * len(vals), vals, color="black", s=14, zorder=3)
        ax.axhline(line, color="red", ls="--", lw=1, label=line_label)
        ax.set_xticks(range(len(modes)), [f"flip={m}" for m in modes])
        ax.set_title(title)
        ax.set_ylim(0, 105 if key == "side" else None)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"flip benchmark, {epochs} epochs, seeds {', '.join(map(str, seeds))} (dots: seeds; bars: mean)", y=1.02
    )
    return save(fig, out)


def run(args: FlipStudyArgs) -> int:
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        raise LSDOUserError(f"modes: unknown {bad[0]!r}; expected a subset of {','.join(MODES)}")
    root = Path(args.dir).resolve()
    data = root / "data"
    export(data, args.train_videos_per_combo)
    seeds = list(range(args.seeds))
    write_manifest(root / "runs", [f"dataset.flip={','.join(args.modes)}", f"seed={','.join(map(str, seeds))}"])
    for seed in seeds:  # seed-major: a partial study is balanced across modes
        for mode in args.modes:
            overrides = ["experiment=flip_study", f"dataset.root={data}", f"dataset.flip={mode}", f"seed={seed}"]
            overrides += [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
            train_once(root / "runs" / f"{mode}_seed{seed}", [*overrides, *args.extra])
    out = root / "report"
    title = "The flip study: dataset.flip on the flip benchmark (synthetic, spatial captions)"
    reference = "reference=dataset.flip=plain" if "plain" in args.modes else "reference=null"
    report = [sys.executable, "-m", "lsdo.cli.report", str(root / "runs"), "paper=none", f"title={title}"]
    command([*report, f"out={out}", reference], root / "report.log")
    against_none = []
    if "none" in args.modes and len(args.modes) > 1:  # the same runs against no flip at all
        command([*report, f"out={root / 'report_vs_none'}", "reference=dataset.flip=none"], root / "report.log")
        table = [line for line in (root / "report_vs_none.md").read_text().splitlines() if line.startswith("|")]
        against_none = ["", "## Against no flip", "", "The same runs with `dataset.flip=none` as the reference:", "",
                        *table]  # fmt: skip
    runs = {(m, s): root / "runs" / f"{m}_seed{s}" for s in seeds for m in args.modes}
    wins = {key: side_wins(path, data) for key, path in runs.items()}
    results = {
        key: {**json.loads((path / "metrics.json").read_text())["test"], "side": sum(wins[key]) / len(wins[key])}
        for key, path in runs.items()
    }
    import os
    import platform
    import time

    import torch

    from lsdo.config import compose

    epochs = args.epochs or int(compose(["experiment=flip_study"]).trainer.max_epochs)
    figure = plot(results, args.modes, seeds, epochs, root / "flip_study.png")
    lines = [*against_none, "", "## Side accuracy", "",
             "How often a test caption scores its own video above the same combination on the other side",
             "(50%: blind to left and right); per seed, mean ± sample std, and the differences to `plain` and to",
             "`none`, paired by seed and caption.", "", *side_table(wins, args.modes, seeds), "",
             f"![R@1 and side accuracy per flip mode]({figure.name})",
             "", f"Made by `python bench/flip_study.py` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, torch {torch.__version__}; {epochs} epochs per run, 120 test videos "
             "(60 combinations x 2 sides). Synthetic-scale numbers."]  # fmt: skip
    with out.with_suffix(".md").open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    if args.docs:
        docs = Path(args.docs) if Path(args.docs).is_absolute() else ROOT / args.docs
        docs.parent.mkdir(parents=True, exist_ok=True)
        (docs.parent / "figures").mkdir(exist_ok=True)
        shutil.copyfile(figure, docs.parent / "figures" / f"{docs.name}.png")
        shutil.copyfile(out.with_suffix(".csv"), docs.with_name(docs.name + ".csv"))
        text = out.with_suffix(".md").read_text().replace(f"]({figure.name})", f"](figures/{docs.name}.png)")
        docs.with_name(docs.name + ".md").write_text(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/flip_study.py", FlipStudyArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
