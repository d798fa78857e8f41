"""Resumable runs for the study scripts of ``bench/`` (premise_study.py, reproduce_synthetic.py, flip_study.py).

Each run is one ``train.py`` process in its own folder (``hydra.run.dir``); a folder whose ``metrics.json``
holds test metrics is done and skipped, an interrupted one resumes from its own ``checkpoints/last.ckpt``.
A sweep folder gets a ``multirun.yaml`` naming its axes as Hydra records them, so ``lsdo-report`` lists the
runs still missing.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lsdo.errors import LSDOUserError

ROOT = Path(__file__).resolve().parents[1]


def command(args: list[str], log: Path) -> None:
    """One command in its own process, its output appended to ``log``; raises on failure."""
    print("  $ " + " ".join(args), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        rc = subprocess.call(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise LSDOUserError(f"{' '.join(args[:3])} ... failed (exit {rc}); its output: {log}")


def train_once(run_dir: Path, overrides: list[str]) -> float:
    """``python train.py OVERRIDES hydra.run.dir=RUN_DIR`` unless done; seconds it took (0: already done)."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and "test" in json.loads(metrics.read_text()):
        return 0.0
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [*overrides, f"hydra.run.dir={run_dir}"]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        args.append(f"ckpt_path={last}")
    log = run_dir.parent / f"{run_dir.name}.log"
    start = time.time()
    command([sys.executable, "train.py", *args], log)
    if not metrics.is_file():
        raise LSDOUserError(f"{run_dir}: training wrote no metrics.json; see {log}")
    t = json.loads(metrics.read_text())["test"]
    took = time.time() - start
    print(f"  {run_dir.name}: t2v R@1 {t['t2v/R1']:.1f}  R@5 {t['t2v/R5']:.1f}  MnR {t['t2v/MnR']:.2f}  ({took:.0f} s)")
    return took


def write_manifest(sweep: Path, overrides: list[str]) -> None:
    """``<sweep>/multirun.yaml`` with the sweep's overrides (``seed=0,1,2``) where Hydra would record them."""
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": overrides}}}))
