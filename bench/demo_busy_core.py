"""The CPU demo beside a busy core: seconds per training epoch, by thread settings, in one run.

    python bench/demo_busy_core.py [epochs=2] [settings=default,passive,threads1,passive_threads1]
                                   [log_dir=/tmp/lsdo_bench_busy]

For each thread setting the demo (``train.py experiment=demo``, no test, no logger) trains
``epochs`` epochs twice: on a quiet machine and with one other process spinning on a core (what a
second job, a browser or a test suite does). Epoch time comes from Lightning's progress bar
timestamps in the log (the run's wall time minus its start-up). Prints a table with each
setting's busy/quiet ratio and its time relative to the default on the quiet machine.

Settings: ``default`` (torch's threads = cores, OpenMP's default spin-waiting),
``passive`` (``OMP_WAIT_POLICY=PASSIVE``: idle threads sleep instead of spinning),
``threads1`` (``OMP_NUM_THREADS=1``), ``passive_threads1`` (both).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lsdo.errors import LSDOUserError
from lsdo.options import option
from lsdo.processes import worker_context

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "threads1": {"OMP_NUM_THREADS": "1"},
    "passive_threads1": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}


@dataclass
class BusyCoreArgs:
    epochs: int = option("demo epochs per run", 2, minimum=1)
    settings: list[str] = option(
        "thread settings to compare: default, passive (OMP_WAIT_POLICY=PASSIVE), threads1 (OMP_NUM_THREADS=1), "
        "passive_threads1 (both)",
        list(SETTINGS),
    )
    log_dir: str = option("the demo runs' paths.log_dir (their output: <log_dir>/demo_*.log)", "/tmp/lsdo_bench_busy")


EPOCH_LINE = re.compile(r"Epoch (\d+)/\d+ .* (\d+):(\d+):(\d+) •")


def _spin() -> None:  # one busy core
    while True:
        pass


def run_demo(env_extra: dict[str, str], epochs: int, log_dir: Path, name: str) -> tuple[float, float]:
    """(wall seconds, seconds per epoch) of ``epochs`` demo epochs; the run's output: ``<log_dir>/demo_<name>.log``."""
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=demo", f"trainer.max_epochs={epochs}", "test=false",
           "logger=none", f"paths.log_dir={log_dir}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"demo_{name}.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise LSDOUserError(
            f"the demo failed ({env_extra or 'default threads'}, exit {proc.returncode}); its output: {log}"
        )
    per_epoch: dict[int, float] = {}
    for m in EPOCH_LINE.finditer(proc.stdout + proc.stderr):
        per_epoch[int(m.group(1))] = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
    epoch_s = sum(per_epoch.values()) / max(1, len(per_epoch)) if per_epoch else float("nan")
    return wall, epoch_s


def run(args: BusyCoreArgs) -> int:
    epochs, names, log_dir = args.epochs, args.settings, Path(args.log_dir)
    bad = [n for n in names if n not in SETTINGS]
    if bad:
        raise LSDOUserError(f"settings: unknown {bad[0]!r}; expected a subset of {','.join(SETTINGS)}")
    rows = []
    for name in names:
        for busy in (False, True):
            spinner = worker_context().Process(target=_spin, daemon=True) if busy else None
            if spinner:
                spinner.start()
            try:
                wall, epoch_s = run_demo(SETTINGS[name], epochs, log_dir, f"{name}_{'busy' if busy else 'quiet'}")
            finally:
                if spinner:
                    spinner.terminate()
                    spinner.join()
            rows.append((name, busy, wall, epoch_s))
            print(f"{name:18s} busy={busy!s:5s} wall {wall:7.1f} s  epoch {epoch_s:6.1f} s", flush=True)
    quiet_default = next((e for n, b, _, e in rows if n == "default" and not b), float("nan"))
    print(f"\n{os.cpu_count()} CPUs, {epochs} epochs per run, epoch seconds from the progress bar\n")
    print("| setting | load | s / epoch | busy / quiet | vs default quiet |")
    print("|---|---|---|---|---|")
    for name, busy, _, epoch_s in rows:
        quiet = next(e for n, b, _, e in rows if n == name and not b)
        print(f"| {name} | {'one busy core' if busy else 'quiet'} | {epoch_s:.1f} | "
              f"{epoch_s / quiet:.2f}x | {epoch_s / quiet_default:.2f}x |")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/demo_busy_core.py", BusyCoreArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
