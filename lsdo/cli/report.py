"""``lsdo-report SWEEP_DIR [out=PREFIX] [paper=auto] [reference=ROW] [boot=2000]``.

A sweep's runs as the paper's table (lsdo.sweep_report): the paper's figures beside the measured mean ± std
over seeds, each row's paired difference to the reference row with a 95% bootstrap interval, and the runs that
failed or are missing. Writes PREFIX.md and PREFIX.csv and prints the Markdown.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lsdo.cli.common import run_tool
from lsdo.sweep_report import ReportOptions, write_report


def report(opts: ReportOptions) -> int:
    md, csv_path, markdown = write_report(opts)
    print(markdown)
    print(f"written: {md}, {csv_path}")
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``lsdo-report``; returns the exit code."""
    about = (__doc__ or "").split("\n\n", 1)[1]
    return run_tool("lsdo-report", ReportOptions, report, argv, about=about)


if __name__ == "__main__":
    sys.exit(report_main())
