"""How the project starts worker processes: never by a bare ``fork`` of a process that has run threads.

A forked child gets a copy of the parent's memory but only the thread that called ``fork``. Any lock or
condition that another parent thread held, or would have signalled, stays taken forever in the child.
FFmpeg is the case that bites here: PyAV's frame conversion (``to_ndarray``) runs libswscale with a
slice-thread pool that lives as long as the cached converter, so a child forked after the parent decoded
one frame waits in ``avpriv_slicethread_execute`` for threads it does not have, and hangs. OpenMP pools,
tqdm's monitor thread and Lightning's threads are further threads a fork would cut off.

So every pool of worker processes takes its start method from :func:`worker_context`:

* ``forkserver`` where the platform has it (Linux, macOS): a clean single-threaded server process is
  started once with fork + exec, and each worker is forked from *it*, never from the caller; after the
  first pool the workers start in milliseconds plus their imports;
* ``spawn`` elsewhere (Windows): a fresh interpreter per worker.

Both need what crosses to a worker to be picklable (module-level functions, plain data) and a script
that starts pools to guard its top level with ``if __name__ == "__main__":`` (Python's own rule for
these methods; the console scripts and the Hydra entry points do).

The other ways the project starts processes need no context: ``subprocess`` (the study runners, the
benchmarks, Lightning's ``ddp`` launcher, which re-runs the command line) forks and immediately execs a
new program, running no Python code in between, so nothing of the parent's threads is left to wait on.
:func:`run_in_group` runs such a program under a deadline that also ends every process it started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from multiprocessing.context import BaseContext
from pathlib import Path

START_METHOD: str = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def worker_context() -> BaseContext:
    """The multiprocessing context every worker pool of the project uses (see the module docstring)."""
    return multiprocessing.get_context(START_METHOD)


def loader_context(num_workers: int) -> BaseContext | None:
    """``multiprocessing_context`` for a ``DataLoader`` with ``num_workers`` workers (None: no workers,
    the loader runs in the calling process and starts nothing)."""
    return worker_context() if num_workers > 0 else None


def run_in_group(
    cmd: Sequence[str],
    timeout: float,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    merge_stderr: bool = False,
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)``, the command in a session of
    its own so that the deadline kills it *with every process it started* (``subprocess.run`` kills only the
    direct child and leaves a stuck pool's workers running); raises ``subprocess.TimeoutExpired`` after the
    kill. ``merge_stderr``: stderr into ``stdout``. Ctrl-C or an exception while waiting kills the group too."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
