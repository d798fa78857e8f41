"""Processes: no worker pool of the project is a fork of a caller that has run threads, and a stuck test
fails alone.

* A caller that decoded a video (PyAV's frame conversion leaves libswscale's slice-thread pool behind)
  then runs ``lsdo-prepare frames`` / ``compress`` with two workers, and the index builder's decoding
  loader with two workers: each finishes under a deadline. With workers forked from the caller, the
  first two hang in ``avpriv_slicethread_execute`` (the deadline kills the process group and the test
  fails instead of the suite hanging).
* Every place in the package and the benchmarks that makes a pool or a ``DataLoader`` passes the
  project's context (``lsdo.processes``), read off the source, so a new pool cannot forget it.
* The suite's own deadline: a planted infinite loop and a planted endless wait each fail their test and
  the other tests of the run still pass and are reported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from lsdo.processes import START_METHOD, loader_context, run_in_group, worker_context

DEADLINE_S = 120  # each case takes 5-15 s on a 2-core CPU; a hang is caught well inside the test's own limit
pytestmark = pytest.mark.timeout(DEADLINE_S + 60)

av = pytest.importorskip("av")


def clips(folder: Path, n: int = 3) -> list[Path]:
    """``n`` short mp4 clips (moving gradient, 24 frames, 64 x 48) under ``folder``."""
    from lsdo.data.video import write_video

    yy, xx = np.mgrid[0:48, 0:64]
    paths = []
    for i in range(n):
        frames = np.stack([np.stack([(xx * 4 + t * 8 + i * 40) % 256, yy * 5, xx * 0 + 60 * i], -1) for t in range(24)])
        paths.append(folder / f"clip{i}.mp4")
        write_video(paths[-1], frames.astype(np.uint8))
    return paths


DECODE_FIRST = """
import sys
from lsdo.data.video import sample_frames

# Decode with PyAV in this process first: its frame conversion starts libswscale's slice threads here.
sample_frames(sys.argv[1], 4, "uniform", backend="pyav")
"""


@pytest.mark.parametrize("tool", ["frames", "compress"])
def test_prepare_with_workers_after_a_decode_in_the_caller(tool: str, tmp_path: Path) -> None:
    src = clips(tmp_path / "in")
    code = DECODE_FIRST + textwrap.dedent(f"""
        from lsdo.cli.prepare import prepare_main
        sys.exit(prepare_main([{tool!r}, sys.argv[2], sys.argv[3], "workers=2", "progress=false"]))
    """)
    out = tmp_path / "out"
    try:
        done = run_in_group([sys.executable, "-c", code, str(src[0]), str(tmp_path / "in"), str(out)], DEADLINE_S)
    except subprocess.TimeoutExpired as exc:  # the workers hung (the process group was killed)
        pytest.fail(f"lsdo-prepare {tool} workers=2 after a decode did not finish in {DEADLINE_S} s: {exc}")
    assert done.returncode == 0, done.stderr[-2000:]
    made = sorted(p.name for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len([m for m in made if m.startswith("clip")]) == len(src), made


def test_index_decoding_workers_after_a_decode_in_the_caller(tmp_path: Path) -> None:
    src = clips(tmp_path)
    code = DECODE_FIRST + textwrap.dedent("""
        from pathlib import Path
        from lsdo.retrieval.build import VideoFile, _decoded_stream

        files = [VideoFile(Path(p).stem, Path(p), Path(p).name, 0, 0) for p in sys.argv[1:]]
        got = sorted(i for i, frames, _, reason in _decoded_stream(files, 4, 32, workers=2) if reason is None)
        print(got)
        sys.exit(0 if got == list(range(len(files))) else 1)
    """)
    try:
        done = run_in_group([sys.executable, "-c", code, *map(str, src)], DEADLINE_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the index builder's 2 decoding workers after a decode did not finish in {DEADLINE_S} s: {exc}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_the_context_is_never_a_bare_fork() -> None:
    assert START_METHOD in ("forkserver", "spawn")
    assert worker_context().get_start_method() == START_METHOD
    assert loader_context(0) is None and loader_context(2).get_start_method() == START_METHOD
    if sys.platform.startswith("linux"):
        assert START_METHOD == "forkserver"  # workers fork from a clean server, never from the caller


# Calls that start pools, and the keyword that must carry lsdo.processes' context.
POOLS = {"ProcessPoolExecutor": "mp_context", "DataLoader": "multiprocessing_context"}
FORKS = {"os.fork", "mp.Pool", "mp.Process", "multiprocessing.Pool", "multiprocessing.Process"}


def pool_calls(path: Path) -> list[str]:
    """``file:line call`` of each pool made in ``path`` without the project's context keyword (a call that
    expands a ``**dict`` counts when the file names the keyword: the datamodules build their loaders' kwargs)."""
    source = path.read_text()
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        where = f"{path.parent.name}/{path.name}:{node.lineno} {base + '.' if base else ''}{name}"
        keys = {k.arg for k in node.keywords}
        if name in POOLS and POOLS[name] not in keys and not (None in keys and POOLS[name] in source):
            bad.append(f"{where} without {POOLS[name]}=")
        if f"{base}.{name}" in FORKS:
            bad.append(f"{where}: forks the caller; use lsdo.processes.worker_context().{name}")
    return bad


def test_every_pool_in_the_package_and_benchmarks_takes_the_project_context() -> None:
    files = [*sorted((ROOT / "lsdo").rglob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
    bad = [b for path in files for b in pool_calls(path)]
    assert not bad, "\n".join(bad)


def test_the_pool_check_sees_a_bare_pool(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import os\nimport multiprocessing as mp\nfrom torch.utils.data import DataLoader\n"
        "DataLoader([], num_workers=2)\nmp.Pool(2)\nos.fork()\n"
    )
    found = pool_calls(planted)
    assert [b.split(" ", 1)[1] for b in found] == [
        "DataLoader without multiprocessing_context=",
        "mp.Pool: forks the caller; use lsdo.processes.worker_context().Pool",
        "os.fork: forks the caller; use lsdo.processes.worker_context().fork",
    ]


def test_the_datamodules_loaders_use_the_context(cfg_tiny) -> None:
    from omegaconf import open_dict

    from lsdo.data import build_datamodule

    with open_dict(cfg_tiny):
        cfg_tiny.dataset.num_workers = 2
    dm = build_datamodule(cfg_tiny, 32)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.multiprocessing_context.get_start_method() == START_METHOD
    batch = next(iter(loader))  # the dataset and collate functions cross to the workers by pickle
    assert batch["frames"].shape[0] == int(cfg_tiny.dataset.batch_size)
    with open_dict(cfg_tiny):
        cfg_tiny.dataset.num_workers = 0
    dm = build_datamodule(cfg_tiny, 32)
    dm.setup("fit")
    assert dm.val_dataloader().multiprocessing_context is None  # no workers: nothing is started


def test_a_worker_of_the_context_runs_torch() -> None:
    """A forkserver / spawn worker imports what it runs by itself: a torch op in a pool of the context."""
    ctx = worker_context()
    with ctx.Pool(1) as pool:
        assert pool.apply(torch.add, (torch.ones(2), torch.ones(2))).tolist() == [2.0, 2.0]


PLANTED = """
import threading
import time


def test_before():
    assert 1 + 1 == 2


def test_endless_loop():
    while True:
        pass


def test_endless_wait():
    threading.Event().wait()


def test_endless_sleep():
    time.sleep(10**6)


def test_after():
    assert sum(range(4)) == 6
"""


def test_a_stuck_test_fails_alone_and_the_run_reports_the_others(tmp_path: Path) -> None:
    """The suite's own pytest settings (pyproject's [tool.pytest.ini_options]) with a 3-second limit."""
    (tmp_path / "test_planted.py").write_text(PLANTED)
    cmd = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)]
    cmd += ["-p", "no:cacheprovider", "-q", "-o", "timeout=3", str(tmp_path / "test_planted.py")]
    done = run_in_group(cmd, 120, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert "3 failed, 2 passed" in out, out[-3000:]
    for name in ("test_endless_loop", "test_endless_wait", "test_endless_sleep"):
        assert f"FAILED test_planted.py::{name} - Failed: Timeout" in out, out[-3000:]
