"""The paper's Table VII and Table XI at synthetic scale, with the report and figures (docs/reproduce-synthetic.md).

    python bench/reproduce_synthetic.py                  # = make reproduce-synthetic; about 80 min on 2 cores
    python bench/reproduce_synthetic.py dir=logs/reproduce_synthetic seeds=3

**Synthetic-scale numbers, not the paper's**: the two-stage benchmark of docs/premise.md (a tiny CLIP
pretrained from scratch on rendered shapes, then fine-tuned with the LSDO heads, ``experiment=premise``),
60 test queries per run. What is reproduced is the *procedure* of the paper's ablations (the rows, the
switches, seeds, the paired comparison), not their figures.

1. **Stage 1** (``experiment=premise_stage1``): written once to ``<dir>/premise/stage1.ckpt``, reused.
2. **Table VII** (``ablation=vii_0`` ... ``vii_6``: modules I / V / F / T with LSDO-average) and **Table XI**
   (``ablation=xi_fc``, ``xi_bottleneck``, ``xi_inverted_bottleneck``), each row with ``seeds`` seeds, every
   run ``experiment=premise variant=average ablation=<row> seed=<k>`` in ``<dir>/table_<t>/<row>_seed<k>/``.
3. **Fig. 5's runs**: LSDO-single with a learnable theta from 0.1, 0.5 and 0.9 (``ablation=ix_*_learnable``,
   seed 0) in ``<dir>/fig5/``.
4. **The report and figures**: ``lsdo-report`` of each table (the paper's MSR-VTT 9k figures beside) into
   ``docs/reproduce-synthetic/``, and ``lsdo-viz fig5`` / ``fig7`` / ``fig8`` of these runs into
   ``docs/figures/reproduce-synthetic/``.

Killed at any point, the same command continues: a run with its ``metrics.json`` is skipped and an
interrupted one resumes from its own ``checkpoints/last.ckpt``. Seed-major order: a partial sweep is
balanced across rows, and the report lists the runs still missing.
"""

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from study_runs import ROOT, command, train_once, write_manifest

from lsdo.errors import LSDOUserError
from lsdo.options import option

TABLES = {
    "vii": ("average", [f"vii_{i}" for i in range(7)]),
    "xi": ("average", ["xi_fc", "xi_bottleneck", "xi_inverted_bottleneck"]),
}
FIG5 = ("single", ["ix_01_learnable", "ix_05_learnable", "ix_09_learnable"])


@dataclass
class ReproduceArgs:
    dir: str = option("where the runs live (checkpoints, logs)", "logs/reproduce_synthetic")
    seeds: int = option("training seeds per row (3: seeds 0, 1, 2)", 3, minimum=1)
    tables: list[str] = option(f"subset of {','.join(TABLES)}", list(TABLES))
    docs: str = option(
        "where the reports go (figures: <docs>/../figures/reproduce-synthetic)", "docs/reproduce-synthetic"
    )
    figures: bool = option("also run Fig. 5's three runs and draw Fig. 5, 7 and 8", True)


def stage1(root: Path) -> Path:
    ckpt = root / "premise" / "stage1.ckpt"
    if ckpt.is_file():
        return ckpt
    print("stage 1: pretraining the tiny CLIP (experiment=premise_stage1)", flush=True)
    resume = ["ckpt_path=last"] if any((root / "premise_stage1" / "runs").glob("*/checkpoints/last.ckpt")) else []
    command(
        [sys.executable, "train.py", "experiment=premise_stage1", f"paths.log_dir={root}", *resume], root / "stage1.log"
    )
    if not ckpt.is_file():
        raise LSDOUserError(f"stage 1 finished without writing {ckpt}; see {root / 'stage1.log'}")
    return ckpt


def train_row(run_dir: Path, stage1_ckpt: Path, variant: str, ablation: str, seed: int) -> float:
    """One run of one row; seconds it took (0 when it was already done)."""
    overrides = [
        "experiment=premise",
        f"variant={variant}",
        f"ablation={ablation}",
        f"seed={seed}",
        f"model.init_from={stage1_ckpt}",
        "logger=csv",
    ]
    return train_once(run_dir, overrides)


def run(args: ReproduceArgs) -> int:
    root = Path(args.dir).resolve()
    bad = [t for t in args.tables if t not in TABLES]
    if bad:
        raise LSDOUserError(f"tables: unknown {bad[0]!r}; expected a subset of {','.join(TABLES)}")
    root.mkdir(parents=True, exist_ok=True)
    ckpt = stage1(root)
    for table in args.tables:  # the sweep's axes, as a Hydra multirun records them: lsdo-report lists what is missing
        variant, rows = TABLES[table]
        seeds = ",".join(str(s) for s in range(args.seeds))
        write_manifest(root / f"table_{table}", [f"variant={variant}", f"ablation={','.join(rows)}", f"seed={seeds}"])
    seconds: dict[str, float] = {}
    for seed in range(args.seeds):  # seed-major: a partial sweep is balanced across rows
        for table in args.tables:
            variant, rows = TABLES[table]
            for row in rows:
                name = f"{row}_seed{seed}"
                seconds[name] = train_row(root / f"table_{table}" / name, ckpt, variant, row, seed)
    if args.figures:
        variant, rows = FIG5
        for row in rows:
            seconds[row] = train_row(root / "fig5" / f"{row}_seed0", ckpt, variant, row, 0)
    (root / "seconds.json").write_text(json.dumps(seconds, indent=1))
    return report(root, args)


TITLES = {
    "vii": "Table VII at synthetic scale: modules I / V / F / T with LSDO-average",
    "xi": "Table XI at synthetic scale: FC / bottleneck / inverted bottleneck (LSDO-average)",
}


def best_ckpt(run_dir: Path) -> Path:
    found = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if not found:
        raise LSDOUserError(f"{run_dir}: no best-*.ckpt under checkpoints/")
    return found[-1]


def example_video(root: Path) -> Path:
    """One video of the premise benchmark's renderer (an unseen combination) for Fig. 7 and 8."""
    from lsdo.config import compose
    from lsdo.data import synthetic
    from lsdo.data.video import write_video

    path = root / "example.mp4"
    if not path.is_file():
        cfg = compose(["experiment=premise"])
        video = synthetic.SyntheticVideo("example", big=2, small=7, seed=11, captions=("x",))
        settings = {**synthetic.render_settings(cfg.dataset, int(cfg.model.clip_cfg.vision_cfg.image_size))}
        write_video(path, synthetic.render(video, **{**settings, "num_frames": 12}))
    return path


def report(root: Path, args: ReproduceArgs) -> int:
    """lsdo-report of each table into ``args.docs``; Fig. 5, 7 and 8 into ``<docs>/../figures/reproduce-synthetic``."""
    docs = Path(args.docs) if Path(args.docs).is_absolute() else ROOT / args.docs
    docs.mkdir(parents=True, exist_ok=True)
    log = root / "report.log"
    for table in args.tables:
        out = docs / f"table_{table}"
        title = f"{TITLES[table]} (synthetic-scale numbers, not the paper's)"
        command([sys.executable, "-m", "lsdo.cli.report", str(root / f"table_{table}"), f"out={out}",
                 "paper=msrvtt9k", f"title={title}"], log)  # fmt: skip
        print(out.with_suffix(".md").read_text())
    if not args.figures:
        return 0
    figures = docs.parent / "figures" / "reproduce-synthetic"
    figures.mkdir(parents=True, exist_ok=True)
    viz = [sys.executable, "-m", "lsdo.cli.viz"]
    command([*viz, "fig5", f"runs={root / 'fig5'}", f"out={figures / 'fig5.png'}"], log)
    video = example_video(root)
    without, with_lsdo = best_ckpt(root / "table_vii" / "vii_0_seed0"), best_ckpt(root / "table_vii" / "vii_6_seed0")
    command([*viz, "fig7", f"ckpt={without},{with_lsdo}", f"video={video}", "frame=1", f"out={figures / 'fig7.png'}",
             "labels=without LSDO blocks (vii_0),with LSDO blocks (vii_6)"], log)  # fmt: skip
    command([*viz, "fig8", f"ckpt={with_lsdo}", f"video={video}", f"out={figures / 'fig8.png'}"], log)
    print(f"figures: {figures}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/reproduce_synthetic.py", ReproduceArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
