"""A folder of videos -> one output file per video, in parallel and resumably: the driver that
``lsdo-prepare compress`` (lsdo.data.compress) and ``lsdo-prepare frames`` (lsdo.data.frame_cache) share.

Every video under the input folder (recursive; hidden names skipped; the output folder left out
when it lies inside) maps to one output path. Outputs two inputs would share are refused before
any work, in one line listing them. Finished outputs are skipped (each tool says what finished
means), the rest run in worker processes; a failed input is reported on one ``failed:`` line and
counted without stopping the batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from lsdo.errors import DataNotFoundError, LSDOUserError
from lsdo.names import printable
from lsdo.processes import worker_context

MAX_LISTED_CLASHES = 10  # name clashes spelled out in the error line (the count says how many in all)


@dataclass
class Summary:
    """Counts of one run; ``failures`` holds (input file, reason); ``verb`` says what a done file was."""

    verb: str = "done"
    done: int = 0
    skipped: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        return f"{self.verb} {self.done}, skipped {self.skipped} (already done), failed {self.failed}"


def find_videos(in_dir: Path, exts: Iterable[str], exclude: Path | None = None) -> list[Path]:
    """Video files under ``in_dir`` (recursive, sorted), skipping hidden names and the ``exclude`` tree."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    found = []
    for root, dirs, files in os.walk(in_dir):
        rootp = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or rootp / d != exclude))
        found += [rootp / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in exts]
    return sorted(found)


def name_clashes(sources: Sequence[Path], output: Callable[[Path], Path]) -> list[tuple[Path, list[Path]]]:
    """(output, inputs) for every output that two or more ``sources`` would be written to (sorted)."""
    by_dst: dict[Path, list[Path]] = {}
    for src in sources:
        by_dst.setdefault(output(src), []).append(src)
    return sorted((dst, sorted(srcs)) for dst, srcs in by_dst.items() if len(srcs) > 1)


def sources(
    in_dir: Path, out_dir: Path, exts: Sequence[str], output: Callable[[Path], Path], nothing: str, ext_hint: str
) -> list[Path]:
    """The videos under ``in_dir`` to process into ``out_dir``; one-line errors for a missing input folder,
    the same folder twice, no videos, or name clashes (``nothing``: "nothing compressed" ...)."""
    if not in_dir.is_dir():
        raise DataNotFoundError(f"input folder not found: {in_dir}")
    if out_dir.resolve() == in_dir.resolve():
        raise LSDOUserError(f"OUT_DIR must differ from IN_DIR (outputs would overwrite inputs): {out_dir}")
    inside = out_dir.resolve().is_relative_to(in_dir.resolve())  # OUT_DIR under IN_DIR: do not recurse into it
    found = find_videos(in_dir, exts, exclude=out_dir if inside else None)
    if not found:
        raise DataNotFoundError(f"no videos ({', '.join(exts)}) under {in_dir}")
    clashes = name_clashes(found, output)
    if clashes:  # refused before any work: one of each group would silently overwrite the others
        listed = "; ".join(
            " and ".join(printable(str(s.relative_to(in_dir))) for s in srcs)
            + f" -> {printable(str(dst.relative_to(out_dir)))}"
            for dst, srcs in clashes[:MAX_LISTED_CLASHES]
        )
        more = f"; ... ({len(clashes) - MAX_LISTED_CLASHES} more)" if len(clashes) > MAX_LISTED_CLASHES else ""
        raise LSDOUserError(
            f"{len(clashes)} output name clash(es) under {printable(str(out_dir))}, {nothing}: {listed}{more}; "
            f"rename one file of each group (or pick one extension with {ext_hint})"
        )
    return found


def attempt(work: Callable[..., object], args: tuple, src: Path, dst: Path) -> str | None:
    """Worker: ``work(src, dst, *args)`` (the job is ``functools.partial(attempt, work, args)``); None on
    success, else the failure reason, one printable line (never raises: a bad input must not stop the batch)."""
    from lsdo.data.video import _reason

    try:
        work(src, dst, *args)
    except LSDOUserError as exc:
        return str(exc).removeprefix(f"{src}: ").replace(str(src), printable(str(src)))
    except Exception as exc:  # an unexpected PyAV / OS error must not stop the batch
        return f"{type(exc).__name__}: {_reason(exc)}"
    return None


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """End ``pool`` now: queued jobs cancelled, running workers terminated, nothing waited for."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def run_jobs(
    todo: list[tuple[Path, Path]],
    job: Callable[[Path, Path], str | None],
    summary: Summary,
    workers: int,
    desc: str,
    progress: bool | None = None,
    initializer: Callable[[], None] | None = None,
) -> Summary:
    """Run ``job(src, dst)`` (None: done, else the reason it failed; a picklable callable) for every pair,
    in ``workers`` processes, counting into ``summary``; one ``failed:`` line on stderr per failure.

    The workers start from :func:`lsdo.processes.worker_context`, never by forking the caller: a caller
    that decoded a video before (a notebook, a pipeline) holds FFmpeg thread pools a forked worker would
    wait on forever. ``job`` and ``initializer`` are pickled to the workers (module-level functions)."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="video", desc=desc, disable=(not progress) if progress is not None else None)

    def done(src: Path, reason: str | None) -> None:
        if reason is None:
            summary.done += 1
        else:
            summary.failures.append((src, reason))
            bar.write(f"failed: {printable(str(src))}: {printable(str(reason))}", file=sys.stderr)  # one line each
        bar.update()

    if workers == 1 or len(todo) <= 1:
        for src, dst in todo:
            done(src, job(src, dst))
    else:
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(todo)), mp_context=worker_context(), initializer=initializer
        )
        try:
            futures = {pool.submit(job, src, dst): src for src, dst in todo}
            for fut in as_completed(futures):
                try:
                    reason = fut.result()
                except BrokenProcessPool:
                    reason = "a worker process died (crash or out of memory) while this file was queued; rerun to retry"
                done(futures[fut], reason)
        except BaseException:
            stop_pool(pool)  # Ctrl-C or a caller's deadline: waiting for the workers could wait forever
            raise
        pool.shutdown()
    bar.close()
    return summary
