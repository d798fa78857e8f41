"""The flip study (issue 17): plain vs caption-aware vs no flip on the flip benchmark. Resumable.

    python bench/flip_study.py                          # = make flip-study
    python bench/flip_study.py dir=logs/flip_study seeds=3 epochs=20

1. **Data**: the synthetic benchmark with spatial captions (``lsdo-synth spatial_captions=true``: the large
   object keeps to the left or the right half and every caption says which; each test combination appears
   on both sides) as mp4 files in the MSR-VTT layout, written once to ``<dir>/data``.
2. **Runs**: ``experiment=flip_study`` (the tiny CLIP from scratch through the real video pipeline, random
   resized crop as the authors) with ``dataset.flip`` = ``none``, ``plain`` (the authors': the clip is
   mirrored, the caption is not) and ``caption_aware`` (left and right swapped with the mirror, doubtful
   captions not flipped), ``seeds`` seeds each, in ``<dir>/runs/<mode>_seed<k>``.
3. **Report**: ``lsdo-report`` of the runs (reference: ``dataset.flip=plain``, the authors'), written to
   ``<dir>/report.md`` / ``.csv`` (``docs=PATH`` also copies it there) and printed.

Killed at any point, the same command continues (finished runs skipped, an interrupted one resumed).
"""

# No ``from __future__ import annotations``: tests may load this file without registering it in sys.modules.
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
    seeds: int = option("training seeds per flip mode (3: seeds 0, 1, 2)", 3, minimum=1)
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


def side_accuracy(run_dir: Path, data: Path) -> float:
    """How often a test caption scores its own video above the same video on the other side (its mirror twin,
    ``synth_test_<i>_0`` left vs ``_1`` right): 50% is a model blind to left and right. Percent."""
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
        )
    column = {v: i for i, v in enumerate(ids)}
    wins = []
    for t, r in enumerate(records):
        twin = r.video_id[:-1] + ("1" if r.video_id.endswith("0") else "0")
        wins.append(float(sims[t, column[r.video_id]] > sims[t, column[twin]]))
    return 100.0 * sum(wins) / len(wins)


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
    report = [sys.executable, "-m", "lsdo.cli.report", str(root / "runs"), f"out={out}", "paper=none"]
    command([*report, reference, f"title={title}"], root / "report.log")
    accuracy = {f"{m}_seed{s}": side_accuracy(root / "runs" / f"{m}_seed{s}", data) for s in seeds for m in args.modes}
    lines = ["", "## Side accuracy", "",
             "How often a test caption scores its own video above the same combination on the other side",
             "(50%: blind to left and right); per seed and mean ± sample std.", "",
             "| dataset.flip | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---|" * (len(seeds) + 1)]  # fmt: skip
    for m in args.modes:
        vals = [accuracy[f"{m}_seed{s}"] for s in seeds]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else float("nan")
        lines.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {mean:.1f} ± {std:.1f} |")
    import os
    import platform
    import time

    import torch

    from lsdo.config import compose

    epochs = args.epochs or int(compose(["experiment=flip_study"]).trainer.max_epochs)
    lines += ["", f"Made by `python bench/flip_study.py` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, "
              f"{os.cpu_count()} CPU cores, torch {torch.__version__}; {epochs} epochs per run, 120 test videos "
              "(60 combinations x 2 sides). Synthetic-scale numbers."]  # fmt: skip
    with out.with_suffix(".md").open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    if args.docs:
        docs = Path(args.docs) if Path(args.docs).is_absolute() else ROOT / args.docs
        docs.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".md", ".csv"):
            shutil.copyfile(out.with_suffix(suffix), docs.with_name(docs.name + suffix))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/flip_study.py", FlipStudyArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
