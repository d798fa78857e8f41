"""The CPU demo beside a busy core: seconds per training epoch, by thread settings, in one run.

    python bench/demo_busy_core.py [epochs=2] [settings=default,passive,threads1,passive_threads1]

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

import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "threads1": {"OMP_NUM_THREADS": "1"},
    "passive_threads1": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"},
}
EPOCH_LINE = re.compile(r"Epoch (\d+)/\d+ .* (\d+):(\d+):(\d+) •")


def _spin() -> None:  # one busy core
    while True:
        pass


def run_demo(env_extra: dict[str, str], epochs: int, log_dir: Path) -> tuple[float, float]:
    """(wall seconds, seconds per epoch) of ``epochs`` demo epochs."""
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=demo", f"trainer.max_epochs={epochs}", "test=false",
           "logger=none", f"paths.log_dir={log_dir}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({env_extra}):\n{proc.stderr[-2000:]}")
    per_epoch: dict[int, float] = {}
    for m in EPOCH_LINE.finditer(proc.stdout + proc.stderr):
        per_epoch[int(m.group(1))] = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
    epoch_s = sum(per_epoch.values()) / max(1, len(per_epoch)) if per_epoch else float("nan")
    return wall, epoch_s


def main(argv: list[str] | None = None) -> int:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    epochs = int(args.get("epochs", 2))
    names = args.get("settings", ",".join(SETTINGS)).split(",")
    log_dir = Path(args.get("log_dir", "/tmp/lsdo_bench_busy"))
    rows = []
    for name in names:
        for busy in (False, True):
            spinner = mp.Process(target=_spin, daemon=True) if busy else None
            if spinner:
                spinner.start()
            try:
                wall, epoch_s = run_demo(SETTINGS[name], epochs, log_dir)
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


if __name__ == "__main__":
    sys.exit(main())
